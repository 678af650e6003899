"""The fleet flow: a fleet's targets verified through the secret gate, then migrated in waves,
one subflow a wave (its targets `parallel` at once, each as a run migrates a database: inspect,
lint, pre-flight, validate, migrate), the halt rules judged after each, and the fleet's ledger
as a table artifact.

The per-target steps are the verbs themselves, retried here on transient faults, not a task
each: a fleet of a thousand targets would otherwise be thousands of task runs on the server.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ParamSpec, TypeVar

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.client.schemas.objects import State
from prefect.states import Cancelled

from ameide_migrate import environments, fleet, migrate, postgres, report
from ameide_migrate.context import RunContext
from ameide_migrate.environments import ApprovalPolicy
from ameide_migrate.errors import REJECTED_STATE, FleetHalted, FleetInvalid, MigrateError
from ameide_migrate.fleet import FleetReport
from ameide_migrate.flows import approval
from ameide_migrate.flows.deployment_guard import own_environment
from ameide_migrate.flows.retrying import with_retries
from ameide_migrate.flows.secrets import verify_credentials
from ameide_migrate.migrate import Steps
from ameide_migrate.outcomes import DatabaseFailed, DatabaseOutcome, OutcomeState
from ameide_migrate.plan import Decision
from ameide_migrate.postgres import HistoryRow
from ameide_migrate.settings import Settings, get_settings

P = ParamSpec("P")
R = TypeVar("R")


def artifact_key(environment: str, name: str) -> str:
    return f"fleet-{environment}-{name}".replace("_", "-").lower()


def retried(step: Callable[P, R], settings: Settings) -> Callable[P, R]:
    """The step, a transient fault retried after the run's delays (doubling, capped)."""

    def attempt(*args: P.args, **kwargs: P.kwargs) -> R:
        for delay in [*settings.retry_delays, None]:
            try:
                return step(*args, **kwargs)
            except MigrateError as error:
                if not error.transient or delay is None:
                    raise
                time.sleep(delay)
        raise AssertionError("unreachable")

    return attempt


def _steps(settings: Settings) -> Steps:
    logger = get_run_logger()

    def validate(ctx: RunContext, database: str) -> None:
        migrate.validate(ctx, database, migrate.flyway_log_sink(logger, database))

    def apply(ctx: RunContext, database: str) -> migrate.MigrateSummary:
        return migrate.migrate(ctx, database, migrate.flyway_log_sink(logger, database))

    return Steps(
        inspect=retried(migrate.inspect, settings),
        lint=retried(migrate.lint_pending, settings),
        preflight=retried(migrate.preflight, settings),
        validate=retried(validate, settings),
        migrate=retried(apply, settings),
    )


def _targets(environment: str, declared: fleet.Fleet, settings: Settings) -> list[str]:
    """The fleet's targets, from its list, its file, or its query on the registry."""

    def query(registry: str, sql: str) -> list[str]:
        creds = with_retries(verify_credentials, settings)(environment, [registry])[registry]
        return postgres.first_column(creds, sql, timeout=settings.connect_timeout_seconds)

    return fleet.resolve_targets(
        declared, environments.fleet_targets_file(declared, settings), query
    )


def _histories(ctx: RunContext) -> dict[str, list[HistoryRow] | None]:
    """Every target's history, read-only, 8 at once."""

    def read(database: str) -> list[HistoryRow] | None:
        return retried(postgres.read_history, get_settings())(
            ctx.credentials[database], ctx.history_table(database), timeout=ctx.connect_timeout
        )

    names = list(ctx.databases)
    with ThreadPoolExecutor(max_workers=8) as pool:
        return dict(zip(names, pool.map(read, names), strict=True))


def _approved(ctx: RunContext, name: str, policy: ApprovalPolicy) -> Decision | None:
    """A person's decision on what the fleet would apply, its targets grouped by the state of
    their histories (None when nothing is pending). An approval holds for the groups approved:
    they are read again after it, and asked for again when they changed meanwhile."""
    template = next(iter(ctx.databases.values()))
    key = artifact_key(ctx.environment, name)
    groups = fleet.group_by_state(template, _histories(ctx))
    while groups:
        plan_id = fleet.groups_digest(groups)
        create_markdown_artifact(
            key=f"{key}-plan",
            markdown=report.fleet_plan_markdown(ctx.environment, name, groups, plan_id),
            description=f"What fleet {name} would migrate in {ctx.environment} now",
        )
        decision = approval.ask(
            ctx.environment,
            plan_id,
            policy,
            plan_artifact=f"{key}-plan",
            decision_artifact=f"{key}-decision",
        )
        if not decision.approved:
            return decision
        again = fleet.group_by_state(template, _histories(ctx))
        if fleet.groups_digest(again) == plan_id:
            return decision
        get_run_logger().warning(
            "plan %s was approved, but the targets' states changed since: asking again", plan_id
        )
        groups = again
    return None


