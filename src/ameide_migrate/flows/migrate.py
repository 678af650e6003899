"""The migrate flow: optionally build and push the migrations image first, verify credentials,
then per database inspect -> lint -> validate -> migrate, then a read-only smoke step and the
results artifact.

Thin orchestration over `ameide_migrate.services.migrate`: tasks add retries, run records, logs and
concurrency; the verbs hold the logic.
"""

from __future__ import annotations

import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, cast

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import State
from prefect.states import Cancelled
from prefect.task_runners import ThreadPoolTaskRunner

from ameide_migrate.config import environments
from ameide_migrate.config.environments import ApprovalPolicy
from ameide_migrate.config.settings import Settings, get_settings
from ameide_migrate.core import recovery
from ameide_migrate.core.errors import REJECTED_STATE, MigrateError
from ameide_migrate.core.findings import Finding
from ameide_migrate.core.outcomes import (
    DatabaseFailed,
    DatabaseOutcome,
    Inspection,
    OutcomeState,
    RunFailed,
    RunReport,
    SmokeResult,
)
from ameide_migrate.flows import approval
from ameide_migrate.flows.deployment_guard import own_environment, stopped_at_once
from ameide_migrate.flows.image import ImageBuild, build_image_flow
from ameide_migrate.flows.retrying import says_how_long, step_options, with_retries
from ameide_migrate.flows.secrets import verify_credentials
from ameide_migrate.services import migrate, plan, report
from ameide_migrate.services.context import RunContext
from ameide_migrate.services.migrate import Steps
from ameide_migrate.services.plan import DatabasePlan, Decision


@task(**step_options("inspect"), task_run_name="inspect {database}")
@says_how_long
def inspect_history(ctx: RunContext, database: str) -> Inspection:
    return migrate.inspect(ctx, database)


@task(**step_options("lint"), task_run_name="lint {database}")
@says_how_long
def lint_pending(ctx: RunContext, database: str) -> list[Finding]:
    """squawk and the transaction checks over what is pending, before Flyway starts."""
    return migrate.lint_pending(ctx, database)


@task(**step_options("validate"), task_run_name="validate {database}")
@says_how_long
def validate(ctx: RunContext, database: str) -> None:
    migrate.validate(ctx, database, migrate.flyway_log_sink(get_run_logger(), database))


@task(**step_options("migrate"), task_run_name="migrate {database}")
@says_how_long
def apply(ctx: RunContext, database: str) -> migrate.MigrateSummary:
    return migrate.migrate(ctx, database, migrate.flyway_log_sink(get_run_logger(), database))


@task(**step_options("preflight"), task_run_name="preflight {database}")
@says_how_long
def preflight(ctx: RunContext, database: str) -> None:
    """No session in a long transaction holds a lock a pending migration would queue behind."""
    migrate.preflight(ctx, database)


def _steps(settings: Settings) -> Steps:
    """The per-database steps as tasks, with the retry budget of this run's settings."""
    return Steps(
        inspect=with_retries(inspect_history, settings),
        lint=with_retries(lint_pending, settings),
        preflight=with_retries(preflight, settings),
        validate=with_retries(validate, settings),
        migrate=with_retries(apply, settings),
    )


@task(name="database", cache_policy=NO_CACHE, persist_result=False, task_run_name="{database}")
def migrate_database(ctx: RunContext, database: str, steps: Steps) -> DatabaseOutcome:
    """One database, its steps as child task runs; DatabaseFailed carries a failure's outcome."""
    return migrate.migrate_database(ctx, database, steps, get_run_logger())


@task(**step_options("plan"), task_run_name="plan {database}")
def plan_database(ctx: RunContext, database: str) -> DatabasePlan:
    """What a migrate would do, read-only: the dry run's and the approver's plan."""
    planned = plan.plan_database(ctx, database)
    outcome = planned.outcome
    get_run_logger().info("%s: %s %s", database, outcome.state.value, outcome.message)
    return planned


