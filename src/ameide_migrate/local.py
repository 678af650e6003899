"""The embedded local default: a PostgreSQL and a Prefect server of its own, kept between runs.

`up` is idempotent and quick once everything is running: the second run of
`ameide-migrate run --env local` spends its time migrating (or finding nothing to do), not
setting up.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import secrets
import stat
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from pydantic import SecretStr

from ameide_migrate import postgres, prefect_api, secret_sources, state, vault
from ameide_migrate.errors import DatabaseUrlInvalid, SecretMissing
from ameide_migrate.pg_cluster import Cluster
from ameide_migrate.postgres import Credentials
from ameide_migrate.vault import VaultSettings


@dataclass(frozen=True)
class LocalEnvironment:
    admin: Credentials
    owners: dict[str, Credentials]
    cluster_dir: Path | None


def cluster_dir(state_dir: Path) -> Path:
    """Where the local cluster lives: the state folder, unless the server's user cannot reach it.

    As root the server runs as `postgres`, which cannot enter a home folder of mode 0700; the
    cluster then lives under the system's temporary folder, named after the state folder.
    """
    preferred = state_dir.resolve() / "postgres"
    if os.geteuid() != 0 or _world_traversable(preferred.parent):
        return preferred
    tag = hashlib.sha256(str(preferred).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"ameide-migrate-{tag}" / "postgres"


def _world_traversable(path: Path) -> bool:
    for part in (path, *path.parents):
        if part.exists() and not part.stat().st_mode & stat.S_IXOTH:
            return False
    return True


def _admin_password(state_dir: Path) -> SecretStr:
    path = state_dir / "postgres-admin-password"
    if not path.exists():
        state_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(24))
    return SecretStr(path.read_text().strip())


def local_cluster(state_dir: Path) -> Cluster:
    return Cluster(cluster_dir(state_dir), _admin_password(state_dir))


def up(
    state_dir: Path,
    databases: Iterable[str],
    *,
    admin_url: SecretStr | None = None,
    database_prefix: str = "",
    progress: Callable[[str], None] = lambda _: None,
) -> LocalEnvironment:
    """Make the local PostgreSQL serve every database with its deterministic owner (`seed` then
    writes their credentials). Two runs started at once take turns here."""
    state.writable(state_dir)
    with (state_dir / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _up(state_dir, databases, admin_url, database_prefix, progress)


def _up(
    state_dir: Path,
    databases: Iterable[str],
    admin_url: SecretStr | None,
    database_prefix: str,
    progress: Callable[[str], None],
) -> LocalEnvironment:
    directory: Path | None = None
    if admin_url is not None:
        try:
            admin = Credentials.from_url(admin_url.get_secret_value()).with_database("postgres")
        except DatabaseUrlInvalid as e:
            raise DatabaseUrlInvalid(
                f"the local admin URL (--admin-url or AMEIDE_LOCAL_ADMIN_URL) cannot be used: {e}"
            ) from None
    else:
        cluster = local_cluster(state_dir)
        directory = cluster.directory
        if not cluster.initialised():
            progress(f"creating the local PostgreSQL cluster in {cluster.directory}")
            cluster.init()
        if not cluster.running():
            progress(f"starting the local PostgreSQL on 127.0.0.1:{cluster.port}")
            cluster.start()
        admin = cluster.admin
    owners = {
        db: secret_sources.local_credentials(
            db, host=admin.host, port=admin.port, prefix=database_prefix
        )
        for db in databases
    }
    if postgres.ensure_roles_and_databases(admin, list(owners.values())):
        progress(f"created databases and owners on {admin.host}:{admin.port}")
    return LocalEnvironment(admin=admin, owners=owners, cluster_dir=directory)


def seed(
    state_dir: Path,
    owners: Mapping[str, Credentials],
    conn: VaultSettings | None,
    path_of: Callable[[str], str | None] = lambda _database: None,
) -> str:
    """Write the local credentials that are missing where the local environment reads them:
    Vault when one is configured (KV v2, as the other environments), else the local store.
    Returns where.

    A secret already there is never rewritten, even a wrong one: the gate then reports it as it
    would in staging, and Vault gets no new version on every run.
    """
    if conn is None:
        return str(secret_sources.write_local_store(state_dir, owners))
    with vault.session(conn) as client:
        vault.ensure_kv_v2(client, conn)
        for database, creds in owners.items():
            path = path_of(database) or conn.path("local", database)
            try:
                vault.read_secret(client, conn, path)
            except SecretMissing:
                vault.write_secret(client, conn, path, secret_sources.secret_of(database, creds))
    return f"Vault {conn.address} {conn.display_path('local', '<database>')}"


def down(state_dir: Path) -> list[str]:
    """Stop the local worker, Prefect server and PostgreSQL; data stays for the next `up`."""
    stopped = []
    if prefect_api.stop_worker(state_dir / "prefect"):
        stopped.append("Prefect worker")
    if prefect_api.stop_server(state_dir / "prefect"):
        stopped.append("Prefect server")
    cluster = local_cluster(state_dir)
    if cluster.initialised() and cluster.running():
        cluster.stop()
        stopped.append("PostgreSQL")
    return stopped
