"""Where each environment's database credentials live, under the names the platform gives them:
`<DB>_DATABASE_URL`, `_USER`, `_PASSWORD`, in Vault (`VaultSource`) or the local store
(`LocalStoreSource`); the secret gate (`credential_gate`) reads them through a `SecretSource`.

The local environment derives them deterministically (the same values every run, like the seed's
`ensure-local-secrets.py`) and keeps them in a local secret store: a file outside the repository,
mode 0600, laid out like the Vault secrets of the other environments, one set a server (HOST:PORT):
the entries seeded on one server are never read for another.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Protocol

from pydantic import SecretStr

from ameide_migrate.adapters import vault
from ameide_migrate.adapters.postgres.connection import Credentials
from ameide_migrate.config.vault_settings import VaultSettings
from ameide_migrate.core.catalog import key_prefix
from ameide_migrate.core.errors import LocalStoreExposed, LocalStoreInvalid, SecretMissing

STORE_NAME = "local-secrets.json"
STORE_VERSION = 2
"""The store's layout: `{"version": 2, "servers": {HOST:PORT: {database: secret}}}`. The first
layout, `{database: secret}`, is read as the entries of the servers their URLs name."""

Store = dict[str, dict[str, dict[str, str]]]
"""HOST:PORT -> database -> the secret's keys."""


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


def secret_of(database: str, creds: Credentials) -> dict[str, str]:
    """The secret as Vault and the local store hold it: `<DB>_DATABASE_URL`, `_USER`,
    `_PASSWORD`."""
    url_key, user_key, password_key = secret_keys(database)
    return {
        url_key: creds.url,
        user_key: creds.user,
        password_key: creds.password.get_secret_value(),
    }


def _read_store(path: Path) -> Store:
    """The store's entries by server; refused, as ssh refuses a private key, when others may
    read or write it, and named with its fix when it is not the JSON this module writes."""
    try:
        found = path.stat()
    except FileNotFoundError:
        return {}
    mode = stat.S_IMODE(found.st_mode)
    if mode & 0o077:
        raise LocalStoreExposed(
            f"the local secret store {path} is open to other users (mode {mode:04o}); it holds "
            f"database passwords and must be 0600: run `chmod 600 {path}`"
        )
    stored, _ = _parsed_store(path, found.st_mtime_ns, found.st_size)
    return {server: dict(entries) for server, entries in stored.items()}


def _first_layout(path: Path) -> bool:
    """The store is of the first layout (`{database: secret}`), to be rewritten in the second."""
    found = path.stat()
    return _parsed_store(path, found.st_mtime_ns, found.st_size)[1]


@lru_cache(maxsize=4)
def _parsed_store(path: Path, _mtime_ns: int, _size: int) -> tuple[Store, bool]:
    """The store as read when it last changed (a fleet's thousand targets read it once, not a
    thousand times), and whether it is of the first layout."""
    try:
        stored = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise LocalStoreInvalid(
            f"the local secret store {path} is not valid JSON ({e}): remove it and run "
            "`ameide-migrate secrets seed-local`, which writes it again (the local credentials "
            "are the same on every machine)"
        ) from None
    if isinstance(stored, dict) and stored.get("version") == STORE_VERSION:
        servers = stored.get("servers")
        if isinstance(servers, dict) and all(
            isinstance(entries, dict) and _secrets(entries) for entries in servers.values()
        ):
            return servers, False
    elif isinstance(stored, dict) and _secrets(stored):
        return _by_server(stored), True
    raise LocalStoreInvalid(
        f"the local secret store {path} is not a JSON object of servers (HOST:PORT), each an "
        "object of databases, each an object of <DB>_DATABASE_URL, _USER and _PASSWORD strings: "
        "remove it and run `ameide-migrate secrets seed-local`, which writes it again"
    )


def _secrets(entries: dict[object, object]) -> bool:
    return all(
        isinstance(entry, dict) and all(isinstance(v, str) for v in entry.values())
        for entry in entries.values()
    )


def _by_server(entries: Mapping[str, dict[str, str]]) -> Store:
    """The first layout's entries under the servers their URLs name; an entry whose URL
    cannot be read stays with the others when they all name one server (the gate then reports
    its URL), else it belongs to none and is seeded again."""
    found: Store = {}
    unplaced: dict[str, dict[str, str]] = {}
    for database, entry in entries.items():
        server = _server_of_entry(database, entry)
        if server is None:
            unplaced[database] = entry
        else:
            found.setdefault(server, {})[database] = entry
    if len(found) == 1:
        next(iter(found.values())).update(unplaced)
    return found


def _server_of_entry(database: str, entry: Mapping[str, str]) -> str | None:
    try:
        return Credentials.from_url(entry.get(secret_keys(database)[0], "")).server
    except ValueError:
        return None


