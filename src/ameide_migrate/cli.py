"""`ameide-migrate`: a thin command line over the verbs and flows.

A user's mistake prints `FAILED: <what and what to do>` and exits non-zero, never a traceback:
0 success, 1 a database or step failed, 2 usage error.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import SecretStr
from rich.console import Console
from rich.markup import escape

from ameide_migrate import (
    commands,
    credential_gate,
    environments,
    flyway,
    local,
    prefect_api,
    report,
)
from ameide_migrate.catalog import load_catalog
from ameide_migrate.errors import MigrateError, RunFailed, UsageError
from ameide_migrate.postgres import Credentials
from ameide_migrate.settings import Settings, get_settings

app = typer.Typer(
    help="Run, verify and watch every schema change of every database, with Prefect and Flyway.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
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
DbOption = Annotated[
    list[str] | None,
    typer.Option("--db", "-d", help="Target only this database; repeat for several. Default: all."),
]


def main() -> None:
    try:
        app()
    except MigrateError as error:
        err_console.print(
            f"[bold red]FAILED:[/] {escape(str(error))}", highlight=False, soft_wrap=True
        )
        raise SystemExit(error.exit_code) from None


def _ensure_flyway(settings: Settings, version: str | None = None) -> flyway.Installation:
    chosen = version or settings.flyway_version
    home = (settings.cache_dir / "flyway" / chosen).resolve()
    inst, changed = flyway.install(
        home,
        chosen,
        driver_version=settings.postgresql_driver_version,
        java=settings.java,
        maven=settings.maven,
        progress=lambda m: err_console.print(f"[dim]{m}[/]"),
    )
    if changed:
        err_console.print(f"Flyway {chosen} installed in {home}")
    return inst


def _connect(settings: Settings, env: str, *, deployments: bool = False) -> prefect_api.Api:
    """Choose the Prefect API before anything imports Prefect (it reads its settings once).

    PREFECT_API_URL when set. Else the embedded local server, except where the command works on
    another environment's deployments (`deployments`): those live on a shared server.
    """
    what = f"--env {env}'s deployments" if deployments else "this command"
    local = environments.get(env, settings).local
    return prefect_api.connect(
        settings.state_dir, local_allowed=local or not deployments, needed_for=what
    )


class _NoTracebackForExpectedFailures(logging.Filter):
    """A failed migration is news, not a crash: show Prefect's message without the traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], MigrateError):
            record.exc_info = None
            record.exc_text = None
        return True


def _quiet_console_tracebacks() -> None:
    import prefect.main  # noqa: F401  (sets up Prefect's logging handlers)

    for handler in logging.getLogger().handlers + logging.getLogger("prefect").handlers:
        if isinstance(handler, logging.StreamHandler):
            handler.addFilter(_NoTracebackForExpectedFailures())


