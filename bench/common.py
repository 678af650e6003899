"""What both benchmarks stand on: the pinned Flyway and a throwaway PostgreSQL cluster."""

from __future__ import annotations

import os
import secrets
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pydantic import SecretStr

from ameide_migrate.adapters import flyway
from ameide_migrate.adapters.pg_cluster import Cluster
from ameide_migrate.adapters.prefect import local_server
from ameide_migrate.config.settings import Settings

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


def admin_url(cluster: Cluster) -> SecretStr:
    """The throwaway cluster's superuser URL."""
    admin = cluster.admin
    return SecretStr(f"postgresql://postgres:{ADMIN_PASSWORD}@{admin.host}:{admin.port}/postgres")


def cli_environment(scratch: Path, cluster: Cluster, api_url: str) -> dict[str, str]:
    """What `ameide-migrate run --env local` runs with here: the cluster as the local default's
    PostgreSQL, a state folder in `scratch`, and the Prefect server at `api_url`."""
    return {
        **os.environ,
        **local_server.QUIET_ENV,
        "PREFECT_API_URL": api_url,
        "PREFECT_HOME": str(scratch / "prefect-client"),
        "AMEIDE_STATE_DIR": str(scratch / "state"),
        "AMEIDE_LOCAL_ADMIN_URL": admin_url(cluster).get_secret_value(),
    }


RUN_LOCAL = [str(Path(sys.executable).parent / "ameide-migrate"), "run", "--env", "local"]
"""The command both benchmarks time."""
