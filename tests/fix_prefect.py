"""One real Prefect server (`prefect server start`, SQLite) for the whole session.

Prefect reads its settings when it is imported, so this plugin sets PREFECT_HOME and
PREFECT_API_URL (on a port chosen now) before any test imports it; the server itself starts on
first use.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from ameide_migrate.adapters.ports import free_port
from ameide_migrate.adapters.prefect import local_server
from tests.fix_tiers import mark_if_uses, register

_HOME = Path(tempfile.mkdtemp(prefix="ameide-prefect-"))
SERVER_HOME = _HOME / "server"
"""The server's PREFECT_HOME: its SQLite database lives here."""
_PORT = free_port()
os.environ.update(local_server.QUIET_ENV)
os.environ["PREFECT_HOME"] = str(_HOME)
os.environ["PREFECT_API_URL"] = f"http://127.0.0.1:{_PORT}/api"
os.environ.setdefault("AMEIDE_RETRY_DELAY_SECONDS", "0.5")

_FIXTURES = frozenset({"prefect_server"})


def pytest_configure(config: pytest.Config) -> None:
    register(config, "prefect", "needs the session's Prefect server")


def pytest_itemcollected(item: pytest.Item) -> None:
    mark_if_uses(item, _FIXTURES, "prefect")


@pytest.fixture(scope="session")
def prefect_server() -> Iterator[local_server.Server]:
    server = local_server.ensure_server(SERVER_HOME, port=_PORT)
    try:
        yield server
    finally:
        from prefect.events.worker import EventsWorker
        from prefect.logging.handlers import APILogWorker

        APILogWorker.drain_all(timeout=10)
        EventsWorker.drain_all(timeout=10)
        local_server.stop_server(SERVER_HOME)
        shutil.rmtree(_HOME, ignore_errors=True)
