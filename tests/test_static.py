"""The code passes the project's own bar: ruff, ruff format, mypy --strict, the import contracts
(import-linter: layers one way down, no circle between siblings, no Prefect below the flows) and
deptry (every imported package declared, none unused)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .fix_platform import REPO

BIN = Path(sys.executable).parent
SOURCES = ["src", "flows", "blocks", "deployments", "tests", "bench"]

pytestmark = pytest.mark.static


@pytest.mark.parametrize(
    "command",
    [
        ["ruff", "check", *SOURCES],
        ["ruff", "format", "--check", *SOURCES],
        ["mypy", *SOURCES],
        ["lint-imports", "--no-cache"],
        ["deptry", "src"],
    ],
    ids=["ruff-check", "ruff-format", "mypy-strict", "import-contracts", "deptry"],
)
def test_static_checks_pass(command: list[str]) -> None:
    done = subprocess.run(
        [str(BIN / command[0]), *command[1:]], cwd=REPO, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_an_import_against_the_layers_breaks_the_contracts(tmp_path: Path) -> None:
    """The contracts can fail: the package with one import up (the catalog, at the bottom,
    importing the commands) is refused, as a new one would be in CI."""
    shutil.copytree(REPO / "src", tmp_path / "src")
    shutil.copy(REPO / "pyproject.toml", tmp_path)
    catalog = tmp_path / "src" / "ameide_migrate" / "core" / "catalog.py"
    catalog.write_text(catalog.read_text() + "\nfrom ameide_migrate import commands  # noqa\n")

    done = subprocess.run(
        [str(BIN / "lint-imports"), "--no-cache"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(tmp_path / "src")},
        capture_output=True,
        text=True,
        check=False,
    )

    assert done.returncode == 1, done.stdout + done.stderr
    assert "No circle between siblings" in done.stdout
    assert "BROKEN" in done.stdout
    assert "ameide_migrate.core.catalog -> ameide_migrate.commands" in done.stdout
