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
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path

from pydantic import SecretStr

from ameide_migrate.adapters import secret_sources, vault
from ameide_migrate.adapters.pg_cluster import Cluster
from ameide_migrate.adapters.postgres.connection import Credentials
from ameide_migrate.adapters.postgres.provisioning import ensure_roles_and_databases
from ameide_migrate.adapters.prefect import local_server
from ameide_migrate.config import state
from ameide_migrate.config.vault_settings import VaultSettings
from ameide_migrate.core.errors import (
    CredentialsMissing,
    DatabaseUrlInvalid,
    LocalServerMismatch,
    SecretMissing,
)


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
        admin = _admin_of(admin_url)
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
    if ensure_roles_and_databases(admin, list(owners.values())):
        progress(f"created databases and owners on {admin.host}:{admin.port}")
    return LocalEnvironment(admin=admin, owners=owners, cluster_dir=directory)


def _admin_of(admin_url: SecretStr) -> Credentials:
    try:
        return Credentials.from_url(admin_url.get_secret_value()).with_database("postgres")
    except DatabaseUrlInvalid as e:
        raise DatabaseUrlInvalid(
            f"the local admin URL (--admin-url or AMEIDE_LOCAL_ADMIN_URL) cannot be used: {e}"
        ) from None


def server_of(admin_url: SecretStr | None) -> str | None:
    """The HOST:PORT an admin URL names, before anything connects to it."""
    return None if admin_url is None else _admin_of(admin_url).server


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
        servers: dict[str, dict[str, Credentials]] = {}
        for database, creds in owners.items():
            servers.setdefault(creds.server, {})[database] = creds
        for server, entries in servers.items():
            secret_sources.write_local_store(state_dir, server, entries)
        return f"{state_dir / secret_sources.STORE_NAME} [{', '.join(servers)}]"
    paths = {database: path_of(database) or conn.path("local", database) for database in owners}
    with vault.session(conn) as client:
        vault.ensure_kv_v2(client, conn)
        stored = _read_secrets(client, conn, paths)
        for server in {creds.server for creds in owners.values()}:
            _refuse_other_servers(conn, server, paths, stored)
        for database, creds in owners.items():
            if stored[database] is None:
                vault.write_secret(
                    client, conn, paths[database], secret_sources.secret_of(database, creds)
                )
    return f"Vault {conn.address} {conn.display_path('local', '<database>')}"


def check_vault_server(
    state_dir: Path,
    admin_url: SecretStr | None,
    conn: VaultSettings,
    databases: Iterable[str],
    path_of: Callable[[str], str | None] = lambda _database: None,
) -> None:
    """Before anything is made: LocalServerMismatch when a local secret in Vault names another
    server than the one the command will use (the admin URL's, else the embedded cluster's
    once it exists; a cluster still to be made is checked by `seed`)."""
    server = _admin_of(admin_url).server if admin_url is not None else _embedded_server(state_dir)
    if server is None:
        return
    paths = {database: path_of(database) or conn.path("local", database) for database in databases}
    with vault.session(conn) as client:
        _refuse_other_servers(conn, server, paths, _read_secrets(client, conn, paths))


def _read_secrets(
    client: object, conn: VaultSettings, paths: Mapping[str, str]
) -> dict[str, dict[str, str] | None]:
    """Each database's secret at its path (database -> path), None where there is none."""
    found: dict[str, dict[str, str] | None] = {}
    for database, path in paths.items():
        try:
            found[database] = vault.read_secret(client, conn, path)
        except SecretMissing:
            found[database] = None
    return found


def _refuse_other_servers(
    conn: VaultSettings,
    server: str,
    paths: Mapping[str, str],
    stored: Mapping[str, dict[str, str] | None],
) -> None:
    """LocalServerMismatch when a stored secret names another server than `server`
    (HOST:PORT): seeding never rewrites a secret, so a run would read that other server's
    database and answer for it."""
    elsewhere: dict[str, str] = {}
    for database, secret in stored.items():
        try:
            named = Credentials.from_url(
                (secret or {}).get(secret_sources.secret_keys(database)[0], "")
            )
        except DatabaseUrlInvalid:
            continue  # none there, or a bad URL that the gate reports where it reads it
        if named.server != server:
            path = paths[database]
            elsewhere[path] = f"{database} ({conn.kv_mount}/{path}) names {named.server}"
    if elsewhere:
        deletes = "; ".join(
            f"`vault kv metadata delete -mount={conn.kv_mount} {path}`" for path in elsewhere
        )
        raise LocalServerMismatch(
            f"the local credentials in Vault {conn.address} name another server than "
            f"{server}, the one this command uses: {'; '.join(elsewhere.values())}; no secret "
            f"was written and nothing migrated. To use {server}, delete them ({deletes}) and "
            "run again: seeding then writes its own; or give the command the server they name "
            "(its --admin-url, or none for the embedded cluster)"
        )


_named_server: ContextVar[str | None] = ContextVar("ameide_local_server", default=None)


@contextmanager
def reading_server(server: str | None) -> Iterator[None]:
    """Within it, the local store is read for `server` (HOST:PORT), the one the command seeded
    (from its --admin-url, say), whatever AMEIDE_LOCAL_ADMIN_URL names; None changes nothing."""
    token = _named_server.set(server)
    try:
        yield
    finally:
        _named_server.reset(token)


def store_source(state_dir: Path, admin_url: SecretStr | None) -> secret_sources.LocalStoreSource:
    """The local store's entries of the server the local environment uses: the one the command
    named (`reading_server`), else the admin URL's, else the embedded cluster's. Never another
    server's: entries seeded on one server say nothing about the databases of another."""
    embedded = _embedded_server(state_dir)
    server = _named_server.get()
    if server is None and admin_url is not None:
        server = _admin_of(admin_url).server
    if server is None:
        server = embedded
    if server is None:
        stored = secret_sources.stored_servers(state_dir)
        held = f" (the local store holds the entries of {', '.join(stored)})" if stored else ""
        raise CredentialsMissing(
            "the local environment has no PostgreSQL yet, neither the embedded cluster nor "
            f"AMEIDE_LOCAL_ADMIN_URL{held}: run `ameide-migrate local up` for the embedded "
            "cluster, or set AMEIDE_LOCAL_ADMIN_URL to an existing server's superuser URL and "
            "run `ameide-migrate secrets seed-local`"
        )
    if server == embedded:
        return secret_sources.LocalStoreSource(state_dir, server)
    host, _, port = server.rpartition(":")
    seed = (
        "ameide-migrate secrets seed-local --admin-url "
        f"postgresql://postgres:PASSWORD@{host}:{port}/postgres"
    )
    return secret_sources.LocalStoreSource(state_dir, server, seed)


def _embedded_server(state_dir: Path) -> str | None:
    """The embedded cluster's HOST:PORT, once it was made."""
    port = cluster_dir(state_dir) / "port"
    return f"127.0.0.1:{port.read_text().strip()}" if port.is_file() else None


def down(state_dir: Path) -> list[str]:
    """Stop the local worker, Prefect server and PostgreSQL; data stays for the next `up`."""
    stopped = []
    if local_server.stop_worker(state_dir / "prefect"):
        stopped.append("Prefect worker")
    if local_server.stop_server(state_dir / "prefect"):
        stopped.append("Prefect server")
    cluster = local_cluster(state_dir)
    if cluster.initialised() and cluster.running():
        cluster.stop()
        stopped.append("PostgreSQL")
    return stopped
