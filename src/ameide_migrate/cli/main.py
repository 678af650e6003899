"""`ameide-migrate`: the command line assembled from its groups of verbs, each of which parses,
calls a verb of `commands`, and prints.

A user's mistake prints `FAILED: <what and what to do>` and exits with its `ExitCode`, never a
traceback.
"""

from __future__ import annotations

import typer
from rich.markup import escape

# Typer ships its own Click; its exceptions are what a mistyped option raises.
from typer._click.exceptions import NoArgsIsHelpError
from typer.exceptions import Abort

from ameide_migrate.cli import (
    approval,
    catalog,
    deploy,
    dev,
    drift,
    fleet,
    flyway,
    image,
    lint,
    local,
    repair,
    run,
    secrets,
    trigger,
)
from ameide_migrate.cli.shared import err_console
from ameide_migrate.core.errors import ExitCode, MigrateError

app = typer.Typer(
    help="Run, verify and watch every schema change of every database, with Prefect and Flyway.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    # Docstrings are wrapped at 100 columns in the source: markdown joins their lines again,
    # so `--help` wraps them at the terminal's width, not mid-sentence.
    rich_markup_mode="markdown",
)
flyway_app = typer.Typer(
    help="Provision and inspect the real Flyway this project runs.", no_args_is_help=True
)
secrets_app = typer.Typer(
    help="Database credentials: verify them where they live, seed the local ones.",
    no_args_is_help=True,
)
local_app = typer.Typer(
    help="The embedded local environment: its PostgreSQL and Prefect server.", no_args_is_help=True
)
image_app = typer.Typer(
    help="The migrations image: built once per content, pushed, pinned by digest.",
    no_args_is_help=True,
)
fleet_app = typer.Typer(
    help="Fleets: the same migrations on many tenant databases, in waves with a canary.",
    no_args_is_help=True,
)
app.add_typer(fleet_app, name="fleet")
app.add_typer(flyway_app, name="flyway")
app.add_typer(image_app, name="image")
app.add_typer(local_app, name="local")
app.add_typer(secrets_app, name="secrets")

# In the order `--help` lists them.
app.command()(run.run)
app.command()(dev.dev)
app.command()(drift.drift)
app.command()(lint.lint)
app.command()(deploy.deploy)
app.command()(trigger.trigger)
app.command()(approval.approve)
app.command()(repair.repair)
app.command()(repair.baseline)
app.command("chart-values")(catalog.chart_values)
app.command("catalog")(catalog.show_catalog)
image_app.command("build")(image.image_build)
app.command()(image.release)
flyway_app.command("install")(flyway.flyway_install)
secrets_app.command("verify")(secrets.secrets_verify)
secrets_app.command("seed-local")(secrets.secrets_seed_local)
fleet_app.command("run")(fleet.fleet_run)
fleet_app.command("status")(fleet.fleet_status)
fleet_app.command("baseline")(fleet.fleet_baseline)
fleet_app.command("repair")(fleet.fleet_repair)
local_app.command("up")(local.local_up)
local_app.command("down")(local.local_down)


def main() -> None:
    """Every mistake (an option, an AMEIDE_* setting, a file, an address) ends as one
    `FAILED: <what and the fix>` line and its exit code: Click's own usage errors too."""
    try:
        code = app(standalone_mode=False)
    except NoArgsIsHelpError as error:
        error.show()
        raise SystemExit(ExitCode.USAGE) from None
    except typer.TyperException as error:
        _failed(_usage_message(error), ExitCode.USAGE)
    except Abort:
        _failed("interrupted", ExitCode.FAILED)
    except MigrateError as error:
        _failed(str(error), error.exit_code)
    raise SystemExit(code if isinstance(code, int) else ExitCode.OK)


def _failed(message: str, code: int) -> None:
    err_console.print(f"[bold red]FAILED:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise SystemExit(code) from None


def _usage_message(error: typer.TyperException) -> str:
    context = getattr(error, "ctx", None)
    command = context.command_path if context is not None else "ameide-migrate"
    return f"{error.format_message()} (see `{command} --help`)"


@app.callback()
def _check_settings() -> None:
    """Every AMEIDE_* variable is checked before a command starts anything."""
    from ameide_migrate.config.settings import get_settings

    get_settings()


if __name__ == "__main__":
    main()
