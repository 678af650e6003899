"""The build flow: the migrations image built once per content, pushed, known by its digest.

Thin orchestration over `ameide_migrate.services.image.build_image`; the build's output streams
into the run's logs, and the result is an artifact that names the image by digest.
"""

from __future__ import annotations

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from pydantic import BaseModel, Field

from ameide_migrate.config.settings import get_settings
from ameide_migrate.flows.retrying import step_options, with_retries
from ameide_migrate.services import image, report
from ameide_migrate.services.image import BuiltImage, Flavor, ImageRequest


class ImageBuild(BaseModel):
    """Which migrations image to build first, and where to push it."""

    flavor: Flavor = Field(
        default="dev", description="dev: SQL from the workspace; release: SQL from a git ref."
    )
    release_ref: str | None = Field(default=None, description="release: the ref of the SQL.")
    registry: str | None = Field(
        default=None, description="Registry to push to; AMEIDE_IMAGE_REGISTRY when empty."
    )
    push: bool = Field(default=True, description="Push the image and pin it by digest.")
    flyway_base: str | None = Field(
        default=None, description="Base image; AMEIDE_FLYWAY_BASE when empty."
    )


@task(**step_options("build image"), task_run_name="build {request.repository}")
def build(request: ImageRequest) -> BuiltImage:
    logger = get_run_logger()
    return image.build_image(request, get_settings(), progress=logger.info)


@flow(name="build-image", validate_parameters=True)
def build_image_flow(options: ImageBuild | None = None) -> BuiltImage:
    """Build the migrations image unless its content tag exists already; push it; its digest.

    Args:
        options: flavor, release ref, registry, push and base; the settings' defaults when empty.
    """
    options = options or ImageBuild()
    request = ImageRequest.from_settings(
        get_settings(),
        flavor=options.flavor,
        release_ref=options.release_ref,
        registry=options.registry,
        push=options.push,
        flyway_base=options.flyway_base,
    )
    built = with_retries(build, get_settings())(request)
    create_markdown_artifact(
        key="migrations-image", markdown=report.image_markdown(built), description=built.reference
    )
    return built