@task(**step_options("smoke check"), task_run_name="smoke check")
@says_how_long
def smoke_check(ctx: RunContext, databases: list[str]) -> list[SmokeResult]:
    """Read-only: every database that migrated is at the latest version, nothing pending."""
    with ThreadPoolExecutor(max_workers=max(1, len(databases))) as pool:
        results = list(pool.map(lambda db: migrate.smoke(ctx, db), databases))
    logger = get_run_logger()
    for r in results:
        verdict = f"at latest {r.latest}" if r.ok else "; ".join(r.problems)
        logger.info("%s: %s (%s)", r.database, verdict, r.source)
    return results


def _smoke_or_its_failure(
    ctx: RunContext, databases: list[str], settings: Settings
) -> list[SmokeResult]:
    """The smoke step's results; when the step itself failed (its retries ran out), that failure
    as each database's smoke result: it joins the report beside any migrate failure instead of
    replacing it."""
    state = with_retries(smoke_check, settings)(ctx, databases, return_state=True)
    results = state.result(raise_on_failure=False)
    if not isinstance(results, MigrateError):
        return cast(list[SmokeResult], results)
    return [
        SmokeResult(db, None, None, (f"could not check: {results}",), "none") for db in databases
    ]


def _planned(ctx: RunContext, database: str, future: Any) -> DatabasePlan:
    """A database's plan; one that could not be built (its retries ran out) is that database's
    failure alone, as in a migrate."""
    future.wait()
    planned = future.state.result(raise_on_failure=False)
    if isinstance(planned, DatabasePlan):
        return planned
    if isinstance(planned, MigrateError):
        failed = DatabaseOutcome(
            database,
            OutcomeState.FAILED,
            None,
            None,
            None,
            0,
            0.0,
            message=f"could not plan: {planned}",
            recovery=recovery.after_error(ctx.subject(database), planned, None),
        )
        return DatabasePlan(failed, ())
    raise planned if isinstance(planned, BaseException) else RuntimeError(repr(planned))


def _plans(
    ctx: RunContext,
    names: list[str],
    runner: ThreadPoolTaskRunner[Any],
    settings: Settings,
    *,
    approving: bool = False,
) -> list[DatabasePlan]:
    """Each database's plan. For an approval, one whose history already holds everything (the
    native inspection, read at once) is up to date without a task of its own, so that a no-op
    run of a protected environment costs little more than one of an unprotected one (its
    migrate would not look further either); a dry run plans every database in full, drift
    included."""
    settled = _already_up_to_date(ctx, names) if approving else {}
    planning = with_retries(plan_database, settings)
    futures = {
        n: runner.submit(planning, {"ctx": ctx, "database": n}) for n in names if n not in settled
    }
    return [
        DatabasePlan(settled[n], ()) if n in settled else _planned(ctx, n, futures[n])
        for n in names
    ]


def _already_up_to_date(ctx: RunContext, names: list[str]) -> dict[str, DatabaseOutcome]:
    """The databases whose history holds every migration of the catalog, unchanged, as
    up-to-date outcomes; any other (pending, unsettled, unreadable) is left to its plan task."""

    def read(name: str) -> DatabaseOutcome | None:
        try:
            inspection = migrate.inspect(ctx, name)
        except MigrateError:
            return None  # the plan task reads it again, with its retries
        if not inspection.up_to_date:
            return None
        version = inspection.version
        return DatabaseOutcome(name, OutcomeState.UP_TO_DATE, version, version, version, 0, 0.0)

    with ThreadPoolExecutor(max_workers=max(1, len(names))) as pool:
        found = dict(zip(names, pool.map(read, names), strict=True))
    return {name: outcome for name, outcome in found.items() if outcome is not None}


def _outcome(future: Any) -> DatabaseOutcome:
    future.wait()
    outcome = future.state.result(raise_on_failure=False)
    if isinstance(outcome, DatabaseFailed):
        return outcome.outcome
    if isinstance(outcome, DatabaseOutcome):
        return outcome
    raise outcome if isinstance(outcome, BaseException) else RuntimeError(repr(outcome))


