"""The Prefect API: a local server kept running beside the local cluster, and how to reach it."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast
from uuid import UUID

if TYPE_CHECKING:
    from prefect.automations import Automation

from ameide_migrate.adapters.ports import free_port
from ameide_migrate.config import state
from ameide_migrate.core.errors import (
    REJECTED_STATE,
    DeploymentNotRegistered,
    ExitCode,
    PrefectApiNotConfigured,
    PrefectApiUnreachable,
    PrefectServerFailed,
    RunNotAwaitingApproval,
)

QUIET_ENV = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "PREFECT_UI_ENABLED": "true",
}


# A flow run's process sends a heartbeat every HEARTBEAT_SECONDS (Prefect's minimum); the
# HEARTBEAT_GUARD automation crashes a run that has sent none for CRASH_AFTER_SECONDS (three
# missed beats). Prefect's triggers service checks such silences every few seconds, so a run
# whose process or pod died is Crashed at most about CRASHED_WITHIN_SECONDS after it died.
HEARTBEAT_SECONDS = 30
CRASH_AFTER_SECONDS = 90
CRASHED_WITHIN_SECONDS = CRASH_AFTER_SECONDS + 30
HEARTBEAT_ENV = {"PREFECT_FLOWS_HEARTBEAT_FREQUENCY": str(HEARTBEAT_SECONDS)}


# Servers and workers started by this process outlive it on purpose; holding them here keeps
# Python from reaping (and warning about) a child that is meant to keep running.
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


def _prefect_command() -> str:
    return str(Path(sys.executable).parent / "prefect")


def _start_detached(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """A process in its own session that keeps running after this one exits."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    _DETACHED.append(process)
    return process


def _recorded(record: Path, role: bytes) -> dict[str, Any] | None:
    """What `record` says of a process that is still running as `role` (server or worker)."""
    if not record.exists():
        return None
    known: dict[str, Any] = json.loads(record.read_text())
    return known if _alive(known["pid"]) and _runs_prefect(known["pid"], role) else None


