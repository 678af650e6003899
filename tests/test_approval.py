"""A protected environment's run: its plan published, then nothing migrated before a person's
decision. Real PostgreSQL, Flyway and Prefect server; decisions given through the API as
`ameide-migrate approve` gives them, or through the Prefect UI's Resume form.

The platform's local environment is made protected here (`[environments.local.approval]`): any
environment opts in the same way, and prod does in the shipped file.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any
from uuid import UUID

import pytest
from playwright.sync_api import Page, expect
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
from prefect.states import Cancelled

from ameide_migrate import commands, environments, locking, plan, report
from ameide_migrate.errors import REJECTED_STATE, ExitCode, RunNotAwaitingApproval
from ameide_migrate.outcomes import DatabaseOutcome, OutcomeState
from ameide_migrate.plan import DatabasePlan, PlannedMigration
from ameide_migrate.prefect_api import Server
from ameide_migrate.settings import get_settings

from .fix_browser import wait_for_final_state
from .fix_platform import REPO, Platform, ameide

DATABASES = ["graph", "threads"]
LABEL_INDEX = "graph/V4__graph_label_index.sql"


def protect(platform: Platform, timeout_minutes: float = 5) -> None:
    toml = platform.sql_dir / "ameide.toml"
    toml.write_text(
        toml.read_text()
        + f"\n[environments.local.approval]\nrequired = true\ntimeout_minutes = {timeout_minutes}\n"
    )
    get_settings.cache_clear()


def run_in_thread(**params: Any) -> tuple[threading.Thread, dict[str, Any]]:
    """The migrate flow in this process, as `ameide-migrate run` runs it, in a thread."""
    from ameide_migrate.flows.migrate import migrate_flow

    ended: dict[str, Any] = {}

    def body() -> None:
        ended["state"] = migrate_flow(environment="local", return_state=True, **params)

    thread = threading.Thread(target=body, daemon=True)
    thread.start()
    return thread, ended


def wait_for(what: str, check: Callable[[], Any], timeout: float = 120) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.5)
    raise AssertionError(f"no {what} within {timeout:g}s")


def waiting_runs(*, in_process: bool) -> list[UUID]:
    """The runs waiting for a decision: paused in a process (no deployment's), or a
    deployment's (suspended)."""
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterDeploymentId,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED])),
                deployment_id=FlowRunFilterDeploymentId(is_null_=in_process),
            )
        )
    return [run.id for run in runs]


def paused_run() -> UUID | None:
    """The run of this process waiting for a decision."""
    found = waiting_runs(in_process=True)
    return found[0] if found else None


def artifact(key: str, flow_run_id: UUID) -> str:
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key]))
        )
    mine = [a for a in found if a.flow_run_id == flow_run_id]
    assert mine, f"no artifact {key} of run {flow_run_id}"
    return str(max(mine, key=lambda a: a.created or 0).data)


def approved_and_migrated(
    platform: Platform,
    thread: threading.Thread,
    ended: dict[str, Any],
    run_id: UUID,
    reason: str,
) -> None:
    """The run resumed, completed and migrated, its decision recorded with `reason`."""
    thread.join(timeout=300)
    state = ended["state"]
    assert state.is_completed(), state.message
    assert platform.versions("graph")[-1] == "3"
    assert platform.versions("threads")
    decision = artifact("migrate-local-decision", run_id)
    assert f"**approved** by a person: {reason}" in decision


