"""Trigger a deployment through the Prefect API, follow its state and logs, and turn the end
state into an exit code CI can act on."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId, LogFilterTimestamp
from prefect.client.schemas.sorting import LogSort
from prefect.deployments import run_deployment

EXIT_COMPLETED, EXIT_FAILED, EXIT_DRIFT, EXIT_TIMEOUT = 0, 1, 3, 4
DRIFTED_STATE = "Drifted"
_LOG_FLUSH_SECONDS = 3.0


@dataclass(frozen=True)
class Outcome:
    flow_run_id: UUID
    state: str
    exit_code: int
    message: str


def start(deployment: str, parameters: dict[str, Any]) -> UUID:
    """Create the flow run; the deployment's work pool picks it up."""
    flow_run = run_deployment(deployment, parameters=parameters, timeout=0)
    return flow_run.id  # type: ignore[union-attr]


def follow(
    flow_run_id: UUID,
    timeout: float,
    on_log: Callable[[str], None],
    on_state: Callable[[str], None],
    poll_seconds: float = 1.0,
) -> Outcome:
    """Stream the run's logs and state changes until it ends or `timeout` passes (the run then
    keeps going)."""
    deadline = time.monotonic() + timeout
    seen_state = ""
    since: datetime | None = None
    with get_client(sync_client=True) as client:

        def new_logs() -> None:
            nonlocal since
            log_filter = LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id]))
            if since is not None:
                log_filter.timestamp = LogFilterTimestamp(after_=since)
            for log in client.read_logs(log_filter=log_filter, sort=LogSort.TIMESTAMP_ASC):
                if since is None or log.timestamp > since:
                    on_log(log.message)
                    since = log.timestamp

        while True:
            run = client.read_flow_run(flow_run_id)
            new_logs()
            state = run.state
            if state is not None and state.name and state.name != seen_state:
                seen_state = state.name
                on_state(seen_state)
            if state is not None and state.is_final():
                # The run's last log lines reach the API a moment after its final state.
                time.sleep(_LOG_FLUSH_SECONDS)
                new_logs()
                return _outcome(flow_run_id, state)
            if time.monotonic() > deadline:
                return Outcome(
                    flow_run_id,
                    seen_state,
                    EXIT_TIMEOUT,
                    f"still {seen_state or 'scheduled'} after {timeout:g}s; the run keeps going",
                )
            time.sleep(poll_seconds)


def _outcome(flow_run_id: UUID, state: Any) -> Outcome:
    message = state.message or ""
    if state.is_completed():
        code = EXIT_COMPLETED
    elif state.is_failed() and state.name == DRIFTED_STATE:
        code = EXIT_DRIFT
    else:
        code = EXIT_FAILED
    return Outcome(flow_run_id, state.name, code, message)
