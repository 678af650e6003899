"""The verbs, as plain functions that take the settings first (alembic's `command` module).

The command line only parses arguments and prints what these return; the flows add tasks,
retries and artifacts over the domain modules. Prefect, the flows and the deployment definitions
are imported inside each verb, after `choose_api` has chosen the Prefect API: Prefect reads its
settings once, at import.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import logging
import os
import signal
import sys
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast
from uuid import UUID, uuid4

from pydantic import SecretStr

from ameide_migrate.adapters import flyway, postgres, prefect_api, stopping
from ameide_migrate.adapters.postgres import Credentials
from ameide_migrate.config import environments
from ameide_migrate.config.fleets import Fleet
from ameide_migrate.config.settings import Settings
from ameide_migrate.core import interruption, recovery
from ameide_migrate.core.catalog import Catalog, DatabaseCatalog, Version, load_catalog, load_folder
from ameide_migrate.core.errors import (
    REJECTED_STATE,
    ApprovalRejected,
    ExitCode,
    MigrateError,
    UsageError,
)
from ameide_migrate.core.history import current_version
from ameide_migrate.core.outcomes import OutcomeState, RunFailed
from ameide_migrate.services import credential_gate, dev_loop, fleet, local, migrate
from ameide_migrate.services import lint as linting
from ameide_migrate.services.context import RunContext, history_table_of
from ameide_migrate.services.drift import DriftFound, DriftReport
from ameide_migrate.services.fleet import FleetHalted

if TYPE_CHECKING:
    from ameide_migrate.core.catalog import DatabaseCatalog, Migration
    from ameide_migrate.core.findings import Finding
    from ameide_migrate.core.outcomes import RunReport
    from ameide_migrate.services.drift import DriftReport
    from ameide_migrate.services.fleet import FleetReport
    from ameide_migrate.services.image import BuiltImage

Progress = Callable[[str], None]


def _silent(_: str) -> None:
    return None


# --- Set-up shared by the verbs ----------------------------------------------------------------


def install_flyway(
    settings: Settings, version: str | None = None, progress: Progress = _silent
) -> tuple[flyway.Installation, bool]:
    """Flyway `version` (the pinned one by default) in the cache; (installation, newly made)."""
    chosen = version or settings.flyway_version
    return flyway.install(
        (settings.cache_dir / "flyway" / chosen).resolve(),
        chosen,
        driver_version=settings.postgresql_driver_version,
        java=settings.java,
        maven=settings.maven,
        progress=progress,
    )


def choose_api(settings: Settings, env: str, *, deployments: bool = False) -> prefect_api.Api:
    """Choose the Prefect API before anything imports Prefect.

    PREFECT_API_URL when set. Else the embedded local server, except where the verb works on
    another environment's deployments (`deployments`): those live on a shared server.
    """
    what = f"--env {env}'s deployments" if deployments else "this command"
    is_local = environments.get(env, settings).local
    return prefect_api.choose_api(
        settings.state_dir, local_allowed=is_local or not deployments, needed_for=what
    )


def seed_local(
    settings: Settings,
    databases: Iterable[str],
    admin_url: SecretStr | None = None,
    progress: Progress = _silent,
) -> tuple[local.LocalEnvironment, str]:
    """The local databases and owners made (on the embedded cluster unless an admin URL is
    given) and their credentials stored; (the environment, where they were written)."""
    databases = list(databases)
    admin_url = admin_url or settings.local_admin_url
    conn = settings.vault_connection()
    paths = environments.vault_path_of("local", settings)
    if conn is not None:
        local.check_vault_server(settings.state_dir, admin_url, conn, databases, paths)
    env = local.up(
        settings.state_dir,
        databases,
        admin_url=admin_url,
        database_prefix=settings.local_database_prefix,
        progress=progress,
    )
    return env, local.seed(settings.state_dir, env.owners, conn, paths)


class _NoTracebackForExpectedFailures(logging.Filter):
    """A failed migration is news, not a crash: Prefect's message without the traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], MigrateError):
            record.exc_info = None
            record.exc_text = None
        return True


def _run_flow(flow: Any, **parameters: Any) -> tuple[Any, UUID]:
    """Run a flow in this process; (what it returned, its flow-run id). A flow that failed with
    one of this project's errors returns that error; any other exception is raised."""
    import prefect.main  # noqa: F401  (sets up Prefect's logging handlers)

    for handler in logging.getLogger().handlers + logging.getLogger("prefect").handlers:
        if isinstance(handler, logging.StreamHandler):
            handler.addFilter(_NoTracebackForExpectedFailures())
    with _stopped_by_signals(flow.name):
        state = flow(**parameters, return_state=True)
    return settle(state), state.state_details.flow_run_id


@contextmanager
def _stopped_by_signals(flow_name: str) -> Iterator[None]:
    """Ctrl-C or SIGTERM (a CI timeout, `timeout`, a process manager) while the flow runs here:
    its flow and task runs cancelled on the server, a last line saying so, and the process ends
    at once (130 or 143), its Flyway JVM with it. Inside the dev loop, the loop's own handling."""
    if stopping.handled():
        yield
        return
    from prefect import tags

    session = f"ameide-migrate-{uuid4().hex[:12]}"

    def on_interrupt(signum: int) -> None:
        name = signal.Signals(signum).name
        ended = prefect_api.end_unfinished_runs(session, f"stopped by {name}")
        runs = f"{flow_name} run {', '.join(ended)} cancelled" if ended else "no run was left open"
        sys.stderr.write(
            f"FAILED: stopped by {name}: {runs}; a Flyway JVM it started ends with this process\n"
        )

    with tags(session), stopping.stopping_at_once(on_interrupt):
        yield


def settle(state: Any) -> Any:
    """A flow's final state as its outcome: its return value, or the project error it ended
    with (returned, for the caller to report); anything else is raised as it is."""
    if state.is_cancelled() and state.name == REJECTED_STATE:
        return ApprovalRejected(state.message or "the plan was rejected; nothing was migrated")
    outcome = state.result(raise_on_failure=False)
    if isinstance(outcome, BaseException) and not isinstance(outcome, MigrateError):
        raise outcome
    return outcome