def test_the_plan_lists_each_statements_lock_relation_size_and_concurrently() -> None:
    outcome = DatabaseOutcome("graph", OutcomeState.WOULD_APPLY, "3", "4", "4", 1, 0.1)
    label_index = locking.StatementLock(
        2,
        "CREATE INDEX graph_label ON graph_node (label)",
        "public.graph_node",
        "SHARE",
        locking.RelationFacts(16384, "public.graph_node", 1_000_000, 73 * 1024 * 1024),
        False,
        locking.Concurrently.POSSIBLE,
    )
    on_new = locking.StatementLock(
        5, "CREATE INDEX x ON fresh (a)", "fresh", "SHARE", None, True, locking.Concurrently.NONE
    )
    planned = DatabasePlan(
        outcome,
        (
            PlannedMigration(
                "graph/V4__graph_label_index.sql",
                "4",
                "graph label index",
                123,
                (label_index, on_new),
            ),
        ),
    )
    up_to_date = DatabasePlan(
        DatabaseOutcome("threads", OutcomeState.UP_TO_DATE, "4", "4", "4", 0, 0.1), ()
    )
    text = report.plan_markdown("prod", [planned, up_to_date], "abc", asks=True)
    assert "## graph: 3 -> 4, 1 migration(s), strongest lock SHARE" in text
    assert "| 4 | graph label index | graph/V4__graph_label_index.sql | 123 | SHARE |" in text
    assert (
        "| graph/V4__graph_label_index.sql:2 | CREATE INDEX graph_label ON graph_node (label) "
        "| SHARE | public.graph_node | ~1,000,000 | 73.0 MB | possible |"
    ) in text
    assert "1 lock(s) on relations that do not exist before their statement" in text
    assert "## threads: up to date at 4" in text
    assert "ameide-migrate approve RUN_ID" in text
    assert plan.needs_decision([planned, up_to_date])
    assert not plan.needs_decision([up_to_date])
    # An approval holds for one plan: another checksum is another plan.
    changed = DatabasePlan(
        outcome,
        (
            PlannedMigration(
                "graph/V4__graph_label_index.sql", "4", "graph label index", 9, (label_index,)
            ),
        ),
    )
    assert plan.digest([planned]) != plan.digest([changed])


def test_the_shipped_file_protects_prod_only() -> None:
    settings = get_settings()
    protected = {n for n, e in environments.all_of(settings).items() if e.approval.required}
    assert protected == {"prod"}


def test_approval_pauses_the_run_and_an_approval_through_the_api_resumes_it(
    platform: Platform,
) -> None:
    protect(platform)
    thread, ended = run_in_thread(databases=DATABASES)
    run_id = wait_for("paused run", paused_run)

    # Paused with its plan published, and nothing migrated yet.
    text = artifact("migrate-local-plan", run_id)
    assert "## graph: empty -> " in text
    assert "graph/V1__graph_initial_schema.sql" in text
    assert all(platform.history(db) is None for db in DATABASES)

    done = commands.approve(get_settings(), str(run_id), reason="read the plan, go")
    assert done.approved
    approved_and_migrated(platform, thread, ended, run_id, "read the plan, go")


def test_approval_holds_for_the_plan_approved_only(platform: Platform) -> None:
    """What is pending changes while the run waits: the approval of the old plan migrates
    nothing, and the new plan is asked for."""
    protect(platform)
    thread, ended = run_in_thread(databases=DATABASES)
    first = wait_for("paused run", paused_run)
    first_plan = artifact("migrate-local-plan", first)
    (platform.sql_dir / "graph" / "V4__graph_note.sql").write_text(
        "ALTER TABLE graph_nodes ADD COLUMN note text;\n"
    )

    commands.approve(get_settings(), str(first), reason="the first plan")
    # Asked again, for the plan that now holds V4, with nothing migrated in between.
    wait_for("second plan", lambda: artifact("migrate-local-plan", first) != first_plan)
    assert "graph/V4__graph_note.sql" in artifact("migrate-local-plan", first)
    wait_for("paused again", paused_run)
    assert all(platform.history(db) is None for db in DATABASES)

    commands.approve(get_settings(), str(first), reason="the second plan")
    thread.join(timeout=300)
    assert ended["state"].is_completed(), ended["state"].message
    assert platform.versions("graph")[-1] == "4"


def test_approval_rejected_ends_cancelled_with_nothing_migrated_and_the_reason(
    platform: Platform,
) -> None:
    protect(platform)
    thread, ended = run_in_thread(databases=DATABASES)
    run_id = wait_for("paused run", paused_run)

    commands.approve(get_settings(), str(run_id), approved=False, reason="not during the sale")
    thread.join(timeout=120)

    state = ended["state"]
    assert state.is_cancelled()
    assert state.name == REJECTED_STATE
    assert "plan rejected: not during the sale" in state.message
    assert "nothing was migrated" in state.message
    assert all(platform.history(db) is None for db in DATABASES)
    assert "**rejected** by a person: not during the sale" in artifact(
        "migrate-local-decision", run_id
    )
    # The run waits no more: a second decision is refused, naming the run's state.
    with pytest.raises(RunNotAwaitingApproval, match="is Rejected, not waiting"):
        commands.approve(get_settings(), str(run_id))


