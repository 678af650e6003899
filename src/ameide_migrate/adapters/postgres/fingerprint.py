"""The schema's fingerprint: recorded after each migrate, read back with the history and the
INVALID indexes for the drift check, to tell what changed outside Flyway."""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
from psycopg.types.json import Jsonb

from ameide_migrate.adapters.postgres.connection import Credentials, connect
from ameide_migrate.adapters.postgres.index_catalog import invalid_indexes_on
from ameide_migrate.adapters.postgres.schema_history import history_on
from ameide_migrate.core.history import HistoryRow
from ameide_migrate.core.indexes import InvalidIndex

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
        invalid = invalid_indexes_on(conn)
        exists = conn.execute("SELECT to_regclass('ameide_migrate.schema_fingerprint')").fetchone()
        row = None
        if exists and exists[0] is not None:
            row = conn.execute(
                "SELECT version, recorded_at::text, objects FROM ameide_migrate.schema_fingerprint "
                "ORDER BY recorded_at DESC LIMIT 1"
            ).fetchone()
    recorded = Fingerprint(row[0], row[1], dict(row[2])) if row else None
    return SchemaState(history, recorded, live, invalid)
