"""How a role connects to a database: its credentials, the connection, and psycopg's errors as
this project's (transient, refused, or another failure naming the database); the one-off reads
that need nothing more (the server's version, a registry query's first column).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

import psycopg
from psycopg import sql
from pydantic import SecretStr

from ameide_migrate.core.errors import (
    DatabaseError,
    DatabaseRefusedConnection,
    DatabaseUnreachable,
    DatabaseUrlInvalid,
)


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


@contextmanager
def reading(creds: Credentials, what: str) -> Iterator[None]:
    """psycopg's errors while reading `what` as this package's: an interrupted read is
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


def server_major(creds: Credentials, *, timeout: int = 5) -> int:
    """The server's PostgreSQL major version (15 for 15.18)."""
    with connect(creds, timeout=timeout, read_only=True) as conn:
        row = conn.execute("SHOW server_version_num").fetchone()
    return int(row[0]) // 10000 if row else 0


def first_column(creds: Credentials, query: str, *, timeout: int = 5) -> list[str]:
    """The first column of a query's rows as text, read-only (a fleet's targets from its
    registry)."""
    with connect(creds, timeout=timeout, read_only=True) as conn, reading(creds, "the query"):
        rows = conn.execute(query.encode()).fetchall()  # the site's own query, as written
    return [str(row[0]) for row in rows if row and row[0] is not None]
