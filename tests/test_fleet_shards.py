"""A fleet's shard runs that do not end well, on a real process worker: one past its
`shard_timeout_minutes`, one whose process is killed mid-wave. What the fleet reports is checked
against the process table and the targets' own histories, not against its own words.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from uuid import UUID

import psycopg
import pytest

from ameide_migrate.adapters.prefect import artifacts, flow_runs, local_server
from ameide_migrate.flows.fleet import shard_session_name

from .fix_platform import REPO, Platform, ameide, drop_owners
from .fix_processes import gone, process_table, processes_of_run
from .fix_vault import Vault
from .fix_worker import start_worker, stop_worker
from .test_deployments import flow_run_id
from .test_fleet import (
    QA_ENVIRONMENT,
    add_fleet,
    histories,
    shard_runs,
    targets_in_vault,
    tenant,
    tenants_vault_path,
)

QA_WAVES = "canary = 2\nshards = 1\nparallel = 1\n"

TWO = ["t000", "t001"]
ALL = ["1", "2", "3", "4"]
SHARD_SESSION = shard_session_name("")


@contextmanager
def qa_fleet(
    platform: Platform,
    vault: Vault,
    monkeypatch: pytest.MonkeyPatch,
    log: Path,
    waves: str,
    slow_target: str,
    seconds: int,
    targets: list[str] = TWO,
    planned: str = QA_WAVES,
) -> Iterator[None]:
    """qa on a process work pool with a real worker, its targets' secrets in Vault, its waves
    as `planned` (t000 and t001 in one) and `waves` say, and a V4 that sleeps `seconds` on
    `slow_target` alone."""
    pool = f"{platform.prefix}shards-qa".replace("_", "-")
    sleepy = tenant(platform, slow_target).database
    extra = {
        "V4__settle.sql": (
            f"SELECT pg_sleep(CASE WHEN current_database() = '{sleepy}' THEN {seconds} ELSE 0 "
            "END);\n"
        )
    }
    add_fleet(
        platform,
        targets,
        planned + waves,
        extra,
        vault_path=tenants_vault_path(platform),
        environments=QA_ENVIRONMENT.format(pool=pool),
    )
    owners = targets_in_vault(platform, vault, monkeypatch, targets)
    out = log.open("w")
    worker = None
    try:
        deployed = ameide("deploy", "--env", "qa")
        assert deployed.returncode == 0, deployed.stdout + deployed.stderr
        worker = start_worker(pool, "process", out, REPO)
        yield
    finally:
        if worker is not None:
            stop_worker(worker)
        out.close()
        drop_owners(platform.admin, owners)


def _run_sleeping_in(platform: Platform, database: str) -> UUID | None:
    """The shard run whose Flyway session sleeps in `database`, by its application_name (the
    fleet's shard_session_name), or None while none does."""
    with psycopg.connect(**platform.admin.conninfo(5), autocommit=True) as conn:  # type: ignore[arg-type]
        row = conn.execute(
            "SELECT application_name FROM pg_stat_activity WHERE datname = %s AND query LIKE %s",
            (database, "%pg_sleep%"),
        ).fetchone()
    if row is None:
        return None
    named = str(row[0])
    assert named.startswith(SHARD_SESSION), (
        f"a session not of a shard sleeps in {database}: {named}"
    )
    return UUID(named.removeprefix(SHARD_SESSION))


def _sessions_on(platform: Platform, database: str) -> list[str]:
    """What every session on `database` is running (the checker's own is on another database)."""
    with psycopg.connect(**platform.admin.conninfo(5), autocommit=True) as conn:  # type: ignore[arg-type]
        rows = conn.execute(
            "SELECT coalesce(query, '') FROM pg_stat_activity WHERE datname = %s", (database,)
        ).fetchall()
    return [str(r[0]) for r in rows]


def _read_flow_run(run_id: UUID) -> Any:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_flow_run(run_id)


class ShardWatch:
    """Waits, beside the fleet run, until the shard's migration sleeps in `database`; then
    notes the shard run and its processes, and does `then` to them."""

    def __init__(
        self, platform: Platform, database: str, then: Callable[[dict[int, str]], None]
    ) -> None:
        self.run_id: UUID | None = None
        self.processes: dict[int, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, args=(platform, database, then))

    def __enter__(self) -> ShardWatch:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=60)

    def _watch(
        self, platform: Platform, database: str, then: Callable[[dict[int, str]], None]
    ) -> None:
        while not self._stop.wait(0.5):
            self.run_id = _run_sleeping_in(platform, database)
            if self.run_id is None:
                continue
            self.processes = processes_of_run(self.run_id)
            then(self.processes)
            return


