"""Runs of a flow that take turns under a key, in the order the server stamped."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from ameide_migrate.adapters.prefect.api_choice import (
    current_api_url,
    ui_address_of_flow_run,
    ui_url_of,
)


@dataclass(frozen=True)
class RunInTurn:
    """A run of a flow that took its turn under a key and has not ended."""

    flow_run_id: UUID
    name: str
    state: str
    url: str


def runs_before(key: str, flow_name: str, own: UUID | None = None) -> list[RunInTurn]:
    """The unended runs of `flow_name` that took their turn under `key` before the run `own`
    (every one, without `own`), in their turns' order: the first holds the turn, the others
    wait behind it.

    A run takes its turn by creating a markdown artifact under `key` (its first one counts):
    the server stamps its creation, so the order rests on no machine's clock, and two runs that
    take their turns at once see the same order. A run holds its turn until its state is final
    (Completed, Failed, Cancelled, Crashed); one whose process died is crashed by the heartbeat
    guard. A suspended run (waiting for an approval, its process gone) keeps it: it migrates
    once resumed. Prefect's global concurrency slots would not: a slot's lease ends with the
    process that holds it, or outlives a crash until it expires, and names no run.
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        ArtifactFilterKey,
        FlowFilter,
        FlowFilterName,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.client.schemas.sorting import ArtifactSort

    final = [StateType.COMPLETED, StateType.FAILED, StateType.CANCELLED, StateType.CRASHED]
    with get_client(sync_client=True) as client:
        unended = {
            run.id: run
            for run in client.read_flow_runs(
                flow_filter=FlowFilter(name=FlowFilterName(any_=[flow_name])),
                flow_run_filter=FlowRunFilter(
                    state=FlowRunFilterState(type=FlowRunFilterStateType(not_any_=final))
                ),
            )
        }
        turns = (
            client.read_artifacts(
                artifact_filter=ArtifactFilter(
                    key=ArtifactFilterKey(any_=[key]),
                    flow_run_id=ArtifactFilterFlowRunId(any_=list(unended)),
                ),
                sort=ArtifactSort.CREATED_DESC,
            )
            if unended
            else []
        )
    first: dict[UUID, tuple[datetime, str]] = {}
    for turn in turns:
        if turn.flow_run_id is not None and turn.created is not None:
            taken = (turn.created, str(turn.id))
            first[turn.flow_run_id] = min(first.get(turn.flow_run_id, taken), taken)
    order = sorted(first, key=first.__getitem__)
    ahead = order[: order.index(own)] if own in first else order
    ui_url = ui_url_of(current_api_url())

    def in_turn(run_id: UUID) -> RunInTurn:
        run = unended[run_id]
        now = (run.state.name or run.state.type.value) if run.state else "unknown"
        return RunInTurn(run_id, run.name, now, ui_address_of_flow_run(ui_url, str(run_id)))

    return [in_turn(run_id) for run_id in ahead if run_id != own]
