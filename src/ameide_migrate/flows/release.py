"""The release flow: build the release image, push it, and run the environment's migrate
deployment on exactly that image, by digest.

The digest goes to the deployment's run as its `image` job variable, so the pod that migrates
pulls the bytes that were pushed, whatever happens to the tag afterwards.
"""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.deployments import run_deployment

from ameide_migrate.config import environments
from ameide_migrate.config.settings import get_settings
from ameide_migrate.core.errors import DeploymentRunFailed
from ameide_migrate.flows.image import ImageBuild, build_image_flow


@flow(name="release", validate_parameters=True)
def release_flow(
    environment: str,
    databases: list[str] | None = None,
    release_ref: str = "HEAD",
    registry: str | None = None,
    timeout_seconds: float = 3600,
) -> str:
    """Build the image of `release_ref`, push it, and migrate `environment` with it.

    Args:
        environment: the environment whose `migrate/<environment>` deployment runs.
        databases: the databases to migrate; all of them when empty.
        release_ref: the git ref whose SQL goes into the image.
        registry: where to push; AMEIDE_IMAGE_REGISTRY when empty.
        timeout_seconds: how long to wait for the migrate run.
    """
    environments.check(environment, get_settings())
    built = build_image_flow(
        ImageBuild(flavor="release", release_ref=release_ref, registry=registry, push=True)
    )
    logger = get_run_logger()
    logger.info("migrating %s with %s", environment, built.reference)
    run = run_deployment(
        f"migrate/{environment}",
        parameters={"environment": environment, "databases": databases or []},
        job_variables={"image": built.reference},
        timeout=timeout_seconds,
    )
    state = run.state  # type: ignore[union-attr]
    if state is None or not state.is_completed():
        name = state.name if state is not None else "not started"
        raise DeploymentRunFailed(
            f"migrate/{environment} run {run.id} ended {name} with {built.reference}: "  # type: ignore[union-attr]
            f"{(state.message if state else '') or 'see its logs in the Prefect UI'}"
        )
    return built.reference
