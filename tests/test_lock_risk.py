"""Lock risk measured on the database being migrated, not guessed from the text: the lint and the
plan judge each lock by the table it falls on (absent or empty: nothing; small: a warning; large:
its level), and a pre-flight check keeps Flyway from queueing behind a session in a long
transaction, naming it, while every other session goes on.

On a real PostgreSQL, Flyway and Prefect server, through the migrate flow as `run` starts it.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    TaskRunFilter,
    TaskRunFilterName,
    TaskRunFilterStartTime,
)
from prefect.client.schemas.objects import TaskRun
from psycopg import sql
from rich.console import Console

from ameide_migrate.adapters.postgres.connection import Credentials, connect
from ameide_migrate.config.settings import get_settings
from ameide_migrate.core.outcomes import DatabaseOutcome, OutcomeState, RunReport
from ameide_migrate.terminal import print_run

from .fix_platform import Platform, wait_for
from .test_approval import artifact

EVENTS = "CREATE TABLE events (id bigint, kind text);\n"
EVENTS_INDEX = "CREATE INDEX events_kind_idx ON events (kind);\n"
RULE = "require-concurrent-index-creation"


def like_prod(platform: Platform) -> None:
    """The local environment as prod is: protected, its lint findings at their full level."""
    toml = platform.sql_dir / "ameide.toml"
    toml.write_text(
        toml.read_text().replace('max_level = "warning"', 'max_level = "error"')
        + "\n[environments.local.approval]\nrequired = true\n"
    )
    get_settings.cache_clear()


def fill(creds: Credentials, rows: int) -> None:
    with psycopg.connect(**creds.conninfo(5), autocommit=True) as conn:  # type: ignore[arg-type]
        conn.execute(
            "INSERT INTO events SELECT g, 'kind ' || g %% 7 FROM generate_series(1, %s) AS g",
            (rows,),
        )
        # What autovacuum does after a bulk load, made deterministic.
        conn.execute("ANALYZE events")


def by_database(outcomes: list[DatabaseOutcome]) -> dict[str, DatabaseOutcome]:
    return {o.database: o for o in outcomes}


def test_the_same_create_index_is_an_error_on_a_large_table_and_nothing_on_a_new_one(
    platform: Platform,
) -> None:
    # graph's events gets a million rows, threads' a few, agents' none; platform has no events
    # table before the run: the same two migrations create and index it there.
    holders = ["graph", "threads", "agents"]
    for database in holders:
        (platform.sql_dir / database / "V9__events.sql").write_text(EVENTS)
    state, _ = platform.run(databases=holders)
    assert state.is_completed()
    fill(platform.owners["graph"], 1_000_000)
    fill(platform.owners["threads"], 500)
    for database in [*holders, "platform"]:
        (platform.sql_dir / database / "V9__events.sql").write_text(EVENTS)
        (platform.sql_dir / database / "V10__events_kind_index.sql").write_text(EVENTS_INDEX)
    like_prod(platform)

    state, report = platform.run(databases=[*holders, "platform"], dry_run=True)

    outcome = by_database(report.outcomes)
    large = outcome["graph"]
    assert large.state is OutcomeState.FAILED
    assert "Flyway was not started" in large.message
    (finding,) = large.findings
    assert (finding.file, finding.line, finding.rule, finding.level.value) == (
        "graph/V10__events_kind_index.sql",
        1,
        RULE,
        "error",
    )
    rows = re.search(
        r"\[public\.events: ~([\d,]+) rows, ([\d.]+) MB: a large table", finding.message
    )
    assert rows, finding.message
    assert 900_000 <= int(rows[1].replace(",", "")) <= 1_100_000
    small = outcome["threads"]
    assert small.state is OutcomeState.WOULD_APPLY
    assert [(f.rule, f.level.value) for f in small.findings] == [(RULE, "warning")]
    assert "a small table" in small.findings[0].message
    for nothing in ("agents", "platform"):  # empty, and created by the run
        assert outcome[nothing].state is OutcomeState.WOULD_APPLY, outcome[nothing].message
        assert outcome[nothing].findings == []

    # The plan a person approves shows, per statement, the lock, the table and its size.
    plan = artifact("migrate-local-dry-run-plan", state.state_details.flow_run_id)
    line = next(row for row in plan.splitlines() if "graph/V10__events_kind_index.sql:1" in row)
    assert "| SHARE | public.events | ~" in line
    assert " MB | possible |" in line
    assert "lock(s) on relations that do not exist before their statement" in plan
    # And so does the dry run's table in the terminal.
    console = Console(width=160, record=True)
    print_run(report, console)
    printed = console.export_text()
    row = next(r for r in printed.splitlines() if "graph/V10__events_kind_index.sql:1" in r)
    assert re.search(r"SHARE\s.*public\.events\s.*~[\d,]{7,}\s.*MB\s.*possible", row), row


@contextmanager
def idle_in_transaction(creds: Credentials, table: str) -> Iterator[int]:
    """A session that read `table` and sits idle in its transaction, as a leaked connection of
    an application does; its pid."""
    with psycopg.connect(**creds.conninfo(5)) as conn:  # type: ignore[arg-type]
        conn.execute(f"SELECT count(*) FROM {table}")  # noqa: S608 (a test's own table name)
        row = conn.execute("SELECT pg_backend_pid()").fetchone()
        assert row
        yield int(row[0])
        conn.rollback()


def slowest_read(creds: Credentials, table: str, stop: threading.Event, seen: list[float]) -> None:
    """An application reading `table` all along: how long its slowest read took."""
    with psycopg.connect(**creds.conninfo(5), autocommit=True) as conn:  # type: ignore[arg-type]
        conn.execute("SET statement_timeout = '20s'")
        while not stop.is_set():
            started = time.monotonic()
            conn.execute(f"SELECT count(*) FROM {table}")  # noqa: S608
            seen.append(time.monotonic() - started)
            time.sleep(0.05)


@pytest.fixture
def short_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    """A retry budget of a few seconds, and a transaction long after one second."""
    monkeypatch.setenv("AMEIDE_RETRIES", "3")
    monkeypatch.setenv("AMEIDE_RETRY_DELAY_SECONDS", "1")
    monkeypatch.setenv("AMEIDE_RETRY_MAX_DELAY_SECONDS", "2")
    monkeypatch.setenv("AMEIDE_LONG_TRANSACTION_SECONDS", "1")
    get_settings.cache_clear()


def test_a_session_holding_a_lock_is_named_and_the_run_blocks_nobody(
    platform: Platform, short_budget: None
) -> None:
    state, _ = platform.run(databases=["graph"])
    assert state.is_completed()
    owner = platform.owners["graph"]
    before = platform.versions("graph")
    (platform.sql_dir / "graph" / "V9__graph_nodes_weight.sql").write_text(
        "ALTER TABLE graph_nodes ADD COLUMN weight real;\n"
    )
    stop, reads = threading.Event(), list[float]()
    reader = threading.Thread(target=slowest_read, args=(owner, "graph_nodes", stop, reads))

    with idle_in_transaction(owner, "graph_nodes") as pid:
        time.sleep(1.5)  # longer than a long transaction here
        reader.start()
        try:
            state, report = platform.run(databases=["graph"])
        finally:
            stop.set()
            reader.join()

    assert state.is_failed()
    (outcome,) = report.outcomes
    assert outcome.state is OutcomeState.FAILED
    assert "Flyway was not started" in outcome.message
    assert f"pid {pid}, user {owner.user} (ameide-migrate), idle in transaction" in outcome.message
    assert "holds AccessShareLock on graph_nodes" in outcome.message
    assert "pg_terminate_backend" in outcome.recovery
    # Four attempts after waits of about 1, 2 and 2 s (20 % jitter): the time since the first.
    kept = re.search(r"kept trying for (\d+)s, 4 attempts", outcome.message)
    assert kept, outcome.message
    assert int(kept[1]) >= 4, outcome.message
    # Nothing applied, and the application's reads never queued behind an ALTER TABLE.
    assert platform.versions("graph") == before
    assert not platform.query(
        "graph",
        "SELECT 1 FROM information_schema.columns "
        "WHERE table_name = 'graph_nodes' AND column_name = 'weight'",
    )
    assert reads
    assert max(reads) < 1.0, f"a read waited {max(reads):.1f}s"


def preflight_tried_after(since: datetime) -> TaskRun | None:
    """The pre-flight check of graph started after `since`, once it failed and waits to try
    again: it has seen a session in its way."""
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            task_run_filter=TaskRunFilter(
                name=TaskRunFilterName(any_=["preflight graph"]),
                start_time=TaskRunFilterStartTime(after_=since),
            )
        )
    return next((r for r in runs if r.state_name == "AwaitingRetry" or r.run_count > 1), None)


def test_the_run_goes_on_once_the_session_ends_and_says_what_it_waited_for(
    platform: Platform, short_budget: None
) -> None:
    state, _ = platform.run(databases=["graph"])
    assert state.is_completed()
    owner = platform.owners["graph"]
    # The migration notes when its first statement ran, then takes its time.
    (platform.sql_dir / "graph" / "V9__graph_nodes_weight.sql").write_text(
        "CREATE TABLE v9_started AS SELECT extract(epoch FROM clock_timestamp())::float8 AS at;\n"
        "SELECT pg_sleep(5);\n"
        "ALTER TABLE graph_nodes ADD COLUMN weight real;\n"
    )

    result: list[tuple[Any, RunReport]] = []
    runner = threading.Thread(target=lambda: result.append(platform.run(databases=["graph"])))
    with idle_in_transaction(owner, "graph_nodes") as pid:
        time.sleep(1.5)
        since = datetime.now(UTC)
        runner.start()
        preflight = wait_for(
            "a pre-flight check that saw the session", lambda: preflight_tried_after(since)
        )
        time.sleep(2)  # held 2s more: the session commits while the run retries its check
    runner.join(timeout=120)

    ((state, report),) = result
    assert state.is_completed()
    (outcome,) = report.outcomes
    assert outcome.state is OutcomeState.MIGRATED
    said = re.search(
        rf"waited (\d+)s for 1 session\(s\) holding locks first: pid {pid}", outcome.message
    )
    assert said, outcome.message
    waited = int(said[1])
    with connect(owner) as conn:
        row = conn.execute("SELECT at FROM v9_started").fetchone()
    assert row
    assert preflight.start_time
    # From the check's first sight of the session (before the test saw it retry, held 2s after)
    # to the start of Flyway's migrate (before the migration's first statement, which then
    # slept 5s): not the migration's time.
    assert 2 <= waited <= row[0] - preflight.start_time.timestamp() + 0.5, outcome.message
    assert platform.versions("graph")[-1] == "9"


# --- A blocker of another role ------------------------------------------------------------------

THREADS_FLAG = "ALTER TABLE threads ADD COLUMN flagged boolean;\n"


def lock_waits(creds: Credentials, table: str, stop: threading.Event, waits: list[float]) -> None:
    """An application reading `table` all along: how long each read waited for its lock, as
    PostgreSQL measures it: its transaction starts before the statement takes its lock, and
    clock_timestamp() is read after (statement_timestamp() would restart at the Bind message,
    after the lock taken at Parse)."""
    with psycopg.connect(**creds.conninfo(5), autocommit=True) as conn:  # type: ignore[arg-type]
        conn.execute("SET statement_timeout = '20s'")
        while not stop.is_set():
            row = conn.execute(
                sql.SQL(
                    "SELECT extract(epoch FROM clock_timestamp() - transaction_timestamp())"
                    "::float8, count(*) FROM {}"
                ).format(sql.Identifier(table))
            ).fetchone()
            assert row
            waits.append(float(row[0]))
            time.sleep(0.05)


@contextmanager
def reading(creds: Credentials, table: str) -> Iterator[list[float]]:
    stop, waits = threading.Event(), list[float]()
    reader = threading.Thread(target=lock_waits, args=(creds, table, stop, waits))
    reader.start()
    try:
        yield waits
    finally:
        stop.set()
        reader.join()


@contextmanager
def open_transaction(creds: Credentials, table: str) -> Iterator[int]:
    """`idle_in_transaction`, for a session the test may terminate: closing it ends whatever is
    left of it."""
    conn = psycopg.connect(**creds.conninfo(5))  # type: ignore[arg-type]
    try:
        conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table)))
        row = conn.execute("SELECT pg_backend_pid()").fetchone()
        assert row
        yield int(row[0])
    finally:
        conn.close()


def as_superuser(platform: Platform, database: str) -> Credentials:
    return platform.admin.with_database(platform.owners[database].database)


def sessions_of(platform: Platform, pid: int) -> list[tuple[Any, ...]]:
    with psycopg.connect(**platform.admin.conninfo(5)) as conn:  # type: ignore[arg-type]
        return conn.execute("SELECT pid FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchall()


def no_flag_column(platform: Platform) -> bool:
    return not platform.query(
        "threads",
        "SELECT 1 FROM information_schema.columns "
        "WHERE table_name = 'threads' AND column_name = 'flagged'",
    )


@pytest.mark.drills
def test_a_superusers_idle_transaction_is_named_with_its_fix_and_readers_never_queue(
    platform: Platform, short_budget: None
) -> None:
    state, _ = platform.run(databases=["threads"])
    assert state.is_completed()
    owner, admin = platform.owners["threads"], as_superuser(platform, "threads")
    (platform.sql_dir / "threads" / "V5__threads_flagged.sql").write_text(THREADS_FLAG)

    with open_transaction(admin, "threads") as pid, reading(owner, "threads") as waits:
        state, report = platform.run(databases=["threads"])
        assert sessions_of(platform, pid), "the blocker ended before the run did"

    assert state.is_failed()
    (outcome,) = report.outcomes
    assert outcome.state is OutcomeState.FAILED
    assert "Flyway was not started" in outcome.message
    # The migration's login cannot see a superuser's transaction start: the session is named by
    # what pg_locks and pg_stat_activity show every login, with the grant that shows the rest.
    assert f"pid {pid}, user {admin.user} (ameide-migrate), in one transaction for at least" in (
        outcome.message
    )
    assert f"`GRANT pg_read_all_stats TO {owner.user}` shows them" in outcome.message
    assert "holds AccessShareLock on threads" in outcome.message
    assert f"SELECT pg_terminate_backend({pid});" in outcome.recovery
    assert no_flag_column(platform)
    # Readers of threads never queued behind an ALTER TABLE: not one read waited for its lock.
    assert waits
    assert max(waits) < 0.5, f"a read of threads waited {max(waits):.2f}s for its lock"

    # The fix as printed is one PostgreSQL takes; then the rerun applies.
    with open_transaction(admin, "threads") as pid:
        state, report = platform.run(databases=["threads"])
        fix = re.search(r"`(SELECT pg_terminate_backend\(\d+\);)`", report.outcomes[0].recovery)
        assert fix, report.outcomes[0].recovery
        with psycopg.connect(**admin.conninfo(5), autocommit=True) as conn:  # type: ignore[arg-type]
            conn.execute(fix[1].encode())
        # pg_terminate_backend signals the session and returns; the session ends soon after.
        wait_for("the terminated session to end", lambda: not sessions_of(platform, pid), 10)
        state, report = platform.run(databases=["threads"])
    assert state.is_completed()
    assert platform.versions("threads")[-1] == "5"


@pytest.mark.drills
def test_a_migration_cancelled_by_lock_timeout_names_the_blocker_and_readers_wait_a_second_at_most(
    platform: Platform, short_budget: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The pre-flight check lets a young transaction pass (here: any under an hour), so Flyway
    # meets the lock itself; the migration's login may read every session's activity.
    monkeypatch.setenv("AMEIDE_LONG_TRANSACTION_SECONDS", "3600")
    get_settings.cache_clear()
    state, _ = platform.run(databases=["threads"])
    assert state.is_completed()
    owner, admin = platform.owners["threads"], as_superuser(platform, "threads")
    with psycopg.connect(**admin.conninfo(5), autocommit=True) as conn:  # type: ignore[arg-type]
        conn.execute(f'GRANT pg_read_all_stats TO "{owner.user}"'.encode())
    (platform.sql_dir / "threads" / "V5__threads_flagged.sql").write_text(THREADS_FLAG)

    with idle_in_transaction(admin, "threads") as pid, reading(owner, "threads") as waits:
        state, report = platform.run(databases=["threads"])

    assert state.is_failed()
    (outcome,) = report.outcomes
    assert "waited 1s (lock_timeout) for a table lock and PostgreSQL cancelled it" in (
        outcome.message
    )
    assert f"pid {pid}, user {admin.user} (ameide-migrate), idle in transaction" in outcome.message
    assert "(SELECT pg_backend_pid()), holds AccessShareLock on threads" in outcome.message
    assert "kept trying for" in outcome.message
    assert f"SELECT pg_terminate_backend({pid});" in outcome.recovery
    assert "network" not in outcome.recovery
    assert no_flag_column(platform)
    # Each try queued its ALTER TABLE for its lock_timeout, and each read behind it waited that
    # long at most, as PostgreSQL timed them.
    assert 0.3 < max(waits) < 1.3, f"the slowest read of threads waited {max(waits):.2f}s"


@pytest.mark.drills
def test_a_superusers_transaction_that_ends_in_time_lets_the_run_apply_and_its_table_says_so(
    platform: Platform, short_budget: None
) -> None:
    state, _ = platform.run(databases=["threads"])
    assert state.is_completed()
    admin = as_superuser(platform, "threads")
    (platform.sql_dir / "threads" / "V5__threads_flagged.sql").write_text(THREADS_FLAG)

    result: list[tuple[Any, RunReport]] = []
    runner = threading.Thread(target=lambda: result.append(platform.run(databases=["threads"])))
    with idle_in_transaction(admin, "threads") as pid:
        runner.start()
        time.sleep(4)  # the session commits while the run retries its pre-flight check
        assert sessions_of(platform, pid)
    runner.join(timeout=120)

    ((state, report),) = result
    assert state.is_completed()
    (outcome,) = report.outcomes
    assert outcome.state is OutcomeState.MIGRATED
    waited = rf"waited \d+s for 1 session\(s\) holding locks first: pid {pid}, user {admin.user}"
    assert re.search(waited, outcome.message), outcome.message
    assert platform.versions("threads")[-1] == "5"
    console = Console(width=300, record=True)
    print_run(report, console)
    assert re.search(waited, " ".join(console.export_text().split()))
    rows = json.loads(artifact("migrate-local", state.state_details.flow_run_id))
    (row,) = rows
    assert re.search(waited, " ".join(row["message"].split())), row
