"""PostgreSQL as a client sees it: connections, roles and databases, Flyway's history table,
and the schema's fingerprint. The server this project starts itself is `pg_cluster`.

Everything that talks to PostgreSQL without Flyway lives here. SQL is composed with
`psycopg.sql`, never by formatting strings.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import unquote, urlsplit

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb
from pydantic import SecretStr

from ameide_migrate.core.errors import (
    DatabaseError,
    DatabaseRefusedConnection,
    DatabaseUnreachable,
    DatabaseUrlInvalid,
)
from ameide_migrate.core.history import HistoryRow
from ameide_migrate.core.indexes import IndexOnTable, InvalidIndex, NamedIndex, drop_index_sql
from ameide_migrate.core.locking import RelationFacts


@dataclass(frozen=True)
class Credentials:
    """How one role connects to one database; `url` carries no password."""

    host: str
    port: int
    database: str
    user: str
    password: SecretStr

    @property
    def url(self) -> str:
        return f"postgresql://{self.host}:{self.port}/{self.database}"

    @property
    def server(self) -> str:
        """HOST:PORT, as every outcome names the server it read."""
        return f"{self.host}:{self.port}"

    @property
    def jdbc_url(self) -> str:
        return f"jdbc:postgresql://{self.host}:{self.port}/{self.database}"

    def conninfo(self, connect_timeout: int) -> dict[str, str | int]:
        return {
            "host": self.host,
            "port": self.port,
            "dbname": self.database,
            "user": self.user,
            "password": self.password.get_secret_value(),
            "connect_timeout": connect_timeout,
            "application_name": "ameide-migrate",
        }

    @classmethod
    def from_url(
        cls, url: str, *, user: str | None = None, password: str | None = None
    ) -> Credentials:
        """Parse `postgresql://[user[:password]@]host[:port]/database`; DatabaseUrlInvalid
        (a ValueError) says what is wrong without repeating the URL, which may hold a password."""
        try:
            parts = urlsplit(url)
            port = parts.port or 5432
        except ValueError:
            # urlsplit's own message would quote the netloc, password included.
            raise DatabaseUrlInvalid(
                "the URL's host or port cannot be read (postgresql://HOST:PORT/DATABASE, the port "
                "a number from 1 to 65535)"
            ) from None
        if parts.scheme not in ("postgresql", "postgres"):
            raise DatabaseUrlInvalid(
                "the scheme is not postgresql://: expected "
                "postgresql://USER:PASSWORD@HOST:PORT/DATABASE"
            )
        if not parts.hostname:
            raise DatabaseUrlInvalid(
                "the URL names no host: expected postgresql://USER:PASSWORD@HOST:PORT/DATABASE"
            )
        database = unquote(parts.path.lstrip("/"))
        if not database:
            raise DatabaseUrlInvalid("the URL names no database (postgresql://HOST:PORT/DATABASE)")
        return cls(
            host=parts.hostname,
            port=port,
            database=database,
            user=user or unquote(parts.username or ""),
            password=SecretStr(password if password is not None else unquote(parts.password or "")),
        )

    def with_database(self, database: str) -> Credentials:
        return Credentials(self.host, self.port, database, self.user, self.password)


# libpq reports connection failures as text, without a SQLSTATE; these say "try again later".
# Anything else (a wrong password, a missing database, pg_hba refusing) is not retried.
_TRANSIENT_CONNECT = (
    "connection refused",
    "could not connect",
    "timeout expired",
    "connection timed out",
    "server closed the connection unexpectedly",
    "connection reset",
    "the database system is starting up",
    "the database system is shutting down",
    "the database system is in recovery mode",
    "too many clients",
    "remaining connection slots are reserved",
)


def _is_transient(error: psycopg.OperationalError) -> bool:
    if error.sqlstate:
        return error.sqlstate in ("57P01", "57P02", "57P03", "53300") or (
            error.sqlstate.startswith("08") and error.sqlstate != "08004"
        )
    text = str(error).lower()
    refused = ("password authentication failed", "does not exist", "no pg_hba.conf entry")
    return not any(r in text for r in refused) and any(t in text for t in _TRANSIENT_CONNECT)


def _refused(
    creds: Credentials, error: psycopg.OperationalError
) -> DatabaseRefusedConnection | None:
    """The database refused this login for its own sake (libpq gives the server's text, no
    SQLSTATE): 42501 when its CONNECT privilege is revoked, 55000 when it takes no connections."""
    text = str(error)
    fatal = next((line for line in text.splitlines() if "FATAL:" in line), text)
    reason = " ".join(fatal.split("FATAL:", 1)[-1].split())
    refused = f"database {creds.database} at {creds.host}:{creds.port} refused {creds.user}"
    database = sql.Identifier(creds.database)
    if "permission denied for database" in text:
        grant = sql.SQL("GRANT CONNECT ON DATABASE {} TO {};").format(
            database, sql.Identifier(creds.user)
        )
        return DatabaseRefusedConnection(
            f"{refused}: {reason}; the login lacks the CONNECT privilege, the credentials are "
            "not the cause",
            fix=f"run `{grant.as_string(None)}` as its owner or an administrator",
        )
    if "is not currently accepting connections" in text:
        allow = (
            sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS true;").format(database).as_string(None)
        )
        return DatabaseRefusedConnection(
            f"{refused}: {reason}; its ALLOW_CONNECTIONS is false, the credentials are not the "
            "cause",
            fix=f"once whatever closed it is over, run `{allow}` as an administrator",
        )
    return None


@contextmanager
def connect(
    creds: Credentials, *, timeout: int = 5, read_only: bool = False
) -> Iterator[psycopg.Connection]:
    """A connection, or DatabaseUnreachable (transient) / DatabaseRefusedConnection /
    DatabaseError naming the database."""
    try:
        conn = psycopg.connect(**creds.conninfo(timeout), autocommit=not read_only)  # type: ignore[arg-type]
    except psycopg.OperationalError as e:
        reason = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        refused = _refused(creds, e)
        if refused is not None:
            raise refused from None
        if _is_transient(e):
            raise DatabaseUnreachable(
                f"database {creds.database} at {creds.host}:{creds.port} is unreachable: {reason}. "
                "Check that the server is up and the address is right"
            ) from None
        raise DatabaseError(
            f"cannot connect to database {creds.database} at {creds.host}:{creds.port} "
            f"as {creds.user}: {reason}"
        ) from None
    try:
        if read_only:
            conn.read_only = True
            with conn.cursor() as cur:
                cur.execute("SET statement_timeout = '10s'")
                cur.execute("SET lock_timeout = '2s'")
        yield conn
    except psycopg.OperationalError as e:
        # The server went away while in use (a restart terminates its sessions: 57P01): as
        # transient as failing to connect, and retried the same way.
        if not _is_transient(e):
            raise
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DatabaseUnreachable(
            f"database {creds.database} at {creds.host}:{creds.port} went away while in use: "
            f"{reason}. Check that the server is up"
        ) from None
    finally:
        conn.close()


def read_history(creds: Credentials, table: str, *, timeout: int = 5) -> list[HistoryRow] | None:
    """Flyway's schema history of the database, read-only; None when the table does not exist."""
    with connect(creds, timeout=timeout, read_only=True) as conn:
        return history_on(conn, creds, table)


