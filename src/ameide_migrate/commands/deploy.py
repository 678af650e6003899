"""`deploy`: the environment's deployments registered, and the local ones kept registered by
a fingerprint of what was registered."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast
from uuid import UUID

from ameide_migrate.adapters.prefect import (
    api_choice,
    approvals,
    automations,
    local_server,
    registration,
)
from ameide_migrate.commands.shared import choose_api
from ameide_migrate.config import environments
from ameide_migrate.config.settings import Settings
from ameide_migrate.core.catalog import Catalog
from ameide_migrate.core.errors import UsageError


def deploy(
    settings: Settings,
    env: str,
    image: str | None = None,
    job_variables: dict[str, Any] | None = None,
) -> Iterator[tuple[str, str]]:
    """Register migrate/<env> and drift/<env> (idempotent); yields (name, deployment id).

    A process pool's runs start in a temporary folder with the worker's environment, so its
    deployments carry the workspace and the absolute paths of the SQL tree, the cache and the
    local state: a run started from the UI finds them with nothing set.
    """
    target = environments.get(env, settings)
    catalog = environments.catalog(env, settings)
    if target.pool_type == "kubernetes" and (image is None or "@sha256:" not in image):
        raise UsageError(
            f"{env} runs on a Kubernetes work pool: pass --image REPOSITORY@sha256:DIGEST, the "
            "migrations image pinned by digest, so that runs use exactly the image pushed"
        )
    choose_api(settings, env, deployments=True)
    yield from _register(settings, target, catalog, image, job_variables)


def _register(
    settings: Settings,
    target: environments.Environment,
    catalog: Catalog,
    image: str | None,
    job_variables: dict[str, Any] | None,
    *,
    record: Path | None = None,
    api_url: str = "",
) -> Iterator[tuple[str, str]]:
    """Register the environment's deployments, their work pool and the automations that guard
    their runs. With `record`, nothing is registered again while the recorded fingerprint
    holds and the deployments exist."""
    from ameide_migrate.deployments.definitions import deployments_for
    from ameide_migrate.deployments.kubernetes import job_template

    overrides = dict(job_variables or {})
    if target.pool_type == "process":
        overrides = {**_process_job_variables(settings), **overrides}
    deployments = deployments_for(settings, target.name, catalog, image, overrides)
    fingerprint = hashlib.sha256(
        json.dumps(
            [
                api_url,
                target.model_dump(mode="json"),
                *(
                    [d.model_dump(mode="json"), d._parameter_openapi_schema.model_dump()]
                    for d in deployments
                ),
            ],
            sort_keys=True,
            default=str,
        ).encode()
    ).hexdigest()
    if record is not None:
        registered = _registered(record, fingerprint)
        if registered and registration.deployments_exist(list(registered.values())):
            yield from registered.items()
            return
    template = job_template() if target.pool_type == "kubernetes" else None
    registration.ensure_work_pool(target.work_pool, target.pool_type, template)
    automations.ensure_heartbeat_guard()
    if target.pool_type == "kubernetes":
        automations.ensure_image_pull_guard()
    done: dict[str, str] = {}
    for deployment in deployments:
        deployment_id = cast(UUID, deployment.apply())  # sync here: no event loop runs
        if deployment.flow_name == "migrate" and target.approval.required:
            approvals.ensure_approval_timeout(
                target.name, deployment_id, target.approval.timeout_minutes
            )
        elif deployment.flow_name == "migrate":
            approvals.remove_approval_timeout(target.name)
        done[f"{deployment.flow_name}/{deployment.name}"] = str(deployment_id)
        yield f"{deployment.flow_name}/{deployment.name}", str(deployment_id)
    if record is not None:
        record.parent.mkdir(parents=True, exist_ok=True)
        record.write_text(json.dumps({"fingerprint": fingerprint, "deployments": done}))


def _registered(record: Path, fingerprint: str) -> dict[str, str] | None:
    """The deployments recorded as registered with this fingerprint: name to id."""
    try:
        recorded = json.loads(record.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(recorded, dict) or recorded.get("fingerprint") != fingerprint:
        return None
    deployments = recorded.get("deployments")
    return deployments if isinstance(deployments, dict) and deployments else None


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
            **automations.HEARTBEAT_ENV,
        },
    }


def serve_local_deployments(settings: Settings, api: api_choice.Api, catalog: Catalog) -> int:
    """The local environment's deployments registered on the local server, and a process
    worker of their pool running (started when none is); the worker's pid.

    Every local run and every save of the dev loop asks for this: what was registered is
    recorded with a fingerprint of the deployments (their flows' code version, form, job
    variables, schedule) and the server, and registered again only when that changed or a
    deployment is gone from the server."""
    target = next(e for e in environments.all_of(settings).values() if e.local)
    record = settings.state_dir / "prefect" / "registered.json"
    for _ in _register(settings, target, catalog, None, None, record=record, api_url=api.api_url):
        pass
    return local_server.ensure_worker(settings.state_dir / "prefect", target.work_pool, api.api_url)