# --- The verbs ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunResult:
    """A migrate run: every database's outcome, where the run is recorded, and the failure the
    command ends with (None when every database is where it should be)."""

    report: RunReport | None
    api: prefect_api.Api
    flow_run_url: str
    failure: MigrateError | None
    ui_serves_runs: bool
    """The local stack is up: the run could as well have been started from the UI."""


def run(
    settings: Settings,
    env: str,
    databases: list[str] | None = None,
    *,
    admin_url: SecretStr | None = None,
    concurrency: int | None = None,
    dry_run: bool = False,
    build: bool | None = None,
    registry: str | None = None,
    progress: Progress = _silent,
    on_api: Callable[[prefect_api.Api], None] = lambda _: None,
) -> RunResult:
    """(Build and push the image,) verify the credentials, migrate, prove it (flyway info)."""
    target = environments.get(env, settings)
    catalog = environments.catalog(env, settings)
    targets = [d.name for d in catalog.select(databases)]
    install_flyway(settings, progress=progress)
    server = None
    if target.local:
        # Only the targeted databases: `--db X` touches X alone.
        made, _ = seed_local(settings, targets, admin_url, progress)
        server = made.admin.server
    api = choose_api(settings, env)
    prefect_api.ensure_heartbeat_guard()
    serves = api.local and target.local
    if serves:
        serve_local_deployments(settings, api, catalog)
    on_api(api)
    from ameide_migrate.flows.image import ImageBuild
    from ameide_migrate.flows.migrate import migrate_flow

    # The run reads the local entries of the server it just seeded, no other.
    with local.reading_server(server):
        outcome, flow_run_id = _run_flow(
            migrate_flow,
            environment=env,
            databases=targets if databases else None,
            concurrency=concurrency,
            dry_run=dry_run,
            build=ImageBuild(registry=registry)
            if (build is None and not target.local) or build
            else None,
        )
    url = prefect_api.ui_address_of_flow_run(api.ui_url, str(flow_run_id))
    if isinstance(outcome, RunFailed):
        return RunResult(outcome.report, api, url, outcome, serves)
    if isinstance(outcome, MigrateError):
        return RunResult(None, api, url, outcome, serves)
    return RunResult(outcome, api, url, None, serves)


@dataclass(frozen=True)
class FleetRun:
    """A fleet's run: every target's outcome by wave, where the run is recorded, and the failure
    the command ends with (None when every target migrated)."""

    report: FleetReport | None
    flow_run_url: str
    failure: MigrateError | None


def fleet_targets(settings: Settings, env: str, name: str) -> list[str]:
    """The fleet's targets as its flow reads them: a query runs on its registry through the
    secret gate, as the registry's credentials are (nothing is made for it)."""
    declared = environments.fleet(name, settings)

    def query(registry: str, sql: str) -> list[str]:
        creds = verify_secrets(settings, env, [registry])[registry]
        return postgres.first_column(creds, sql, timeout=settings.connect_timeout_seconds)

    environments.fleet_registry(env, declared, settings)
    return fleet.resolve_targets(
        declared, environments.fleet_targets_file(declared, settings), query
    )


def check_fleet(
    settings: Settings, env: str, name: str, targets: list[str] | None = None
) -> list[str]:
    """Everything a fleet run needs, checked before any database, role, secret or flow run is
    made: its template folder, its registry, its targets (each named once, each a database
    name, `targets` among them) and where their secrets are read. The targets it would
    migrate, in the fleet's order."""
    declared = environments.fleet(name, settings)
    environments.fleet_template(env, declared, settings)
    chosen = fleet.chosen_targets(declared, fleet_targets(settings, env, name), targets)
    others = [f for f in environments.fleets(settings).values() if f.name != name]
    fleet.check_vault_paths(
        declared, others, env, chosen, environments.vault_path_of(env, settings)
    )
    return chosen


def fleet_run(
    settings: Settings,
    env: str,
    name: str,
    targets: list[str] | None = None,
    *,
    admin_url: SecretStr | None = None,
    wait_for_lock: bool = False,
    progress: Progress = _silent,
    on_api: Callable[[prefect_api.Api], None] = lambda _: None,
    on_target: fleet.WaveProgress = lambda _wave, _size, _outcome: None,
    undo_interrupted: bool = False,
) -> FleetRun:
    """A fleet's targets migrated in waves (for the local environment, their databases and
    owners made first, once everything the run needs is checked); refused (FleetBusy) while
    another run of the fleet in the environment has not ended, or, `wait_for_lock`, started
    once it has."""
    declared = environments.fleet(name, settings)
    # A registry is queried on the server the run was given, as the flow will.
    with local.reading_server(local.server_of(admin_url)):
        chosen = check_fleet(settings, env, name, targets)
    api = choose_api(settings, env)
    prefect_api.ensure_heartbeat_guard()
    on_api(api)
    from ameide_migrate.flows.fleet import await_the_fleets_turn, fleet_flow

    # Before anything is made; the run checks again once it exists, against runs started since.
    await_the_fleets_turn(
        env,
        name,
        None,
        wait=wait_for_lock,
        how_to_wait="run again with --wait-for-lock",
        on_wait=progress,
    )
    install_flyway(settings, progress=progress)
    server = None
    if environments.get(env, settings).local:
        progress(f"fleet {name}: making the local databases of {len(chosen)} target(s)")
        made, _ = seed_local(
            settings, [declared.database_of(t) for t in chosen], admin_url, progress
        )
        server = made.admin.server
    with fleet.progress_to(on_target), local.reading_server(server):
        outcome, flow_run_id = _run_flow(
            fleet_flow,
            environment=env,
            name=name,
            targets=targets,
            wait_for_lock=wait_for_lock,
            undo_interrupted=undo_interrupted,
        )
    url = prefect_api.ui_address_of_flow_run(api.ui_url, str(flow_run_id))
    if isinstance(outcome, FleetHalted):
        return FleetRun(outcome.report, url, outcome)
    if isinstance(outcome, MigrateError):
        return FleetRun(None, url, outcome)
    return FleetRun(outcome, url, None)


@dataclass(frozen=True)
class FleetTarget:
    """One target as `fleet status` shows it: where its history stands now, and its last
    outcome in the fleet's ledger (the latest fleet artifact)."""

    database: str
    version: str | None
    latest: str | None
    state: str
    """One of `fleet.STANDINGS`."""
    last_outcome: str
    last_message: str
    server: str
    """Where its history was read (HOST:PORT), as its credentials name it."""
    fix: str = ""
    """For an interrupted target: what undoes its migration, and the rerun."""


