"""A real one-node Kubernetes cluster for the session (`k8s_cluster`), from tests/k8s_cluster.py:
built from source into the git-ignored .cache/k8s once (about ten minutes cold, seconds after),
started in seconds, stopped at the end with nothing left running or mounted. It holds the local
image `local/busybox:1`; pods must use `hostNetwork: true`."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fix_tiers import mark_if_uses, register
from tests.k8s_cluster import Cluster, ToolMissing, build, busybox_image, is_built

# A cold build runs inside the first test that asks for the cluster: more than the default
# per-test timeout.
COLD_BUILD_TIMEOUT = 1800

_FIXTURES = frozenset({"k8s_cluster"})


def pytest_configure(config: pytest.Config) -> None:
    register(
        config,
        "k8s",
        "runs a real one-node Kubernetes cluster (built from source, cached in .cache/k8s)",
    )


def pytest_itemcollected(item: pytest.Item) -> None:
    mark_if_uses(item, _FIXTURES, "k8s")


def _cold() -> bool:
    try:
        return not is_built()
    except ToolMissing:
        return True  # the fixture says what is missing


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    users = [item for item in items if "k8s_cluster" in getattr(item, "fixturenames", ())]
    if users and _cold():
        for item in users:
            item.add_marker(pytest.mark.timeout(COLD_BUILD_TIMEOUT))


@pytest.fixture(scope="session")
def k8s_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    binaries = build()
    with Cluster(binaries) as cluster:
        cluster.import_image(busybox_image(tmp_path_factory.mktemp("k8s-images")))
        yield cluster
