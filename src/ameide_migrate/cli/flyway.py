"""`ameide-migrate flyway install`: the real Flyway this project runs, provisioned."""

from __future__ import annotations

from typing import Annotated

import typer

from ameide_migrate.cli.shared import console, err_console, progress


def flyway_install(
    version: Annotated[
        str | None,
        typer.Option(help="Flyway version (AMEIDE_FLYWAY_VERSION); default the pinned one."),
    ] = None,
) -> None:
    """Resolve Flyway from Maven Central into the git-ignored cache; quick when already there."""
    from ameide_migrate.commands import shared as verbs
    from ameide_migrate.config.settings import get_settings

    inst, changed = verbs.install_flyway(get_settings(), version, progress)
    if changed:
        err_console.print(f"Flyway {inst.version} installed in {inst.home}")
    console.print(
        f"Flyway {inst.version}: {inst.home} (command line: {inst.home / 'bin' / 'flyway'})"
    )
