"""The approval of a protected environment's run: its plan as a markdown artifact, then a wait for
a person's decision, given in the Prefect UI's Resume form or with `ameide-migrate approve`.

A deployment's run is suspended while it waits (Prefect's `suspend_flow_run`): its process or pod
exits, and the worker starts it again once resumed; the run then builds its plan again, and the
decision holds only if that plan is the one approved (the plan's digest keys the wait). A run in
this process (`ameide-migrate run`) is paused (`pause_flow_run`) and waits where it is.

No decision within the environment's `approval.timeout_minutes` counts as a rejection: a paused
run says so itself; a suspended one, whose process is gone, is resumed with no input by the
automation `deploy` registers for the environment (`prefect_api.ensure_approval_timeout`), and
then records the timeout like a paused one.
"""

from __future__ import annotations

from prefect import get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.exceptions import FlowPauseTimeout
from prefect.flow_runs import pause_flow_run, suspend_flow_run
from prefect.input import RunInput, keyset_from_base_key, read_flow_run_input
from prefect.runtime import deployment, flow_run
from prefect.utilities.urls import url_for
from pydantic import Field

from ameide_migrate import plan, prefect_api, report
from ameide_migrate.environments import ApprovalPolicy
from ameide_migrate.plan import DatabasePlan, Decision, FileChanges, Verdict


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
        prefect_api.end_expired_pause(flow_run.id)
        answer = None
    # A suspended run nobody decided on is resumed by the timeout's automation with no input:
    # Prefect then hands the form's defaults back, which are no one's decision.
    waited = "suspended" if deployment.id else "paused"
    given = read_flow_run_input(keyset_from_base_key(f"{waited}-{key}")["response"])
    if answer is None or given is None:
        decision = Decision(
            Verdict.TIMED_OUT,
            f"no decision within {policy.timeout_minutes:g} minutes counts as a rejection",
            "the timeout",
        )
    else:
        decision = Decision(
            Verdict.APPROVED if answer.approve else Verdict.REJECTED,
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
