"""Helm, built from source once (`go install helm.sh/helm/v3/cmd/helm@v3.22.0`) into the
git-ignored cache; a helm already on PATH is used as it is."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.fix_tiers import mark_if_uses, register

HELM_MODULE = "helm.sh/helm/v3/cmd/helm@v3.22.0"
CACHE_BIN = Path(__file__).resolve().parent.parent / ".cache" / "bin"

_FIXTURES = frozenset({"helm"})


def pytest_configure(config: pytest.Config) -> None:
    register(
        config, "helm", "renders the charts with helm (built from source once into .cache/bin)"
    )


def pytest_itemcollected(item: pytest.Item) -> None:
    mark_if_uses(item, _FIXTURES, "helm")


@pytest.fixture(scope="session")
def helm() -> str:
    found = shutil.which("helm") or (
        str(CACHE_BIN / "helm") if (CACHE_BIN / "helm").exists() else None
    )
    if found:
        return found
    CACHE_BIN.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["go", "install", HELM_MODULE],
        env={**os.environ, "GOBIN": str(CACHE_BIN), "GOFLAGS": "-mod=mod"},
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    assert done.returncode == 0, f"building helm failed:\n{done.stderr[-2000:]}"
    return str(CACHE_BIN / "helm")
