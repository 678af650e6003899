"""Helm, built from source once (`go install helm.sh/helm/v3/cmd/helm@v3.22.0`) into the
git-ignored cache; a helm already on PATH is used as it is."""

from __future__ import annotations

import pytest

from tests.fix_tiers import mark_if_uses, register
from tests.go_tools import go_install

HELM_MODULE = "helm.sh/helm/v3/cmd/helm@v3.22.0"

_FIXTURES = frozenset({"helm"})


def pytest_configure(config: pytest.Config) -> None:
    register(
        config, "helm", "renders the charts with helm (built from source once into .cache/bin)"
    )


def pytest_itemcollected(item: pytest.Item) -> None:
    mark_if_uses(item, _FIXTURES, "helm")


@pytest.fixture(scope="session")
def helm() -> str:
    return go_install(HELM_MODULE)
