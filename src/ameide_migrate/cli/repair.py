"""`ameide-migrate repair` and `baseline`: Flyway's chores on named databases or on a fleet's
named targets, and how a fleet's chore is printed."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from ameide_migrate.cli.shared import (
    EnvOption,
    FleetOfOption,
    TargetOption,
    console,
    flyway_version,
    named_databases,
    on_flyway_log,
)
from ameide_migrate.core.errors import FleetTargetsFailed, UsageError

if TYPE_CHECKING:
    from ameide_migrate.commands.repair import FleetChore


def _one_of_db_or_fleet(
    verb: str, db: list[str] | None, fleet: str | None, target: list[str] | None
) -> None:
    """A database of the tree by --db, or a fleet's targets by --fleet and --target: a fleet's
    target has no folder of its own, so --db cannot name it."""
    if db and fleet is not None:
        raise UsageError(
            f"{verb}: give --db DB (a database of the tree) or --fleet NAME --target T (a "
            "fleet's target), not both"
        )
    if target and fleet is None:
        raise UsageError(f"{verb}: --target names a fleet's target: give its --fleet NAME too")
    if fleet is not None and not target:
        raise UsageError(
            f"{verb} --fleet {fleet}: name the target(s) with --target T, or "
            f"`ameide-migrate fleet {verb} --env ENV --fleet {fleet}` for all of them"
        )
    if not db and fleet is None:
        raise UsageError(
            f"{verb}: name the database with --db DB, or a fleet's target with --fleet NAME "
            "--target T"
        )


def repair(
    env: EnvOption,
    db: Annotated[
        list[str] | None,
        typer.Option(
            "--db", "-d", help="Database to repair; repeatable.", callback=named_databases
        ),
    ] = None,
    fleet: FleetOfOption = None,
    target: TargetOption = None,
) -> None:
    """Flyway repair: remove failed rows and realign checksums of the named databases (or of a
    fleet's named targets)."""
    from ameide_migrate.commands import repair as verbs
    from ameide_migrate.config.settings import get_settings

    _one_of_db_or_fleet("repair", db, fleet, target)
    if fleet is not None:
        fleet_chore(verbs.fleet_repair(get_settings(), env, fleet, target, on_flyway_log))
        return
    for done in verbs.repair(get_settings(), env, db or [], on_log=on_flyway_log):
        console.print(done.summary(), highlight=False, soft_wrap=True)


def baseline(
    env: EnvOption,
    db: Annotated[str | None, typer.Option("--db", "-d", help="The database to baseline.")] = None,
    version: Annotated[
        str | None,
        typer.Option(
            help="The version its schema is at; Flyway's default (1) when not given.",
            callback=flyway_version,
        ),
    ] = None,
    fleet: FleetOfOption = None,
    target: TargetOption = None,
) -> None:
    """Flyway baseline of a database that has a schema and no history table (or of a fleet's
    named targets): the next run applies only the migrations above VERSION."""
    from ameide_migrate.commands import repair as verbs
    from ameide_migrate.config.settings import get_settings

    _one_of_db_or_fleet("baseline", [db] if db else None, fleet, target)
    if fleet is not None:
        fleet_chore(
            verbs.fleet_baseline(get_settings(), env, fleet, target, version, on_flyway_log)
        )
        return
    at = verbs.baseline(get_settings(), env, db or "", version, on_log=on_flyway_log)
    console.print(f"{db}: baselined at version {at}", highlight=False)


def fleet_chore(done: FleetChore) -> None:
    """Every target's outcome, then the summary; exit 1 when one failed."""
    from ameide_migrate import terminal

    terminal.print_fleet_chore(done, console)
    if done.failed:
        raise FleetTargetsFailed(
            f"{done.summary()}; each failed target's reason is in its row: fix it, then run "
            "the same command again (the targets done are left as they are)"
        )
    console.print(done.summary(), highlight=False, soft_wrap=True)