def test_approval_timeout_counts_as_a_rejection(platform: Platform) -> None:
    protect(platform, timeout_minutes=0.1)
    started = time.monotonic()
    thread, ended = run_in_thread(databases=DATABASES)
    thread.join(timeout=120)

    state = ended["state"]
    assert state.is_cancelled()
    assert state.name == REJECTED_STATE
    assert "plan timed out: no decision within 0.1 minutes counts as a rejection" in state.message
    assert time.monotonic() - started < 90
    assert all(platform.history(db) is None for db in DATABASES)


def test_approval_is_not_asked_when_nothing_is_pending(platform: Platform) -> None:
    state, _ = platform.run(databases=DATABASES)
    assert state.is_completed()
    protect(platform)
    state, report = platform.run(databases=DATABASES)
    assert state.is_completed()
    assert {o.state for o in report.outcomes} == {OutcomeState.UP_TO_DATE}


def test_approval_of_a_run_that_does_not_wait_is_a_usage_error(platform: Platform) -> None:
    state, _ = platform.run(databases=["graph"])
    done = ameide("approve", str(state.state_details.flow_run_id))
    assert done.returncode == ExitCode.USAGE
    assert done.stderr.startswith("FAILED: flow run ")
    assert "is Completed, not waiting for a decision" in done.stderr
    assert "Traceback" not in done.stderr
    done = ameide("approve", "not-a-run")
    assert done.returncode == ExitCode.USAGE
    assert "'not-a-run' is not a flow run id" in done.stderr


@pytest.fixture
def trigger_local() -> Iterator[Callable[[], subprocess.Popen[str]]]:
    """`trigger --env local --wait` as CI runs it; at the end no trigger is left running and no
    run of the deployment left waiting for a decision (a later test would find it)."""
    started: list[subprocess.Popen[str]] = []

    def start() -> subprocess.Popen[str]:
        started.append(_trigger())
        return started[-1]

    yield start
    for trigger in started:
        if trigger.poll() is None:
            trigger.kill()
            trigger.wait(10)
        if trigger.stdout is not None:
            trigger.stdout.close()
    with get_client(sync_client=True) as client:
        for run_id in waiting_runs(in_process=False):
            client.set_flow_run_state(run_id, Cancelled(message="the test ended"), force=True)


def _trigger() -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ameide_migrate.cli",
            "trigger",
            "--env",
            "local",
            "--wait",
            "--timeout",
            "300",
            *[a for db in DATABASES for a in ("--db", db)],
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=REPO,
        env=dict(os.environ),
    )


def _until_waiting(trigger: subprocess.Popen[str]) -> tuple[str, str]:
    """The trigger's output up to its own approval hint, and the run id it names (the run's log
    names the command too, and may come first)."""
    seen = []
    assert trigger.stdout is not None
    for line in trigger.stdout:
        seen.append(line)
        found = re.match(r"  or: ameide-migrate approve ([0-9a-f-]{36})", line)
        if found:
            return "".join(seen), found.group(1)
    raise AssertionError("trigger ended without asking for a decision:\n" + "".join(seen))


def _to_the_end(trigger: subprocess.Popen[str], before: str) -> tuple[int, str, str]:
    """The trigger followed to its exit: its code, its last line, and all it printed."""
    rest, _ = trigger.communicate(timeout=300)
    return trigger.returncode, rest.rstrip().splitlines()[-1], before + rest


@pytest.fixture
def protected_deployment(platform: Platform) -> Platform:
    protect(platform)
    return platform


