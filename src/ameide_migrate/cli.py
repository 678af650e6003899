"""`ameide-migrate`: the command line parses, calls a verb of `commands`, and prints.

A user's mistake prints `FAILED: <what and what to do>` and exits with its `ExitCode`, never a
traceback.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

# Typer ships its own Click; its exceptions are what a mistyped option raises.
from typer._click.exceptions import NoArgsIsHelpError
from typer.exceptions import Abort

from ameide_migrate.core.errors import DatabaseUrlInvalid, ExitCode, MigrateError, UsageError

if TYPE_CHECKING:
    from pydantic import SecretStr

    from ameide_migrate.adapters.prefect_api import Api
    from ameide_migrate.commands.lint import LintReport
    from ameide_migrate.commands.repair import FleetChore
    from ameide_migrate.core.findings import Finding

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


def _named_databases(names: list[str] | None) -> list[str] | None:
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


def _flyway_version(text: str | None) -> str | None:
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
        callback=_named_databases,
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


def _admin_url(value: str | None) -> SecretStr | None:
    """--admin-url read before anything starts; its text is never echoed (it holds a password)."""
    from pydantic import SecretStr

    from ameide_migrate.adapters.postgres import Credentials

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


def _announce_local_server(api: Api) -> None:
    if api.local:
        err_console.print(f"Prefect UI: {api.ui_url}", highlight=False)


def _progress(message: str) -> None:
    err_console.print(f"[dim]{escape(message)}[/]", highlight=False)


AdminUrlOption = Annotated[
    str | None,
    typer.Option(
        envvar="AMEIDE_LOCAL_ADMIN_URL",
        help="Local only: superuser URL of an existing PostgreSQL to use instead of the "
        "embedded cluster.",
        show_envvar=True,
    ),
]


@app.command()
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
        admin_url=_admin_url(admin_url),
        concurrency=concurrency,
        dry_run=dry_run,
        build=build,
        registry=registry,
        progress=_progress,
        on_api=_announce_local_server,
    )
    if done.report is not None:
        terminal.print_run(done.report, console)
    err_console.print(f"Flow run: {done.flow_run_url}", soft_wrap=True, highlight=False)
    if done.failure is not None:
        raise done.failure
    if done.ui_serves_runs:
        err_console.print(
            f"Prefect UI: {done.api.ui_url} (Deployments, migrate/{env}, Run: the same migration "
            "from the browser; `ameide-migrate local down` stops the local servers)",
            soft_wrap=True,
            highlight=False,
        )


@app.command()
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
        progress=_progress,
    )
    raise SystemExit(ExitCode.INTERRUPTED)


@app.command()
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
    found = verbs.drift(get_settings(), env, db, engine, _progress, fleet)  # type: ignore[arg-type]
    if json_output:
        typer.echo(json.dumps([d.as_json() for d in found.databases], indent=2))
    else:
        terminal.print_drift(found, console)
    if found.unreachable:
        raise SystemExit(ExitCode.FAILED)
    if not found.in_sync:
        raise SystemExit(ExitCode.DRIFT)


@app.command()
def lint(
    paths: Annotated[
        list[Path] | None,
        typer.Argument(
            help="Migration files or folders (a database's, the tree's); default: the whole "
            "SQL tree, or with --env what is pending there.",
            show_default=False,
        ),
    ] = None,
    env: Annotated[
        str | None,
        typer.Option(
            "--env",
            "-e",
            help="Its levels and placeholders; without PATH, lint only what is pending in its "
            "databases (reads their history; for local, makes them first as run does).",
        ),
    ] = None,
    db: DbOption = None,
    output_format: Annotated[
        str,
        typer.Option("--format", help="table, json (for tools) or github (Actions annotations)."),
    ] = "table",
    fleet: FleetOfOption = None,
    target: TargetOption = None,
) -> None:
    """Lint migrations with squawk and the transaction checks, before they lock anything.

    Exits 0 clean or warnings only, 1 an error finding, 2 a usage mistake.
    """
    from ameide_migrate import terminal
    from ameide_migrate.commands import lint as verbs
    from ameide_migrate.config.settings import get_settings

    if output_format not in ("table", "json", "github"):
        raise UsageError(f"unknown format {output_format!r}: choose table, json or github")
    linted = verbs.lint(get_settings(), env, db, paths, fleet_name=fleet, targets=target)
    if output_format == "json":
        typer.echo(json.dumps(_lint_json(linted), indent=2, ensure_ascii=False))
    elif output_format == "github":
        for _, finding in linted.findings:
            typer.echo(_annotation(linted.root, finding))
        typer.echo(_lint_verdict(linted))
    else:
        if linted.findings:
            title = f"Lint: {env}" if env else "Lint"
            terminal.print_findings(linted.findings, console, title=title)
        console.print(_lint_verdict(linted), highlight=False, soft_wrap=True)
    if linted.errors:
        raise SystemExit(ExitCode.FAILED)


def _lint_json(linted: LintReport) -> dict[str, Any]:
    return {
        "environment": linted.environment,
        "pending_only": linted.pending_only,
        "root": str(linted.root),
        "checked": linted.checked,
        "errors": linted.errors,
        "warnings": linted.warnings,
        "findings": [{"database": d, **f.as_json()} for d, f in linted.findings],
    }


def _lint_verdict(linted: LintReport) -> str:
    what = f"{len(linted.checked)} migration(s)"
    if linted.pending_only:
        what = f"{len(linted.checked)} pending migration(s) in {linted.environment}"
    if not linted.checked:
        return f"lint: nothing to lint ({what})"
    if linted.errors:
        return f"lint FAILED: {linted.errors} error(s), {linted.warnings} warning(s) in {what}"
    if linted.warnings:
        return f"lint passed: {linted.warnings} warning(s), no error, in {what}"
    return f"lint passed: no finding in {what}"


def _annotation(root: Path, finding: Finding) -> str:
    """A GitHub Actions workflow command: the finding shown on its line of the pull request
    (the file relative to the working directory, the repository's root in a workflow)."""
    import os

    where = os.path.relpath(root / finding.file)
    command = "error" if finding.level == "error" else "warning"
    text = finding.message + (f" Fix: {finding.fix}" if finding.fix else "")
    properties = (
        f"file={_escape_property(where)},line={finding.line},title={_escape_property(finding.rule)}"
    )
    return f"::{command} {properties}::{_escape_data(text)}"


def _escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")


@app.command()
def deploy(
    env: EnvOption,
    image: Annotated[
        str | None,
        typer.Option(help="Kubernetes pools: the migrations image, pinned by digest."),
    ] = None,
    job_variables: Annotated[
        Path | None,
        typer.Option(
            exists=True,
            dir_okay=False,
            help="A JSON or YAML file of job variables (namespace, host_network, env, ...) laid "
            "over the environment's own.",
        ),
    ] = None,
) -> None:
    """Register migrate/<env> and drift/<env> with the Prefect API in PREFECT_API_URL.

    Idempotent: running it again updates the same two deployments.
    """
    from ameide_migrate.commands import deploy as verbs
    from ameide_migrate.config.settings import get_settings

    overrides = _job_variables_file(job_variables) if job_variables else {}
    for name, deployment_id in verbs.deploy(get_settings(), env, image, overrides):
        console.print(f"{name}: {deployment_id}", highlight=False)


def _job_variables_file(path: Path) -> dict[str, Any]:
    import yaml

    try:
        loaded = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise UsageError(f"--job-variables {path} is not YAML or JSON: {e}") from None
    if not isinstance(loaded, dict):
        raise UsageError(f"--job-variables {path} must hold a mapping of job variables")
    return loaded


WaitForLockOption = Annotated[
    bool,
    typer.Option(
        "--wait-for-lock",
        help="A fleet runs one at a time in an environment: while another run of it has not "
        "ended, wait for it instead of being refused.",
    ),
]


@app.command()
def trigger(
    env: EnvOption,
    db: DbOption = None,
    flow: Annotated[str, typer.Option(help="migrate, drift or fleet.")] = "migrate",
    fleet: Annotated[
        str | None, typer.Option("--fleet", help="With --flow fleet: the fleet to migrate.")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="migrate: list what would be applied, change nothing.")
    ] = False,
    wait: Annotated[bool, typer.Option(help="Follow the run's state and logs to the end.")] = False,
    timeout: Annotated[
        float | None,
        typer.Option(
            help="Seconds to wait with --wait; by default an hour, plus a protected "
            "environment's time for a decision on the plan."
        ),
    ] = None,
    image: Annotated[
        str | None,
        typer.Option(
            help="Run on this migrations image (REPOSITORY@sha256:DIGEST, as `image build "
            "--push` prints it) instead of the deployment's."
        ),
    ] = None,
    wait_for_lock: WaitForLockOption = False,
) -> None:
    """Start a run of the environment's deployment through the Prefect API (for CI).

    Exits 0 completed, 1 failed, crashed or cancelled, 3 drift found, 4 timed out (the run keeps
    going), 5 a protected environment's plan rejected or not approved in time.
    """
    from ameide_migrate import terminal
    from ameide_migrate.commands import trigger as verbs
    from ameide_migrate.config.settings import get_settings

    started = verbs.trigger(
        get_settings(),
        env,
        db,
        flow=flow,
        dry_run=dry_run,
        image=image,
        fleet_name=fleet,
        wait_for_lock=wait_for_lock,
    )
    flow_run_id, ui = started.flow_run_id, started.ui_url
    console.print(f"flow run {flow_run_id}: {ui}", soft_wrap=True, highlight=False)
    if not wait:
        return

    def line(text: str) -> None:
        console.print(text, markup=False, highlight=False, soft_wrap=True)

    def waiting() -> None:
        line(f"waiting for a decision on the plan: approve or reject it at {ui}")
        line(f"  or: ameide-migrate approve {flow_run_id} [--reject --reason TEXT]")

    outcome = verbs.follow(
        flow_run_id, timeout or started.wait_seconds, on_line=line, on_waiting=waiting
    )
    for table in outcome.tables:
        terminal.print_artifact_table(table, console)
    console.print(f"Flow run: {ui}", soft_wrap=True, highlight=False)
    line(outcome.summary)
    raise SystemExit(outcome.exit_code)


