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
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from playwright.sync_api import Page, expect
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
from prefect.states import Cancelled

from ameide_migrate.adapters.prefect.local_server import Server
from ameide_migrate.commands.approval import approve
from ameide_migrate.config import environments
from ameide_migrate.config.settings import get_settings
from ameide_migrate.core import locking
from ameide_migrate.core.catalog import DatabaseCatalog, pinned_copy
from ameide_migrate.core.errors import REJECTED_STATE, ExitCode, RunNotAwaitingApproval
from ameide_migrate.core.outcomes import DatabaseOutcome, OutcomeState
from ameide_migrate.services import migrate, plan, report
from ameide_migrate.services.context import RunContext
from ameide_migrate.services.plan import DatabasePlan, PlannedMigration

from .fix_browser import wait_for_final_state
from .fix_platform import REPO, Platform, ameide, wait_for

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
                "5e2bf57d3f40c4b6df69daf1936cb766f832374b4fc0259a7cbff06e2f70f269",
                (label_index, on_new),
            ),
        ),
    )
    up_to_date = DatabasePlan(
        DatabaseOutcome("threads", OutcomeState.UP_TO_DATE, "4", "4", "4", 0, 0.1), ()
    )
    text = report.plan_markdown("prod", [planned, up_to_date], "abc", asks=True)
    assert "Fingerprint `abc`: of each database's state and the name, checksum and SHA-256" in text
    assert "## graph: 3 -> 4, 1 migration(s), strongest lock SHARE" in text
    assert (
        "| 4 | graph label index | graph/V4__graph_label_index.sql | 123 | 5e2bf57d3f40 | SHARE |"
    ) in text
    assert (
        "| graph/V4__graph_label_index.sql:2 | CREATE INDEX graph_label ON graph_node (label) "
        "| SHARE | public.graph_node | ~1,000,000 | 73.0 MB | possible |"
    ) in text
    assert "1 lock(s) on relations that do not exist before their statement" in text
    assert "## threads: up to date at 4" in text
    assert "ameide-migrate approve RUN_ID" in text
    assert plan.needs_decision([planned, up_to_date])
    assert not plan.needs_decision([up_to_date])
    # An approval holds for one plan: another checksum is another plan, and so are other bytes
    # under the same Flyway checksum (a line break changed, a CRC-32 matched on purpose).
    sha256 = planned.migrations[0].sha256
    for checksum, content in ((9, sha256), (123, "0" * 64)):
        changed = DatabasePlan(
            outcome,
            (
                PlannedMigration(
                    "graph/V4__graph_label_index.sql",
                    "4",
                    "graph label index",
                    checksum,
                    content,
                    (label_index,),
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

    done = approve(get_settings(), str(run_id), reason="read the plan, go")
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

    approve(get_settings(), str(first), reason="the first plan")
    # Asked again, for the plan that now holds V4, with nothing migrated in between.
    wait_for("second plan", lambda: artifact("migrate-local-plan", first) != first_plan)
    assert "graph/V4__graph_note.sql" in artifact("migrate-local-plan", first)
    wait_for("paused again", paused_run)
    assert all(platform.history(db) is None for db in DATABASES)

    approve(get_settings(), str(first), reason="the second plan")
    thread.join(timeout=300)
    assert ended["state"].is_completed(), ended["state"].message
    assert platform.versions("graph")[-1] == "4"


GRAPH_V3 = "V3__graph_add_node_properties.sql"


def edit_and_add(platform: Platform) -> None:
    """graph's V3 edited (a table more) and a V4 added, each leaving a table to look for."""
    v3 = platform.sql_dir / "graph" / GRAPH_V3
    v3.write_text(v3.read_text() + "\nCREATE TABLE graph_v3_edited (id int);\n")
    (platform.sql_dir / "graph" / "V4__graph_audit.sql").write_text(
        "CREATE TABLE graph_audit (id int);\n"
    )


def graph_on_disk() -> DatabaseCatalog:
    (graph,) = environments.catalog("local", get_settings()).select(["graph"])
    return graph


def fingerprint_of(plan_text: str) -> str:
    found = re.search(r"Fingerprint `([0-9a-f]{16})`", plan_text)
    assert found, plan_text
    return found.group(1)


def test_approval_covers_the_files_it_showed_an_edited_and_an_added_file_are_asked_for(
    platform: Platform,
) -> None:
    """While the run waits, V3 is edited and a V4 added: the approval of the plan that showed
    V3 as it was applies neither (nor anything else); the run asks again with a plan naming
    both, and the approval of that plan applies them as they now are."""
    protect(platform)
    thread, ended = run_in_thread(databases=["graph"])
    run_id = wait_for("paused run", paused_run)
    first_plan = artifact("migrate-local-plan", run_id)
    approved = fingerprint_of(first_plan)
    assert f"# Plan for local (plan {approved})" in first_plan
    assert f"graph/{GRAPH_V3}" in first_plan
    edit_and_add(platform)

    approve(get_settings(), str(run_id), reason="the plan as shown")
    wait_for("second plan", lambda: artifact("migrate-local-plan", run_id) != first_plan)
    second_plan = artifact("migrate-local-plan", run_id)
    assert f"since plan {approved} was approved, the files it listed changed" in second_plan
    assert f"- edited: graph/{GRAPH_V3}" in second_plan
    assert "- added: graph/V4__graph_audit.sql" in second_plan
    assert fingerprint_of(second_plan) != approved
    wait_for("paused again", paused_run)
    # Under the old approval nothing ran: no history, neither the edit's table nor V4's.
    assert platform.history("graph") is None
    assert not platform.table_exists("graph", "graph_v3_edited")
    assert not platform.table_exists("graph", "graph_audit")

    approve(get_settings(), str(run_id), reason="the plan with V4")
    thread.join(timeout=300)
    assert ended["state"].is_completed(), ended["state"].message
    assert platform.versions("graph") == ["1", "2", "3", "4"]
    assert platform.table_exists("graph", "graph_v3_edited")
    assert platform.table_exists("graph", "graph_audit")
    (edited,) = [m for m in graph_on_disk().migrations if m.script == GRAPH_V3]
    (row,) = [r for r in platform.history("graph") or [] if r.version == "3"]
    assert row.checksum == edited.checksum


def test_approval_of_files_changed_since_with_no_decision_on_them_exits_5_naming_them(
    platform: Platform,
) -> None:
    """`run` in a terminal: the plan approved, its files changed meanwhile, and nobody decides
    on the new plan in time: exit 5, the files named, nothing migrated."""
    protect(platform, timeout_minutes=0.5)
    run = subprocess.Popen(
        [sys.executable, "-m", "ameide_migrate.cli.main", "run", "--env", "local", "--db", "graph"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    try:
        run_id = wait_for("paused run", paused_run)
        edit_and_add(platform)
        approve(get_settings(), str(run_id), reason="the plan as shown")
        out, err = run.communicate(timeout=300)
    finally:
        if run.poll() is None:
            run.kill()
            run.communicate(timeout=10)

    assert run.returncode == ExitCode.REJECTED, out + err
    assert "plan timed out: no decision within 0.5 minutes" in err
    assert f"edited graph/{GRAPH_V3}; added graph/V4__graph_audit.sql" in err
    assert "nothing was migrated" in err
    assert platform.history("graph") is None
    assert not platform.table_exists("graph", "graph_audit")


def test_flyway_applies_the_copy_a_plan_was_made_of_not_the_tree_as_it_is_later(
    platform: Platform, tmp_path: Path
) -> None:
    """The copy closes the window between the check and Flyway's start: an edit and a new file
    in the tree after the copy was made are not what Flyway reads."""
    settings = get_settings()
    graph = graph_on_disk()
    copy = pinned_copy(graph, tmp_path)
    edit_and_add(platform)
    ctx = RunContext.create("local", [copy], {"graph": platform.owners["graph"]}, settings)
    try:
        migrate.migrate(ctx, "graph", lambda _level, _message: None)
    finally:
        ctx.close()

    assert platform.versions("graph") == ["1", "2", "3"]
    assert not platform.table_exists("graph", "graph_v3_edited")
    (row,) = [r for r in platform.history("graph") or [] if r.version == "3"]
    assert row.checksum == next(m.checksum for m in graph.migrations if m.script == GRAPH_V3)


def test_approval_rejected_ends_cancelled_with_nothing_migrated_and_the_reason(
    platform: Platform,
) -> None:
    protect(platform)
    thread, ended = run_in_thread(databases=DATABASES)
    run_id = wait_for("paused run", paused_run)

    approve(get_settings(), str(run_id), approved=False, reason="not during the sale")
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
        approve(get_settings(), str(run_id))


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
            "ameide_migrate.cli.main",
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
    switch = form.locator(".schema-form-property").filter(has_text="Approve").get_by_role("switch")
    expect(switch).to_have_attribute("aria-checked", "false")
    switch.click()
    expect(switch).to_have_attribute("aria-checked", "true")
    form.get_by_role("textbox").fill("checked the plan in the UI")
    form.get_by_role("button", name="Submit").click()
    expect(form).to_be_hidden()

    approved_and_migrated(platform, thread, ended, run_id, "checked the plan in the UI")
    assert wait_for_final_state(page, timeout=60) == "Completed"
