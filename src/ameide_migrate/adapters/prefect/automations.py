"""The automations that guard runs on the server: a run whose heartbeat stopped, or whose Job
cannot pull its image, is crashed; one of each name, created or brought up to date."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from prefect.automations import Automation


# A flow run's process sends a heartbeat every HEARTBEAT_SECONDS (Prefect's minimum); the
# HEARTBEAT_GUARD automation crashes a run that has sent none for CRASH_AFTER_SECONDS (three
# missed beats). Prefect's triggers service checks such silences every few seconds, so a run
# whose process or pod died is Crashed at most about CRASHED_WITHIN_SECONDS after it died.
HEARTBEAT_SECONDS = 30
CRASH_AFTER_SECONDS = 90
CRASHED_WITHIN_SECONDS = CRASH_AFTER_SECONDS + 30
HEARTBEAT_ENV = {"PREFECT_FLOWS_HEARTBEAT_FREQUENCY": str(HEARTBEAT_SECONDS)}


IMAGE_PULL_GUARD = "ameide-migrate: a Job that cannot pull its image crashes its run"


def ensure_image_pull_guard() -> None:
    """An automation that crashes a flow run whose Job's pod cannot pull its image.

    Kubernetes retries a failed pull forever, and a pod stuck pulling never fails its Job, so the
    run would wait for the Job's deadline. prefect-kubernetes's observer reports the pull failure
    as a `prefect.kubernetes.pod.pending` event labelled `kubernetes.diagnosis: ImagePullError`
    (and logs the registry's answer to the run); this crashes the run on that event, so `trigger`
    ends at once with exit 1. Idempotent: one automation of this name.
    """
    from prefect.automations import Automation, ChangeFlowRunState, EventTrigger, Posture
    from prefect.client.schemas.objects import StateType

    wanted = Automation(
        name=IMAGE_PULL_GUARD,
        description="Kubernetes retries a failed image pull forever; the run should not wait.",
        trigger=EventTrigger(
            expect={"prefect.kubernetes.pod.pending"},
            match={"kubernetes.diagnosis": "ImagePullError"},
            for_each={"prefect.resource.id"},
            posture=Posture.Reactive,
            threshold=1,
        ),
        actions=[
            ChangeFlowRunState(
                state=StateType.CRASHED,
                name="Crashed",
                message="the Job's pod cannot pull its image (ErrImagePull / ImagePullBackOff): "
                "check that the registry has the digest the deployment names",
            )
        ],
    )
    upsert(wanted)


HEARTBEAT_GUARD = "ameide-migrate: a run whose heartbeat stopped is crashed"
CRASH_MESSAGE = (
    f"no heartbeat for {CRASH_AFTER_SECONDS}s: the run's process or pod died before it could "
    "report its end. A migration it was applying in a transaction was rolled back by "
    "PostgreSQL; one outside a transaction (CREATE INDEX CONCURRENTLY and the like) keeps what "
    "its first statements did, with no history row. `ameide-migrate drift` (`--fleet NAME` for "
    "a fleet) and `fleet status` name such a database as interrupted, with the statements that "
    "undo it; then run it again"
)
"""The crashed run cannot say which migration it was applying: the message says what either
kind leaves, and where to find out which."""


def ensure_heartbeat_guard() -> None:
    """An automation that crashes a flow run whose heartbeats stopped before it ended.

    A run's state is reported by its own process: when that process is killed (kill -9, a pod
    evicted, a machine lost) the run would stay Running forever. Each run process sends
    Prefect's flow-run heartbeat every HEARTBEAT_SECONDS (HEARTBEAT_ENV); this proactive trigger
    fires when a run that has beaten sends neither a heartbeat nor a final state for
    CRASH_AFTER_SECONDS, and sets it Crashed, so `trigger --wait` ends with exit 1. Runs that
    never beat (heartbeats off) are left alone. Idempotent: one automation of this name.
    """
    from datetime import timedelta

    from prefect.automations import Automation, ChangeFlowRunState, EventTrigger, Posture
    from prefect.client.schemas.objects import StateType

    wanted = Automation(
        name=HEARTBEAT_GUARD,
        description="A run whose process died cannot report its end; its silence does.",
        trigger=EventTrigger(
            after={"prefect.flow-run.heartbeat"},
            expect={
                "prefect.flow-run.heartbeat",
                "prefect.flow-run.Completed",
                "prefect.flow-run.Failed",
                "prefect.flow-run.Cancelled",
                "prefect.flow-run.Crashed",
                # Waiting for an approval: a suspended run's process is gone on purpose.
                "prefect.flow-run.Paused",
                "prefect.flow-run.Suspended",
            },
            match={"prefect.resource.id": "prefect.flow-run.*"},
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=timedelta(seconds=CRASH_AFTER_SECONDS),
        ),
        actions=[
            ChangeFlowRunState(
                state=StateType.CRASHED,
                name="Crashed",
                message=CRASH_MESSAGE,
            )
        ],
    )
    upsert(wanted)


def upsert(wanted: Automation) -> None:
    """Create the automation, or update the one of its name when its definition differs: one of
    each name, always.

    An unchanged automation is left alone. The server gives an updated automation's trigger a
    new id, and a proactive trigger's buckets (a silent run's countdown) belong to the old id:
    updating on every `run` or `deploy` would forget every run killed in the last
    CRASH_AFTER_SECONDS, and those would stay Running forever.
    """
    from prefect.automations import Automation

    try:
        # Called outside an event loop, so the sync flavour: an Automation, not a coroutine.
        existing = cast(Automation, Automation.read(name=wanted.name))
    except ValueError:
        wanted.create()
        return
    if _definition(existing) == _definition(wanted):
        return
    wanted.id = existing.id
    wanted.update()


def _definition(automation: Automation) -> dict[str, Any]:
    """What the automation does, without the ids the server gave it. Python mode: the trigger's
    event names are sets, equal whatever order the server lists them in."""
    return automation.model_dump(exclude={"id", "owner_resource"})
