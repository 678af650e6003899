"""Other clients' sessions on a database: who holds or waits for a lock a migration would queue
behind, and ending a stopped run's sessions."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from datetime import datetime

from ameide_migrate.adapters.postgres.connection import Credentials, connect, reading


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
    with connect(creds, timeout=timeout) as conn, reading(creds, "its sessions"):
        while True:
            row = conn.execute(query, (application_name,)).fetchone()
            left = int(row[0]) if row else 0
            if not left or time.monotonic() > deadline:
                return left
            time.sleep(0.5)


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
    with connect(creds, timeout=timeout, read_only=True) as conn, reading(creds, "pg_locks"):
        rows = conn.execute(_LOCK_HOLDERS_SQL, {"relations": relations}).fetchall()
    return [(int(r[12]), LockHolder(*r[:12])) for r in rows]