@app.command()
def run(
    env: EnvOption = "local",
    db: DbOption = None,
    admin_url: Annotated[
        str | None,
        typer.Option(
            envvar="AMEIDE_LOCAL_ADMIN_URL",
            help="Local only: superuser URL of an existing PostgreSQL to use instead of the "
            "embedded cluster.",
            show_envvar=True,
        ),
    ] = None,
    concurrency: Annotated[
        int | None, typer.Option(min=1, help="Databases migrated at once (AMEIDE_MAX_CONCURRENCY).")
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
    settings = get_settings()
    target = environments.get(env, settings)
    catalog = environments.catalog(env, settings)
    targets = [d.name for d in catalog.select(db)]
    _ensure_flyway(settings)
    if target.local:
        # Only the targeted databases: `--db X` touches X alone.
        _seed_local(settings, targets, SecretStr(admin_url) if admin_url else None)
    api = _connect(settings, env)
    if api.local and target.local:
        commands.serve_local_deployments(settings, api, catalog)
    if api.local:
        err_console.print(f"Prefect UI: {api.ui_url}")
    from flows.image import ImageBuild
    from flows.migrate import migrate_flow

    image_build = (
        ImageBuild(registry=registry) if (build is None and not target.local) or build else None
    )
    _quiet_console_tracebacks()
    state: Any = migrate_flow(
        environment=env,
        databases=targets if db else None,
        concurrency=concurrency,
        dry_run=dry_run,
        build=image_build,
        return_state=True,
    )
    outcome = state.result(raise_on_failure=False)
    flow_run = prefect_api.ui_address_of_flow_run(api.ui_url, str(state.state_details.flow_run_id))
    if isinstance(outcome, RunFailed):
        report.print_run(outcome.report, console)  # type: ignore[arg-type]
        err_console.print(f"Flow run: {flow_run}", soft_wrap=True)
        raise outcome
    if isinstance(outcome, BaseException):
        err_console.print(f"Flow run: {flow_run}", soft_wrap=True)
        raise outcome
    report.print_run(outcome, console)
    err_console.print(f"Flow run: {flow_run}", soft_wrap=True)
    if api.local and target.local:
        err_console.print(
            f"Prefect UI: {api.ui_url} (Deployments, migrate/{env}, Run: the same migration from "
            "the browser; `ameide-migrate local down` stops the local servers)",
            soft_wrap=True,
        )


def _verified_credentials(env: str, names: list[str], settings: Settings) -> dict[str, Credentials]:
    """The secret gate from the command line: Vault from VAULT_ADDR and friends (flows also read
    the Prefect block `vault-<env>`); for local without Vault, the local store."""
    with environments.secret_source(env, settings) as source:
        return credential_gate.verify_secrets(
            source, names, connect_timeout=settings.connect_timeout_seconds
        )


def _print_flyway_log(database: str) -> flyway.LogSink:
    return lambda _level, message: err_console.print(f"[dim]{database}: {message}[/]")


@app.command()
def drift(
    env: EnvOption = "local",
    db: DbOption = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    engine: Annotated[
        str, typer.Option(help="native: read the history table, no JVM; flyway: Flyway's info.")
    ] = "native",
) -> None:
    """Check the databases against the SQL tree, read-only.

    Exits 0 when every database is in sync, 3 when any has drifted or has pending migrations,
    1 on an error (an unreachable database, a Vault fault).
    """
    from ameide_migrate.drift import DriftReport
    from ameide_migrate.errors import DriftFound

    if engine not in ("native", "flyway"):
        raise UsageError(f"unknown engine {engine!r}: choose native or flyway")
    settings = get_settings()
    catalog = environments.catalog(env, settings)
    targets = [d.name for d in catalog.select(db)]
    if engine == "flyway":
        _ensure_flyway(settings)
    _connect(settings, env)
    from flows.drift import drift_flow

    _quiet_console_tracebacks()
    state: Any = drift_flow(
        environment=environments.check(env, settings),
        databases=targets if db else None,
        engine=engine,
        return_state=True,
    )
    outcome = state.result(raise_on_failure=False)
    found = outcome.report if isinstance(outcome, DriftFound) else outcome
    if not isinstance(found, DriftReport):
        raise found if isinstance(found, BaseException) else RuntimeError(repr(found))
    if json_output:
        typer.echo(json.dumps([d.as_json() for d in found.databases], indent=2))
    else:
        report.print_drift(found, console)
    if found.unreachable:
        raise SystemExit(1)
    if not found.in_sync:
        raise SystemExit(3)


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
    settings = get_settings()
    environments.check(env, settings)
    overrides = _job_variables_file(job_variables) if job_variables else {}
    catalog = environments.catalog(env, settings)
    _connect(settings, env, deployments=True)
    for name, deployment_id in commands.deploy(settings, env, catalog, image, overrides):
        console.print(f"{name}: {deployment_id}")


def _job_variables_file(path: Path) -> dict[str, Any]:
    import yaml

    try:
        loaded = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise UsageError(f"--job-variables {path} is not YAML or JSON: {e}") from None
    if not isinstance(loaded, dict):
        raise UsageError(f"--job-variables {path} must hold a mapping of job variables")
    return loaded


@app.command()
def trigger(
    env: EnvOption,
    db: DbOption = None,
    flow: Annotated[str, typer.Option(help="migrate or drift.")] = "migrate",
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="migrate: list what would be applied, change nothing.")
    ] = False,
    wait: Annotated[bool, typer.Option(help="Follow the run's state and logs to the end.")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait with --wait.")] = 3600,
    image: Annotated[
        str | None,
        typer.Option(
            help="Run on this migrations image (REPOSITORY@sha256:DIGEST, as `image build "
            "--push` prints it) instead of the deployment's."
        ),
    ] = None,
) -> None:
    """Start a run of the environment's deployment through the Prefect API (for CI).

    Exits 0 completed, 1 failed, crashed or cancelled, 3 drift found, 4 timed out (the run keeps
    going).
    """

    if flow not in ("migrate", "drift"):
        raise UsageError(f"unknown flow {flow!r}: choose migrate or drift")
    settings = get_settings()
    catalog = environments.catalog(env, settings)
    parameters: dict[str, Any] = {"databases": [d.name for d in catalog.select(db)] if db else []}
    if dry_run:
        if flow != "migrate":
            raise UsageError("--dry-run applies to the migrate flow only")
        parameters["dry_run"] = True
    if image is not None and "@sha256:" not in image:
        raise UsageError(
            f"--image {image} is not pinned by digest: pass REPOSITORY@sha256:DIGEST, as "
            "`ameide-migrate image build --push` prints it"
        )
    job_variables = {"image": image} if image else None
    api = _connect(settings, env, deployments=True)
    flow_run_id = prefect_api.start_deployment(f"{flow}/{env}", parameters, job_variables)
    ui = prefect_api.ui_address_of_flow_run(api.ui_url, str(flow_run_id))
    console.print(f"flow run {flow_run_id}: {ui}", soft_wrap=True)
    if not wait:
        return
    outcome = prefect_api.follow_flow_run(
        flow_run_id,
        timeout,
        on_log=lambda line: console.print(line, markup=False, highlight=False, soft_wrap=True),
        on_state=lambda line: console.print(line, markup=False, highlight=False, soft_wrap=True),
    )
    for table in outcome.tables:
        report.print_artifact_table(table, console)
    console.print(f"Flow run: {ui}", soft_wrap=True, highlight=False)
    console.print(outcome.summary, markup=False, highlight=False, soft_wrap=True)
    raise SystemExit(outcome.exit_code)


@app.command()
def repair(
    env: EnvOption,
    db: Annotated[list[str], typer.Option("--db", "-d", help="Database to repair; repeatable.")],
) -> None:
    """Flyway repair: remove failed rows and realign checksums of the named databases."""
    from ameide_migrate import migrate

    settings = get_settings()
    catalog = environments.catalog(env, settings)
    targets = catalog.select(db)
    names = [d.name for d in targets]
    _ensure_flyway(settings)
    ctx = migrate.RunContext.create(
        env, targets, _verified_credentials(env, names, settings), settings
    )
    try:
        for name in names:
            migrate.repair(ctx, name, _print_flyway_log(name))
            console.print(f"{name}: repaired")
    finally:
        ctx.close()


@app.command("catalog")
def show_catalog(env: EnvOption = "local") -> None:
    """List the databases of the SQL tree with their migrations and latest version."""
    from rich.table import Table

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
        typer.Option(help="Base image (AMEIDE_FLYWAY_BASE); default flyway/flyway:10.17."),
    ] = None,
) -> None:
    """Build the migrations image unless its content tag exists; prints the image to run.

    The tag is a hash of the SQL, the Dockerfile, the base, the Flyway version, the locked
    dependencies and the project's code. With --push, the last line is REPOSITORY@sha256:DIGEST.
    """
    settings = get_settings()
    _connect(settings, "local")
    from flows.image import ImageBuild, build_image_flow

    options = ImageBuild(
        flavor="release" if release else "dev",
        release_ref=release,
        registry=registry,
        push=push,
        flyway_base=base,
    )
    _quiet_console_tracebacks()
    state: Any = build_image_flow(options, return_state=True)
    built = state.result(raise_on_failure=False)
    if isinstance(built, BaseException):
        raise built
    report.print_image(built, err_console)
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
    settings = get_settings()
    catalog = environments.catalog(env, settings)
    targets = [d.name for d in catalog.select(db)] if db else None
    _connect(settings, env, deployments=True)
    from flows.release import release_flow

    _quiet_console_tracebacks()
    state: Any = release_flow(
        environment=env,
        databases=targets,
        release_ref=ref,
        registry=registry,
        timeout_seconds=timeout,
        return_state=True,
    )
    outcome = state.result(raise_on_failure=False)
    if isinstance(outcome, BaseException):
        raise outcome
    typer.echo(f"{env} migrated with {outcome}")


