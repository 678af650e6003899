"""A throwaway PostgreSQL cluster for the session, and per-test databases on it.

`--test-admin-url` (or AMEIDE_TEST_ADMIN_URL) points the suite at an existing server instead.
"""

from __future__ import annotations

import itertools
import os
import secrets
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from ameide_migrate.adapters.pg_cluster import Cluster
from ameide_migrate.adapters.postgres.connection import Credentials
from tests.fix_tiers import mark_if_uses, register

_prefixes = itertools.count(1)

_FIXTURES = frozenset({"pg_admin", "spare_cluster"})


def pytest_configure(config: pytest.Config) -> None:
    register(
        config,
        "postgres",
        "needs a PostgreSQL server (the session's throwaway cluster, or --test-admin-url)",
    )


def pytest_itemcollected(item: pytest.Item) -> None:
    mark_if_uses(item, _FIXTURES, "postgres")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--test-admin-url",
        default=os.environ.get("AMEIDE_TEST_ADMIN_URL"),
        help="superuser URL of a PostgreSQL to test against; default: a throwaway cluster",
    )


def start_cluster(directory: Path) -> Cluster:
    cluster = Cluster(directory, SecretStr(secrets.token_urlsafe(16)))
    cluster.init()
    cluster.start()
    return cluster


@pytest.fixture(scope="session")
def pg_admin(request: pytest.FixtureRequest) -> Iterator[Credentials]:
    url = request.config.getoption("--test-admin-url")
    if url:
        yield Credentials.from_url(url).with_database("postgres")
        return
    with tempfile.TemporaryDirectory(prefix="ameide-pg-") as scratch:
        os.chmod(scratch, 0o755)
        cluster = start_cluster(Path(scratch) / "cluster")
        try:
            yield cluster.admin
        finally:
            cluster.stop("immediate")


@pytest.fixture
def db_prefix(request: pytest.FixtureRequest) -> str:
    """A prefix no other test uses, so each test gets databases of its own on the shared server."""
    return f"t{os.getpid()}_{next(_prefixes)}_"


@pytest.fixture
def spare_cluster() -> Iterator[Cluster]:
    """A second server of the test's own, to stop and start.

    Outside pytest's temporary folders, as the session's server is: every pytest session that
    starts (a developer's second run, a test's own pytest) makes pytest-of-USER private again,
    and the server, which runs as another user when we are root, could not start there again."""
    with tempfile.TemporaryDirectory(prefix="ameide-spare-") as scratch:
        os.chmod(scratch, 0o755)
        cluster = start_cluster(Path(scratch) / "cluster")
        try:
            yield cluster
        finally:
            cluster.stop("immediate")