def end_sessions(
    creds: Credentials, application_name: str, *, timeout: int = 5, wait_seconds: float = 30
) -> int:
    """End the database's sessions named `application_name` (those of a run that was stopped:
    PostgreSQL runs the statement of a client that died to its end, its locks held, before it
    rolls it back) and wait until they are gone; how many are still there after
    `wait_seconds` (0 when none is)."""
    query = (
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
        "WHERE datname = current_database() AND application_name = %s AND pid <> pg_backend_pid()"
    )
    deadline = time.monotonic() + wait_seconds
    with connect(creds, timeout=timeout) as conn, _reading(creds, "its sessions"):
        while True:
            row = conn.execute(query, (application_name,)).fetchone()
            left = int(row[0]) if row else 0
            if not left or time.monotonic() > deadline:
                return left
            time.sleep(0.5)


def _history_identifier(table: str) -> sql.Identifier:
    """`schema.table` names a history table Flyway keeps in its defaultSchema, outside the
    search path."""
    return sql.Identifier(*table.split(".", 1))


def history_on(conn: psycopg.Connection, creds: Credentials, table: str) -> list[HistoryRow] | None:
    """The history read on an open connection (which SELECTs only); None without the table."""
    # The table is read at once, its absence is PostgreSQL's error: in a transaction, behind a
    # savepoint, so that the transaction goes on after it.
    guard = nullcontext() if conn.autocommit else conn.transaction()
    try:
        with guard, conn.cursor() as cur:
            cur.execute(
                sql.SQL(
                    "SELECT installed_rank, version, description, type, script, checksum, success,"
                    " installed_on FROM {} ORDER BY installed_rank"
                ).format(_history_identifier(table))
            )
            return [HistoryRow(*r) for r in cur.fetchall()]
    except (psycopg.errors.UndefinedTable, psycopg.errors.InvalidSchemaName):
        return None
    except psycopg.errors.OperationalError as e:
        raise DatabaseUnreachable(
            f"database {creds.database}: reading {table} was interrupted: {e}"
        ) from None
    except psycopg.Error as e:
        raise DatabaseError(f"database {creds.database}: cannot read {table}: {e}") from None


