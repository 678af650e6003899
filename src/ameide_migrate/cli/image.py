"""`ameide-migrate image build` and `release`: the migrations image built once per content,
and an environment migrated on exactly its digest."""

from __future__ import annotations

from typing import Annotated

import typer

from ameide_migrate.cli.shared import DbOption, EnvOption, RegistryOption, err_console


def image_build(
    push: Annotated[bool, typer.Option(help="Push to the registry and pin by digest.")] = False,
    registry: RegistryOption = None,
    release: Annotated[
        str | None,
        typer.Option(
            help="Take the SQL from this git ref (Dockerfile.release), not the workspace."
        ),
    ] = None,
    base: Annotated[
        str | None,
        typer.Option(
            help="Base image; AMEIDE_FLYWAY_BASE (the seed's flyway/flyway) when not given."
        ),
    ] = None,
) -> None:
    """Build the migrations image unless its content tag exists; prints the image to run.

    The tag is a hash of the SQL, the Dockerfile, the base, the Flyway version, the locked
    dependencies and the project's code. With --push, the last line is REPOSITORY@sha256:DIGEST.
    """
    from ameide_migrate import terminal
    from ameide_migrate.commands import image as verbs
    from ameide_migrate.config.settings import get_settings

    built = verbs.build_image(
        get_settings(), push=push, registry=registry, release=release, base=base
    )
    terminal.print_image(built, err_console)
    typer.echo(built.reference)  # never wrapped: scripts take it from the last line


def release(
    env: EnvOption,
    db: DbOption = None,
    ref: Annotated[str, typer.Option(help="The git ref whose SQL is released.")] = "HEAD",
    registry: RegistryOption = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the migrate run.")] = 3600,
) -> None:
    """Build and push the image of REF, then run the environment's migrate deployment on exactly
    that digest and wait for it. Exits 0 when the run completed, 1 otherwise."""
    from ameide_migrate.commands import image as verbs
    from ameide_migrate.config.settings import get_settings

    outcome = verbs.release(get_settings(), env, db, ref=ref, registry=registry, timeout=timeout)
    typer.echo(f"{env} migrated with {outcome}")