def _fleet_run(log: Path) -> tuple[subprocess.CompletedProcess[str], str]:
    """The tenants fleet run in qa as a user triggers it, and what a failed check shows: the
    ends of its output and of the worker's log."""
    done = ameide(
        "trigger", "--env", "qa", "--flow", "fleet", "--fleet", "tenants",
        "--wait", "--timeout", "900", timeout=1200,
    )  # fmt: skip
    return done, done.stdout[-8000:] + done.stderr[-3000:] + log.read_text()[-6000:]


def _stopped_mid_migration(
    platform: Platform, slow: str, then: Callable[[dict[int, str]], None], log: Path
) -> tuple[subprocess.CompletedProcess[str], ShardWatch, str]:
    """The fleet run, failed, whose shard was caught sleeping in `slow`'s V4 with its JVM
    running, and `then` done to the shard's processes."""
    with ShardWatch(platform, slow, then=then) as watch:
        done, report = _fleet_run(log)

    assert done.returncode == 1, report
    assert watch.run_id is not None, f"the shard never reached {slow}'s V4: " + report
    assert "java" in watch.processes.values(), watch.processes
    return done, watch, report


def _fleet_ledger() -> dict[str, dict[str, str]]:
    return {row["target"]: row for row in artifacts.latest_table("fleet-qa-tenants")}


def _t000_migrated_t001_failed_at_v3() -> tuple[dict[str, str], dict[str, str]]:
    """The ledger's rows of t000 and t001 once the shard stopped in t001's V4: t000 migrated
    to V4 (all four applied), t001 failed at V3 (three applied, V4 rolled back)."""
    ledger = _fleet_ledger()
    migrated, failed = ledger["tenant_t000"], ledger["tenant_t001"]
    assert (migrated["state"], migrated["after"], migrated["applied"]) == (
        "migrated", "4", "4"
    ), ledger  # fmt: skip
    assert (failed["state"], failed["after"], failed["applied"]) == ("failed", "3", "3"), failed
    return migrated, failed