def ensure_roles_and_databases(admin: Credentials, owners: list[Credentials]) -> bool:
    """Create each owner's role and database where missing; True when something was created.

    An existing role keeps its password, as an existing secret keeps its keys: a wrong one is
    the secret gate's to report, not for seeding to put back silently. What exists is read in
    two queries, so that a fleet's thousand targets cost two round trips when all are there.
    """
    created = False
    with connect(admin) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT rolname FROM pg_roles WHERE rolname = ANY(%s)", ([o.user for o in owners],)
        )
        roles = {str(row[0]) for row in cur.fetchall()}
        cur.execute(
            "SELECT datname FROM pg_database WHERE datname = ANY(%s)",
            ([o.database for o in owners],),
        )
        databases = {str(row[0]) for row in cur.fetchall()}
        for owner in owners:
            if owner.user not in roles:
                # A SCRAM verifier computed here: the plain password never reaches the server,
                # its statistics or its logs.
                verifier = conn.pgconn.encrypt_password(
                    owner.password.get_secret_value().encode(),
                    owner.user.encode(),
                    b"scram-sha-256",
                )
                cur.execute(
                    sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                        sql.Identifier(owner.user), sql.Literal(verifier.decode())
                    )
                )
                roles.add(owner.user)
                created = True
            if owner.database not in databases:
                cur.execute(
                    sql.SQL("CREATE DATABASE {} OWNER {}").format(
                        sql.Identifier(owner.database), sql.Identifier(owner.user)
                    )
                )
                databases.add(owner.database)
                created = True
    return created


def drop_database(admin: Credentials, database: str) -> bool:
    """Drop the database, ending its sessions first (PostgreSQL 13+); True when it existed.
    Its owner stays, so `ensure_roles_and_databases` makes it again, empty, with the same
    credentials."""
    with connect(admin) as conn, conn.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,))
        if cur.fetchone() is None:
            return False
        cur.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(database)))
    return True


# What pg_get_indexdef, pg_get_constraintdef and pg_get_triggerdef leave out is added where it
# differs from the normal state (an INVALID index, a disabled trigger; pg_get_constraintdef says
# NOT VALID itself), so a fingerprint recorded before these were seen compares equal.
# Every object a migration defines, in the schemas Flyway manages (all but the system's and our
# own bookkeeping), each with a definition that changes when the object does.
_FINGERPRINT_SQL = """
WITH s AS (
    SELECT oid, nspname FROM pg_namespace
    WHERE nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast', 'ameide_migrate')
      AND nspname NOT LIKE 'pg_temp_%%' AND nspname NOT LIKE 'pg_toast_temp_%%'
)
SELECT 'table ' || s.nspname || '.' || c.relname, c.relkind::text
FROM pg_class c JOIN s ON s.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'm', 'S') AND c.relname <> %(history)s
UNION ALL
SELECT 'column ' || s.nspname || '.' || c.relname || '.' || a.attname,
       format_type(a.atttypid, a.atttypmod) || CASE WHEN a.attnotnull THEN ' not null' ELSE '' END
       || coalesce(' default ' || pg_get_expr(d.adbin, d.adrelid), '')
FROM pg_attribute a
JOIN pg_class c ON c.oid = a.attrelid JOIN s ON s.oid = c.relnamespace
LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
WHERE c.relkind IN ('r', 'p', 'v', 'm') AND a.attnum > 0 AND NOT a.attisdropped
  AND c.relname <> %(history)s
UNION ALL
SELECT 'index ' || s.nspname || '.' || c.relname,
       pg_get_indexdef(c.oid) || CASE WHEN i.indisvalid THEN '' ELSE ' INVALID' END
FROM pg_class c JOIN s ON s.oid = c.relnamespace JOIN pg_index i ON i.indexrelid = c.oid
JOIN pg_class t ON t.oid = i.indrelid
WHERE c.relkind IN ('i', 'I') AND t.relname <> %(history)s
UNION ALL
SELECT 'constraint ' || s.nspname || '.' || t.relname || '.' || k.conname,
       pg_get_constraintdef(k.oid)
FROM pg_constraint k JOIN pg_class t ON t.oid = k.conrelid JOIN s ON s.oid = t.relnamespace
WHERE t.relname <> %(history)s
UNION ALL
SELECT 'function ' || s.nspname || '.' || p.proname
       || '(' || pg_get_function_identity_arguments(p.oid) || ')',
       md5(pg_get_functiondef(p.oid))
FROM pg_proc p JOIN s ON s.oid = p.pronamespace WHERE p.prokind IN ('f', 'p')
UNION ALL
SELECT 'view ' || s.nspname || '.' || c.relname, md5(pg_get_viewdef(c.oid))
FROM pg_class c JOIN s ON s.oid = c.relnamespace WHERE c.relkind = 'v'
UNION ALL
SELECT 'trigger ' || s.nspname || '.' || c.relname || '.' || tg.tgname,
       pg_get_triggerdef(tg.oid) || CASE tg.tgenabled WHEN 'D' THEN ' DISABLED'
           WHEN 'R' THEN ' ENABLED ON REPLICA ONLY' WHEN 'A' THEN ' ENABLED ALWAYS' ELSE '' END
FROM pg_trigger tg JOIN pg_class c ON c.oid = tg.tgrelid JOIN s ON s.oid = c.relnamespace
WHERE NOT tg.tgisinternal
"""


