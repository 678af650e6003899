"""The local Prefect server and its process worker, kept running beside the local cluster: started
when they are not running, found again by what they recorded, and stopped."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ameide_migrate.adapters.ports import free_port
from ameide_migrate.adapters.prefect.automations import HEARTBEAT_ENV
from ameide_migrate.core.errors import PrefectServerFailed

QUIET_ENV = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "PREFECT_UI_ENABLED": "true",
}


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
