"""What a migration's tables hold: each written name resolved as its session resolves it, with
the planner's estimate of its rows (or a bounded count) and its size, for the lock risk."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from ameide_migrate.adapters.postgres.connection import Credentials, connect, reading
from ameide_migrate.core.locking import RelationFacts

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
    with connect(creds, timeout=timeout, read_only=True) as conn, reading(creds, "its tables"):
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
