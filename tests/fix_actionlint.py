"""actionlint, built from source once into the git-ignored cache
(`go install github.com/rhysd/actionlint/cmd/actionlint@v1.7.12`); one already on PATH is used as
it is. It checks every `run:` script with shellcheck (Debian's, which `./dev test` installs)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.fix_tiers import mark_if_uses, register
from tests.go_tools import go_install

ACTIONLINT_MODULE = "github.com/rhysd/actionlint/cmd/actionlint@v1.7.12"

_FIXTURES = frozenset({"actionlint"})


def pytest_configure(config: pytest.Config) -> None:
    register(
        config,
        "actionlint",
        "lints the workflow with actionlint (built from source once into .cache/bin)",
    )
    # A system tool, not a locked Python dependency: its tests stay out of the fast tier.
    register(config, "shellcheck", "runs Debian's shellcheck (which `./dev test` installs)")


def pytest_itemcollected(item: pytest.Item) -> None:
    mark_if_uses(item, _FIXTURES, "actionlint")
    mark_if_uses(item, frozenset({"shellcheck"}), "shellcheck")


@pytest.fixture(scope="session")
def shellcheck() -> str:
    found = shutil.which("shellcheck")
    if found is None:
        pytest.fail("shellcheck is missing: `./dev test` installs Debian's shellcheck")
    return found


@pytest.fixture(scope="session")
def actionlint(shellcheck: str) -> str:
    return go_install(ACTIONLINT_MODULE)


def run_actionlint(actionlint: str, workflow: Path) -> subprocess.CompletedProcess[str]:
    """actionlint (with shellcheck on the run scripts) over one workflow file."""
    return subprocess.run(
        [actionlint, "-no-color", str(workflow)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
