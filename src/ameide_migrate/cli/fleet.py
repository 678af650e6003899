"""`ameide-migrate fleet run`, `status`, `baseline` and `repair`: a fleet's targets in waves,
read, adopted and repaired."""

from __future__ import annotations

from typing import Annotated

import typer

from ameide_migrate.cli.repair import fleet_chore
from ameide_migrate.cli.shared import (
    AdminUrlOption,
    EnvOption,
    TargetOption,
    WaitForLockOption,
    announce_local_server,
    checked_admin_url,
    console,
    end_of_flow_run,
    err_console,
    flyway_version,
    on_flyway_log,
    progress,
)

FleetOption = Annotated[
    str, typer.Option("--fleet", "-f", help="A fleet of ameide.toml ([fleets.NAME]).")
]


def fleet_run(
    fleet: FleetOption,
    env: EnvOption = "local",
    target: Annotated[
        list[str] | None,
        typer.Option("--target", "-t", help="Only this target; repeat for several."),
    ] = None,
    admin_url: AdminUrlOption = None,
    wait_for_lock: WaitForLockOption = False,
    undo_interrupted: Annotated[
        bool,
        typer.Option(
            "--undo-interrupted",
            help="On a target whose last migration a crash cut short, drop the indexes it "
            "built (its fix's statements) and migrate it, instead of setting it apart.",
        ),
    ] = False,
) -> None:
    """Migrate a fleet's targets in waves: the canary first, each wave larger, and a halt when a
    wave breaks the fleet's halt rules (the waves after it never start). A rerun finds the
    migrated targets up to date and goes on with the failed and the new ones, and sets apart
    those a crash left interrupted. One run of a fleet in an environment at a time: another is
    refused (exit 2) naming the running one, or waits for it with --wait-for-lock. Exits 0 when
    every target migrated, 1 when a target failed or is interrupted, or the fleet halted."""
    from ameide_migrate import terminal
    from ameide_migrate.commands import fleet as verbs
    from ameide_migrate.config.settings import get_settings

    with terminal.wave_bars(err_console) as on_target:
        done = verbs.fleet_run(
            get_settings(),
            env,
            fleet,
            target,
            admin_url=checked_admin_url(admin_url),
            wait_for_lock=wait_for_lock,
            progress=progress,
            on_api=announce_local_server,
            on_target=on_target,
            undo_interrupted=undo_interrupted,
        )
    if done.report is not None:
        terminal.print_fleet(done.report, console)
    end_of_flow_run(done.flow_run_url, done.failure)


def fleet_status(fleet: FleetOption, env: EnvOption = "local") -> None:
    """Every target of a fleet, read-only: the version its history is at, and its last outcome
    in the fleet's ledger (the latest run's artifact)."""
    from ameide_migrate import terminal
    from ameide_migrate.commands import fleet as verbs
    from ameide_migrate.config.settings import get_settings

    terminal.print_fleet_status(fleet, verbs.fleet_status(get_settings(), env, fleet), console)


def fleet_baseline(
    fleet: FleetOption,
    env: EnvOption = "local",
    version: Annotated[
        str | None,
        typer.Option(
            help="The template's version the targets' schemas are at; Flyway's default (1) "
            "when not given.",
            callback=flyway_version,
        ),
    ] = None,
    target: TargetOption = None,
) -> None:
    """Adopt a fleet whose targets have tables and no history: each such target baselined at
    VERSION (the fleet's `parallel` at once), so that `fleet run` applies only what is above it.
    A target with a history, or an empty one, is left as it is. Exits 0 when no target failed,
    1 otherwise."""
    from ameide_migrate.commands import repair as verbs
    from ameide_migrate.config.settings import get_settings

    fleet_chore(verbs.fleet_baseline(get_settings(), env, fleet, target, version, on_flyway_log))


def fleet_repair(fleet: FleetOption, env: EnvOption = "local", target: TargetOption = None) -> None:
    """Flyway repair of a fleet's targets (all, or the named ones), the fleet's `parallel` at
    once: failed rows removed, checksums realigned. Exits 0 when no target failed, 1 otherwise."""
    from ameide_migrate.commands import repair as verbs
    from ameide_migrate.config.settings import get_settings

    fleet_chore(verbs.fleet_repair(get_settings(), env, fleet, target, on_flyway_log))