def fleet_status(settings: Settings, env: str, name: str) -> list[FleetTarget]:
    """Every target of the fleet, read-only: its version and its last outcome."""

    declared = environments.fleet(name, settings)
    template = environments.fleet_template(env, declared, settings)
    names = [declared.database_of(t) for t in fleet_targets(settings, env, name)]
    choose_api(settings, env)
    from ameide_migrate.flows.fleet import artifact_key

    ledger = {
        row.get("target", ""): row for row in prefect_api.latest_table(artifact_key(env, name))
    }
    found = _verified(settings, env, names, login=False)
    latest = str(template.latest_version) if template.latest_version else None
    history_table = history_table_of(template, settings.flyway_table)

    def one(database: str) -> FleetTarget:
        row = ledger.get(database, {})
        last = row.get("state", "never run"), row.get("message", "")
        server = found[database].server
        try:
            history = postgres.read_history(
                found[database], history_table, timeout=settings.connect_timeout_seconds
            )
        except MigrateError:
            return FleetTarget(database, None, latest, "unreachable", *last, server=server)
        inspection = migrate.compare(template, history)
        state = fleet.standing(
            up_to_date=inspection.up_to_date, has_history=history is not None, last_outcome=last[0]
        )
        try:
            cut_short = interruption.find(database, template, history, indexes_of(database))
        except MigrateError:
            return FleetTarget(
                database, inspection.version, latest, "unreachable", *last, server=server
            )
        if cut_short is not None:
            subject = recovery.Subject(env, database, name, database[len(prefix) :])
            fix = recovery.after_interrupted(cut_short, subject)
            return FleetTarget(
                database,
                inspection.version,
                latest,
                OutcomeState.INTERRUPTED.value,
                *last,
                server=server,
                fix=f"{cut_short.describe()} Fix: {fix}",
            )
        return FleetTarget(database, inspection.version, latest, state, *last, server=server)

    def indexes_of(database: str) -> interruption.IndexLookup:
        return lambda wanted: postgres.indexes_named(
            found[database], wanted, timeout=settings.connect_timeout_seconds
        )

    prefix = declared.database_of("")

    with ThreadPoolExecutor(max_workers=8) as pool:
        return list(pool.map(one, names))


def drift(
    settings: Settings,
    env: str,
    databases: list[str] | None = None,
    engine: Literal["native", "flyway"] = "native",
    progress: Progress = _silent,
    fleet_name: str | None = None,
) -> DriftReport:
    """Every targeted database checked against the SQL tree, read-only: the tree's databases,
    or a fleet's targets against its template."""

    if fleet_name is not None:
        if databases:
            raise UsageError("--db and --fleet cannot be combined: a fleet checks its targets")
        environments.fleet_template(env, environments.fleet(fleet_name, settings), settings)
        targets = None
    else:
        catalog = environments.catalog(env, settings)
        targets = [d.name for d in catalog.select(databases)] if databases else None
    if engine == "flyway":
        install_flyway(settings, progress=progress)
    choose_api(settings, env)
    from ameide_migrate.flows.drift import drift_flow

    outcome, _ = _run_flow(
        drift_flow, environment=env, databases=targets, engine=engine, fleet=fleet_name
    )
    found = outcome.report if isinstance(outcome, DriftFound) else outcome
    if isinstance(found, BaseException):
        raise found
    if not isinstance(found, DriftReport):
        raise TypeError(f"the drift flow returned {found!r}")
    return found


@dataclass(frozen=True)
class LintReport:
    """What `lint` checked and found: findings name their files from `root`, the SQL tree."""

    root: Path
    checked: list[str]
    findings: list[tuple[str | None, Finding]]
    """(database, finding); the database is None for a file outside the tree's folders."""
    environment: str | None
    pending_only: bool
    """Only what is pending in the environment's databases was linted."""

    @property
    def errors(self) -> int:
        return sum(1 for _, f in self.findings if f.level == "error")

    @property
    def warnings(self) -> int:
        return len(self.findings) - self.errors


def lint(
    settings: Settings,
    env: str | None = None,
    databases: list[str] | None = None,
    paths: list[Path] | None = None,
    *,
    fleet_name: str | None = None,
    targets: list[str] | None = None,
) -> LintReport:
    """The lint, with no database connection: the given files or folders, else the whole tree
    (as a fresh database would receive it), at the levels of `env` or the file's `[lint]`.
    With `env` and no path: only what is pending in the environment's databases (or in the
    fleet's `targets`), read from their history tables with the secret gate's credentials."""

    if paths and (databases or fleet_name):
        raise UsageError(
            "give --db (or --fleet) or paths, not both: a path names the files itself (a "
            "database's folder lints that database)"
        )
    if targets and fleet_name is None:
        raise UsageError("--target names a fleet's target: give its --fleet NAME too")
    if fleet_name is not None and (env is None or databases):
        raise UsageError(
            "--fleet lints what is pending in its targets: give it with --env and no --db"
        )
    rules = environments.lint_rules(settings, env)
    if env is not None and not paths:
        catalog = environments.catalog(env, settings)
        if fleet_name is None:
            chosen = catalog.select(databases)
            names = [d.name for d in chosen]
            if environments.get(env, settings).local:
                # As `run --env local` would: on a machine where nothing ran yet, set it up first.
                seed_local(settings, names)
            ctx = RunContext.create(env, chosen, verify_secrets(settings, env, names), settings)
        else:
            # Its local databases are set up as a fleet run sets them up.
            _, ctx = _fleet_context(settings, env, fleet_name, targets)
            names = list(ctx.databases)
        checked: list[str] = []
        found: list[tuple[str | None, Finding]] = []
        try:
            for name in names:
                waiting = migrate.pending(ctx, name)
                checked += [linting.relative_name(m.path, catalog.root) for m in waiting]
                found += [(name, f) for f in migrate.lint_of(ctx, name, waiting)]
        finally:
            ctx.close()
        return LintReport(catalog.root, checked, found, env, pending_only=True)
    if env is not None:
        catalog = environments.catalog(env, settings)
    else:
        catalog = load_catalog(
            settings.sql_dir, table=settings.flyway_table, variables=settings.flyway_variables
        )
    batches = _lint_batches(catalog, databases, paths or [])
    found = []
    checked = []
    for database, batch in batches:
        if isinstance(batch, list):
            checked += [linting.relative_name(p, catalog.root) for p in batch]
            placeholders = environments.get(env, settings).flyway_placeholders() if env else {}
            findings = linting.lint_files(
                batch, rules, root=catalog.root, placeholders=placeholders
            )
        else:
            db, migrations = batch
            checked += [linting.relative_name(m.path, catalog.root) for m in migrations]
            findings = linting.lint_migrations(db, migrations, rules, root=catalog.root)
        found += [(database, f) for f in findings]
    return LintReport(catalog.root, checked, found, env, pending_only=False)