# Indexes PostgreSQL marked INVALID: what a CREATE INDEX CONCURRENTLY (or REINDEX CONCURRENTLY)
# that failed or was cancelled leaves; PostgreSQL keeps updating them on every write and never
# uses them, and `CREATE INDEX ... IF NOT EXISTS` skips them. A build still running is invalid
# too until it ends: those are left out. Partitioned indexes ('I') are invalid by design until
# every partition's index is attached.
_INVALID_INDEXES_SQL = """
SELECT n.nspname, c.relname, t.relname, pg_get_indexdef(c.oid)
FROM pg_index i
JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_class t ON t.oid = i.indrelid
WHERE NOT i.indisvalid AND c.relkind = 'i'
  AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
  AND NOT EXISTS (
      SELECT 1 FROM pg_stat_progress_create_index p WHERE p.index_relid = i.indexrelid
  )
ORDER BY 1, 2
"""


# An index is created in its table's schema whatever the search_path says: each name is looked
# for there, the table resolved as the migration's session resolves it.
_NAMED_INDEX_SQL = """
SELECT w.index, w.tbl, n.nspname, c.relname, t.relname, i.indisvalid
FROM unnest(%(indexes)s::text[], %(tables)s::text[]) AS w(index, tbl)
JOIN pg_class r ON r.oid = to_regclass(w.tbl)
JOIN pg_class c ON c.relnamespace = r.relnamespace AND c.relname = (parse_ident(w.index))[1]
JOIN pg_index i ON i.indexrelid = c.oid
JOIN pg_class t ON t.oid = i.indrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
"""


def indexes_named(
    creds: Credentials, wanted: Sequence[IndexOnTable], *, timeout: int = 5
) -> dict[IndexOnTable, NamedIndex]:
    """Of `wanted`, those an index has now in its table's schema; read-only."""
    with connect(creds, timeout=timeout, read_only=True) as conn:
        return indexes_named_on(conn, creds, wanted)


def indexes_named_on(
    conn: psycopg.Connection, creds: Credentials, wanted: Sequence[IndexOnTable]
) -> dict[IndexOnTable, NamedIndex]:
    """As `indexes_named`, on an open connection, in one query."""
    indexes, tables = [index for index, _ in wanted], [table for _, table in wanted]
    with _reading(creds, "its indexes"):
        rows = conn.execute(_NAMED_INDEX_SQL, {"indexes": indexes, "tables": tables}).fetchall()
    return {(index, table): NamedIndex(*found) for index, table, *found in rows}


