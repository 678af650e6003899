"""The migrate flow: per database inspect -> validate -> migrate, then a read-only smoke step.

Thin orchestration over `ameide_migrate.migrate`: tasks add retries, logs and concurrency; the
verbs hold the logic.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Callable
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import State, TaskRun
from prefect.task_runners import ThreadPoolTaskRunner
from prefect.tasks import Task, exponential_backoff

from ameide_migrate import environments, flyway, migrate, report
from ameide_migrate.catalog import load_catalog
from ameide_migrate.errors import FlywayNotInstalled, MigrateError, RunFailed
from ameide_migrate.migrate import (
    DatabaseFailed,
    DatabaseOutcome,
    OutcomeState,
    RunContext,
    RunReport,
)
from ameide_migrate.settings import Settings, get_settings


def only_transient(_task: Task[..., Any], _run: TaskRun, state: State[Any]) -> bool:
    """Retry connection refused/reset and lock waits; a validation or SQL error fails at once."""
    return isinstance(state.data, MigrateError) and state.data.transient


def _retrying(name: str, settings: Settings) -> dict[str, Any]:
    return {
        "name": name,
        "cache_policy": NO_CACHE,
        "retries": settings.retries,
        "retry_delay_seconds": exponential_backoff(settings.retry_delay_seconds),
        "retry_jitter_factor": 0.2,
        "retry_condition_fn": only_transient,
    }


def _flyway_log(
    logger: logging.LoggerAdapter[logging.Logger], database: str
) -> Callable[[str, str], None]:
    levels = {"info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}

    def sink(level: str, message: str) -> None:
        logger.log(levels.get(level, logging.INFO), "%s: %s", database, message)

    return sink


_settings = get_settings()


@task(**_retrying("inspect", _settings), task_run_name="inspect {database}")
def inspect_history(ctx: RunContext, database: str) -> migrate.Inspection:
    return migrate.inspect(ctx, database)


@task(**_retrying("validate", _settings), task_run_name="validate {database}")
def validate(ctx: RunContext, database: str) -> None:
    migrate.validate(ctx, database, _flyway_log(get_run_logger(), database))  # type: ignore[arg-type]


@task(**_retrying("migrate", _settings), task_run_name="migrate {database}")
def apply(ctx: RunContext, database: str) -> migrate.MigrateSummary:
    return migrate.migrate(ctx, database, _flyway_log(get_run_logger(), database))  # type: ignore[arg-type]


@task(name="database", cache_policy=NO_CACHE, task_run_name="{database}")
def migrate_database(ctx: RunContext, database: str) -> DatabaseOutcome:
    """One database from its applied version to the latest; DatabaseFailed carries a failure."""
    logger = get_run_logger()
    started = time.monotonic()
    latest = ctx.databases[database].latest_version
    latest_text = str(latest) if latest else None
    before: str | None = None
    try:
        inspection = inspect_history(ctx, database)
        before = inspection.version
        if inspection.up_to_date:
            logger.info("%s: at %s, nothing to apply (no JVM needed)", database, before)
            return DatabaseOutcome(
                database,
                OutcomeState.UP_TO_DATE,
                before,
                before,
                latest_text,
                0,
                time.monotonic() - started,
            )
        logger.info("%s: %s; validating with Flyway", database, inspection.reason)
        validate(ctx, database)
        summary = apply(ctx, database)
    except MigrateError as error:
        outcome = DatabaseOutcome(
            database,
            OutcomeState.FAILED,
            before,
            before,
            latest_text,
            0,
            time.monotonic() - started,
            message=migrate.failure_message(error),
            recovery=migrate.recovery(ctx.environment, database, error, before),
            flyway_used=ctx.engine_started,
        )
        logger.error("%s failed: %s\n%s", database, outcome.message, outcome.recovery)
        raise DatabaseFailed(outcome) from None
    logger.info(
        "%s: %s -> %s, %d applied",
        database,
        summary.before or "empty",
        summary.after,
        summary.applied,
    )
    return DatabaseOutcome(
        database,
        OutcomeState.MIGRATED,
        summary.before,
        summary.after,
        latest_text,
        summary.applied,
        time.monotonic() - started,
        flyway_used=True,
    )


@task(**_retrying("smoke check", _settings))
def smoke_check(ctx: RunContext, databases: list[str]) -> list[migrate.SmokeResult]:
    """Read-only: every database that migrated is at the latest version, nothing pending."""
    with ThreadPoolExecutor(max_workers=max(1, len(databases))) as pool:
        results = list(pool.map(lambda db: migrate.smoke(ctx, db), databases))
    for result in results:
        get_run_logger().info(
            "%s: %s (%s)",
            result.database,
            "at latest " + str(result.latest) if result.ok else "; ".join(result.problems),
            result.source,
        )
    return results


@flow(name="migrate", log_prints=False, validate_parameters=True)
def migrate_flow(
    environment: str = "local",
    databases: list[str] | None = None,
    concurrency: int | None = None,
) -> RunReport:
    """Migrate the environment's databases (all, or those named) to the latest version.

    Args:
        environment: local, staging or prod.
        databases: the databases to migrate; all of them when empty.
        concurrency: databases migrated at once; the setting AMEIDE_MAX_CONCURRENCY when empty.
    """
    settings = get_settings()
    environments.check(environment)
    placeholders = environments.placeholders(environment)
    catalog = load_catalog(settings.sql_dir, placeholders=placeholders, table=settings.flyway_table)
    targets = catalog.select(databases)
    names = [db.name for db in targets]
    try:
        installation: flyway.Installation | None = flyway.installation(
            settings.flyway_home, settings.flyway_version, settings.java
        )
    except FlywayNotInstalled:
        installation = None
    ctx = RunContext(
        environment=environment,
        databases={db.name: db for db in targets},
        credentials=environments.load_credentials(environment, settings, names),
        installation=installation,
        placeholders=placeholders,
        table=settings.flyway_table,
        connect_timeout=settings.connect_timeout_seconds,
        lock_retry_count=settings.lock_retry_count,
    )
    run = RunReport(environment)
    try:
        runner: ThreadPoolTaskRunner[Any] = ThreadPoolTaskRunner(
            max_workers=concurrency or settings.max_concurrency
        )
        with runner:
            futures = [
                runner.submit(migrate_database, {"ctx": ctx, "database": db}) for db in names
            ]
            for future in futures:
                future.wait()
                outcome = future.state.result(raise_on_failure=False)
                if isinstance(outcome, DatabaseFailed):
                    outcome = outcome.outcome
                if not isinstance(outcome, DatabaseOutcome):
                    raise outcome if isinstance(outcome, BaseException) else RuntimeError(outcome)
                run.outcomes.append(outcome)
        settled = [o.database for o in run.outcomes if o.state is not OutcomeState.FAILED]
        if settled:
            run.smoke = smoke_check(ctx, settled)
    finally:
        ctx.close()
    create_table_artifact(
        key=f"migrate-{environment}",
        table=report.artifact_rows(run),
        description=report.markdown_summary(run),
    )
    if not run.ok:
        raise RunFailed(run.summary(), run)
    return run