def write_local_store(state_dir: Path, server: str, credentials: Mapping[str, Credentials]) -> Path:
    """Fill in what the local store lacks for these databases of `server` (HOST:PORT); the
    file is created 0600, and a store of the first layout is rewritten in the second.

    An entry or key already there is kept as it is, even when it is wrong: the secret gate
    reports a bad one as it would in staging, instead of it being silently put back.
    """
    path = state_dir / STORE_NAME
    state_dir.mkdir(parents=True, exist_ok=True)
    stored = _read_store(path)
    entries = stored.setdefault(server, {})
    changed = not path.exists() or _first_layout(path)
    for database, creds in credentials.items():
        if database not in entries:
            entries[database] = secret_of(database, creds)
            changed = True
    if not changed:
        return path
    scratch = path.with_suffix(".tmp")
    fd = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"version": STORE_VERSION, "servers": stored}, f, indent=2, sort_keys=True)
    scratch.replace(path)
    return path


def read_local_entry(state_dir: Path, server: str, database: str) -> dict[str, str] | None:
    entry = _read_store(state_dir / STORE_NAME).get(server, {}).get(database)
    return None if entry is None else {str(k): str(v) for k, v in entry.items()}


def stored_servers(state_dir: Path) -> list[str]:
    """The servers (HOST:PORT) with entries in the local store."""
    return sorted(_read_store(state_dir / STORE_NAME))


def servers_holding(state_dir: Path, database: str) -> list[str]:
    """The servers whose entries in the local store hold `database`."""
    return sorted(
        s for s, entries in _read_store(state_dir / STORE_NAME).items() if database in entries
    )


class SecretSource(Protocol):
    environment: str

    def location(self, database: str) -> str:
        """Where the database's secret lives, for messages."""

    def fetch(self, database: str) -> dict[str, str]:
        """The secret's keys; SecretMissing or VaultPermissionDenied for that database alone."""

    def fix(self, database: str, key: str | None) -> str:
        """What to do when the secret (or `key`) is missing or wrong."""


@dataclass
class LocalStoreSource:
    """The local environment without Vault: the entries of one server (HOST:PORT) in the 0600
    file that `secrets seed-local` writes. `seed` is the command that writes them."""

    state_dir: Path
    server: str
    seed: str = "ameide-migrate secrets seed-local"
    environment: str = "local"

    def location(self, database: str) -> str:
        return f"{self.state_dir / STORE_NAME} [{database} on {self.server}]"

    def fetch(self, database: str) -> dict[str, str]:
        entry = read_local_entry(self.state_dir, self.server, database)
        if entry is None:
            raise SecretMissing(f"no entry for {database} in {self.location(database)}")
        return entry

    def fix(self, database: str, key: str | None) -> str:
        if key is None:
            elsewhere = [s for s in servers_holding(self.state_dir, database) if s != self.server]
            seeded = (
                f" (the store holds {database}'s of {', '.join(elsewhere)}, another server)"
                if elsewhere
                else ""
            )
            return f"run `{self.seed}` to write the local credentials of {self.server}{seeded}"
        return (
            f"correct {key} in the store, or remove the {database} entry of {self.server} and "
            f"run `{self.seed}` (it writes only what is missing)"
        )


class VaultSource:
    """One KV v2 secret per database, read through a logged-in session."""

    def __init__(
        self,
        environment: str,
        conn: VaultSettings,
        client: object,
        path_of: Callable[[str], str | None] = lambda _database: None,
    ) -> None:
        self.environment = environment
        self.conn = conn
        self._client = client
        self._path_of = path_of

    def path(self, database: str) -> str:
        """The database's secret path: a fleet's `vault_path` for its targets, else the
        environment's path_template."""
        return self._path_of(database) or self.conn.path(self.environment, database)

    def _display(self, database: str) -> str:
        return f"{self.conn.kv_mount}/{self.path(database)}"

    def location(self, database: str) -> str:
        return f"Vault {self.conn.address} {self._display(database)}"

    def fetch(self, database: str) -> dict[str, str]:
        return vault.read_secret(self._client, self.conn, self.path(database))

    def fix(self, database: str, key: str | None) -> str:
        if self.environment == "local":
            if key is None:
                return "run `ameide-migrate secrets seed-local` (with VAULT_ADDR set) to write it"
            return (
                f"correct {key} at {self._display(database)}, or "
                "delete that secret and run `ameide-migrate secrets seed-local` (with VAULT_ADDR "
                "set; it writes only what is missing)"
            )
        what = f"key {key}" if key else "the secret"
        return (
            f"reconcile the secret bundle of {self.environment} (vault-secrets-platform, Layer 15) "
            f"so that it writes {what} at {self._display(database)}"
        )
