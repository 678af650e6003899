"""What both benchmarks stand on: the pinned Flyway and a throwaway PostgreSQL cluster."""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pydantic import SecretStr

from ameide_migrate import flyway
from ameide_migrate.pg_cluster import Cluster
from ameide_migrate.settings import Settings

ADMIN_PASSWORD = secrets.token_urlsafe(12)  # a throwaway cluster's, new every run


def pinned_flyway() -> flyway.Installation:
    settings = Settings()
    inst, _ = flyway.install(
        settings.flyway_home,
        settings.flyway_version,
        driver_version=settings.postgresql_driver_version,
        java=settings.java,
    )
    return inst


@contextmanager
def throwaway_cluster() -> Iterator[tuple[Cluster, Path]]:
    """A started cluster in a scratch folder, and the folder; both gone afterwards."""
    scratch = Path(tempfile.mkdtemp(prefix="ameide-bench-"))
    os.chmod(scratch, 0o755)  # noqa: S103  (the server runs as another user when we are root)
    cluster = Cluster(scratch / "pg", SecretStr(ADMIN_PASSWORD))
    cluster.init()
    cluster.start()
    try:
        yield cluster, scratch
    finally:
        cluster.stop("immediate")
        shutil.rmtree(scratch, ignore_errors=True)
