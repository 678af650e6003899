"""Real Flyway, installed into the project's cache as `ameide-migrate flyway install` does.

`flyway_installation` is the pinned release; `newer_flyway` a newer one (AMEIDE_TEST_NEWER_FLYWAY,
default 12.5.0), to prove upgrades keep working.
"""

from __future__ import annotations

import os

import pytest

from ameide_migrate.adapters import flyway
from ameide_migrate.config.settings import Settings
from tests.fix_tiers import mark_if_uses, register

NEWER_FLYWAY = os.environ.get("AMEIDE_TEST_NEWER_FLYWAY", "12.5.0")

_FIXTURES = frozenset({"flyway_installation", "newer_flyway"})


def pytest_configure(config: pytest.Config) -> None:
    register(config, "flyway", "runs real Flyway in a JVM (installed into .cache/flyway)")


def pytest_itemcollected(item: pytest.Item) -> None:
    mark_if_uses(item, _FIXTURES, "flyway")


def install(version: str) -> flyway.Installation:
    settings = Settings(flyway_version=version)
    inst, _ = flyway.install(
        settings.flyway_home,
        version,
        driver_version=settings.postgresql_driver_version,
        java=settings.java,
        maven=settings.maven,
    )
    return inst


@pytest.fixture(scope="session")
def flyway_installation() -> flyway.Installation:
    return install(Settings().flyway_version)


@pytest.fixture(scope="session")
def newer_flyway() -> flyway.Installation:
    return install(NEWER_FLYWAY)