def drop_indexes_concurrently(
    creds: Credentials, indexes: Sequence[NamedIndex], *, timeout: int = 5
) -> None:
    """Each index dropped without blocking writes to its table (autocommit: PostgreSQL refuses
    DROP INDEX CONCURRENTLY in a transaction)."""
    with connect(creds, timeout=timeout) as conn, _reading(creds, "its indexes, dropping them"):
        for index in indexes:
            conn.execute(drop_index_sql(index.schema, index.name))


def _invalid_indexes(conn: psycopg.Connection) -> list[InvalidIndex]:
    return [InvalidIndex(*row) for row in conn.execute(_INVALID_INDEXES_SQL).fetchall()]


def invalid_indexes(creds: Credentials, *, timeout: int = 5) -> list[InvalidIndex]:
    """The database's INVALID indexes (builds in progress aside), read-only."""
    with connect(creds, timeout=timeout, read_only=True) as conn:
        return _invalid_indexes(conn)


class Session:
    """One read-only connection to a database, for reads that belong together (a validate's)."""

    def __init__(self, conn: psycopg.Connection, creds: Credentials) -> None:
        self._conn, self._creds = conn, creds

    def history(self, table: str) -> list[HistoryRow] | None:
        return history_on(self._conn, self._creds, table)

    def indexes_named(self, wanted: Sequence[IndexOnTable]) -> dict[IndexOnTable, NamedIndex]:
        return indexes_named_on(self._conn, self._creds, wanted)

    def invalid_indexes(self) -> list[InvalidIndex]:
        with _reading(self._creds, "its indexes"):
            return _invalid_indexes(self._conn)


@contextmanager
def read_only_session(creds: Credentials, *, timeout: int = 5) -> Iterator[Session]:
    with connect(creds, timeout=timeout, read_only=True) as conn:
        yield Session(conn, creds)


@dataclass(frozen=True)
class Fingerprint:
    version: str | None
    recorded_at: str
    objects: dict[str, str]


def live_fingerprint(conn: psycopg.Connection, history_table: str) -> dict[str, str]:
    history = history_table.rsplit(".", 1)[-1]
    rows = conn.execute(_FINGERPRINT_SQL, {"history": history}).fetchall()
    return {str(name): str(definition) for name, definition in rows}


def record_fingerprint(
    creds: Credentials, version: str | None, history_table: str, *, timeout: int = 5
) -> None:
    """Keep the schema as Flyway left it, to tell later what changed outside Flyway."""
    with connect(creds, timeout=timeout) as conn:
        conn.execute("CREATE SCHEMA IF NOT EXISTS ameide_migrate")
        conn.execute(
            "CREATE TABLE IF NOT EXISTS ameide_migrate.schema_fingerprint ("
            " recorded_at timestamptz NOT NULL DEFAULT now(), version text, objects jsonb NOT NULL)"
        )
        conn.execute(
            "INSERT INTO ameide_migrate.schema_fingerprint (version, objects) VALUES (%s, %s)",
            (version, Jsonb(live_fingerprint(conn, history_table))),
        )


@dataclass(frozen=True)
class SchemaState:
    """What the drift check reads of a database, in one read-only connection."""

    history: list[HistoryRow] | None
    recorded: Fingerprint | None
    """The fingerprint recorded after the last migrate."""
    live: dict[str, str]
    invalid_indexes: list[InvalidIndex]


def read_schema_state(creds: Credentials, history_table: str, *, timeout: int = 5) -> SchemaState:
    with connect(creds, timeout=timeout, read_only=True) as conn:
        history = history_on(conn, creds, history_table)
        live = live_fingerprint(conn, history_table)
        invalid = _invalid_indexes(conn)
        exists = conn.execute("SELECT to_regclass('ameide_migrate.schema_fingerprint')").fetchone()
        row = None
        if exists and exists[0] is not None:
            row = conn.execute(
                "SELECT version, recorded_at::text, objects FROM ameide_migrate.schema_fingerprint "
                "ORDER BY recorded_at DESC LIMIT 1"
            ).fetchone()
    recorded = Fingerprint(row[0], row[1], dict(row[2])) if row else None
    return SchemaState(history, recorded, live, invalid)


def server_major(creds: Credentials, *, timeout: int = 5) -> int:
    """The server's PostgreSQL major version (15 for 15.18)."""
    with connect(creds, timeout=timeout, read_only=True) as conn:
        row = conn.execute("SHOW server_version_num").fetchone()
    return int(row[0]) // 10000 if row else 0


# --- What a migration's tables hold, and who holds locks on them --------------------------------

