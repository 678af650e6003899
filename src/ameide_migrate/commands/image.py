"""`image build` and `release`: the migrations image built, and a release run on its digest."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ameide_migrate.commands.shared import choose_api, run_flow
from ameide_migrate.config import environments
from ameide_migrate.config.settings import Settings

if TYPE_CHECKING:
    from ameide_migrate.services.image import BuiltImage


def build_image(
    settings: Settings,
    *,
    push: bool = False,
    registry: str | None = None,
    release: str | None = None,
    base: str | None = None,
) -> BuiltImage:
    """The migrations image, built unless its content tag exists (pushed with `push`)."""
    choose_api(settings, "local")
    from ameide_migrate.flows.image import ImageBuild, build_image_flow

    options = ImageBuild(
        flavor="release" if release else "dev",
        release_ref=release,
        registry=registry,
        push=push,
        flyway_base=base,
    )
    built, _ = run_flow(build_image_flow, options=options)
    if isinstance(built, BaseException):
        raise built
    return built  # type: ignore[no-any-return]


def release(
    settings: Settings,
    env: str,
    databases: list[str] | None = None,
    *,
    ref: str = "HEAD",
    registry: str | None = None,
    timeout: float = 3600,
) -> str:
    """Build and push the image of `ref`, run migrate/<env> on exactly that digest, wait; the
    image it ran."""
    catalog = environments.catalog(env, settings)
    targets = [d.name for d in catalog.select(databases)] if databases else None
    choose_api(settings, env, deployments=True)
    from ameide_migrate.flows.release import release_flow

    outcome, _ = run_flow(
        release_flow,
        environment=env,
        databases=targets,
        release_ref=ref,
        registry=registry,
        timeout_seconds=timeout,
    )
    if isinstance(outcome, BaseException):
        raise outcome
    return str(outcome)
