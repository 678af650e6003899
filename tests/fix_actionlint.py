"""actionlint, built from source once into the git-ignored cache
(`go install github.com/rhysd/actionlint/cmd/actionlint@v1.7.12`); one already on PATH is used as
it is. It checks every `run:` script with shellcheck (Debian's, which `./dev test` installs)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.fix_tiers import mark_if_uses, register

ACTIONLINT_MODULE = "github.com/rhysd/actionlint/cmd/actionlint@v1.7.12"
CACHE_BIN = Path(__file__).resolve().parent.parent / ".cache" / "bin"

_FIXTURES = frozenset({"actionlint"})


def pytest_configure(config: pytest.Config) -> None:
    register(
        config,
        "actionlint",
        "lints the workflow with actionlint (built from source once into .cache/bin)",
    )


def pytest_itemcollected(item: pytest.Item) -> None:
    mark_if_uses(item, _FIXTURES, "actionlint")


@pytest.fixture(scope="session")
def shellcheck() -> str:
    found = shutil.which("shellcheck")
    if found is None:
        pytest.fail("shellcheck is missing: `./dev test` installs Debian's shellcheck")
    return found


@pytest.fixture(scope="session")
def actionlint(shellcheck: str) -> str:
    found = shutil.which("actionlint") or (
        str(CACHE_BIN / "actionlint") if (CACHE_BIN / "actionlint").exists() else None
    )
    if found:
        return found
    CACHE_BIN.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["go", "install", ACTIONLINT_MODULE],
        env={**os.environ, "GOBIN": str(CACHE_BIN), "GOFLAGS": "-mod=mod"},
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    assert done.returncode == 0, f"building actionlint failed:\n{done.stderr[-2000:]}"
    return str(CACHE_BIN / "actionlint")