@flyway_app.command("install")
def flyway_install(
    version: Annotated[
        str | None,
        typer.Option(help="Flyway version (AMEIDE_FLYWAY_VERSION); default the pinned one."),
    ] = None,
) -> None:
    """Resolve Flyway from Maven Central into the git-ignored cache; quick when already there."""
    inst = _ensure_flyway(get_settings(), version)
    console.print(
        f"Flyway {inst.version}: {inst.home} (command line: {inst.home / 'bin' / 'flyway'})"
    )


def _seed_local(
    settings: Settings, databases: Iterable[str], admin_url: SecretStr | None
) -> tuple[local.LocalEnvironment, str]:
    env = local.up(
        settings.state_dir,
        databases,
        admin_url=admin_url or settings.local_admin_url,
        database_prefix=settings.local_database_prefix,
        progress=lambda m: err_console.print(f"[dim]{m}[/]"),
    )
    return env, local.seed(settings.state_dir, env.owners, settings.vault_connection())


@secrets_app.command("verify")
def secrets_verify(env: EnvOption, db: DbOption = None) -> None:
    """Check every database's credentials: present, well-formed, and able to log in.

    Reads Vault (VAULT_ADDR, VAULT_TOKEN or AMEIDE_VAULT_AUTH_METHOD...); for local without
    Vault, the local store. Exits 1 listing every problem, each with its fix.
    """
    settings = get_settings()
    catalog = environments.catalog(env, settings)
    names = [d.name for d in catalog.select(db)]
    found = _verified_credentials(env, names, settings)
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
    settings = get_settings()
    catalog = load_catalog(settings.sql_dir)
    _, where = _seed_local(settings, catalog.databases, SecretStr(admin_url) if admin_url else None)
    console.print(f"local credentials of {len(catalog.databases)} databases written to {where}")


@local_app.command("up")
def local_up() -> None:
    """Start everything a run from the Prefect UI needs: the local PostgreSQL with the local
    credentials, the Prefect server, migrate/local and drift/local, and a process worker."""
    settings = get_settings()
    catalog = environments.catalog("local", settings)
    env, _ = _seed_local(settings, catalog.databases, None)
    _ensure_flyway(settings)
    api = prefect_api.connect(settings.state_dir, local_allowed=True, needed_for="local up")
    if not api.local:
        raise UsageError(
            f"PREFECT_API_URL is set ({api.api_url}): `local up` starts its own Prefect server; "
            "unset PREFECT_API_URL, or run `ameide-migrate deploy --env local` and a worker of "
            "ameide-local against that server"
        )
    commands.serve_local_deployments(settings, api, catalog)
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
    stopped = local.down(get_settings().state_dir)
    console.print(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")


if __name__ == "__main__":
    main()