@flow(name="fleet", log_prints=False, validate_parameters=True)
def fleet_flow(
    environment: str = "local", name: str = "", targets: list[str] | None = None
) -> FleetReport | State[Any]:
    """Migrate a fleet's targets in waves: a canary first, each wave larger, a halt when a wave
    breaks the fleet's halt rules.

    Args:
        environment: local, staging or prod.
        name: The fleet, as ameide.toml declares it ([fleets.NAME]).
        targets: Only these targets (in the fleet's order). Leave it empty for all of them.
    """
    own_environment(environment)
    settings = get_settings()
    logger = get_run_logger()
    declared = environments.fleet(name, settings)
    template = environments.fleet_template(environment, declared, settings)
    names = _targets(environment, declared, settings)
    if targets:
        unknown = [t for t in targets if t not in names]
        if unknown:
            raise FleetInvalid(
                f"fleet {name}: {', '.join(unknown)} are no targets of it; its targets begin "
                f"{', '.join(names[:5])}"
            )
        names = [t for t in names if t in targets]
    waves = fleet.plan_waves(names, declared.waves)
    databases = {declared.database_of(t): template for t in names}
    logger.info(
        "fleet %s: %d targets in %d waves (%s)",
        name,
        len(names),
        len(waves),
        ", ".join(str(len(w)) for w in waves),
    )
    verified = with_retries(verify_credentials, settings)(environment, list(databases))
    ctx = RunContext.create(environment, databases, verified, settings)
    policy = environments.get(environment, settings).approval
    if policy.required:
        decision = _approved(ctx, name, policy)
        if decision is not None and not decision.approved:
            ctx.close()
            return Cancelled(
                name=REJECTED_STATE,
                message=f"plan {decision.verdict.value}: {decision.reason}; nothing was migrated",
            )
    found = FleetReport(environment, name)
    steps = _steps(settings)

    def run_wave(number: int, targets: list[str]) -> list[DatabaseOutcome]:
        """One wave's targets, `parallel` at once."""
        wave_logger = get_run_logger()

        def one(target: str) -> DatabaseOutcome:
            try:
                done = migrate.migrate_database(ctx, target, steps, wave_logger)
            except DatabaseFailed as failed:
                done = failed.outcome
            fleet.target_done(number, len(targets), done)
            return done

        with ThreadPoolExecutor(max_workers=declared.waves.parallel) as pool:
            outcomes = list(pool.map(one, [declared.database_of(t) for t in targets]))
        failed = sum(1 for o in outcomes if o.state is OutcomeState.FAILED)
        wave_logger.info("wave %d: %d target(s), %d failed", number, len(outcomes), failed)
        return outcomes

    try:
        for number, wave in enumerate(waves, start=1):
            wave_flow: Any = flow(
                name="fleet wave",
                flow_run_name=f"{name} wave {number} of {len(waves)}",
                persist_result=False,
            )(run_wave)
            outcomes = wave_flow(number, wave)
            found.waves.append(outcomes)
            reason = fleet.halt_reason(outcomes, declared.waves)
            if reason is not None:
                found.halted = reason
                found.not_started = [
                    declared.database_of(t) for later in waves[number:] for t in later
                ]
                logger.error("fleet %s halted after wave %d: %s", name, number, reason)
                break
            if number < len(waves) and declared.waves.bake_seconds:
                logger.info("baking %gs before wave %d", declared.waves.bake_seconds, number + 1)
                time.sleep(declared.waves.bake_seconds)
    finally:
        ctx.close()
        create_table_artifact(
            key=artifact_key(environment, name),
            table=found.rows(),
            description=f"### Fleet `{name}`, `{environment}`\n\n{found.summary()}",
        )
    if not found.ok:
        raise FleetHalted(found.summary(), found)
    return found
