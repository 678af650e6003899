"""`ameide-migrate dev`: the dev loop, its events printed as they come."""

from __future__ import annotations

from typing import Annotated

import typer

from ameide_migrate.cli.shared import RegistryOption, console, progress
from ameide_migrate.core.errors import ExitCode


def dev(
    reset: Annotated[
        str | None,
        typer.Option(
            "--reset",
            metavar="DB",
            help="First rebuild the local database DB from empty (dropped and made again with "
            "its owner and credentials), then migrate it: for an applied migration you edited. "
            "Local only.",
        ),
    ] = None,
    image: Annotated[
        bool,
        typer.Option(
            "--image",
            help="Keep the migrations image in step for a local cluster: after each run that "
            "succeeded, build it (skipped when its content tag exists) and push it to --registry.",
        ),
    ] = False,
    registry: RegistryOption = None,
) -> None:
    """The dev loop: watch the SQL tree and migrate the local databases as you save, until
    Ctrl-C.

    Every database is brought up to date first; then each change (debounced) migrates only the
    databases whose folders changed (all for a flyway.toml, flyway.conf or ameide.toml at the
    tree's root), as one Prefect run on the local server, whose UI address is printed first.
    An applied migration edited since is named with its two fixes, neither done unasked. Exits
    130 on Ctrl-C, leaving no run Running.
    """
    from ameide_migrate import terminal
    from ameide_migrate.commands import dev as verbs
    from ameide_migrate.config.settings import get_settings

    verbs.dev(
        get_settings(),
        reset=reset,
        image=image,
        registry=registry,
        on_event=lambda event: terminal.print_dev_event(event, console),
        progress=progress,
    )
    raise SystemExit(ExitCode.INTERRUPTED)
