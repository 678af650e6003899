"""The drift flow: every database of an environment checked concurrently, read-only; a table
artifact and a markdown summary; Failed when anything is not in sync."""

from __future__ import annotations

from typing import Any, Literal

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.states import Failed
from prefect.task_runners import ThreadPoolTaskRunner

from ameide_migrate.adapters.postgres.connection import first_column
from ameide_migrate.adapters.prefect.following import DRIFTED_STATE
from ameide_migrate.config import environments
from ameide_migrate.config.fleets import Fleet
from ameide_migrate.config.settings import get_settings
from ameide_migrate.core.catalog import DatabaseCatalog
from ameide_migrate.core.errors import MigrateError
from ameide_migrate.flows.deployment_guard import own_environment, stopped_at_once
from ameide_migrate.flows.retrying import step_options, with_retries
from ameide_migrate.flows.secrets import verify_credentials
from ameide_migrate.services import drift, metrics
from ameide_migrate.services import fleet as fleets
from ameide_migrate.services import report as rendering
from ameide_migrate.services.context import RunContext
from ameide_migrate.services.drift import DatabaseDrift, DriftFound, DriftReport, Verdict


@task(**step_options("check"), task_run_name="check {database}")
def check_database(ctx: RunContext, database: str, engine: str) -> DatabaseDrift:
    return drift.check_database(ctx, database, engine)


def _fleet_targets(environment: str, name: str) -> tuple[Fleet, dict[str, DatabaseCatalog]]:
    """The fleet, and its target databases, each a database of its template."""
    settings = get_settings()
    declared = environments.fleet(name, settings)
    template = environments.fleet_template(environment, declared, settings)

    def query(registry: str, sql: str) -> list[str]:
        creds = with_retries(verify_credentials, settings)(environment, [registry])[registry]
        return first_column(creds, sql, timeout=settings.connect_timeout_seconds)

    targets = fleets.resolve_targets(
        declared, environments.fleet_targets_file(declared, settings), query
    )
    return declared, {declared.database_of(t): template for t in targets}


@flow(name="drift", log_prints=False, validate_parameters=True)
def drift_flow(
    environment: str = "local",
    databases: list[str] | None = None,
    engine: Literal["native", "flyway"] = "native",
    concurrency: int | None = None,
    fleet: str | None = None,
) -> DriftReport:
    """Compare every database's schema history with the SQL tree being deployed.

    Args:
        environment: local, staging or prod.
        databases: The databases to check. Leave it empty to check all of them.
        engine: How to read each database's migration history: native reads it directly and
            quickly; flyway asks Flyway itself (its info and validate), which starts Java.
        concurrency: How many databases to check at the same time. Leave it empty for the
            worker's setting (AMEIDE_MAX_CONCURRENCY, 8 unless set).
        fleet: Check a fleet's targets (as ameide.toml declares it, [fleets.NAME]) instead of
            the tree's databases.
    """
    own_environment(environment)
    stopped_at_once()
    settings = get_settings()
    declared: Fleet | None = None
    if fleet:
        declared, targets = _fleet_targets(environment, fleet)
    else:
        targets = {
            db.name: db for db in environments.catalog(environment, settings).select(databases)
        }
    names = list(targets)
    credentials = with_retries(verify_credentials, settings)(environment, names, login=False)
    ctx = RunContext.create(environment, targets, credentials, settings, fleet=declared)
    report = DriftReport(environment, fleet=fleet)
    runner: ThreadPoolTaskRunner[Any] = ThreadPoolTaskRunner(
        max_workers=concurrency or settings.max_concurrency
    )
    checked = with_retries(check_database, settings)
    try:
        with runner:
            futures = {
                name: runner.submit(checked, {"ctx": ctx, "database": name, "engine": engine})
                for name in names
            }
            for name, future in futures.items():
                future.wait()
                result = future.state.result(raise_on_failure=False)
                if isinstance(result, MigrateError):
                    result = drift.unreachable(
                        ctx.subject(name),
                        targets[name],
                        str(result),
                        server=credentials[name].server,
                    )
                if not isinstance(result, DatabaseDrift):
                    raise result if isinstance(result, BaseException) else RuntimeError(result)
                report.databases.append(result)
        reachable = [d.database for d in report.databases if d.verdict is not Verdict.UNREACHABLE]
        report.servers = drift.server_support(ctx, reachable)
    finally:
        ctx.close()
    for server in report.servers:
        if server.warning:
            get_run_logger().warning("%s", server.warning)
    create_table_artifact(
        key=report.artifact_key, table=rendering.drift_rows(report), description=report.summary()
    )
    create_markdown_artifact(
        key=f"{report.artifact_key}-summary", markdown=rendering.drift_markdown(report)
    )
    where = metrics.export(
        report, textfile=settings.metrics_path, pushgateway=settings.pushgateway_url
    )
    get_run_logger().info("metrics: %s", where)
    if not report.in_sync:
        # A named state, so that a trigger tells drift (exit 3) from a crash (exit 1).
        return Failed(  # type: ignore[return-value]
            name=DRIFTED_STATE, message=report.summary(), data=DriftFound(report.summary(), report)
        )
    return report
