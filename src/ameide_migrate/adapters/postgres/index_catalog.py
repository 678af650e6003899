"""The database's indexes: those PostgreSQL marked INVALID, those a migration names, and
dropping them without blocking writes."""

from __future__ import annotations

from collections.abc import Sequence

import psycopg

from ameide_migrate.adapters.postgres.connection import Credentials, connect, reading
from ameide_migrate.core.indexes import IndexOnTable, InvalidIndex, NamedIndex, drop_index_sql

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
    with reading(creds, "its indexes"):
        rows = conn.execute(_NAMED_INDEX_SQL, {"indexes": indexes, "tables": tables}).fetchall()
    return {(index, table): NamedIndex(*found) for index, table, *found in rows}


def drop_indexes_concurrently(
    creds: Credentials, indexes: Sequence[NamedIndex], *, timeout: int = 5
) -> None:
    """Each index dropped without blocking writes to its table (autocommit: PostgreSQL refuses
    DROP INDEX CONCURRENTLY in a transaction)."""
    with connect(creds, timeout=timeout) as conn, reading(creds, "its indexes, dropping them"):
        for index in indexes:
            conn.execute(drop_index_sql(index.schema, index.name))


def invalid_indexes_on(conn: psycopg.Connection) -> list[InvalidIndex]:
    return [InvalidIndex(*row) for row in conn.execute(_INVALID_INDEXES_SQL).fetchall()]


def invalid_indexes(creds: Credentials, *, timeout: int = 5) -> list[InvalidIndex]:
    """The database's INVALID indexes (builds in progress aside), read-only."""
    with connect(creds, timeout=timeout, read_only=True) as conn:
        return invalid_indexes_on(conn)