@pytest.mark.slow
def test_a_shard_past_its_timeout_is_stopped_before_it_is_counted_and_its_commits_are_reported(
    platform: Platform, vault: Vault, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The shard migrates t000 to V4, then sleeps in t001's V4 past shard_timeout_minutes: the
    fleet cancels it through Prefect (its worker kills the process group, the JVM with it),
    waits until it has stopped, and reports t000 migrated and t001 at V3, as they are."""
    log = tmp_path / "worker.log"
    slow = tenant(platform, "t001").database
    with qa_fleet(platform, vault, monkeypatch, log, "shard_timeout_minutes = 1\n", "t001", 900):
        # The checks hold only if the timeout caught the shard mid-migration, JVM and all.
        done, watch, report = _stopped_mid_migration(platform, slow, lambda _processes: None, log)
        assert watch.run_id is not None
        shard = _read_flow_run(watch.run_id)
        assert shard.state.is_cancelled(), shard.state
        # Stopped, and nothing left that could commit later: no process of the shard, no
        # session on t001.
        alive = {pid: name for pid, name in watch.processes.items() if not gone(pid)}
        assert alive == {}, alive
        assert _sessions_on(platform, slow) == []
        assert histories(platform, TWO) == {"t000": ALL, "t001": ALL[:3]}

        migrated, failed = _t000_migrated_t001_failed_at_v3()
        assert (
            "outlived shard_timeout_minutes = 1: cancelled, it stopped Cancelled"
            in migrated["message"]
        )
        assert failed["before"] == "empty", failed
        assert "shows it at 3 of 4: 3 migration(s) applied, the rest not" in failed["message"]
        assert "tenant_t001" in done.stdout + done.stderr, report


@pytest.mark.slow
def test_a_shard_killed_mid_wave_fails_its_targets_with_the_versions_they_hold_and_a_rerun_ends_it(
    platform: Platform, vault: Vault, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """kill -9 of the shard's process while t001's V4 runs: the run ends Crashed, the JVM dies
    with it (PostgreSQL rolls V4 back), t000 is reported migrated and t001 failed at V3; the
    rerun takes t001 alone to V4."""
    log = tmp_path / "worker.log"
    slow = tenant(platform, "t001").database

    def kill_the_shard(processes: dict[int, str]) -> None:
        table = process_table()
        jvm_parents = {table[pid][0] for pid, name in processes.items() if name == "java"}
        for pid in jvm_parents & processes.keys():
            os.kill(pid, signal.SIGKILL)

    with qa_fleet(platform, vault, monkeypatch, log, "", "t001", 15):
        _, watch, _ = _stopped_mid_migration(platform, slow, kill_the_shard, log)
        assert watch.run_id is not None
        shard = _read_flow_run(watch.run_id)
        assert shard.state.is_crashed(), shard.state
        assert all(gone(pid) for pid in watch.processes), watch.processes
        assert histories(platform, TWO) == {"t000": ALL, "t001": ALL[:3]}
        _, failed = _t000_migrated_t001_failed_at_v3()
        assert "ended Crashed before reporting it" in failed["message"], failed

        rerun, rerun_report = _fleet_run(log)

        assert rerun.returncode == 0, rerun_report
        assert histories(platform, TWO) == {
            "t000": ["1", "2", "3", "4"],
            "t001": ["1", "2", "3", "4"],
        }
        ledger = _fleet_ledger()
        assert ledger["tenant_t000"]["state"] == "up to date", ledger
        assert (ledger["tenant_t001"]["state"], ledger["tenant_t001"]["before"]) == (
            "migrated",
            "3",
        )


SIX = ["t000", "t001", "t002", "t003", "t004", "t005"]
# t000 the canary; t001-t004 the second wave in two shards (t001 and t002, t003 and t004),
# one target at a time in each; t005 the third wave.
THREE_WAVES = "canary = 1\ngrowth = 4\nmax_wave = 4\nshards = 2\nparallel = 1\n"


@pytest.mark.slow
def test_a_shard_whose_process_tree_is_killed_fails_its_targets_halts_the_fleet_and_a_rerun_ends_it(
    platform: Platform, vault: Vault, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """kill -9 of every process of wave 2's second shard run (the flow run's and its JVM) while
    t004's V4 sleeps, its other shard beside it: that run ends Crashed, t004 counts as failed at
    V3 with that state, t003 (committed before) as migrated, the other shard's as migrated; the
    halt rule stops the fleet before wave 3 (t005 untouched) and the run fails saying so. The
    rerun takes t004 and t005 alone to V4."""
    log = tmp_path / "worker.log"
    slow = tenant(platform, "t004").database

    def kill_the_run(processes: dict[int, str]) -> None:
        for pid in processes:
            os.kill(pid, signal.SIGKILL)

    with qa_fleet(
        platform, vault, monkeypatch, log, "", "t004", 20, targets=SIX, planned=THREE_WAVES
    ):
        crashed, watch, report = _stopped_mid_migration(platform, slow, kill_the_run, log)
        assert watch.run_id is not None
        assert all(gone(pid) for pid in watch.processes), watch.processes
        killed = _read_flow_run(watch.run_id)
        assert killed.name == "tenants wave 2 shard 2 of 2", killed.name
        assert killed.state.is_crashed(), killed.state
        shards = shard_runs("fleet-shard/qa", since=str(flow_run_id(crashed.stdout)))
        states = {r.name: r.state.type.value for r in shards}
        assert states == {
            "tenants wave 1 shard 1 of 1": "COMPLETED",
            "tenants wave 2 shard 1 of 2": "COMPLETED",
            "tenants wave 2 shard 2 of 2": "CRASHED",
        }, states
        # What the databases hold: wave 3 untouched, t004's V4 rolled back with its session.
        assert histories(platform, SIX) == {
            "t000": ALL, "t001": ALL, "t002": ALL, "t003": ALL, "t004": ALL[:3], "t005": [],
        }  # fmt: skip
        assert _sessions_on(platform, slow) == []

        ledger = _fleet_ledger()
        states_in_ledger = {t: row["state"] for t, row in ledger.items()}
        assert states_in_ledger == {
            "tenant_t000": "migrated",
            "tenant_t001": "migrated",
            "tenant_t002": "migrated",
            "tenant_t003": "migrated",
            "tenant_t004": "failed",
            "tenant_t005": "not started",
        }, ledger
        failed = ledger["tenant_t004"]
        assert (failed["wave"], failed["after"], failed["applied"]) == ("2", "3", "3"), failed
        crash = f"its shard run {killed.name} ended Crashed before reporting it"
        assert crash in failed["message"], failed
        assert "shows it at 3 of 4" in failed["message"], failed
        assert crash in ledger["tenant_t003"]["message"], ledger["tenant_t003"]

        # What the person following the run reads: the wave, the halt, the crashed shard's
        # targets where they stand, the run's end.
        printed = crashed.stdout
        assert f"tenant_t004 message: {crash}; its history shows it at 3 of 4" in printed, report
        assert f"tenant_t003 message: {crash}; its history shows it at 4, the latest" in printed
        assert "wave 2 of 3: 4 target(s) in 2 shard(s), 1 failed" in printed, report
        assert "halted after wave 2: halt_failures = 0: 1 of 4 target(s) failed: tenant_t004" in (
            printed
        ), report
        last = printed.strip().splitlines()[-1]
        assert last.startswith(
            "Failed: fleet tenants in qa: 4 migrated, 1 failed in 2 wave(s), 1 not started"
        ), report

        rerun, rerun_report = _fleet_run(log)

        assert rerun.returncode == 0, rerun_report
        assert rerun.stdout.strip().splitlines()[-1].startswith("Completed"), rerun.stdout
        assert histories(platform, SIX) == dict.fromkeys(SIX, ALL)
        again = {t: (row["state"], row["before"]) for t, row in _fleet_ledger().items()}
        assert again == {
            **{f"tenant_{t}": ("up to date", "4") for t in SIX[:4]},
            "tenant_t004": ("migrated", "3"),
            "tenant_t005": ("migrated", "empty"),
        }, again


def test_an_overdue_run_is_cancelled_through_prefect_and_one_nobody_stops_is_said_so(
    prefect_server: local_server.Server,
) -> None:
    """A run no worker has taken goes straight to Cancelled (nothing to stop); a running one is
    asked to stop (Cancelling) and, with no worker to stop it, handed on as not stopped."""
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.states import Running, Scheduled

    @flow(name="overdue-shard")
    def overdue() -> None:
        """Never runs: its runs are made by hand."""

    with get_client(sync_client=True) as client:
        waiting = client.create_flow_run(overdue, state=Scheduled()).id
        running = client.create_flow_run(overdue, state=Running()).id
    ended: list[flow_runs.EndedRun] = []

    flow_runs.await_runs([waiting, running], 0, ended.append, grace=3)

    by_id = {run.flow_run_id: run for run in ended}
    assert (by_id[waiting].state, by_id[waiting].overdue, by_id[waiting].stopped) == (
        "Cancelled",
        True,
        True,
    )
    assert (by_id[running].state, by_id[running].overdue, by_id[running].stopped) == (
        "Cancelling",
        True,
        False,
    )
    assert _read_flow_run(running).state.is_cancelling()
