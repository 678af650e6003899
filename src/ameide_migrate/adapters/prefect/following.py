"""Triggering a deployment and following its run until it ends (for CI): its states, its tasks'
states and its logs, then the exit code its final state means."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from ameide_migrate.adapters.prefect.api_choice import current_api_url
from ameide_migrate.adapters.prefect.artifacts import ArtifactTable, run_tables
from ameide_migrate.adapters.prefect.registration import registered_hint
from ameide_migrate.core.errors import REJECTED_STATE, DeploymentNotRegistered, ExitCode

DRIFTED_STATE = "Drifted"
_LOG_FLUSH_SECONDS = 3.0
# Prefect's own records of states and exceptions, which the task state lines and the final table
# already say once.
_ENGINE_NOISE = (
    "Finished in state ",
    "Beginning flow run ",
    "View at ",
    "Task run failed with exception",
    "Encountered exception during execution",
    "Engine execution exited with unexpected exception",
)
# How Prefect words the message of a flow that raised: the exception's own text is the news.
_RAISED = re.compile(r"^(?:Flow|Task) run encountered an exception:? \w+: ")


@dataclass(frozen=True)
class Outcome:
    flow_run_id: UUID
    state: str
    exit_code: int
    message: str
    tables: list[ArtifactTable]

    @property
    def summary(self) -> str:
        """The last line a CI log shows: the final state and its message."""
        return f"{self.state}: {self.message}" if self.message else self.state


def start_deployment(
    deployment: str, parameters: dict[str, Any], job_variables: dict[str, Any] | None = None
) -> UUID:
    """Create a flow run of the deployment; its work pool picks it up."""
    from prefect.deployments import run_deployment
    from prefect.exceptions import ObjectNotFound

    try:
        flow_run = run_deployment(
            deployment, parameters=parameters, job_variables=job_variables, timeout=0
        )
    except ObjectNotFound:
        raise DeploymentNotRegistered(
            f"deployment {deployment} is not registered on {current_api_url()}: run "
            f"`ameide-migrate deploy --env {deployment.split('/', 1)[1]}` against that server "
            f"first{registered_hint()}"
        ) from None
    return flow_run.id  # type: ignore[union-attr]


def follow_flow_run(
    flow_run_id: UUID,
    timeout: float,
    on_log: Callable[[str], None],
    on_state: Callable[[str], None],
    poll_seconds: float = 1.0,
    on_waiting: Callable[[], None] | None = None,
) -> Outcome:
    """Stream the run's state, its tasks' states (one line each, with the task's name) and its
    logs until it ends or `timeout` passes (the run then keeps going).

    Each log message is shown once: Prefect repeats a failure in the task's and the flow's
    records, and those records' tracebacks are Prefect's, not the user's news.
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterId,
        LogFilter,
        LogFilterFlowRunId,
        LogFilterTimestamp,
    )
    from prefect.client.schemas.sorting import LogSort

    deadline = time.monotonic() + timeout
    seen_state = ""
    task_states: dict[UUID, str] = {}
    shown: set[str] = set()
    since: datetime | None = None
    with get_client(sync_client=True) as client:

        def new_logs() -> None:
            nonlocal since
            log_filter = LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id]))
            if since is not None:
                log_filter.timestamp = LogFilterTimestamp(after_=since)
            for log in client.read_logs(log_filter=log_filter, sort=LogSort.TIMESTAMP_ASC):
                if since is not None and log.timestamp <= since:
                    continue
                since = log.timestamp
                message = _newsworthy(log.message)
                if message and message not in shown:
                    shown.add(message)
                    on_log(message)

        def new_task_states() -> None:
            runs = client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
            )
            for task_run in sorted(runs, key=lambda r: str(r.start_time or r.created)):
                state = task_run.state
                if state is None or not state.name or state.name in ("Pending", "Scheduled"):
                    continue
                if task_states.get(task_run.id) != state.name:
                    task_states[task_run.id] = state.name
                    line = f"  task {task_run.name}: {state.name}"
                    if state.is_failed() and state.message:
                        line += f" ({_first_line(state.message)})"
                    on_state(line)

        while True:
            run = client.read_flow_run(flow_run_id)
            new_logs()
            new_task_states()
            state = run.state
            if state is not None and state.name and state.name != seen_state:
                seen_state = state.name
                on_state(f"state: {seen_state}")
                if state.is_paused() and on_waiting is not None:
                    on_waiting()
            if state is not None and state.is_final():
                # The run's last log lines reach the API a moment after its final state.
                time.sleep(_LOG_FLUSH_SECONDS)
                new_logs()
                new_task_states()
                return _outcome(flow_run_id, state, run_tables(client, flow_run_id))
            if time.monotonic() > deadline:
                return Outcome(
                    flow_run_id,
                    seen_state or "Scheduled",
                    ExitCode.TIMEOUT,
                    f"still {seen_state or 'scheduled'} after {timeout:g}s; the run keeps going",
                    [],
                )
            time.sleep(poll_seconds)


def _newsworthy(message: str) -> str:
    """The message without Prefect's bookkeeping and tracebacks; empty when nothing is left."""
    if message.startswith(_ENGINE_NOISE):
        return ""
    return message.split("\nTraceback (most recent call last):", 1)[0].rstrip()


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else ""


def _outcome(flow_run_id: UUID, state: Any, tables: list[ArtifactTable]) -> Outcome:
    message = _RAISED.sub("", _first_line(state.message or ""))
    if state.is_completed():
        code = ExitCode.OK
    elif state.is_failed() and state.name == DRIFTED_STATE:
        code = ExitCode.DRIFT
    elif state.is_cancelled() and state.name == REJECTED_STATE:
        code = ExitCode.REJECTED
    else:
        code = ExitCode.FAILED
    return Outcome(flow_run_id, state.name, code, message, tables)
