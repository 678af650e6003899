"""The secret gate: every targeted database's credentials are read from the environment's secret
source and verified before Flyway runs.

The seed's rule: secrets originate from Vault (or, for the local environment without Vault, the
local store); this only reads and verifies them. Every database is checked and every problem
reported at once, each naming the environment, the database, the path, the key and the fix.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass

import psycopg

from ameide_migrate.adapters import secret_sources, vault
from ameide_migrate.adapters.postgres.connection import Credentials, connect
from ameide_migrate.adapters.secret_sources import SecretSource, VaultSource
from ameide_migrate.config import environments
from ameide_migrate.config.settings import Settings
from ameide_migrate.config.vault_settings import VaultSettings
from ameide_migrate.core.errors import (
    CredentialsMissing,
    DatabaseError,
    DatabaseRefusedConnection,
    DatabaseUnreachable,
    MigrateError,
    SecretMissing,
    SecretsInvalid,
    VaultPermissionDenied,
)
from ameide_migrate.services import local


@dataclass(frozen=True)
class Problem:
    database: str
    location: str
    key: str | None
    what: str
    fix: str

    def __str__(self) -> str:
        key = f" key {self.key}" if self.key else ""
        return f"{self.database}: {self.what} ({self.location}{key}); fix: {self.fix}"


def _names_database(url_database: str, database: str) -> bool:
    """The URL's database is this one, possibly under a prefix (`t1_threads`, `ameide-threads`)."""
    return re.fullmatch(rf"(?:.*[_\-.])?{re.escape(database)}", url_database) is not None


def _parse(
    source: SecretSource, database: str, secret: Mapping[str, str]
) -> tuple[Credentials | None, list[Problem]]:
    url_key, user_key, password_key = secret_sources.secret_keys(database)
    where = source.location(database)
    problems = [
        Problem(database, where, key, "missing or empty", source.fix(database, key))
        for key in (url_key, user_key, password_key)
        if not secret.get(key, "").strip()
    ]
    if problems:
        return None, problems
    try:
        creds = Credentials.from_url(
            secret[url_key], user=secret[user_key], password=secret[password_key]
        )
    except ValueError as e:
        return None, [
            Problem(
                database,
                where,
                url_key,
                f"not a PostgreSQL URL: {e}",
                source.fix(database, url_key),
            )
        ]
    if not _names_database(creds.database, database):
        return None, [
            Problem(
                database,
                where,
                url_key,
                f"names database {creds.database!r}, not {database}",
                source.fix(database, url_key),
            )
        ]
    return creds, []


Unreachable = DatabaseUnreachable | DatabaseRefusedConnection
"""A login the database's server or the database itself turned away (down, CONNECT revoked,
closed to connections): no credential problem, and no secret fix."""


@dataclass(frozen=True)
class GateResult:
    credentials: dict[str, Credentials]
    """Of every database whose login worked (or, without a login, whose secret is sound)."""
    unreachable: dict[str, Unreachable]
    """The databases whose login was turned away, each with why, in the order given."""
    servers: dict[str, str]
    """The server (HOST:PORT) each sound secret names, its login turned away or not."""


def verify_secrets(
    source: SecretSource,
    databases: list[str],
    *,
    connect_timeout: int = 5,
    login: bool = True,
    on_login: Callable[[str, Credentials, psycopg.Connection], None] | None = None,
) -> dict[str, Credentials]:
    """Read, check and try every database's credentials; SecretsInvalid lists every problem,
    then the first database turned away is raised (a server down is transient: retried)."""
    gate = verify_reachable(
        source, databases, connect_timeout=connect_timeout, login=login, on_login=on_login
    )
    for unreachable in gate.unreachable.values():
        raise unreachable
    return gate.credentials


def verify_reachable(
    source: SecretSource,
    databases: list[str],
    *,
    connect_timeout: int = 5,
    login: bool = True,
    on_login: Callable[[str, Credentials, psycopg.Connection], None] | None = None,
) -> GateResult:
    """As `verify_secrets`, but the databases turned away are handed back, not raised: a fleet
    goes on without them (its quarantine).

    Vault-wide faults (unreachable, sealed, a refused login) are raised as they come: they are
    not one database's problem. `on_login` is handed each login's connection before it closes
    (a fleet reads each target's history there: one connection a target, not two); what it
    raises is its own business, not the credentials'.
    """
    problems: list[Problem] = []
    found: dict[str, Credentials] = {}
    for database in databases:
        try:
            secret = source.fetch(database)
        except SecretMissing:
            problems.append(
                Problem(
                    database,
                    source.location(database),
                    None,
                    "no secret",
                    source.fix(database, None),
                )
            )
            continue
        except VaultPermissionDenied as e:
            problems.append(
                Problem(
                    database,
                    source.location(database),
                    None,
                    str(e),
                    "grant the migration role's policy read on that path",
                )
            )
            continue
        creds, bad = _parse(source, database, secret)
        problems += bad
        if creds is not None:
            found[database] = creds

    def try_login(item: tuple[str, Credentials]) -> Problem | Unreachable | None:
        database, creds = item
        try:
            with connect(creds, timeout=connect_timeout) as conn:
                if on_login is not None:
                    with suppress(MigrateError):
                        on_login(database, creds, conn)
                return None
        except (DatabaseUnreachable, DatabaseRefusedConnection) as turned_away:
            return turned_away
        except DatabaseError as e:
            url_key, user_key, password_key = secret_sources.secret_keys(database)
            return Problem(
                database,
                source.location(database),
                None,
                f"the credentials do not work: {e}",
                f"check {url_key}, {user_key} and {password_key} against the server; "
                + source.fix(database, None),
            )

    if not login:  # the drift check reports an unreachable database as its verdict
        logins: dict[str, Problem | Unreachable | None] = {}
    else:
        with ThreadPoolExecutor(max_workers=max(1, min(8, len(found)))) as pool:
            logins = dict(zip(found, pool.map(try_login, found.items()), strict=True))
    problems += [p for p in logins.values() if isinstance(p, Problem)]
    if problems:
        order = {db: i for i, db in enumerate(databases)}
        problems.sort(key=lambda p: order[p.database])
        raise SecretsInvalid(source.environment, [str(p) for p in problems])
    unreachable = {db: login for db, login in logins.items() if isinstance(login, Unreachable)}
    return GateResult(
        {db: creds for db, creds in found.items() if db not in unreachable},
        unreachable,
        {db: creds.server for db, creds in found.items()},
    )


@contextmanager
def secret_source(
    environment: str, settings: Settings, conn: VaultSettings | None = None
) -> Iterator[SecretSource]:
    """Vault when a connection is given or configured; for the local environment only, else
    the local store's entries of the local environment's server (`local.store_source`). Every
    other environment accepts Vault only."""
    env = environments.get(environment, settings)
    conn = conn or settings.vault_connection(env.vault)
    if conn is None:
        if env.local:
            yield local.store_source(settings.state_dir, settings.local_admin_url)
            return
        raise CredentialsMissing(
            f"environment {environment} reads its database credentials from Vault only, and no "
            f"Vault is configured: save the Prefect block vault-{environment} "
            "(blocks/vault.py), or set VAULT_ADDR with VAULT_TOKEN (or AMEIDE_VAULT_AUTH_METHOD)"
        )
    with vault.session(conn) as client:
        yield VaultSource(
            environment, conn, client, environments.vault_path_of(environment, settings)
        )
