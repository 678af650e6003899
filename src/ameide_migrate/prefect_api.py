"""The Prefect API: a local server kept running beside the local cluster, and how to reach it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, cast
from uuid import UUID

from ameide_migrate.errors import PrefectServerFailed
from ameide_migrate.postgres import free_port

QUIET_ENV = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "PREFECT_UI_ENABLED": "true",
}


# Servers started by this process outlive it on purpose; holding them here keeps Python from
# reaping (and warning about) a child that is meant to keep running.
_DETACHED: list[subprocess.Popen[bytes]] = []


@dataclass(frozen=True)
class Server:
    api_url: str
    ui_url: str
    pid: int | None


def healthy(api_url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(f"{api_url}/health", timeout=timeout) as response:  # noqa: S310
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def ensure_server(home: Path, *, port: int | None = None, timeout: float = 90.0) -> Server:
    """The server whose state lives in `home`, started when it is not running.

    It keeps running after this process exits, so the next run (and the UI) find it.
    """
    record = home / "server.json"
    if record.exists():
        known = json.loads(record.read_text())
        if _alive(known["pid"]) and healthy(known["api_url"]):
            return Server(known["api_url"], known["ui_url"], known["pid"])
    home.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    env = {**os.environ, **QUIET_ENV, "PREFECT_HOME": str(home)}
    env.pop("PREFECT_API_URL", None)
    with (home / "server.log").open("ab") as log:
        process = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "prefect"),
                "server",
                "start",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    _DETACHED.append(process)
    deadline = time.monotonic() + timeout
    while not healthy(api_url, timeout=1.0):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            tail = (home / "server.log").read_text(errors="replace").splitlines()[-10:]
            raise PrefectServerFailed(
                f"the local Prefect server did not start within {timeout:.0f}s "
                f"(log {home / 'server.log'}): {' | '.join(tail)}. "
                "Or point PREFECT_API_URL at a running server"
            )
        time.sleep(0.3)
    server = Server(api_url, f"http://127.0.0.1:{port}", process.pid)
    record.write_text(json.dumps({"api_url": api_url, "ui_url": server.ui_url, "pid": process.pid}))
    return server


def stop_server(home: Path) -> bool:
    """Stop the server recorded in `home`; True when one was running."""
    record = home / "server.json"
    if not record.exists():
        return False
    pid = json.loads(record.read_text())["pid"]
    record.unlink()
    if not _alive(pid) or not _is_prefect_server(pid):
        return False
    os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + 20
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if _alive(pid):
        os.killpg(pid, signal.SIGKILL)
    for process in [p for p in _DETACHED if p.pid == pid]:
        process.wait()
        _DETACHED.remove(process)
    return True


def _is_prefect_server(pid: int) -> bool:
    """The recorded pid is still our server, not a process that reused the number."""
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"server" in command and any(part.endswith(b"prefect") for part in command)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of ours counts as gone.
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return True
    return waited == 0


def ui_address_of_flow_run(ui_url: str, flow_run_id: str) -> str:
    return f"{ui_url}/runs/flow-run/{flow_run_id}"


def ui_url() -> str:
    """The UI address of the API this process talks to (PREFECT_UI_URL, else derived)."""
    from prefect.settings import get_current_settings

    settings = get_current_settings()
    if settings.ui_url:
        return str(settings.ui_url)
    api = str(settings.api.url or "")
    return api.removesuffix("/api")


def ensure_work_pool(
    name: str, pool_type: str, base_job_template: dict[str, Any] | None = None
) -> None:
    """Create the work pool, or give an existing one this job template (a worker that started
    first creates its pool with its type's default template)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate, WorkPoolUpdate
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            pool = client.read_work_pool(name)
        except ObjectNotFound:
            client.create_work_pool(
                WorkPoolCreate(name=name, type=pool_type, base_job_template=base_job_template or {})
            )
            return
        if base_job_template and pool.base_job_template != base_job_template:
            client.update_work_pool(name, WorkPoolUpdate(base_job_template=base_job_template))


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
    try:
        # Called outside an event loop, so the sync flavour: an Automation, not a coroutine.
        existing = cast(Automation, Automation.read(name=IMAGE_PULL_GUARD))
    except ValueError:
        wanted.create()
        return
    wanted.id = existing.id
    wanted.update()


# --- Triggering a deployment and following its run (for CI) ------------------------------------

EXIT_COMPLETED, EXIT_FAILED, EXIT_DRIFT, EXIT_TIMEOUT = 0, 1, 3, 4
DRIFTED_STATE = "Drifted"
_LOG_FLUSH_SECONDS = 3.0


@dataclass(frozen=True)
class Outcome:
    flow_run_id: UUID
    state: str
    exit_code: int
    message: str


def start_deployment(
    deployment: str, parameters: dict[str, Any], job_variables: dict[str, Any] | None = None
) -> UUID:
    """Create a flow run of the deployment; its work pool picks it up."""
    from prefect.deployments import run_deployment

    flow_run = run_deployment(
        deployment, parameters=parameters, job_variables=job_variables, timeout=0
    )
    return flow_run.id  # type: ignore[union-attr]


def follow_flow_run(
    flow_run_id: UUID,
    timeout: float,
    on_log: Callable[[str], None],
    on_state: Callable[[str], None],
    poll_seconds: float = 1.0,
) -> Outcome:
    """Stream the run's logs and state changes until it ends or `timeout` passes (the run then
    keeps going)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId, LogFilterTimestamp
    from prefect.client.schemas.sorting import LogSort

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