_Batch = tuple[str | None, "list[Path] | tuple[DatabaseCatalog, list[Migration]]"]


def _lint_batches(catalog: Catalog, databases: list[str] | None, paths: list[Path]) -> list[_Batch]:
    """What to lint, one batch per database in Flyway's order: the databases' migrations the
    paths name (a database folder: all of them; the tree's root: every database), then the
    folders of migrations outside the tree (each its own batch, as Flyway orders it), then the
    loose .sql files outside the tree's databases, in the order given."""
    if not paths:
        return [(d.name, (d, list(d.migrations))) for d in catalog.select(databases)]
    by_path = {m.path.resolve(): d for d in catalog.databases.values() for m in d.migrations}
    folders = {d.directory.resolve(): d for d in catalog.databases.values()}
    chosen: dict[str, set[Path]] = {}
    outside: list[_Batch] = []
    loose: list[Path] = []
    for given in paths:
        path = given.resolve()
        if not path.exists():
            raise UsageError(f"{given}: no such file or folder")
        if path == catalog.root.resolve():
            for d in catalog.databases.values():
                chosen.setdefault(d.name, set()).update(m.path.resolve() for m in d.migrations)
        elif path in folders:
            d = folders[path]
            chosen.setdefault(d.name, set()).update(m.path.resolve() for m in d.migrations)
        elif path in by_path:
            chosen.setdefault(by_path[path].name, set()).add(path)
        elif any(folder in path.parents for folder in folders):
            raise UsageError(
                f"{given} is not a Flyway migration of its database (V<version>__<name>.sql or "
                "R__<name>.sql): `ameide-migrate catalog` lists the migrations"
            )
        elif path.is_dir() and (folder := load_folder(path)) is not None:
            outside.append((path.name, (folder, list(folder.migrations))))
        elif path.is_dir():
            loose += sorted(p for p in path.rglob("*.sql") if p.is_file())
        elif path.suffix == ".sql":
            loose.append(path)
        else:
            raise UsageError(f"{given} is not SQL: give .sql files or the folders that hold them")
    batches: list[_Batch] = [
        (d.name, (d, [m for m in d.migrations if m.path.resolve() in chosen[d.name]]))
        for d in catalog.databases.values()
        if d.name in chosen
    ]
    batches += outside
    if loose:
        batches.append((None, loose))
    return batches


def deploy(
    settings: Settings,
    env: str,
    image: str | None = None,
    job_variables: dict[str, Any] | None = None,
) -> Iterator[tuple[str, str]]:
    """Register migrate/<env> and drift/<env> (idempotent); yields (name, deployment id).

    A process pool's runs start in a temporary folder with the worker's environment, so its
    deployments carry the workspace and the absolute paths of the SQL tree, the cache and the
    local state: a run started from the UI finds them with nothing set.
    """
    target = environments.get(env, settings)
    catalog = environments.catalog(env, settings)
    if target.pool_type == "kubernetes" and (image is None or "@sha256:" not in image):
        raise UsageError(
            f"{env} runs on a Kubernetes work pool: pass --image REPOSITORY@sha256:DIGEST, the "
            "migrations image pinned by digest, so that runs use exactly the image pushed"
        )
    choose_api(settings, env, deployments=True)
    yield from _register(settings, target, catalog, image, job_variables)


def _register(
    settings: Settings,
    target: environments.Environment,
    catalog: Catalog,
    image: str | None,
    job_variables: dict[str, Any] | None,
    *,
    record: Path | None = None,
    api_url: str = "",
) -> Iterator[tuple[str, str]]:
    """Register the environment's deployments, their work pool and the automations that guard
    their runs. With `record`, nothing is registered again while the recorded fingerprint
    holds and the deployments exist."""
    from ameide_migrate.deployments.definitions import deployments_for
    from ameide_migrate.deployments.kubernetes import job_template

    overrides = dict(job_variables or {})
    if target.pool_type == "process":
        overrides = {**_process_job_variables(settings), **overrides}
    deployments = deployments_for(settings, target.name, catalog, image, overrides)
    fingerprint = hashlib.sha256(
        json.dumps(
            [
                api_url,
                target.model_dump(mode="json"),
                *(
                    [d.model_dump(mode="json"), d._parameter_openapi_schema.model_dump()]
                    for d in deployments
                ),
            ],
            sort_keys=True,
            default=str,
        ).encode()
    ).hexdigest()
    if record is not None:
        registered = _registered(record, fingerprint)
        if registered and prefect_api.deployments_exist(list(registered.values())):
            yield from registered.items()
            return
    template = job_template() if target.pool_type == "kubernetes" else None
    prefect_api.ensure_work_pool(target.work_pool, target.pool_type, template)
    prefect_api.ensure_heartbeat_guard()
    if target.pool_type == "kubernetes":
        prefect_api.ensure_image_pull_guard()
    done: dict[str, str] = {}
    for deployment in deployments:
        deployment_id = cast(UUID, deployment.apply())  # sync here: no event loop runs
        if deployment.flow_name == "migrate" and target.approval.required:
            prefect_api.ensure_approval_timeout(
                target.name, deployment_id, target.approval.timeout_minutes
            )
        elif deployment.flow_name == "migrate":
            prefect_api.remove_approval_timeout(target.name)
        done[f"{deployment.flow_name}/{deployment.name}"] = str(deployment_id)
        yield f"{deployment.flow_name}/{deployment.name}", str(deployment_id)
    if record is not None:
        record.parent.mkdir(parents=True, exist_ok=True)
        record.write_text(json.dumps({"fingerprint": fingerprint, "deployments": done}))