# Each written name resolved as the migration's session resolves it, and its leaves (a
# partitioned table's partitions; a plain table is its own leaf) with their statistics.
_RELATION_LEAVES_SQL = """
SELECT w.name, r.oid::bigint, quote_ident(n.nspname) || '.' || quote_ident(r.relname),
       leaf.relid::regclass::text, l.relkind::text, l.reltuples::float8, l.relpages::bigint,
       pg_relation_size(leaf.relid), pg_total_relation_size(leaf.relid),
       current_setting('block_size')::int
FROM unnest(%(names)s::text[]) AS w(name)
JOIN pg_class r ON r.oid = to_regclass(w.name)
JOIN pg_namespace n ON n.oid = r.relnamespace
CROSS JOIN LATERAL (
    SELECT relid FROM pg_partition_tree(r.oid) WHERE isleaf
    UNION ALL SELECT r.oid WHERE r.relkind NOT IN ('p', 'I')
) AS leaf
JOIN pg_class l ON l.oid = leaf.relid
"""


@contextmanager
def _reading(creds: Credentials, what: str) -> Iterator[None]:
    """psycopg's errors while reading `what` as this module's: an interrupted read is
    transient (retried), any other names the database and what could not be read."""
    try:
        yield
    except psycopg.errors.OperationalError as e:
        raise DatabaseUnreachable(
            f"database {creds.database}: reading {what} was interrupted: {e}"
        ) from None
    except psycopg.Error as e:
        raise DatabaseError(
            f"database {creds.database}: cannot read {what}: {str(e).strip()}"
        ) from None


def relation_facts(
    creds: Credentials,
    names: list[str],
    *,
    schema: str | None,
    count_up_to: int,
    timeout: int = 5,
) -> dict[str, RelationFacts | None]:
    """What the database holds under each written name, resolved in `schema` first (Flyway's
    defaultSchema, where its migrations run) then the role's search path: None where nothing
    exists. Rows are the planner's estimate (its statistics scaled to the pages there are now);
    a table with no statistics yet is counted, up to `count_up_to` rows. Read-only."""
    found: dict[str, RelationFacts | None] = dict.fromkeys(names)
    if not names:
        return found
    leaves: dict[str, list[tuple[Any, ...]]] = {}
    with connect(creds, timeout=timeout, read_only=True) as conn, _reading(creds, "its tables"):
        if schema:
            conn.execute(
                "SELECT set_config('search_path', quote_ident(%s) || ', ' || "
                "current_setting('search_path'), true)",
                (schema,),
            )
        for row in conn.execute(_RELATION_LEAVES_SQL, {"names": names}).fetchall():
            leaves.setdefault(row[0], []).append(row)
        for name, rows in leaves.items():
            oid, qualified = int(rows[0][1]), str(rows[0][2])
            estimates = [_estimated_rows(*row[5:]) for row in rows]
            size = sum(int(row[8]) for row in rows)
            if None not in estimates:
                estimated = sum(e or 0 for e in estimates)
                found[name] = RelationFacts(oid, qualified, estimated, size)
                continue
            counted = None
            if all(row[4] in ("r", "m") for row in rows):
                counted = _count_up_to(conn, qualified, count_up_to)
            found[name] = RelationFacts(oid, qualified, counted, size, counted == count_up_to)
    return found


def _estimated_rows(
    reltuples: float, relpages: int, heap_bytes: int, total_bytes: int, block_size: int
) -> int | None:
    """The planner's estimate: no pages, no rows; else the rows per page of the last statistics
    times the pages now; None when there are no statistics yet."""
    if heap_bytes == 0:
        return 0
    if reltuples >= 0 and relpages > 0:
        return round(reltuples / relpages * (heap_bytes / block_size))
    return None


def _count_up_to(conn: psycopg.Connection, qualified: str, limit: int) -> int | None:
    """The table's rows, counted up to `limit`; None when they cannot be read (no privilege,
    a lock in the way): such a table counts as large."""
    try:
        with conn.transaction():
            row = conn.execute(
                sql.SQL("SELECT count(*) FROM (SELECT 1 FROM {} LIMIT {}) AS counted").format(
                    sql.SQL(qualified), sql.Literal(limit)
                )
            ).fetchone()
    except (
        psycopg.errors.InsufficientPrivilege,
        psycopg.errors.LockNotAvailable,
        psycopg.errors.QueryCanceled,
    ):
        return None
    return int(row[0]) if row else None


