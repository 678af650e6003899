"""The verbs that register and serve deployments, as plain functions that take the settings first.

The command line parses arguments and prints; the work is here. Prefect and the deployment
definitions are imported inside each verb, after the command has chosen its Prefect API.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ameide_migrate import environments, prefect_api
from ameide_migrate.catalog import Catalog
from ameide_migrate.errors import UsageError
from ameide_migrate.settings import Settings


def deploy(
    settings: Settings,
    env: str,
    catalog: Catalog,
    image: str | None = None,
    job_variables: dict[str, Any] | None = None,
) -> Iterator[tuple[str, str]]:
    """Register migrate/<env> and drift/<env> (idempotent) with the Prefect API the command
    connected to; yields (name, deployment id).

    A process pool's runs start in a temporary folder with the worker's environment, so its
    deployments carry the workspace and the absolute paths of the SQL tree, the cache and the
    local state: a run started from the UI finds them with nothing set.
    """
    from deployments.definitions import deployments_for
    from deployments.kubernetes import job_template

    target = environments.get(env, settings)
    overrides = dict(job_variables or {})
    if target.pool_type == "kubernetes" and (image is None or "@sha256:" not in image):
        raise UsageError(
            f"{env} runs on a Kubernetes work pool: pass --image REPOSITORY@sha256:DIGEST, the "
            "migrations image pinned by digest, so that runs use exactly the image pushed"
        )
    if target.pool_type == "process":
        overrides = {**_process_job_variables(settings), **overrides}
    template = job_template() if target.pool_type == "kubernetes" else None
    prefect_api.ensure_work_pool(target.work_pool, target.pool_type, template)
    if target.pool_type == "kubernetes":
        prefect_api.ensure_image_pull_guard()
    for deployment in deployments_for(settings, env, catalog, image, overrides):
        yield f"{deployment.flow_name}/{deployment.name}", str(deployment.apply())


def _process_job_variables(settings: Settings) -> dict[str, Any]:
    """Where a process worker's run finds the workspace: no secret goes here (job variables
    are stored in the Prefect database)."""
    return {
        "working_dir": str(settings.project_dir.resolve()),
        "env": {
            "AMEIDE_SQL_DIR": str(settings.sql_dir.resolve()),
            "AMEIDE_CACHE_DIR": str(settings.cache_dir.resolve()),
            "AMEIDE_STATE_DIR": str(settings.state_dir.resolve()),
            "AMEIDE_PROJECT_DIR": str(settings.project_dir.resolve()),
            "AMEIDE_FLYWAY_VERSION": settings.flyway_version,
        },
    }


def serve_local_deployments(settings: Settings, api: prefect_api.Api, catalog: Catalog) -> int:
    """migrate/local and drift/local registered on the local server, and a process worker of
    their pool running (started when none is); the worker's pid."""
    local = next(e for e in environments.all_of(settings).values() if e.local)
    for _ in deploy(settings, local.name, catalog):
        pass
    return prefect_api.ensure_worker(settings.state_dir / "prefect", local.work_pool, api.api_url)
