"""`ameide-migrate drift`: the databases (or a fleet's targets) checked against the SQL tree."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from ameide_migrate.cli.shared import DbOption, EnvOption, console, progress
from ameide_migrate.core.errors import ExitCode, UsageError


def drift(
    env: EnvOption = "local",
    db: DbOption = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    engine: Annotated[
        str, typer.Option(help="native: read the history table, no JVM; flyway: Flyway's info.")
    ] = "native",
    fleet: Annotated[
        str | None,
        typer.Option("--fleet", "-f", help="Check a fleet's targets ([fleets.NAME]) instead."),
    ] = None,
) -> None:
    """Check the databases (or a fleet's targets) against the SQL tree, read-only.

    Exits 0 when every database is in sync, 3 when any has drifted or has pending migrations,
    1 on an error (an unreachable database, a Vault fault).
    """
    from ameide_migrate import terminal
    from ameide_migrate.commands import drift as verbs
    from ameide_migrate.config.settings import get_settings

    if engine not in ("native", "flyway"):
        raise UsageError(f"unknown engine {engine!r}: choose native or flyway")
    found = verbs.drift(get_settings(), env, db, engine, progress, fleet)  # type: ignore[arg-type]
    if json_output:
        typer.echo(json.dumps([d.as_json() for d in found.databases], indent=2))
    else:
        terminal.print_drift(found, console)
    if found.unreachable:
        raise SystemExit(ExitCode.FAILED)
    if not found.in_sync:
        raise SystemExit(ExitCode.DRIFT)