def ensure_server(home: Path, *, port: int | None = None, timeout: float = 180.0) -> Server:
    """The server whose state lives in `home`, started when it is not running.

    It keeps running after this process exits, so the next run (and the UI) find it.
    """
    record = home / "server.json"
    known = _recorded(record, b"server")
    if known and healthy(known["api_url"]):
        return Server(known["api_url"], known["ui_url"], known["pid"])
    home.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    # The UI asks /ui-settings where the API is; without this it names the default port 4200.
    env = {**os.environ, **QUIET_ENV, "PREFECT_HOME": str(home), "PREFECT_UI_API_URL": api_url}
    env.pop("PREFECT_API_URL", None)
    argv = [_prefect_command(), "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    process = _start_detached(argv, env, home / "server.log")
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


def ensure_worker(home: Path, pool: str, api_url: str, *, poll_seconds: float = 2.0) -> int:
    """A process worker of `pool` for the server at `api_url`, started when none is running;
    its pid. Like the server, it keeps running after this process exits (until `stop_worker`)."""
    record = home / "worker.json"
    known = _recorded(record, b"worker")
    if known and known.get("pool") == pool and known.get("api_url") == api_url:
        return int(known["pid"])
    stop_worker(home)
    env = {
        **os.environ,
        **QUIET_ENV,
        "PREFECT_API_URL": api_url,
        "PREFECT_WORKER_QUERY_SECONDS": str(poll_seconds),
        **HEARTBEAT_ENV,
    }
    argv = [_prefect_command(), "worker", "start", "--pool", pool, "--type", "process"]
    process = _start_detached(argv, env, home / "worker.log")
    record.write_text(json.dumps({"pid": process.pid, "pool": pool, "api_url": api_url}))
    return process.pid


def stop_server(home: Path) -> bool:
    """Stop the server recorded in `home`; True when one was running."""
    return _stop_recorded(home / "server.json", b"server")


def stop_worker(home: Path) -> bool:
    """Stop the worker recorded in `home`; True when one was running."""
    return _stop_recorded(home / "worker.json", b"worker")


def _stop_recorded(record: Path, role: bytes) -> bool:
    known = _recorded(record, role)
    record.unlink(missing_ok=True)
    if known is None:
        return False
    pid = int(known["pid"])
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


def _runs_prefect(pid: int, role: bytes) -> bool:
    """The recorded pid is still our server or worker, not a process that reused the number."""
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return role in command and any(part.endswith(b"prefect") for part in command)


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


# --- Which Prefect API a command talks to ------------------------------------------------------


@dataclass(frozen=True)
class Api:
    """The Prefect API a command talks to, and where a person sees it."""

    api_url: str
    ui_url: str
    local: bool
    """The embedded local server of `ameide-migrate local up`."""


def configured_api_url() -> str | None:
    """PREFECT_API_URL as Prefect reads it: the environment first, then the active profile.

    Read without importing Prefect, which fixes its settings once at import: this decides what
    they will be.
    """
    if "PREFECT_API_URL" in os.environ:
        return os.environ["PREFECT_API_URL"]
    home = Path(os.environ.get("PREFECT_HOME") or Path.home() / ".prefect")
    profiles = Path(os.environ.get("PREFECT_PROFILES_PATH") or home / "profiles.toml")
    try:
        document = tomllib.loads(profiles.read_text())
    except (OSError, tomllib.TOMLDecodeError):
        return None
    active = os.environ.get("PREFECT_PROFILE") or document.get("active")
    settings = document.get("profiles", {}).get(active, {})
    value = settings.get("PREFECT_API_URL")
    return str(value) if value is not None else None


def choose_api(state_dir: Path, *, local_allowed: bool, needed_for: str) -> Api:
    """Point this process at the Prefect API it should use, before Prefect is imported.

    PREFECT_API_URL (or the active Prefect profile's) when set; else, where `local_allowed`, the
    embedded local server, started when it is not running. Never Prefect's temporary server: a
    run recorded there is gone when the command ends. Missing (where a local server will not
    do), empty, malformed or unreachable is a `FAILED:` that names the variable and the address.
    """
    configured = configured_api_url()
    if configured is None:
        if not local_allowed:
            raise PrefectApiNotConfigured(
                f"PREFECT_API_URL is not set, and {needed_for} needs the Prefect server where "
                "the deployments live: set PREFECT_API_URL to its API address "
                "(http://HOST:4200/api, or Prefect Cloud's workspace URL with PREFECT_API_KEY)"
            )
        server = ensure_server(state.writable(state_dir) / "prefect")
        api = Api(server.api_url, server.ui_url, local=True)
    elif not configured.strip():
        raise PrefectApiNotConfigured(
            "PREFECT_API_URL is set but empty (a CI secret that is not defined?): set it to the "
            "Prefect server's API address (http://HOST:4200/api)"
            + (", or unset it to use the local server" if local_allowed else "")
        )
    else:
        url = configured.strip().rstrip("/")
        _check_reachable(url)
        api = Api(url, _ui_url_of(url), local=False)
    os.environ["PREFECT_API_URL"] = api.api_url
    os.environ["PREFECT_SERVER_ALLOW_EPHEMERAL_MODE"] = "false"
    # A run of this process that stops beating (killed, its machine gone) is crashed by the
    # heartbeat guard instead of staying Running forever.
    for variable, value in HEARTBEAT_ENV.items():
        os.environ.setdefault(variable, value)
    if "prefect" in sys.modules:
        from prefect.settings import get_current_settings

        if str(get_current_settings().api.url or "").rstrip("/") != api.api_url:
            raise RuntimeError("Prefect was imported before the command chose its API")
    return api


def _check_reachable(api_url: str, timeout: float = 5.0) -> None:
    """Any HTTP answer will do (Prefect Cloud answers 401 without a key); silence will not."""
    parts = urllib.parse.urlsplit(api_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise PrefectApiUnreachable(
            f"PREFECT_API_URL={api_url!r} is not an http(s) URL: set it to the Prefect server's "
            "API address, e.g. http://127.0.0.1:4200/api"
        )
    try:
        with urllib.request.urlopen(f"{api_url}/health", timeout=timeout):  # noqa: S310
            return
    except urllib.error.HTTPError:
        return
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", e)
        raise PrefectApiUnreachable(
            f"the Prefect API at {api_url} (PREFECT_API_URL) does not answer ({reason}): start "
            "the server, or point PREFECT_API_URL at one that runs"
        ) from None


def _ui_url_of(api_url: str) -> str:
    """PREFECT_UI_URL when set, else Prefect Cloud's app address or the API's own host."""
    if os.environ.get("PREFECT_UI_URL"):
        return os.environ["PREFECT_UI_URL"].rstrip("/")
    cloud = re.fullmatch(
        r"https://api\.prefect\.cloud/api/accounts/([^/]+)/workspaces/([^/]+)", api_url
    )
    if cloud:
        return f"https://app.prefect.cloud/account/{cloud[1]}/workspace/{cloud[2]}"
    return api_url.removesuffix("/api")


def ui_address_of_flow_run(ui_url: str, flow_run_id: str) -> str:
    return f"{ui_url}/runs/flow-run/{flow_run_id}"


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


def deployments_exist(ids: list[str]) -> bool:
    """Every one of these deployments is registered on the server."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            for deployment_id in ids:
                client.read_deployment(UUID(deployment_id))
        except (ObjectNotFound, ValueError):
            return False
    return True


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
    _upsert(wanted)


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
    _upsert(wanted)


def _upsert(wanted: Automation) -> None:
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

    _upsert(
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
                f"no flow run {run_id} on {_current_api_url()}: is PREFECT_API_URL the server "
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


# --- Triggering a deployment and following its run (for CI) ------------------------------------

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


@dataclass(frozen=True)
class ArtifactTable:
    """A table artifact of the run, as rows of its columns."""

    key: str
    description: str
    rows: list[dict[str, str]]


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
            f"deployment {deployment} is not registered on {_current_api_url()}: run "
            f"`ameide-migrate deploy --env {deployment.split('/', 1)[1]}` against that server "
            f"first{_registered_hint()}"
        ) from None
    return flow_run.id  # type: ignore[union-attr]


def _current_api_url() -> str:
    from prefect.settings import get_current_settings

    return str(get_current_settings().api.url)


def _registered_hint() -> str:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        names = sorted(
            f"{flow.name}/{d.name}"
            for d in client.read_deployments()
            for flow in [client.read_flow(d.flow_id)]
        )
    return f" (registered there: {', '.join(names)})" if names else " (none is registered there)"


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
                return _outcome(flow_run_id, state, _tables(client, flow_run_id))
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


def _tables(client: Any, flow_run_id: UUID) -> list[ArtifactTable]:
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    artifacts = client.read_artifacts(
        artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
    )
    tables = []
    for artifact in artifacts:
        if artifact.type != "table" or not artifact.data:
            continue
        rows = json.loads(artifact.data) if isinstance(artifact.data, str) else artifact.data
        if isinstance(rows, list) and all(isinstance(r, dict) for r in rows):
            tables.append(
                ArtifactTable(
                    artifact.key or "", artifact.description or "", [_strings(r) for r in rows]
                )
            )
    return tables


def _shard_table(client: Any, flow_run_id: UUID) -> list[dict[str, str]]:
    """The rows of a fleet shard run's ledger (its `...-shard` table); none when it has none."""
    for table in _tables(client, flow_run_id):
        if table.key.endswith("-shard"):
            return table.rows
    return []


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
                        _shard_table(client, run_id),
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
    ui_url = _ui_url_of(_current_api_url())

    def in_turn(run_id: UUID) -> RunInTurn:
        run = unended[run_id]
        now = (run.state.name or run.state.type.value) if run.state else "unknown"
        return RunInTurn(run_id, run.name, now, ui_address_of_flow_run(ui_url, str(run_id)))

    return [in_turn(run_id) for run_id in ahead if run_id != own]


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


def latest_table(key: str) -> list[dict[str, str]]:
    """The rows of the latest table artifact under `key` (none when there is none)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])),
            sort=ArtifactSort.CREATED_DESC,
            limit=1,
        )
    if not found or not found[0].data:
        return []
    data = found[0].data
    rows = json.loads(data) if isinstance(data, str) else data
    return [_strings(r) for r in rows if isinstance(r, dict)] if isinstance(rows, list) else []


def _strings(row: dict[str, Any]) -> dict[str, str]:
    return {str(k): "" if v is None else str(v) for k, v in row.items()}


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


# --- Runs a stopped command leaves behind --------------------------------------------------------


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
