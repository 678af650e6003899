"""The approval of a protected environment's run: its plan as a markdown artifact, then a wait for
a person's decision, given in the Prefect UI's Resume form or with `ameide-migrate approve`.

A deployment's run is suspended while it waits (Prefect's `suspend_flow_run`): its process or pod
exits, and the worker starts it again once resumed; the run then builds its plan again, and the
decision holds only if that plan is the one approved (the plan's digest keys the wait). A run in
this process (`ameide-migrate run`) is paused (`pause_flow_run`) and waits where it is.

No decision within the environment's `approval.timeout_minutes` counts as a rejection: a paused
run says so itself; a suspended one, whose process is gone, is resumed with no input by the
automation `deploy` registers for the environment (`approvals.ensure_approval_timeout`), and
then records the timeout like a paused one.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

from prefect import get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.exceptions import FlowPauseTimeout
from prefect.flow_runs import pause_flow_run, suspend_flow_run
from prefect.input import RunInput, keyset_from_base_key, read_flow_run_input
from prefect.runtime import deployment, flow_run
from prefect.utilities.urls import url_for
from pydantic import Field

from ameide_migrate.adapters.prefect import approvals
from ameide_migrate.config.environments import ApprovalPolicy
from ameide_migrate.config.settings import Settings
from ameide_migrate.core.catalog import DatabaseCatalog, pinned_copy
from ameide_migrate.services import plan, report
from ameide_migrate.services.context import RunContext
from ameide_migrate.services.plan import DatabasePlan, Decision, FileChanges, Ruling

T = TypeVar("T")


class ApprovalInput(RunInput):
    """The form a person fills in to decide on a plan."""

    approve: bool = Field(
        default=False,
        title="Approve this plan",
        description="Tick to migrate exactly what the plan artifact lists; leave it unticked to "
        "reject the run (it ends Cancelled, nothing migrated).",
    )
    reason: str = Field(
        default="",
        title="Reason",
        description="Why: recorded with the decision in the run's artifacts.",
    )


def plan_key(environment: str) -> str:
    return f"migrate-{environment}-plan"


def decision_key(environment: str) -> str:
    return f"migrate-{environment}-decision"


def publish_plan(
    environment: str,
    plans: list[DatabasePlan],
    *,
    dry_run: bool,
    changes: FileChanges | None = None,
) -> str:
    """The plan as a markdown artifact (a dry run's under a key of its own), with the `changes`
    that made it be asked again; its id."""
    plan_id = plan.digest(plans)
    create_markdown_artifact(
        key=f"migrate-{environment}-dry-run-plan" if dry_run else plan_key(environment),
        markdown=report.plan_markdown(
            environment, plans, plan_id, asks=not dry_run, changes=changes
        ),
        description=f"What a run of {environment} would migrate now",
    )
    return plan_id


def ask(
    environment: str,
    plan_id: str,
    policy: ApprovalPolicy,
    *,
    plan_artifact: str | None = None,
    decision_artifact: str | None = None,
) -> Decision:
    """Wait for a person's decision on the plan `plan_id`, published as `plan_artifact` (the
    run's, by default); the decision is recorded as `decision_artifact`."""
    logger = get_run_logger()
    timeout = round(policy.timeout_minutes * 60)
    form = ApprovalInput.with_initial_data(
        description=f"Plan {plan_id} of {environment}: read the artifact "
        f"{plan_artifact or plan_key(environment)} (Artifacts tab), then approve or reject it "
        "with a reason.",
    )
    logger.info(
        "waiting for a decision on plan %s of %s (up to %g minutes): approve or reject it at %s, "
        "or with `ameide-migrate approve %s [--reject --reason TEXT]`",
        plan_id,
        environment,
        policy.timeout_minutes,
        url_for("flow-run", obj_id=flow_run.id) or "the run's page in the Prefect UI",
        flow_run.id,
    )
    key = f"approval-{plan_id}"
    try:
        if deployment.id:
            answer = suspend_flow_run(wait_for_input=form, key=key)
        else:
            answer = pause_flow_run(wait_for_input=form, timeout=timeout, key=key)
    except FlowPauseTimeout:
        approvals.end_expired_pause(flow_run.id)
        answer = None
    # A suspended run nobody decided on is resumed by the timeout's automation with no input:
    # Prefect then hands the form's defaults back, which are no one's decision.
    waited = "suspended" if deployment.id else "paused"
    given = read_flow_run_input(keyset_from_base_key(f"{waited}-{key}")["response"])
    if answer is None or given is None:
        decision = Decision(
            Ruling.TIMED_OUT,
            f"no decision within {policy.timeout_minutes:g} minutes counts as a rejection",
            "the timeout",
        )
    else:
        decision = Decision(
            Ruling.APPROVED if answer.approve else Ruling.REJECTED,
            answer.reason.strip() or "no reason given",
            "a person",
        )
    create_markdown_artifact(
        key=decision_artifact or decision_key(environment),
        markdown=report.decision_markdown(environment, plan_id, decision),
        description=f"The decision on plan {plan_id} of {environment}",
    )
    logger.info("plan %s: %s (%s)", plan_id, decision.verdict.value, decision.reason)
    return decision


def pinned(
    ctx: RunContext, fresh: Mapping[str, DatabaseCatalog], settings: Settings, pins: Path
) -> RunContext:
    """`ctx` (closed) again, its databases on a copy, made now under `pins`, of their folders
    as the disk holds them (`fresh`: read again, not the catalog in memory): its Flyway reads
    the copy, so what it applies is what the plan built on this context was made of. A folder
    several databases share (a fleet's template) is copied once."""
    into = Path(tempfile.mkdtemp(dir=pins))
    copies = {db.name: db for db in fresh.values()}
    copied = {name: pinned_copy(db, into) for name, db in copies.items()}
    ctx.close()
    return RunContext.create(
        ctx.environment,
        {database: copied[db.name] for database, db in fresh.items()},
        ctx.credentials,
        settings,
        fleet=ctx.fleet,
    )


@dataclass(frozen=True)
class Proposal(Generic[T]):
    """A plan as an approval holds it: `planned` is the caller's own (a run's per-database
    plans, a fleet's groups of targets)."""

    planned: T
    id: str
    """The plan's digest: an approval holds for it only."""
    files: dict[str, str]
    """The files it would apply, each with its SHA-256."""
    pending: bool
    """Something would be applied: with nothing pending there is nothing to approve."""


def decided(
    environment: str,
    policy: ApprovalPolicy,
    propose: Callable[[], Proposal[T]],
    publish: Callable[[Proposal[T], FileChanges | None], None],
    *,
    changed_since: str,
    plan_artifact: str | None = None,
    decision_artifact: str | None = None,
) -> Decision | None:
    """A person's decision on the plan `propose` builds (None when nothing is pending), which
    `publish` shows with the `changes` that made it be asked again. An approval holds for the
    plan approved: after it `propose` builds the plan again (from the files read again, into a
    fresh copy: the one that will run); when it differs (the run waited while a file or a
    database changed: `changed_since` says the latter), the new plan is asked for, naming the
    files that changed."""
    approved: tuple[Decision, Proposal[T]] | None = None
    while True:
        proposal = propose()
        changes = None
        if approved is not None:
            decision, before = approved
            if proposal.id == before.id:
                return decision
            changes = plan.file_changes(before.id, before.files, proposal.files)
            get_run_logger().warning(
                "%s; asking for the new plan %s",
                changes or f"plan {before.id} was approved, but {changed_since}",
                proposal.id,
            )
        if not proposal.pending:
            return None
        publish(proposal, changes)
        decision = ask(
            environment,
            proposal.id,
            policy,
            plan_artifact=plan_artifact,
            decision_artifact=decision_artifact,
        )
        if not decision.approved:
            return plan.asked_again(decision, changes)
        approved = (decision, proposal)