@dataclass(frozen=True)
class LockHolder:
    """A session holding, or waiting for, a lock a migration would queue behind."""

    pid: int
    user: str
    """Its role: pg_stat_activity shows every session's role to every login."""
    application: str
    state: str | None
    """None where this login may not see it (pg_read_all_stats shows it)."""
    transaction_seconds: float | None
    """How long its transaction has been open; None where this login may not see it."""
    query_start: datetime | None
    relation: str
    mode: str
    """As pg_locks names it, e.g. AccessShareLock."""
    granted: bool
    """Held; else it waits for the lock itself, queued ahead of the migration."""
    transaction: str
    """pg_locks' virtual transaction id, which every login sees."""
    query: str | None
    """Its last statement, where this login may read it."""
    login: str
    """The role that read this: the one a grant of pg_read_all_stats would go to."""
    at_least_seconds: float | None = None
    """Where its age is hidden: how long it was seen holding this lock in one transaction."""

    @property
    def open_seconds(self) -> float | None:
        """How long its transaction is known to have been open, if at all."""
        return (
            self.transaction_seconds
            if self.transaction_seconds is not None
            else (self.at_least_seconds)
        )

    def describe(self) -> str:
        app = f" ({self.application})" if self.application else ""
        lock = f"holds {self.mode}" if self.granted else f"waits for {self.mode}"
        if self.transaction_seconds is None:
            seen = (
                f"in one transaction for at least {self.at_least_seconds:.0f}s (seen twice)"
                if self.at_least_seconds is not None
                else "its transaction's age unknown"
            )
            return (
                f"pid {self.pid}, user {self.user}{app}, {seen}: its state, transaction start "
                f"and query are hidden from {self.login} (`GRANT pg_read_all_stats TO "
                f"{self.login}` shows them), {lock} on {self.relation}"
            )
        started = (
            f", its query started {self.query_start.isoformat(timespec='seconds')}"
            if self.query_start
            else ""
        )
        state = f", {self.state}" if self.state else ""
        query = f" ({_one_line(self.query)})" if self.query else ""
        return (
            f"pid {self.pid}, user {self.user}{app}{state}, in a transaction for "
            f"{self.transaction_seconds:.0f}s{started}{query}, {lock} on {self.relation}"
        )


def _one_line(query: str, width: int = 80) -> str:
    """The query's start on one line, its string literals (a password, a token) left out."""
    words = " ".join(re.sub(r"'(?:[^']|'')*'?", "'...'", query).split())
    return words if len(words) <= width else words[: width - 3] + "..."


# pg_locks shows every session's locks to every login, pg_stat_activity every session's role
# and application; its state, xact_start and query only for the login's own roles or with
# pg_read_all_stats (NULL, and "<insufficient privilege>", otherwise).
_LOCK_HOLDERS_SQL = """
SELECT l.pid, coalesce(a.usename, ''), coalesce(a.application_name, ''), a.state,
       extract(epoch FROM clock_timestamp() - a.xact_start)::float8, a.query_start,
       l.relation::regclass::text, l.mode, l.granted, l.virtualtransaction,
       CASE WHEN a.state IS NOT NULL THEN a.query END, current_user::text, l.relation::bigint
FROM pg_locks l
LEFT JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'relation' AND l.pid <> pg_backend_pid()
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND l.relation = ANY(%(relations)s::oid[])
ORDER BY l.granted DESC, a.xact_start NULLS LAST, l.pid
"""


def lock_holders(
    creds: Credentials, relations: list[int], *, timeout: int = 5
) -> list[tuple[int, LockHolder]]:
    """(relation oid, session) for every other session holding or waiting for a lock on one of
    `relations`, whatever its role."""
    if not relations:
        return []
    with connect(creds, timeout=timeout, read_only=True) as conn, _reading(creds, "pg_locks"):
        rows = conn.execute(_LOCK_HOLDERS_SQL, {"relations": relations}).fetchall()
    return [(int(r[12]), LockHolder(*r[:12])) for r in rows]


def first_column(creds: Credentials, query: str, *, timeout: int = 5) -> list[str]:
    """The first column of a query's rows as text, read-only (a fleet's targets from its
    registry)."""
    with connect(creds, timeout=timeout, read_only=True) as conn, _reading(creds, "the query"):
        rows = conn.execute(query.encode()).fetchall()  # the site's own query, as written
    return [str(row[0]) for row in rows if row and row[0] is not None]
