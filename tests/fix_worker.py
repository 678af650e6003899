"""The local deployments registered on the session's Prefect server, and a real process worker of
their pool that runs them (shared by the deployment tests and the CI recipe's)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest

from .fix_platform import REPO, Platform, ameide
from .fix_processes import command_line, descendants

BIN = Path(sys.executable).parent


@pytest.fixture
def deployed(platform: Platform) -> Platform:
    done = ameide("deploy", "--env", "local")
    assert done.returncode == 0, done.stdout + done.stderr
    return platform


@pytest.fixture
def process_worker(deployed: Platform, tmp_path: Path) -> Iterator[Platform]:
    """A process worker of the local pool, with the test's environment (its SQL tree, its store)."""
    log = (tmp_path / "worker.log").open("w")
    worker = start_worker("ameide-local", "process", log, REPO)
    try:
        yield deployed
    finally:
        stop_worker(worker)
        log.close()


def start_worker(pool: str, kind: str, log: IO[str], cwd: Path) -> subprocess.Popen[bytes]:
    """A real Prefect worker of `pool`, polling every second, with this process's environment."""
    return subprocess.Popen(
        [str(BIN / "prefect"), "worker", "start", "--pool", pool, "--type", kind],
        env={
            **os.environ,
            "PREFECT_WORKER_QUERY_SECONDS": "1",
            "PREFECT_WORKER_PREFETCH_SECONDS": "5",
        },
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=cwd,
    )


def stop_worker(worker: subprocess.Popen[bytes]) -> None:
    """The worker and every flow-run process it started are gone. Prefect's worker lets its
    runs end on SIGTERM first; on a loaded machine that outlasts a test, and a worker left polling
    the shared pool would pick up the next test's runs with this test's environment."""
    started = {pid: command_line(pid) for pid in descendants(worker.pid)}
    worker.terminate()
    try:
        worker.wait(timeout=30)
    except subprocess.TimeoutExpired:
        worker.kill()
        worker.wait(timeout=30)
    # Its flow runs run in sessions of their own: a SIGKILL to the worker does not reach them.
    for pid, command in started.items():
        if command and command_line(pid) == command:  # not a new process under a reused pid
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
