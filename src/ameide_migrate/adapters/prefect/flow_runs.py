"""Flow runs read and ended from outside: awaited with a timeout, cancelled through Prefect's own
cancellation, crashed on a signal, and the ones a stopped command leaves behind."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from ameide_migrate.adapters.prefect.artifacts import shard_table

STOP_GRACE_SECONDS = 150.0
"""How long a cancelled run may take to stop: what stops it sees Cancelling at once (an event)
or within its polling, and follows its SIGTERM with SIGKILL 30 s later. A process worker stops
the run's process; on Kubernetes, Prefect's `flow-run execute` in the run's pod stops the flow's
process, and the worker deletes the Job only of a run not started yet (its pod then gets its
termination grace, 30 s by default)."""


@dataclass(frozen=True)
class EndedRun:
    """A flow run as it ended: its final state, and the rows of its shard ledger."""

    flow_run_id: UUID
    name: str
    state: str
    message: str
    rows: list[dict[str, str]]
    seconds: float = 0.0
    """How long it ran, as Prefect counts it."""
    overdue: bool = False
    """Still going after its timeout, and cancelled for it."""
    stopped: bool = True
    """False: cancelled, yet still not in a final state when the grace ran out; its process
    may still be running."""


def await_runs(
    flow_run_ids: list[UUID],
    timeout: float,
    on_end: Callable[[EndedRun], None],
    *,
    grace: float = STOP_GRACE_SECONDS,
) -> None:
    """Wait for every run to end, `on_end` called as each does. A run still going after
    `timeout` seconds is cancelled through Prefect's own cancellation (Cancelling: its worker,
    or on Kubernetes the runner in its pod, kills its process and sets it Cancelled), and
    handed on once it has stopped; one still not in a final state `grace` seconds later is
    handed on as it is, not stopped."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.objects import State, StateType

    deadline = time.monotonic() + timeout
    cancelled_at: dict[UUID, float] = {}
    pending = list(flow_run_ids)
    with get_client(sync_client=True) as client:
        while pending:
            for run_id in list(pending):
                run = client.read_flow_run(run_id)
                state = run.state
                final = state is not None and state.is_final()
                now = time.monotonic()
                if not final and run_id not in cancelled_at and now > deadline:
                    # Not forced, so that the server's own rules apply: a run no worker has
                    # taken yet has nothing to stop, and goes straight to Cancelled.
                    client.set_flow_run_state(
                        run_id,
                        State(
                            type=StateType.CANCELLING,
                            message=f"still {state.name if state else 'unstarted'} after "
                            f"{timeout:g}s: cancelled",
                        ),
                    )
                    cancelled_at[run_id] = now
                    continue
                if not final and (run_id not in cancelled_at or now < cancelled_at[run_id] + grace):
                    continue
                pending.remove(run_id)
                on_end(
                    EndedRun(
                        run_id,
                        run.name,
                        (state.name or state.type.value) if state else "unknown",
                        (state.message or "") if state else "",
                        shard_table(client, run_id),
                        run.total_run_time.total_seconds(),
                        overdue=run_id in cancelled_at,
                        stopped=final,
                    )
                )
            if pending:
                time.sleep(2)


def cancel_flow_run(flow_run_id: UUID, message: str, wait: float) -> str:
    """Cancel a run through Prefect's own cancellation (Cancelling: its worker, or on Kubernetes
    the runner in its pod, kills its process, then sets it Cancelled); the name of the state it
    reached within `wait` seconds (`Cancelling` when nothing has stopped it yet)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.objects import State, StateType

    with get_client(sync_client=True) as client:
        state = client.read_flow_run(flow_run_id).state
        if state is None or not state.is_final():
            client.set_flow_run_state(
                flow_run_id, State(type=StateType.CANCELLING, message=message)
            )
        deadline = time.monotonic() + wait
        while True:
            state = client.read_flow_run(flow_run_id).state
            if state is not None and (state.is_final() or time.monotonic() > deadline):
                return state.name or state.type.value
            time.sleep(0.5)


def end_this_run_on_signal(flow_run_id: UUID, signum: int) -> None:
    """A deployment's run process told to stop (its worker cancelling it, a pod evicted): a run
    that is Cancelling is left to its worker, which marks it Cancelled once the process is gone;
    any other is marked Crashed, saying why."""
    from prefect.client.orchestration import get_client
    from prefect.states import Crashed

    with get_client(sync_client=True) as client:
        state = client.read_flow_run(flow_run_id).state
        if state is not None and (state.is_cancelling() or state.is_final()):
            return
        name = signal.Signals(signum).name
        client.set_flow_run_state(
            flow_run_id,
            Crashed(message=f"its process was stopped by {name}; the Flyway JVM ended with it"),
            force=True,
        )


def job_variables_of(flow_run_id: str) -> dict[str, Any]:
    """The job variables a flow run was started with (a deployment's, and a trigger's)."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return dict(client.read_flow_run(UUID(flow_run_id)).job_variables or {})


def running_flow_name(flow_run_id: str) -> str | None:
    """The flow's name of a flow run that is running now; None when it is not running."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        run = client.read_flow_run(UUID(flow_run_id))
        if run.state is None or not run.state.is_running():
            return None
        return str(client.read_flow(run.flow_id).name)


def end_unfinished_runs(tag: str, message: str) -> list[str]:
    """Cancel every flow run and task run tagged `tag` that has no final state yet; the names of
    the flow runs so ended.

    A flow run in this process that is interrupted (Ctrl-C) is crashed by Prefect's engine, but
    not when the interrupt lands before the engine could record it, and its task runs in other
    threads stay Running: nothing else would ever end them.
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
        FlowRunFilterTags,
        TaskRunFilter,
        TaskRunFilterState,
        TaskRunFilterStateType,
        TaskRunFilterTags,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.states import Cancelled

    final = {StateType.COMPLETED, StateType.FAILED, StateType.CANCELLED, StateType.CRASHED}
    unfinished = [state for state in StateType if state not in final]
    ended = []
    with get_client(sync_client=True) as client:
        for task_run in client.read_task_runs(
            task_run_filter=TaskRunFilter(
                tags=TaskRunFilterTags(all_=[tag]),
                state=TaskRunFilterState(type=TaskRunFilterStateType(any_=unfinished)),
            )
        ):
            client.set_task_run_state(task_run.id, Cancelled(message=message), force=True)
        for flow_run in client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                tags=FlowRunFilterTags(all_=[tag]),
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=unfinished)),
            )
        ):
            client.set_flow_run_state(flow_run.id, Cancelled(message=message), force=True)
            ended.append(flow_run.name)
    return ended
