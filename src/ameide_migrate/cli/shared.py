"""What every group of the command line shares: the consoles it prints on, the options several
verbs take, and the callbacks a verb reports its progress through."""

from __future__ import annotations

import re
import sys
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape

from ameide_migrate.core.errors import DatabaseUrlInvalid, MigrateError

if TYPE_CHECKING:
    from pydantic import SecretStr

    from ameide_migrate.adapters.prefect.api_choice import Api

# A CI log is no 80-column terminal: tables keep their rows on one line there.
_LOG_WIDTH = 120
console = Console(width=None if sys.stdout.isatty() else _LOG_WIDTH)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else _LOG_WIDTH)

RegistryOption = Annotated[
    str | None,
    typer.Option(help="Registry to push to: HOST, HOST:PORT or HOST/PATH (AMEIDE_IMAGE_REGISTRY)."),
]
EnvOption = Annotated[
    str,
    typer.Option("--env", "-e", help="An environment of the SQL tree's ameide.toml (local, ...)."),
]


def named_databases(names: list[str] | None) -> list[str] | None:
    """An empty --db (an unset CI variable) names nothing: said so, not 'unknown database'."""
    if names and any(not name.strip() for name in names):
        raise typer.BadParameter(
            "an empty name names no database: give a folder of the SQL tree (`ameide-migrate "
            "catalog` lists them), or leave --db out for all"
        )
    twice = sorted({name for name in names or [] if names and names.count(name) > 1})
    if twice:
        raise typer.BadParameter(
            f"{', '.join(twice)} named more than once: give each database once"
        )
    return names


def flyway_version(text: str | None) -> str | None:
    """A baseline version Flyway would refuse is refused here, before the JVM starts."""
    if text is None:
        return None
    if not re.fullmatch(r"\d+([._]\d+)*", text):
        raise typer.BadParameter(
            f"{text!r} is not a Flyway version: digits separated by dots or underscores, "
            "as in the V<version>__ of a file name (1, 2.1, 20240501_1)"
        )
    return text


DbOption = Annotated[
    list[str] | None,
    typer.Option(
        "--db",
        "-d",
        help="Target only this database; repeat for several. Default: all.",
        callback=named_databases,
    ),
]

FleetOfOption = Annotated[
    str | None,
    typer.Option(
        "--fleet",
        help="Instead of --db: a fleet of ameide.toml, whose --target(s) are worked on.",
    ),
]
TargetOption = Annotated[
    list[str] | None,
    typer.Option("--target", "-t", help="A target of --fleet; repeat for several."),
]

AdminUrlOption = Annotated[
    str | None,
    typer.Option(
        envvar="AMEIDE_LOCAL_ADMIN_URL",
        help="Local only: superuser URL of an existing PostgreSQL to use instead of the "
        "embedded cluster.",
        show_envvar=True,
    ),
]

WaitForLockOption = Annotated[
    bool,
    typer.Option(
        "--wait-for-lock",
        help="A fleet runs one at a time in an environment: while another run of it has not "
        "ended, wait for it instead of being refused.",
    ),
]


def checked_admin_url(value: str | None) -> SecretStr | None:
    """--admin-url read before anything starts; its text is never echoed (it holds a password)."""
    from pydantic import SecretStr

    from ameide_migrate.adapters.postgres.connection import Credentials

    if value is None:
        return None
    try:
        Credentials.from_url(value)
    except DatabaseUrlInvalid as e:
        raise DatabaseUrlInvalid(
            f"--admin-url (AMEIDE_LOCAL_ADMIN_URL) cannot be used: {e}; give the superuser URL "
            "of an existing PostgreSQL, e.g. postgresql://postgres:PASSWORD@127.0.0.1:5432/postgres"
        ) from None
    return SecretStr(value)


def announce_local_server(api: Api) -> None:
    if api.local:
        err_console.print(f"Prefect UI: {api.ui_url}", highlight=False)


def end_of_flow_run(flow_run_url: str, failure: MigrateError | None) -> None:
    """After a flow run's table: where the run is recorded, then the failure the command ends
    with (its `FAILED:` line and exit code), if any."""
    err_console.print(f"Flow run: {flow_run_url}", soft_wrap=True, highlight=False)
    if failure is not None:
        raise failure


def progress(message: str) -> None:
    err_console.print(f"[dim]{escape(message)}[/]", highlight=False)


def on_flyway_log(database: str, _level: str, message: str) -> None:
    progress(f"{database}: {message}")