@app.command()
def approve(
    run_id: Annotated[str, typer.Argument(help="The flow run waiting for a decision.")],
    reject: Annotated[
        bool, typer.Option("--reject", help="Reject the plan: the run ends Cancelled.")
    ] = False,
    reason: Annotated[
        str, typer.Option(help="Why; recorded with the decision in the run's artifacts.")
    ] = "",
) -> None:
    """Approve (or reject) the plan of a protected environment's run, as the UI's Resume does."""
    from ameide_migrate.commands import approval as verbs
    from ameide_migrate.config.settings import get_settings

    if reject and not reason.strip():
        raise UsageError("--reject needs --reason TEXT: say why, it is recorded with the run")
    done = verbs.approve(get_settings(), run_id, approved=not reject, reason=reason)
    verdict = "approved" if done.approved else "rejected"
    console.print(
        f"{verdict} the plan of flow run {done.flow_run_id}: {done.url}",
        highlight=False,
        soft_wrap=True,
    )


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


def _on_flyway_log(database: str, _level: str, message: str) -> None:
    _progress(f"{database}: {message}")


@app.command()
def repair(
    env: EnvOption,
    db: Annotated[
        list[str] | None,
        typer.Option(
            "--db", "-d", help="Database to repair; repeatable.", callback=_named_databases
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
        _fleet_chore(verbs.fleet_repair(get_settings(), env, fleet, target, _on_flyway_log))
        return
    for done in verbs.repair(get_settings(), env, db or [], on_log=_on_flyway_log):
        console.print(done.summary(), highlight=False, soft_wrap=True)


@app.command()
def baseline(
    env: EnvOption,
    db: Annotated[str | None, typer.Option("--db", "-d", help="The database to baseline.")] = None,
    version: Annotated[
        str | None,
        typer.Option(
            help="The version its schema is at; Flyway's default (1) when not given.",
            callback=_flyway_version,
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
        _fleet_chore(
            verbs.fleet_baseline(get_settings(), env, fleet, target, version, _on_flyway_log)
        )
        return
    at = verbs.baseline(get_settings(), env, db or "", version, on_log=_on_flyway_log)
    console.print(f"{db}: baselined at version {at}", highlight=False)


def _fleet_chore(done: FleetChore) -> None:
    """Every target's outcome, then the summary; exit 1 when one failed."""
    from ameide_migrate import terminal
    from ameide_migrate.core.errors import FleetTargetsFailed

    terminal.print_fleet_chore(done, console)
    if done.failed:
        raise FleetTargetsFailed(
            f"{done.summary()}; each failed target's reason is in its row: fix it, then run "
            "the same command again (the targets done are left as they are)"
        )
    console.print(done.summary(), highlight=False, soft_wrap=True)


@app.command("chart-values")
def chart_values(
    env: EnvOption,
    chart: Annotated[str, typer.Option(help="prefect-worker or db-migrations.")],
) -> None:
    """Print a chart's values that come from the environments file, as YAML for `helm -f`:
    `helm upgrade --install ... -f values-staging.yaml -f <(ameide-migrate chart-values ...)`."""
    import yaml

    from ameide_migrate.config import environments
    from ameide_migrate.config.settings import get_settings

    values = environments.get(env, get_settings()).chart_values(chart)
    typer.echo(yaml.safe_dump(values, sort_keys=False), nl=False)


@app.command("catalog")
def show_catalog(env: EnvOption = "local") -> None:
    """List the databases of the SQL tree with their migrations and latest version."""
    from rich.table import Table

    from ameide_migrate.config import environments
    from ameide_migrate.config.settings import get_settings

    settings = get_settings()
    catalog = environments.catalog(env, settings)
    table = Table(title=f"SQL tree {catalog.root}", title_justify="left")
    for column in ("database", "versioned", "repeatable", "latest"):
        table.add_column(column)
    for d in catalog.databases.values():
        table.add_row(
            d.name, str(len(d.versioned)), str(len(d.repeatables)), str(d.latest_version or "-")
        )
    console.print(table)


@image_app.command("build")
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


@app.command()
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


@flyway_app.command("install")
def flyway_install(
    version: Annotated[
        str | None,
        typer.Option(help="Flyway version (AMEIDE_FLYWAY_VERSION); default the pinned one."),
    ] = None,
) -> None:
    """Resolve Flyway from Maven Central into the git-ignored cache; quick when already there."""
    from ameide_migrate.commands import shared as verbs
    from ameide_migrate.config.settings import get_settings

    inst, changed = verbs.install_flyway(get_settings(), version, _progress)
    if changed:
        err_console.print(f"Flyway {inst.version} installed in {inst.home}")
    console.print(
        f"Flyway {inst.version}: {inst.home} (command line: {inst.home / 'bin' / 'flyway'})"
    )


@secrets_app.command("verify")
def secrets_verify(
    env: EnvOption, db: DbOption = None, fleet: FleetOfOption = None, target: TargetOption = None
) -> None:
    """Check every database's credentials (or a fleet's targets'): present, well-formed, and
    able to log in.

    Reads Vault (VAULT_ADDR, VAULT_TOKEN or AMEIDE_VAULT_AUTH_METHOD...); for local without
    Vault, the local store. Exits 1 listing every problem, each with its fix.
    """
    from ameide_migrate.commands import secrets as verbs
    from ameide_migrate.config.settings import get_settings

    if db and fleet is not None:
        raise UsageError("give --db (databases of the tree) or --fleet (a fleet's), not both")
    if target and fleet is None:
        raise UsageError("--target names a fleet's target: give its --fleet NAME too")
    found = verbs.verify_secrets(get_settings(), env, db, fleet_name=fleet, targets=target)
    for name, creds in found.items():
        console.print(f"[green]ok[/] {name}: {creds.user} @ {creds.url}")


@secrets_app.command("seed-local")
def secrets_seed_local(
    admin_url: Annotated[
        str | None,
        typer.Option(
            envvar="AMEIDE_LOCAL_ADMIN_URL",
            help="Superuser URL of the PostgreSQL to use; default: the embedded cluster.",
        ),
    ] = None,
) -> None:
    """Create the local roles and databases with deterministic credentials and store them: in
    Vault when VAULT_ADDR is set, else in the local store (mode 0600). Idempotent."""
    from ameide_migrate.commands import shared as verbs
    from ameide_migrate.config import environments
    from ameide_migrate.config.settings import get_settings

    settings = get_settings()
    catalog = environments.catalog("local", settings)
    secret = _admin_url(admin_url)
    _, where = verbs.seed_local(settings, catalog.databases, secret, _progress)
    console.print(f"local credentials of {len(catalog.databases)} databases written to {where}")


FleetOption = Annotated[
    str, typer.Option("--fleet", "-f", help="A fleet of ameide.toml ([fleets.NAME]).")
]


@fleet_app.command("run")
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
            admin_url=_admin_url(admin_url),
            wait_for_lock=wait_for_lock,
            progress=_progress,
            on_api=_announce_local_server,
            on_target=on_target,
            undo_interrupted=undo_interrupted,
        )
    if done.report is not None:
        terminal.print_fleet(done.report, console)
    err_console.print(f"Flow run: {done.flow_run_url}", soft_wrap=True, highlight=False)
    if done.failure is not None:
        raise done.failure


@fleet_app.command("status")
def fleet_status(fleet: FleetOption, env: EnvOption = "local") -> None:
    """Every target of a fleet, read-only: the version its history is at, and its last outcome
    in the fleet's ledger (the latest run's artifact)."""
    from ameide_migrate import terminal
    from ameide_migrate.commands import fleet as verbs
    from ameide_migrate.config.settings import get_settings

    terminal.print_fleet_status(fleet, verbs.fleet_status(get_settings(), env, fleet), console)


@fleet_app.command("baseline")
def fleet_baseline(
    fleet: FleetOption,
    env: EnvOption = "local",
    version: Annotated[
        str | None,
        typer.Option(
            help="The template's version the targets' schemas are at; Flyway's default (1) "
            "when not given.",
            callback=_flyway_version,
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

    _fleet_chore(verbs.fleet_baseline(get_settings(), env, fleet, target, version, _on_flyway_log))


@fleet_app.command("repair")
def fleet_repair(fleet: FleetOption, env: EnvOption = "local", target: TargetOption = None) -> None:
    """Flyway repair of a fleet's targets (all, or the named ones), the fleet's `parallel` at
    once: failed rows removed, checksums realigned. Exits 0 when no target failed, 1 otherwise."""
    from ameide_migrate.commands import repair as verbs
    from ameide_migrate.config.settings import get_settings

    _fleet_chore(verbs.fleet_repair(get_settings(), env, fleet, target, _on_flyway_log))


@local_app.command("up")
def local_up() -> None:
    """Start everything a run from the Prefect UI needs: the local PostgreSQL with the local
    credentials, the Prefect server, migrate/local and drift/local, and a process worker."""
    from ameide_migrate.commands import local as verbs
    from ameide_migrate.config.settings import get_settings

    stack = verbs.local_up(get_settings(), _progress)
    env, api = stack.environment, stack.api
    console.print(f"PostgreSQL: {env.admin.host}:{env.admin.port}", highlight=False)
    console.print(
        f"Prefect UI: {api.ui_url} (Deployments, migrate/local, Run; a worker of ameide-local "
        "picks the run up)",
        soft_wrap=True,
        highlight=False,
    )


@local_app.command("down")
def local_down() -> None:
    """Stop the local worker, Prefect server and PostgreSQL; their data stays for the next run."""
    from ameide_migrate.commands import local as verbs
    from ameide_migrate.config.settings import get_settings

    stopped = verbs.local_down(get_settings())
    console.print(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")


if __name__ == "__main__":
    main()
