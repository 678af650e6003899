"""Lock risk measured on the database being migrated, not guessed from the text: the lint and the
plan judge each lock by the table it falls on (absent or empty: nothing; small: a warning; large:
its level), and a pre-flight check keeps Flyway from queueing behind a session in a long
transaction, naming it, while every other session goes on.

On a real PostgreSQL, Flyway and Prefect server, through the migrate flow as `run` starts it.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest
from rich.console import Console

from ameide_migrate.outcomes import DatabaseOutcome, OutcomeState, RunReport
from ameide_migrate.postgres import Credentials
from ameide_migrate.report import print_run
from ameide_migrate.settings import get_settings

from .fix_platform import Platform
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
    assert "kept trying for" in outcome.message
    # Nothing applied, and the application's reads never queued behind an ALTER TABLE.
    assert platform.versions("graph") == before
    assert not platform.query(
        "graph",
        "SELECT 1 FROM information_schema.columns "
        "WHERE table_name = 'graph_nodes' AND column_name = 'weight'",
    )
    assert reads
    assert max(reads) < 1.0, f"a read waited {max(reads):.1f}s"


def test_the_run_goes_on_once_the_session_ends_and_says_what_it_waited_for(
    platform: Platform, short_budget: None
) -> None:
    state, _ = platform.run(databases=["graph"])
    assert state.is_completed()
    owner = platform.owners["graph"]
    (platform.sql_dir / "graph" / "V9__graph_nodes_weight.sql").write_text(
        "ALTER TABLE graph_nodes ADD COLUMN weight real;\n"
    )

    result: list[tuple[Any, RunReport]] = []
    runner = threading.Thread(target=lambda: result.append(platform.run(databases=["graph"])))
    with idle_in_transaction(owner, "graph_nodes") as pid:
        time.sleep(1.5)
        runner.start()
        time.sleep(3)  # the session commits while the run retries its pre-flight check
    runner.join(timeout=120)

    ((state, report),) = result
    assert state.is_completed()
    (outcome,) = report.outcomes
    assert outcome.state is OutcomeState.MIGRATED
    assert f"waited for 1 session(s) holding locks first: pid {pid}" in outcome.message
    assert platform.versions("graph")[-1] == "9"
