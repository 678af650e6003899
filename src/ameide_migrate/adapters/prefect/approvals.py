"""Approvals: a protected environment's run waits for a decision on its plan; the decision resumes
it, and an automation times out a plan nobody decided on."""

from __future__ import annotations

from typing import cast
from uuid import UUID

from ameide_migrate.adapters.prefect.api_choice import current_api_url
from ameide_migrate.adapters.prefect.automations import upsert
from ameide_migrate.core.errors import REJECTED_STATE, RunNotAwaitingApproval


def approval_timeout_name(environment: str) -> str:
    return f"ameide-migrate: an undecided plan of {environment} times out"


def ensure_approval_timeout(environment: str, deployment_id: UUID, minutes: float) -> None:
    """An automation that resumes, with no decision, a suspended run of the environment's
    migrate deployment that nobody decided on within `minutes`: its process is gone (suspended
    runs free their pod), so nothing else would end it. The run starts again, finds no input,
    records the timeout as a rejection and ends Cancelled. A run waiting in its own process
    (paused) times out by itself."""
    from datetime import timedelta

    from prefect.automations import Automation, EventTrigger, Posture
    from prefect.events.actions import ResumeFlowRun

    upsert(
        Automation(
            name=approval_timeout_name(environment),
            description=f"No decision within {minutes:g} minutes counts as a rejection.",
            trigger=EventTrigger(
                after={"prefect.flow-run.Suspended"},
                # State changes only: a heartbeat sent as the process exits is no decision.
                expect={
                    f"prefect.flow-run.{state}"
                    for state in (
                        "Resuming",
                        "Scheduled",
                        "Pending",
                        "Running",
                        "Completed",
                        "Failed",
                        "Cancelling",
                        "Cancelled",
                        "Crashed",
                        REJECTED_STATE,
                    )
                },
                match={"prefect.resource.id": "prefect.flow-run.*"},
                match_related={"prefect.resource.id": f"prefect.deployment.{deployment_id}"},
                for_each={"prefect.resource.id"},
                posture=Posture.Proactive,
                threshold=1,
                within=timedelta(minutes=minutes),
            ),
            actions=[ResumeFlowRun()],
        )
    )


def remove_approval_timeout(environment: str) -> None:
    """No approval timeout for an environment that no longer asks for approval."""
    from prefect.automations import Automation

    try:
        existing = cast(Automation, Automation.read(name=approval_timeout_name(environment)))
    except ValueError:
        return
    existing.delete()


def decide(run_id: str, *, approved: bool, reason: str) -> None:
    """Resume a run waiting for a decision on its plan, with that decision."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import FlowPauseTimeout, ObjectNotFound
    from prefect.flow_runs import resume_flow_run

    try:
        flow_run_id = UUID(run_id)
    except ValueError:
        raise RunNotAwaitingApproval(
            f"{run_id!r} is not a flow run id: give the id `trigger` printed (a UUID)"
        ) from None
    with get_client(sync_client=True) as client:
        try:
            run = client.read_flow_run(flow_run_id)
        except ObjectNotFound:
            raise RunNotAwaitingApproval(
                f"no flow run {run_id} on {current_api_url()}: is PREFECT_API_URL the server "
                "the run is on?"
            ) from None
    if run.state is None or not run.state.is_paused():
        state = run.state.name if run.state else "unknown"
        raise RunNotAwaitingApproval(
            f"flow run {run_id} ({run.name}) is {state}, not waiting for a decision: only a "
            "protected environment's run, once it shows its plan, waits for one"
        )
    try:
        resume_flow_run(flow_run_id, run_input={"approve": approved, "reason": reason})
    except FlowPauseTimeout:
        raise RunNotAwaitingApproval(
            f"flow run {run_id} waited too long: its time for a decision is over"
        ) from None


def end_expired_pause(flow_run_id: str) -> None:
    """A run of this process whose pause for a decision timed out, Running again, so that it
    records the timeout and ends as it decides (Rejected). Prefect otherwise turns any state
    the run proposes out of an expired pause into Failed ("never resumed"), unless its
    pause-expiration service happened to fail the run first: which of the two, a race."""
    from prefect.client.orchestration import get_client
    from prefect.states import Running

    with get_client(sync_client=True) as client:
        client.set_flow_run_state(flow_run_id, Running(message="no decision in time"), force=True)