def _approved(
    ctx: RunContext,
    names: list[str],
    runner: ThreadPoolTaskRunner[Any],
    settings: Settings,
    policy: ApprovalPolicy,
    pins: Path,
) -> tuple[Decision | None, RunContext]:
    """A person's decision on the plan of what will run (None when nothing is pending), and the
    context to run it with: on the copy, made under `pins`, whose plan was approved (see
    approval.decided)."""

    def propose() -> approval.Proposal[list[DatabasePlan]]:
        nonlocal ctx
        fresh = environments.catalog(ctx.environment, settings).select(names)
        ctx = approval.pinned(ctx, {db.name: db for db in fresh}, settings, pins)
        planned = _plans(ctx, names, runner, settings, approving=True)
        return approval.Proposal(
            planned, plan.digest(planned), plan.files_of(planned), plan.needs_decision(planned)
        )

    def publish(
        proposal: approval.Proposal[list[DatabasePlan]], changes: plan.FileChanges | None
    ) -> None:
        approval.publish_plan(ctx.environment, proposal.planned, dry_run=False, changes=changes)

    decision = approval.decided(
        ctx.environment,
        policy,
        propose,
        publish,
        changed_since="what is pending changed since",
    )
    return decision, ctx


@flow(name="migrate", log_prints=False, validate_parameters=True)
def migrate_flow(
    environment: str = "local",
    databases: list[str] | None = None,
    concurrency: int | None = None,
    dry_run: bool = False,
    build: ImageBuild | None = None,
) -> RunReport | State[Any]:
    """Migrate the environment's databases (all, or those named) to the latest version.

    Args:
        environment: local, staging or prod.
        databases: The databases to migrate. Leave it empty to migrate all of them.
        concurrency: How many databases to migrate at the same time. Leave it empty for the
            worker's setting (AMEIDE_MAX_CONCURRENCY, 8 unless set).
        dry_run: Only list what would be applied to each database; change nothing.
        build: build and push the migrations image first; a failed build stops the run before
            any database is touched. Empty in a deployment's runs, which run inside the image.
    """
    own_environment(environment)
    stopped_at_once()
    settings = get_settings()
    target = environments.get(environment, settings)
    catalog = environments.catalog(environment, settings)
    targets = catalog.select(databases)
    names = [db.name for db in targets]
    if build is not None:
        built = build_image_flow(build)
        get_run_logger().info("migrations image: %s", built.reference)
    verified = with_retries(verify_credentials, settings)(environment, names)
    ctx = RunContext.create(environment, targets, verified, settings)
    run = RunReport(environment, server_of={n: c.server for n, c in verified.items()})
    # The copies of the files a plan was approved on, private to this run: what its Flyway reads.
    pins = Path(tempfile.mkdtemp(prefix="ameide-approved-")) if target.approval.required else None
    runner: ThreadPoolTaskRunner[Any] = ThreadPoolTaskRunner(
        max_workers=concurrency or settings.max_concurrency
    )
    try:
        with runner:
            if dry_run:
                planned = _plans(ctx, names, runner, settings)
                approval.publish_plan(environment, planned, dry_run=True)
                run.outcomes = [p.outcome for p in planned]
            elif pins is not None:
                decision, ctx = _approved(ctx, names, runner, settings, target.approval, pins)
                if decision is not None and not decision.approved:
                    return Cancelled(
                        name=REJECTED_STATE,
                        message=f"plan {decision.verdict.value}: {decision.reason}; "
                        "nothing was migrated",
                    )
            if not dry_run:
                futures = [
                    runner.submit(
                        migrate_database, {"ctx": ctx, "database": n, "steps": _steps(settings)}
                    )
                    for n in names
                ]
                run.outcomes = [_outcome(f) for f in futures]
        settled = [o.database for o in run.outcomes if o.state is not OutcomeState.FAILED]
        if settled and not dry_run:
            run.smoke = _smoke_or_its_failure(ctx, settled, settings)
    finally:
        ctx.close()
        if pins is not None:
            shutil.rmtree(pins)
        run.jvm_starts = ctx.engine_starts
        if run.outcomes:
            create_table_artifact(
                key=report.artifact_key(environment, dry_run=dry_run),
                table=report.artifact_rows(run),
                description=report.markdown_summary(
                    run, dry_run=dry_run, databases=names if databases else None
                ),
            )
        if any(o.findings for o in run.outcomes):
            create_table_artifact(
                key=report.lint_artifact_key(environment, dry_run=dry_run),
                table=report.finding_rows(run),
                description=f"### Lint of the pending migrations, `{environment}`",
            )
    if not run.ok:
        raise RunFailed(run.summary(), run)
    return run