def test_approval_of_a_deployment_run_suspends_it_and_trigger_follows_it_to_the_end(
    protected_deployment: Platform,
    process_worker: Platform,
    trigger_local: Callable[[], subprocess.Popen[str]],
) -> None:
    platform = process_worker
    trigger = trigger_local()
    before, run_id = _until_waiting(trigger)
    assert "waiting for a decision on the plan: approve or reject it at http" in before
    # Suspended, not paused: the worker's process for the run has exited.
    with get_client(sync_client=True) as client:
        assert client.read_flow_run(UUID(run_id)).state.name == "Suspended"  # type: ignore[union-attr]
    assert all(platform.history(db) is None for db in DATABASES)

    done = ameide("approve", run_id, "--reason", "change ticket 42")
    assert done.returncode == 0, done.stderr
    assert f"approved the plan of flow run {run_id}" in done.stdout
    code, last, output = _to_the_end(trigger, before)

    assert code == ExitCode.OK, output
    assert last.startswith("Completed")
    assert platform.versions("graph")[-1] == "3"


def test_approval_rejected_makes_trigger_exit_5(
    protected_deployment: Platform,
    process_worker: Platform,
    trigger_local: Callable[[], subprocess.Popen[str]],
) -> None:
    platform = process_worker
    trigger = trigger_local()
    before, run_id = _until_waiting(trigger)

    done = ameide("approve", run_id, "--reject", "--reason", "freeze week")
    assert done.returncode == 0, done.stderr
    code, last, output = _to_the_end(trigger, before)

    assert code == ExitCode.REJECTED, output
    assert last.startswith(f"{REJECTED_STATE}: plan rejected: freeze week")
    assert all(platform.history(db) is None for db in DATABASES)


@pytest.fixture
def briefly_protected_deployment(platform: Platform) -> Platform:
    protect(platform, timeout_minutes=0.25)
    return platform


def test_approval_timeout_of_a_suspended_run_is_a_rejection(
    briefly_protected_deployment: Platform,
    process_worker: Platform,
    trigger_local: Callable[[], subprocess.Popen[str]],
) -> None:
    """A suspended run's process is gone: the automation `deploy` registered ends it."""
    platform = process_worker
    started = time.monotonic()
    trigger = trigger_local()
    before, _ = _until_waiting(trigger)
    code, last, output = _to_the_end(trigger, before)

    assert code == ExitCode.REJECTED, output
    assert last.startswith(f"{REJECTED_STATE}: plan timed out: no decision within 0.25 minutes")
    assert time.monotonic() - started < 180
    assert all(platform.history(db) is None for db in DATABASES)
    # The run came back to record it: the decision artifact says who decided, the timeout.
    run_id = UUID(re.findall(r"ameide-migrate approve ([0-9a-f-]{36})", before)[0])
    decision = artifact("migrate-local-decision", run_id)
    assert "**timed out** by the timeout: no decision within 0.25 minutes" in decision


def test_approval_reject_needs_a_reason() -> None:
    done = ameide("approve", "00000000-0000-0000-0000-000000000000", "--reject")
    assert done.returncode == ExitCode.USAGE
    assert "--reject needs --reason" in done.stderr


def test_approval_in_the_prefect_ui_resumes_the_run_and_it_migrates(
    platform: Platform, prefect_server: Server, page: Page
) -> None:
    """The browser tier: a person opens the paused run, clicks Resume, ticks Approve in the form
    generated from the run's input schema, gives a reason and submits."""
    protect(platform)
    thread, ended = run_in_thread(databases=DATABASES)
    run_id = wait_for("paused run", paused_run)
    assert all(platform.history(db) is None for db in DATABASES)

    page.goto(f"{prefect_server.ui_url}/runs/flow-run/{run_id}")
    expect(page.locator(".page-heading-flow-run__meta .state-badge")).to_have_text("Paused")
    page.get_by_role("button", name="Resume").click()
    form = page.get_by_role("dialog").filter(has_text="Resume Flow Run")
    expect(form).to_contain_text("read the artifact migrate-local-plan")
    approve = form.locator(".schema-form-property").filter(has_text="Approve").get_by_role("switch")
    expect(approve).to_have_attribute("aria-checked", "false")
    approve.click()
    expect(approve).to_have_attribute("aria-checked", "true")
    form.get_by_role("textbox").fill("checked the plan in the UI")
    form.get_by_role("button", name="Submit").click()
    expect(form).to_be_hidden()

    approved_and_migrated(platform, thread, ended, run_id, "checked the plan in the UI")
    assert wait_for_final_state(page, timeout=60) == "Completed"
