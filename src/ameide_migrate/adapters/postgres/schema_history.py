"""Flyway's schema history table, read without Flyway."""

from __future__ import annotations

from contextlib import nullcontext

import psycopg
from psycopg import sql

from ameide_migrate.adapters.postgres.connection import Credentials, connect
from ameide_migrate.core.errors import DatabaseError, DatabaseUnreachable
from ameide_migrate.core.history import HistoryRow


def read_history(creds: Credentials, table: str, *, timeout: int = 5) -> list[HistoryRow] | None:
    """Flyway's schema history of the database, read-only; None when the table does not exist."""
    with connect(creds, timeout=timeout, read_only=True) as conn:
        return history_on(conn, creds, table)


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
