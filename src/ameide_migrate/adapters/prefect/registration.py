"""What the server has registered: work pools and deployments."""

from __future__ import annotations

from typing import Any
from uuid import UUID


def ensure_work_pool(
    name: str, pool_type: str, base_job_template: dict[str, Any] | None = None
) -> None:
    """Create the work pool, or give an existing one this job template (a worker that started
    first creates its pool with its type's default template)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate, WorkPoolUpdate
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            pool = client.read_work_pool(name)
        except ObjectNotFound:
            client.create_work_pool(
                WorkPoolCreate(name=name, type=pool_type, base_job_template=base_job_template or {})
            )
            return
        if base_job_template and pool.base_job_template != base_job_template:
            client.update_work_pool(name, WorkPoolUpdate(base_job_template=base_job_template))


def deployments_exist(ids: list[str]) -> bool:
    """Every one of these deployments is registered on the server."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            for deployment_id in ids:
                client.read_deployment(UUID(deployment_id))
        except (ObjectNotFound, ValueError):
            return False
    return True


def registered_hint() -> str:
    """What is registered on the server, for a message that names a deployment it lacks."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        names = sorted(
            f"{flow.name}/{d.name}"
            for d in client.read_deployments()
            for flow in [client.read_flow(d.flow_id)]
        )
    return f" (registered there: {', '.join(names)})" if names else " (none is registered there)"
