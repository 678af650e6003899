"""Real Flyway, installed once into the project's cache, as `ameide-migrate flyway install` does."""

from __future__ import annotations

import pytest

from ameide_migrate import flyway
from ameide_migrate.settings import Settings


@pytest.fixture(scope="session")
def flyway_installation() -> flyway.Installation:
    settings = Settings()
    inst, _ = flyway.install(
        settings.flyway_home,
        settings.flyway_version,
        driver_version=settings.postgresql_driver_version,
        java=settings.java,
        maven=settings.maven,
    )
    return inst