def _registered(record: Path, fingerprint: str) -> dict[str, str] | None:
    """The deployments recorded as registered with this fingerprint: name to id."""
    try:
        recorded = json.loads(record.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(recorded, dict) or recorded.get("fingerprint") != fingerprint:
        return None
    deployments = recorded.get("deployments")
    return deployments if isinstance(deployments, dict) and deployments else None


def _process_job_variables(settings: Settings) -> dict[str, Any]:
    """Where a process worker's run finds the workspace: no secret goes here (job variables
    are stored in the Prefect database)."""
    return {
        "working_dir": str(settings.project_dir.resolve()),
        "env": {
            "AMEIDE_SQL_DIR": str(settings.sql_dir.resolve()),
            "AMEIDE_CACHE_DIR": str(settings.cache_dir.resolve()),
            "AMEIDE_STATE_DIR": str(settings.state_dir.resolve()),
            "AMEIDE_PROJECT_DIR": str(settings.project_dir.resolve()),
            "AMEIDE_FLYWAY_VERSION": settings.flyway_version,
            **prefect_api.HEARTBEAT_ENV,
        },
    }


def serve_local_deployments(settings: Settings, api: prefect_api.Api, catalog: Catalog) -> int:
    """The local environment's deployments registered on the local server, and a process
    worker of their pool running (started when none is); the worker's pid.

    Every local run and every save of the dev loop asks for this: what was registered is
    recorded with a fingerprint of the deployments (their flows' code version, form, job
    variables, schedule) and the server, and registered again only when that changed or a
    deployment is gone from the server."""
    target = next(e for e in environments.all_of(settings).values() if e.local)
    record = settings.state_dir / "prefect" / "registered.json"
    for _ in _register(settings, target, catalog, None, None, record=record, api_url=api.api_url):
        pass
    return prefect_api.ensure_worker(settings.state_dir / "prefect", target.work_pool, api.api_url)


@dataclass(frozen=True)
class Triggered:
    flow_run_id: UUID
    ui_url: str
    wait_seconds: float
    """How long a follower waits by default: an hour, plus the time a protected environment's
    run may wait for a decision on its plan."""


def trigger(
    settings: Settings,
    env: str,
    databases: list[str] | None = None,
    *,
    flow: str = "migrate",
    dry_run: bool = False,
    image: str | None = None,
    fleet_name: str | None = None,
    wait_for_lock: bool = False,
) -> Triggered:
    """A run of the environment's deployment, created through the Prefect API (for CI)."""
    if flow not in ("migrate", "drift", "fleet"):
        raise UsageError(f"unknown flow {flow!r}: choose migrate, drift or fleet")
    if (flow == "fleet") != (fleet_name is not None):
        raise UsageError("--fleet NAME goes with --flow fleet, and --flow fleet needs --fleet")
    parameters: dict[str, Any]
    if fleet_name is not None:
        declared = environments.fleet(fleet_name, settings)
        if databases:
            raise UsageError("--db does not apply to a fleet: its targets are the fleet's")
        # What this machine can check without the environment's secrets, before a run exists.
        environments.fleet_template(env, declared, settings)
        environments.fleet_registry(env, declared, settings)
        if declared.targets_query is None:
            fleet_targets(settings, env, fleet_name)
        parameters = {"name": fleet_name, "wait_for_lock": wait_for_lock}
    elif wait_for_lock:
        raise UsageError("--wait-for-lock goes with --flow fleet: a fleet runs one at a time")
    else:
        catalog = environments.catalog(env, settings)
        names = [d.name for d in catalog.select(databases)] if databases else []
        parameters = {"databases": names}
    if dry_run:
        if flow != "migrate":
            raise UsageError("--dry-run applies to the migrate flow only")
        parameters["dry_run"] = True
    if image is not None and "@sha256:" not in image:
        raise UsageError(
            f"--image {image} is not pinned by digest: pass REPOSITORY@sha256:DIGEST, as "
            "`ameide-migrate image build --push` prints it"
        )
    api = choose_api(settings, env, deployments=True)
    if fleet_name is not None and not wait_for_lock:
        from ameide_migrate.flows.fleet import await_the_fleets_turn

        # Refused before a run exists; the run checks again (or waits) once it does.
        await_the_fleets_turn(
            env,
            fleet_name,
            None,
            wait=False,
            how_to_wait="trigger it with --wait-for-lock",
            on_wait=_silent,
        )
    job_variables = {"image": image} if image else None
    flow_run_id = prefect_api.start_deployment(f"{flow}/{env}", parameters, job_variables)
    policy = environments.get(env, settings).approval
    asks = flow in ("migrate", "fleet") and not dry_run and policy.required
    return Triggered(
        flow_run_id,
        prefect_api.ui_address_of_flow_run(api.ui_url, str(flow_run_id)),
        3600 + (policy.timeout_minutes * 60 if asks else 0),
    )


def follow(
    flow_run_id: UUID,
    timeout: float,
    *,
    on_line: Callable[[str], None],
    on_waiting: Callable[[], None] | None = None,
) -> prefect_api.Outcome:
    """Follow a triggered run to its end: its state, its tasks' states and its logs as lines,
    `on_waiting` when it waits for a decision on its plan. Ctrl-C or SIGTERM (a CI job's
    timeout or cancel) cancels the run through Prefect, so its worker stops it, and ends this
    process (130 or 143) saying which state the run reached."""

    def on_interrupt(signum: int) -> None:
        name = signal.Signals(signum).name
        # At most 8 s: a CI runner sends SIGKILL soon after its SIGTERM (GitHub: 10 s in all).
        reached = prefect_api.cancel_flow_run(
            flow_run_id, f"stopped by {name} (ameide-migrate trigger)", wait=8
        )
        tail = "" if reached != "Cancelling" else ": its worker has not stopped it yet"
        sys.stderr.write(f"FAILED: stopped by {name}: flow run {flow_run_id} {reached}{tail}\n")

    with stopping.stopping_at_once(on_interrupt):
        return prefect_api.follow_flow_run(
            flow_run_id, timeout, on_log=on_line, on_state=on_line, on_waiting=on_waiting
        )


@dataclass(frozen=True)
class Approved:
    """A decision given to a run waiting for one."""

    flow_run_id: str
    approved: bool
    reason: str
    url: str


def approve(
    settings: Settings, run_id: str, *, approved: bool = True, reason: str = ""
) -> Approved:
    """Decide on the plan of a protected environment's run that waits for a decision: the
    terminal's counterpart of the Prefect UI's Resume form."""
    api = prefect_api.choose_api(settings.state_dir, local_allowed=True, needed_for="approve")
    who = getpass.getuser()
    given = reason.strip() or ("approved" if approved else "rejected")
    prefect_api.decide(
        run_id, approved=approved, reason=f"{given} (`ameide-migrate approve {run_id}`, {who})"
    )
    return Approved(run_id, approved, given, prefect_api.ui_address_of_flow_run(api.ui_url, run_id))


@dataclass(frozen=True)
class Repaired:
    """What Flyway's repair changed in one database's history; nothing when all are empty."""

    database: str
    removed_failed: list[str]
    aligned: list[str]
    deleted_missing: list[str]

    @property
    def changed(self) -> bool:
        return bool(self.removed_failed or self.aligned or self.deleted_missing)

    def summary(self) -> str:
        if not self.changed:
            return f"{self.database}: nothing to repair (no failed row, every checksum matches)"
        parts = []
        for what, versions in (
            ("removed failed", self.removed_failed),
            ("realigned checksum of", self.aligned),
            ("marked deleted", self.deleted_missing),
        ):
            if versions:
                parts.append(f"{what} {', '.join(versions)}")
        return f"{self.database}: " + "; ".join(parts)


def _versions(entries: Any) -> list[str]:
    return [str(e.get("version") or e.get("description") or e) for e in entries or []]


def repair(
    settings: Settings,
    env: str,
    databases: list[str],
    on_log: Callable[[str, str, str], None] = lambda _db, _level, _message: None,
) -> list[Repaired]:
    """Flyway repair of each named database, and what it changed there."""

    catalog = environments.catalog(env, settings)
    targets = catalog.select(databases)
    names = [d.name for d in targets]
    install_flyway(settings)
    ctx = RunContext.create(env, targets, verify_secrets(settings, env, names), settings)
    try:
        results = {name: migrate.repair(ctx, name, _log_of(name, on_log)) for name in names}
    finally:
        ctx.close()
    return [_repaired(name, result) for name, result in results.items()]


def _repaired(database: str, result: dict[str, Any]) -> Repaired:
    return Repaired(
        database,
        _versions(result.get("migrationsRemoved")),
        _versions(result.get("migrationsAligned")),
        _versions(result.get("migrationsDeleted")),
    )


def baseline(
    settings: Settings,
    env: str,
    database: str,
    version: str | None = None,
    on_log: Callable[[str, str, str], None] = lambda _db, _level, _message: None,
) -> str:
    """Flyway baseline of a database that has a schema and no history: a history table whose
    one row says the schema is at `version` (Flyway's default, 1, when None); that version. An
    empty database is refused, as a fleet's empty target is: baselining it would skip
    migrations it never had."""
    (target,) = environments.catalog(env, settings).select([database])
    _at_most_latest(version, target, f"{database}'s")
    install_flyway(settings)
    ctx = RunContext.create(env, [target], verify_secrets(settings, env, [database]), settings)
    try:
        outcome, at, message = _adopt(ctx, database, version, on_log)
    finally:
        ctx.close()
    rerun = recovery.rerun_command(ctx.subject(database))
    if outcome == "empty":
        raise UsageError(f"{database} in {env} is empty: {message} (`{rerun}`)")
    if outcome == "has history":
        raise UsageError(
            f"{database} in {env} has a schema history already (at {at or 'no version'}): "
            f"baseline is for a schema without one; `{rerun}` applies what is pending"
        )
    return at or "1"


def _at_most_latest(version: str | None, template: DatabaseCatalog, whose: str) -> None:
    """A baseline version above the migrations there are would skip all of them: refused."""
    latest = template.latest_version
    if version is not None and latest is not None and Version.parse(version) > latest:
        raise UsageError(
            f"--version {version} is above the latest version of {whose} migrations ({latest}): "
            "give the version the schema matches"
        )


def _adopt(
    ctx: RunContext, database: str, version: str | None, on_log: Callable[[str, str, str], None]
) -> tuple[str, str | None, str]:
    """A database with a schema and no history baselined at `version`; (outcome, version,
    what was done). One with a history, or an empty one, is left as it is."""
    state = postgres.read_schema_state(
        ctx.credentials[database], ctx.history_table(database), timeout=ctx.connect_timeout
    )
    if state.history is not None:
        return "has history", current_version(state.history), "left as it is"
    if not state.live:
        return "empty", None, "nothing to adopt: a run migrates it from the first version"
    request = ctx.request("baseline", database)
    if version is not None:
        request = replace(
            request, configuration={**request.configuration, "flyway.baselineVersion": version}
        )
    result = ctx.engine().run(request, _log_of(database, on_log))
    at = str(result.get("baselineVersion") or version or "1")
    return "baselined", at, f"{len(state.live)} schema object(s) adopted"


@dataclass(frozen=True)
class TargetDone:
    """What a baseline or repair over a fleet did to one of its targets (by its database)."""

    database: str
    outcome: str
    """baselined, has history, empty, repaired, nothing to repair, or failed."""
    version: str | None
    message: str


@dataclass(frozen=True)
class FleetChore:
    """A baseline or repair over a fleet's targets: each target's outcome, in the fleet's order."""

    verb: str
    environment: str
    fleet: str
    targets: list[TargetDone]

    @property
    def failed(self) -> list[TargetDone]:
        return [t for t in self.targets if t.outcome == "failed"]

    def summary(self) -> str:
        counts: dict[str, int] = {}
        for t in self.targets:
            counts[t.outcome] = counts.get(t.outcome, 0) + 1
        done = ", ".join(f"{n} {outcome}" for outcome, n in counts.items())
        return f"fleet {self.fleet} in {self.environment}, {self.verb}: {done}"


def _fleet_databases(
    settings: Settings, env: str, name: str, targets: list[str] | None
) -> tuple[Fleet, dict[str, DatabaseCatalog]]:
    """The fleet's chosen targets (all when `targets` is empty), each a database of its
    template, in the fleet's order."""
    declared = environments.fleet(name, settings)
    template = environments.fleet_template(env, declared, settings)
    chosen = fleet.chosen_targets(declared, fleet_targets(settings, env, name), targets)
    return declared, {declared.database_of(t): template for t in chosen}


def _fleet_context(
    settings: Settings, env: str, name: str, targets: list[str] | None
) -> tuple[Fleet, RunContext]:
    """The fleet's chosen targets (all when `targets` is empty) with their credentials verified
    through the secret gate before any is touched (for the local environment, their databases
    and owners made first, as a fleet run makes them), in a context of their own."""

    declared, databases = _fleet_databases(settings, env, name, targets)
    if environments.get(env, settings).local:
        seed_local(settings, list(databases))
    verified = _verified(settings, env, list(databases))
    return declared, RunContext.create(env, databases, verified, settings, fleet=declared)


def _over_targets(
    verb: str,
    declared: Fleet,
    ctx: RunContext,
    chore: Callable[[str], tuple[str, str | None, str]],
) -> FleetChore:
    """`chore` (database -> outcome, version, message) on each target, the fleet's `parallel`
    at once; one that fails is that target's outcome, the others go on."""

    def one(database: str) -> TargetDone:
        try:
            outcome, version, message = chore(database)
        except MigrateError as error:
            outcome, version, message = "failed", None, str(error)
        return TargetDone(database, outcome, version, message)

    try:
        with ThreadPoolExecutor(max_workers=declared.waves.parallel) as pool:
            done = list(pool.map(one, ctx.databases))
    finally:
        ctx.close()
    return FleetChore(verb, ctx.environment, declared.name, done)


def fleet_baseline(
    settings: Settings,
    env: str,
    name: str,
    targets: list[str] | None = None,
    version: str | None = None,
    on_log: Callable[[str, str, str], None] = lambda _db, _level, _message: None,
) -> FleetChore:
    """A fleet adopted: each target with a schema and no history baselined at `version`
    (Flyway's default, 1, when None), so that a fleet run applies only what is above it. A
    target with a history is left as it is, an empty one too (a fleet run migrates it from the
    first version): baselining it would skip migrations it never had."""
    declared = environments.fleet(name, settings)
    template = environments.fleet_template(env, declared, settings)
    _at_most_latest(version, template, f"fleet {name}'s template's")
    install_flyway(settings)
    declared, ctx = _fleet_context(settings, env, name, targets)
    return _over_targets(
        "baseline", declared, ctx, lambda database: _adopt(ctx, database, version, on_log)
    )


def fleet_repair(
    settings: Settings,
    env: str,
    name: str,
    targets: list[str] | None = None,
    on_log: Callable[[str, str, str], None] = lambda _db, _level, _message: None,
) -> FleetChore:
    """Flyway repair of a fleet's targets (all when `targets` is empty): failed rows removed,
    checksums realigned; what it changed on each."""

    install_flyway(settings)
    declared, ctx = _fleet_context(settings, env, name, targets)

    def repair_one(database: str) -> tuple[str, str | None, str]:
        done = _repaired(database, migrate.repair(ctx, database, _log_of(database, on_log)))
        outcome = "repaired" if done.changed else "nothing to repair"
        return outcome, None, done.summary().removeprefix(f"{database}: ")

    return _over_targets("repair", declared, ctx, repair_one)


def _log_of(database: str, on_log: Callable[[str, str, str], None]) -> flyway.LogSink:
    return lambda level, message: on_log(database, level, message)


def verify_secrets(
    settings: Settings,
    env: str,
    databases: list[str] | None = None,
    *,
    fleet_name: str | None = None,
    targets: list[str] | None = None,
) -> dict[str, Credentials]:
    """The secret gate from the command line: Vault from VAULT_ADDR and friends (flows also read
    the Prefect block `vault-<env>`); for the local environment without Vault, the local store.
    The databases of the tree, or a fleet's `targets` (all when none is named)."""
    if fleet_name is not None:
        names = list(_fleet_databases(settings, env, fleet_name, targets)[1])
    else:
        names = [d.name for d in environments.catalog(env, settings).select(databases)]
    return _verified(settings, env, names)


def _verified(
    settings: Settings, env: str, names: list[str], *, login: bool = True
) -> dict[str, Credentials]:
    """The secret gate over `names` from where `env` keeps its secrets; `login`: each logs in."""
    with credential_gate.secret_source(env, settings) as source:
        return credential_gate.verify_secrets(
            source, names, connect_timeout=settings.connect_timeout_seconds, login=login
        )


def build_image(
    settings: Settings,
    *,
    push: bool = False,
    registry: str | None = None,
    release: str | None = None,
    base: str | None = None,
) -> BuiltImage:
    """The migrations image, built unless its content tag exists (pushed with `push`)."""
    choose_api(settings, "local")
    from ameide_migrate.flows.image import ImageBuild, build_image_flow

    options = ImageBuild(
        flavor="release" if release else "dev",
        release_ref=release,
        registry=registry,
        push=push,
        flyway_base=base,
    )
    built, _ = _run_flow(build_image_flow, options=options)
    if isinstance(built, BaseException):
        raise built
    return built  # type: ignore[no-any-return]


def release(
    settings: Settings,
    env: str,
    databases: list[str] | None = None,
    *,
    ref: str = "HEAD",
    registry: str | None = None,
    timeout: float = 3600,
) -> str:
    """Build and push the image of `ref`, run migrate/<env> on exactly that digest, wait; the
    image it ran."""
    catalog = environments.catalog(env, settings)
    targets = [d.name for d in catalog.select(databases)] if databases else None
    choose_api(settings, env, deployments=True)
    from ameide_migrate.flows.release import release_flow

    outcome, _ = _run_flow(
        release_flow,
        environment=env,
        databases=targets,
        release_ref=ref,
        registry=registry,
        timeout_seconds=timeout,
    )
    if isinstance(outcome, BaseException):
        raise outcome
    return str(outcome)


@dataclass(frozen=True)
class LocalStack:
    environment: local.LocalEnvironment
    api: prefect_api.Api


def local_up(settings: Settings, progress: Progress = _silent) -> LocalStack:
    """Everything a run from the Prefect UI needs: the local PostgreSQL with the local
    credentials, the Prefect server, the local deployments and a process worker."""
    target = next(e for e in environments.all_of(settings).values() if e.local)
    catalog = environments.catalog(target.name, settings)
    env, _ = seed_local(settings, catalog.databases, None, progress)
    install_flyway(settings, progress=progress)
    api = prefect_api.choose_api(settings.state_dir, local_allowed=True, needed_for="local up")
    if not api.local:
        raise UsageError(
            f"PREFECT_API_URL is set ({api.api_url}): `local up` starts its own Prefect server; "
            f"unset PREFECT_API_URL, or run `ameide-migrate deploy --env {target.name}` and a "
            f"worker of {target.work_pool} against that server"
        )
    serve_local_deployments(settings, api, catalog)
    return LocalStack(env, api)


def local_down(settings: Settings) -> list[str]:
    """Stop the local worker, Prefect server and PostgreSQL; their data stays."""
    return local.down(settings.state_dir)


# --- The dev loop --------------------------------------------------------------------------------


def _dev_environment(settings: Settings) -> environments.Environment:
    """The environment the dev loop works on: the one marked `local = true`, and no other."""
    declared = environments.all_of(settings)
    local_ones = [e for e in declared.values() if e.local]
    if not local_ones:
        raise UsageError(
            f"{environments.file_of(settings)} declares no local environment "
            f"({', '.join(declared)}): `ameide-migrate dev` migrates the embedded local one "
            "only; add [environments.local] with local = true"
        )
    return local_ones[0]


def reset_local_database(settings: Settings, database: str, progress: Progress = _silent) -> str:
    """One database of the local environment rebuilt from empty: dropped, then made again with
    its owner and credentials as seeding makes it (the next run migrates it from empty). Local
    only: no other environment's database is ever dropped. Its physical name."""
    target = _dev_environment(settings)
    (db,) = environments.catalog(target.name, settings).select([database])
    env, _ = seed_local(settings, [db.name], progress=progress)
    physical = env.owners[db.name].database
    postgres.drop_database(env.admin, physical)
    seed_local(settings, [db.name], progress=progress)
    return physical


def edited_local_migrations(
    settings: Settings, databases: list[str]
) -> list[dev_loop.EditedMigration]:
    """The local databases' applied migrations edited since, read from their history tables."""

    target = _dev_environment(settings)
    targets = environments.catalog(target.name, settings).select(databases)
    credentials = verify_secrets(settings, target.name, [d.name for d in targets])
    ctx = RunContext.create(target.name, targets, credentials, settings)
    found = []
    try:
        for db in targets:
            rows = postgres.read_history(
                credentials[db.name],
                ctx.history_table(db.name),
                timeout=settings.connect_timeout_seconds,
            )
            found += dev_loop.edited_migrations(db, rows)
    finally:
        ctx.close()
    return found


def dev(
    settings: Settings,
    *,
    reset: str | None = None,
    image: bool = False,
    registry: str | None = None,
    on_event: Callable[[dev_loop.Event], None],
    progress: Progress = _silent,
) -> None:
    """Migrate the local databases as their SQL changes, until Ctrl-C: at start every database
    (after rebuilding `reset` from empty), then on each change only those whose folders changed,
    one Prefect run each time; with `image`, the migrations image built and pushed after each
    run that succeeded. Returns on Ctrl-C, having said so (`Stopped`); Ctrl-C during a run exits
    the process at once (exit 130) once the run is ended on the server."""
    target = _dev_environment(settings)
    catalog = environments.catalog(target.name, settings)
    if reset is not None:
        catalog.select([reset])  # an unknown name is a usage error before anything starts
    if image and not (registry or settings.image_registry):
        raise UsageError(
            "--image pushes the migrations image for a local cluster: give --registry "
            "HOST[:PORT][/PATH] or set AMEIDE_IMAGE_REGISTRY"
        )
    api = choose_api(settings, target.name)
    # Prefect's console lines repeat, per task, what the table says once; the run's logs stay
    # on the server, behind the link printed with each table.
    os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "CRITICAL")
    from prefect import tags

    # Every run of this session carries its tag: on Ctrl-C, what it left unfinished is found.
    session = f"ameide-migrate-dev-{uuid4().hex[:12]}"

    runs = 0

    def stopped() -> dev_loop.Stopped:
        ended = prefect_api.end_unfinished_runs(session, "stopped by Ctrl-C (ameide-migrate dev)")
        return dev_loop.Stopped(runs, tuple(ended))

    def on_interrupt(_signal: int) -> None:
        on_event(stopped())

    @contextmanager
    def in_session() -> Iterator[None]:
        with (
            tags("ameide-migrate dev", session),
            stopping.stopping_at_once(on_interrupt, ExitCode.INTERRUPTED),
        ):
            yield

    def migrate_changed(databases: list[str] | None) -> RunResult:
        nonlocal runs
        runs += 1
        with in_session():
            return run(settings, target.name, databases, build=False, progress=progress)

    def build() -> BuiltImage:
        with in_session():
            return build_image(settings, push=True, registry=registry)

    root = settings.sql_dir.absolute()
    outside = [environments.file_of(settings)] + [
        Path(p.strip())
        for p in settings.flyway_variables.get("FLYWAY_CONFIG_FILES", "").split(",")
        if p.strip()
    ]
    loop = dev_loop.DevLoop(
        root,
        dev_loop.Actions(
            catalog=lambda: environments.catalog(target.name, settings),
            migrate=migrate_changed,
            edited=lambda databases: edited_local_migrations(settings, databases),
            build_image=build if image else None,
            lint=lambda files: lint(settings, target.name, paths=files).findings,
        ),
        on_event,
        config_files=tuple(
            p.absolute() for p in outside if p.is_file() and not p.absolute().is_relative_to(root)
        ),
    )
    on_event(dev_loop.Watching(api.ui_url, loop.watched))
    # `kill` (SIGTERM) stops the session as Ctrl-C does: its runs ended, nothing left behind.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        if reset is not None:
            on_event(dev_loop.Rebuilt(reset, reset_local_database(settings, reset, progress)))
        loop.start()
        loop.watch()
    except KeyboardInterrupt:
        # A second Ctrl-C must not cut this short: it is what ends the runs left Running.
        for sig in stopping.STOP_SIGNALS:
            signal.signal(sig, signal.SIG_IGN)
    on_event(stopped())
