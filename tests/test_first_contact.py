"""The three ways people meet the product, exactly as they meet them: `./dev run` on a fresh
clone, a run started from the Prefect UI, and `trigger` from CI with its usual mistakes.

Every command starts from a clean environment (tests/fix_user.py): what passes here passes for a
person who has set nothing.
"""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page

from ameide_migrate.adapters.ports import free_port
from ameide_migrate.core.catalog import PLATFORM_DATABASES

from .fix_browser import run_deployment_from_ui, wait_for_final_state
from .fix_user import UserMachine

pytestmark = pytest.mark.user


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310
        return json.loads(response.read())


def _printed(pattern: str, text: str) -> str:
    found = re.search(pattern, text)
    assert found, f"{pattern!r} not printed in:\n{text}"
    return found[1]


def _no_traceback(done: Any) -> None:
    assert "Traceback" not in done.stdout + done.stderr, done.stdout + done.stderr


@pytest.mark.slow
@pytest.mark.browser
def test_dev_run_on_a_fresh_clone_records_the_run_on_the_server_it_prints(
    user_machine: UserMachine, page: Page
) -> None:
    first = user_machine.run("./dev", "run", timeout=900)

    assert first.returncode == 0, first.stdout + first.stderr
    _no_traceback(first)
    assert first.stdout.count("migrated") == len(PLATFORM_DATABASES), first.stdout
    ui = _printed(r"Prefect UI: (http://127\.0\.0\.1:\d+)", first.stderr)
    run_link = _printed(r"Flow run: (\S+)", first.stderr)
    assert run_link.startswith(f"{ui}/runs/flow-run/")
    assert "Starting temporary server" not in first.stdout + first.stderr
    # The UI at the printed address talks to that same server's API...
    assert _get(f"{ui}/ui-settings")["api_url"] == f"{ui}/api"
    # ...where the run of the printed link is recorded, completed.
    run = _get(f"{ui}/api/flow_runs/{run_link.rsplit('/', 1)[1]}")
    assert run["state"]["type"] == "COMPLETED"
    assert run["parameters"]["environment"] == "local"
    # The last words say where to start the next run from.
    assert "migrate/local" in first.stderr.strip().splitlines()[-1]
    # The printed link opens that run in a browser.
    page.goto(run_link)
    assert wait_for_final_state(page, timeout=60) == "Completed"
    assert run["name"] in page.inner_text("body")

    started = time.monotonic()
    again = user_machine.run("./dev", "run", timeout=600)
    assert again.returncode == 0, again.stdout + again.stderr
    assert again.stdout.count("up to date") == len(PLATFORM_DATABASES), again.stdout
    assert _printed(r"Prefect UI: (http://127\.0\.0\.1:\d+)", again.stderr) == ui
    assert time.monotonic() - started < 300


def _trigger_without(user_machine: UserMachine, **env: str) -> Any:
    started = time.monotonic()
    done = user_machine.ameide(
        "trigger", "--env", "prod", "--wait", "--timeout", "60", timeout=120, extra_env=env
    )
    return done, time.monotonic() - started


@pytest.mark.parametrize(
    ("env", "named"),
    [
        pytest.param({}, "PREFECT_API_URL is not set", id="unset"),
        pytest.param({"PREFECT_API_URL": ""}, "PREFECT_API_URL is set but empty", id="empty"),
        pytest.param({"PREFECT_API_URL": "notaurl"}, "is not an http(s) URL", id="not-a-url"),
        pytest.param(
            {"PREFECT_API_URL": "http://127.0.0.1:{port}/api"},
            "http://127.0.0.1:{port}/api (PREFECT_API_URL) does not answer",
            id="unreachable",
        ),
    ],
)
def test_trigger_without_a_usable_api_says_so_at_once(
    user_machine_venv: UserMachine, env: dict[str, str], named: str
) -> None:
    port = str(free_port())
    env = {k: v.replace("{port}", port) for k, v in env.items()}
    done, seconds = _trigger_without(user_machine_venv, **env)

    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.startswith("FAILED: "), done.stderr
    assert named.replace("{port}", port) in done.stderr
    _no_traceback(done)
    assert seconds < 30


def test_trigger_of_a_deployment_never_registered_names_it_and_the_fix(
    user_machine_venv: UserMachine, prefect_server: Any
) -> None:
    done, seconds = _trigger_without(user_machine_venv, PREFECT_API_URL=prefect_server.api_url)

    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.startswith("FAILED: deployment migrate/prod is not registered on ")
    assert "ameide-migrate deploy --env prod" in done.stderr
    _no_traceback(done)
    assert seconds < 30


@pytest.mark.slow
@pytest.mark.browser
def test_local_up_serves_a_run_started_in_the_browser_and_local_down_stops_it_all(
    user_machine_venv: UserMachine, page: Page
) -> None:
    up = user_machine_venv.ameide("local", "up", timeout=600)
    assert up.returncode == 0, up.stdout + up.stderr
    ui = _printed(r"Prefect UI: (http://127\.0\.0\.1:\d+)", up.stdout)
    worker_pid = json.loads((user_machine_venv.state_dir / "prefect" / "worker.json").read_text())[
        "pid"
    ]

    seen = run_deployment_from_ui(page, ui, "migrate/local", ["threads", "graph"], timeout=300)

    assert seen.state == "Completed"
    assert sorted(row["database"] for row in seen.artifact.rows) == ["graph", "threads"]
    assert all(row["state"] in ("migrated", "up to date") for row in seen.artifact.rows)

    down = user_machine_venv.ameide("local", "down", timeout=120)
    assert down.returncode == 0, down.stderr
    assert down.stdout.strip() == "stopped: Prefect worker, Prefect server, PostgreSQL"
    assert not Path(f"/proc/{worker_pid}").exists()
    with pytest.raises(urllib.error.URLError, match="Connection refused"):
        urllib.request.urlopen(f"{ui}/api/health", timeout=5)  # noqa: S310
