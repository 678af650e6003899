"""Database credentials as the platform names them: `<DB>_DATABASE_URL`, `_USER`, `_PASSWORD`.

The local environment derives them deterministically (the same values every run, like the seed's
`ensure-local-secrets.py`) and keeps them in a local secret store: a file outside the repository,
mode 0600, laid out like the Vault secrets of the other environments.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from pydantic import SecretStr

from ameide_migrate.errors import CredentialsMissing
from ameide_migrate.postgres import Credentials

STORE_NAME = "local-secrets.json"


def key_prefix(database: str) -> str:
    return database.upper().replace("-", "_")


def secret_keys(database: str) -> tuple[str, str, str]:
    prefix = key_prefix(database)
    return (f"{prefix}_DATABASE_URL", f"{prefix}_DATABASE_USER", f"{prefix}_DATABASE_PASSWORD")


def local_credentials(database: str, *, host: str, port: int, prefix: str = "") -> Credentials:
    """The deterministic local owner of `database`: the same role and password on every machine.

    Local only: these values protect nothing but a developer's loopback server.
    """
    physical = f"{prefix}{database}"
    digest = hashlib.sha256(f"ameide-local-credentials/{physical}".encode()).hexdigest()
    return Credentials(
        host=host,
        port=port,
        database=physical,
        user=f"{physical}_owner",
        password=SecretStr(f"local-{digest[:24]}"),
    )


def write_local_store(state_dir: Path, credentials: Mapping[str, Credentials]) -> Path:
    """Merge these databases' secrets into the local store; the file is created 0600."""
    path = state_dir / STORE_NAME
    state_dir.mkdir(parents=True, exist_ok=True)
    stored: dict[str, dict[str, str]] = {}
    if path.exists():
        stored = json.loads(path.read_text())
    for database, creds in credentials.items():
        url_key, user_key, password_key = secret_keys(database)
        stored[database] = {
            url_key: creds.url,
            user_key: creds.user,
            password_key: creds.password.get_secret_value(),
        }
    fd = os.open(path.with_suffix(".tmp"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(stored, f, indent=2, sort_keys=True)
    path.with_suffix(".tmp").replace(path)
    return path


def read_local_store(state_dir: Path, databases: Iterable[str]) -> dict[str, Credentials]:
    """The stored credentials of each database, or CredentialsMissing listing what to run."""
    path = state_dir / STORE_NAME
    stored: dict[str, dict[str, str]] = json.loads(path.read_text()) if path.exists() else {}
    found: dict[str, Credentials] = {}
    problems: list[str] = []
    for database in databases:
        url_key, user_key, password_key = secret_keys(database)
        entry = stored.get(database, {})
        missing = [k for k in (url_key, user_key, password_key) if not entry.get(k)]
        if missing:
            problems.append(f"{database}: {', '.join(missing)}")
            continue
        found[database] = Credentials.from_url(
            entry[url_key], user=entry[user_key], password=entry[password_key]
        )
    if problems:
        raise CredentialsMissing(
            f"environment local: the local secret store {path} lacks "
            f"{'; '.join(problems)}. Run `ameide-migrate run --env local` (it seeds them) "
            "or `ameide-migrate local up`"
        )
    return found
