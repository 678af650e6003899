"""The local deployments registered on the session's Prefect server, and a real process worker of
their pool that runs them (shared by the deployment tests and the CI recipe's)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest

from .fix_platform import REPO, Platform, ameide

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
        worker.terminate()
        worker.wait(timeout=30)
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
