"""`ameide-migrate run`: an environment's databases migrated and proved, its table printed."""

from __future__ import annotations

from typing import Annotated

import typer

from ameide_migrate.cli.shared import (
    AdminUrlOption,
    DbOption,
    EnvOption,
    RegistryOption,
    announce_local_server,
    checked_admin_url,
    console,
    end_of_flow_run,
    err_console,
    progress,
)
from ameide_migrate.core.errors import UsageError


def run(
    env: EnvOption = "local",
    db: DbOption = None,
    admin_url: AdminUrlOption = None,
    concurrency: Annotated[
        int | None, typer.Option(help="Databases migrated at once (AMEIDE_MAX_CONCURRENCY).")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="List what would be applied; change nothing.")
    ] = False,
    build: Annotated[
        bool | None,
        typer.Option(
            "--build/--skip-build",
            help="Build and push the migrations image first. Default: build, except for local.",
        ),
    ] = None,
    registry: RegistryOption = None,
) -> None:
    """(Build and push the migrations image,) verify the credentials, migrate the environment's
    databases to the latest version, then prove it (flyway info)."""
    from ameide_migrate import terminal
    from ameide_migrate.commands import run as verbs
    from ameide_migrate.config.settings import get_settings

    if concurrency is not None and concurrency < 1:
        raise UsageError(
            f"--concurrency {concurrency}: give 1 or more databases migrated at once, or leave it "
            "out for AMEIDE_MAX_CONCURRENCY (default 8)"
        )
    done = verbs.run(
        get_settings(),
        env,
        db,
        admin_url=checked_admin_url(admin_url),
        concurrency=concurrency,
        dry_run=dry_run,
        build=build,
        registry=registry,
        progress=progress,
        on_api=announce_local_server,
    )
    if done.report is not None:
        terminal.print_run(done.report, console)
    end_of_flow_run(done.flow_run_url, done.failure)
    if done.ui_serves_runs:
        err_console.print(
            f"Prefect UI: {done.api.ui_url} (Deployments, migrate/{env}, Run: the same migration "
            "from the browser; `ameide-migrate local down` stops the local servers)",
            soft_wrap=True,
            highlight=False,
        )
