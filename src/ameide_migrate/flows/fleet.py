"""The fleet flow: a fleet's targets verified through the secret gate, then migrated in waves,
one subflow a wave (its targets `parallel` at once, each as a run migrates a database: inspect,
lint, pre-flight, validate, migrate), the halt rules judged after each, and the fleet's ledger
as a table artifact.

The per-target steps are the verbs themselves, retried here on transient faults, not a task
each: a fleet of a thousand targets would otherwise be thousands of task runs on the server.
"""

from __future__ import annotations

import contextvars
import tempfile
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Any, ParamSpec, TypeVar, cast
from uuid import UUID

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.client.schemas.objects import FlowRun, State
from prefect.runtime import deployment, flow_run
from prefect.states import Cancelled, Completed, Failed

from ameide_migrate.adapters.postgres.connection import first_column
from ameide_migrate.adapters.postgres.index_catalog import drop_indexes_concurrently
from ameide_migrate.adapters.postgres.schema_history import read_history
from ameide_migrate.adapters.postgres.sessions import end_sessions
from ameide_migrate.adapters.prefect import flow_runs, turns
from ameide_migrate.config import environments
from ameide_migrate.config.environments import ApprovalPolicy
from ameide_migrate.config.fleets import Fleet, Waves, checked_targets
from ameide_migrate.config.settings import Settings, get_settings
from ameide_migrate.core.catalog import DatabaseCatalog
from ameide_migrate.core.errors import REJECTED_STATE, FleetBusy, MigrateError, UsageError
from ameide_migrate.core.history import HistoryRow
from ameide_migrate.core.interruption import Interrupted
from ameide_migrate.core.outcomes import DatabaseFailed, DatabaseOutcome, OutcomeState
from ameide_migrate.flows import approval
from ameide_migrate.flows.deployment_guard import own_environment, stopped_at_once
from ameide_migrate.flows.retrying import retried, with_retries
from ameide_migrate.flows.secrets import verify_credentials, verify_credentials_reading_histories
from ameide_migrate.services import fleet, migrate, plan, report
from ameide_migrate.services.context import RunContext, history_table_of
from ameide_migrate.services.fleet import FleetHalted, FleetReport
from ameide_migrate.services.migrate import Steps
from ameide_migrate.services.plan import Decision

P = ParamSpec("P")
R = TypeVar("R")


def artifact_key(environment: str, name: str) -> str:
    return f"fleet-{environment}-{name}".replace("_", "-").lower()


FLEET_FLOW = "fleet"
TURN_POLL_SECONDS = 5.0


def turn_key(environment: str, name: str) -> str:
    """The key of a run's turn at a fleet: a prefix of its own, where a suffix could be another
    fleet's ledger (`fleet-local-a-turn` is fleet a-turn's)."""
    return f"turn-{artifact_key(environment, name)}"


def await_the_fleets_turn(
    environment: str,
    name: str,
    own: UUID | None,
    *,
    wait: bool,
    how_to_wait: str,
    on_wait: Callable[[str], None],
) -> None:
    """Return once no unended run of the fleet in the environment is ahead of the run `own`
    (of any such run, without `own`: a command that has started none yet); FleetBusy naming the
    first, with its address, unless `wait`: then `on_wait` is told of each run waited for."""
    key = turn_key(environment, name)
    told: UUID | None = None
    while ahead := turns.runs_before(key, FLEET_FLOW, own):
        holder = ahead[0]
        if not wait:
            raise FleetBusy(
                environment, name, f"{holder.name} ({holder.state})", holder.url, how_to_wait
            )
        if holder.flow_run_id != told:
            on_wait(
                f"fleet {name} in {environment}: waiting for {holder.name} ({holder.state}) "
                f"to end: {holder.url}"
            )
            told = holder.flow_run_id
        time.sleep(TURN_POLL_SECONDS)


def _take_the_fleets_turn(environment: str, name: str, wait: bool) -> None:
    """This run's turn at the fleet, taken before it reads or touches anything; held until the
    run ends (see turns.runs_before)."""
    create_markdown_artifact(
        key=turn_key(environment, name),
        markdown=f"Flow run `{flow_run.name}` took its turn at fleet `{name}` in "
        f"`{environment}`: the fleet's runs migrate one at a time, in the order of their turns.",
        description=f"A turn at fleet {name} in {environment}",
    )
    await_the_fleets_turn(
        environment,
        name,
        UUID(flow_run.id),
        wait=wait,
        how_to_wait=(
            "start this run again with `wait_for_lock` ticked (trigger --wait-for-lock)"
            if deployment.id
            else "run again with --wait-for-lock"
        ),
        on_wait=get_run_logger().info,
    )


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


def _targets(environment: str, declared: Fleet, settings: Settings) -> list[str]:
    """The fleet's targets, from its list, its file, or its query on the registry."""

    def query(registry: str, sql: str) -> list[str]:
        creds = with_retries(verify_credentials, settings)(environment, [registry])[registry]
        return first_column(creds, sql, timeout=settings.connect_timeout_seconds)

    environments.fleet_registry(environment, declared, settings)
    return fleet.resolve_targets(
        declared, environments.fleet_targets_file(declared, settings), query
    )


def _histories(
    ctx: RunContext, skip: Mapping[str, object] | None = None
) -> dict[str, list[HistoryRow] | None]:
    """Every target's history (but those in `skip`), read-only, 8 at once."""

    def read(database: str) -> list[HistoryRow] | None:
        return retried(read_history, get_settings())(
            ctx.credentials[database], ctx.history_table(database), timeout=ctx.connect_timeout
        )

    names = [d for d in ctx.databases if d not in (skip or {})]
    with ThreadPoolExecutor(max_workers=8) as pool:
        return dict(zip(names, pool.map(read, names), strict=True))


def _approved(
    ctx: RunContext,
    declared: Fleet,
    policy: ApprovalPolicy,
    read: dict[str, list[HistoryRow] | None],
    pins: Path,
) -> tuple[Decision | None, RunContext, dict[str, list[HistoryRow] | None]]:
    """A person's decision on what the fleet would apply, its targets grouped by the state of
    their histories (None when nothing is pending), the context to run it with (on the copy,
    made under `pins`, whose plan was approved) and the histories the decision held for. After
    an approval the histories are read again with the template (see approval.decided)."""
    key = artifact_key(ctx.environment, declared.name)
    # In the fleet's order, as every later reading: the gate's threads filled `read` as they went.
    first = {**_histories(ctx, skip=read), **read}
    histories = {d: first[d] for d in ctx.databases}
    again = False

    def propose() -> approval.Proposal[list[fleet.StateGroup]]:
        nonlocal ctx, histories, again
        settings = get_settings()
        fresh = environments.fleet_template(ctx.environment, declared, settings)
        ctx = approval.pinned(ctx, dict.fromkeys(ctx.databases, fresh), settings, pins)
        if again:  # after an approval: the states it must still hold for
            histories = _histories(ctx)
        again = True
        groups = fleet.group_by_state(next(iter(ctx.databases.values())), histories)
        return approval.Proposal(
            groups, fleet.groups_digest(groups), fleet.files_of_groups(groups), bool(groups)
        )

    def publish(
        proposal: approval.Proposal[list[fleet.StateGroup]], changes: plan.FileChanges | None
    ) -> None:
        create_markdown_artifact(
            key=f"{key}-plan",
            markdown=report.fleet_plan_markdown(
                ctx.environment, declared.name, proposal.planned, proposal.id, changes
            ),
            description=f"What fleet {declared.name} would migrate in {ctx.environment} now",
        )

    decision = approval.decided(
        ctx.environment,
        policy,
        propose,
        publish,
        changed_since="the targets' states changed since",
        plan_artifact=f"{key}-plan",
        decision_artifact=f"{key}-decision",
    )
    return decision, ctx, histories


SHARD_FLOW = "fleet-shard"


def _up_to_date(
    databases: Iterable[str],
    template: DatabaseCatalog,
    histories: Mapping[str, list[HistoryRow] | None],
) -> set[str]:
    """The databases whose history (read by the gate) holds every migration of `template`."""
    return {
        d
        for d in databases
        if d in histories and migrate.compare(template, histories[d]).up_to_date
    }


def _interrupted(
    ctx: RunContext, histories: Mapping[str, list[HistoryRow] | None], skip: Collection[str]
) -> dict[str, Interrupted]:
    """The targets whose first pending migration a crash cut short: set apart before the waves
    are planned, so that no wave (the canary's least of all) fails on what that migration
    built, and the canary is one that can prove the migrations."""

    def one(database: str) -> Interrupted | None:
        return retried(migrate.interrupted, get_settings())(ctx, database, histories.get(database))

    names = [d for d in ctx.databases if d not in skip and d in histories]
    with ThreadPoolExecutor(max_workers=8) as pool:
        found = dict(zip(names, pool.map(one, names), strict=True))
    return {d: i for d, i in found.items() if i is not None}


def _undo(ctx: RunContext, interrupted: Mapping[str, Interrupted]) -> dict[str, str]:
    """What each interrupted migration built, dropped (its fix's statements), so that its
    target migrates in the waves as any pending one; why, for each whose undo failed."""
    logger = get_run_logger()
    failed: dict[str, str] = {}
    for database, found in interrupted.items():
        logger.warning(
            "%s: undoing what the interrupted %s built: %s",
            database,
            found.migration.script,
            " ".join(found.undo()),
        )
        try:
            retried(drop_indexes_concurrently, get_settings())(
                ctx.credentials[database],
                [index for _, index in found.built],
                timeout=ctx.connect_timeout,
            )
        except MigrateError as error:
            failed[database] = str(error)
    return failed


def _migrate_targets(
    ctx: RunContext, declared: Fleet, wave: int, size: int, databases: list[str], steps: Steps
) -> list[DatabaseOutcome]:
    """The targets' databases, `parallel` at once, each as a run migrates a database."""
    logger = get_run_logger()

    def one(database: str) -> DatabaseOutcome:
        try:
            done = migrate.migrate_database(ctx, database, steps, logger)
        except DatabaseFailed as failed:
            done = failed.outcome
        fleet.target_done(wave, size, done)
        return done

    with ThreadPoolExecutor(max_workers=declared.waves.parallel) as pool:
        return list(pool.map(one, databases))


def _shard_ended(environment: str, name: str, outcomes: list[DatabaseOutcome]) -> State[Any]:
    """The shard's ledger as its artifact (which the fleet run collects), and its final state:
    Failed when a target failed."""
    create_table_artifact(
        key=f"{artifact_key(environment, name)}-shard",
        table=fleet.shard_rows(outcomes),
        description=f"### A shard of fleet `{name}`, `{environment}`",
    )
    failed = [o for o in outcomes if o.state is OutcomeState.FAILED]
    counts = f"{len(outcomes) - len(failed)} of {len(outcomes)} target(s) migrated or up to date"
    if failed:
        return Failed(
            message=f"{len(failed)} of {len(outcomes)} target(s) failed: "
            + ", ".join(o.database for o in failed[:10])
        )
    return Completed(message=counts)


def _shards_in_process(
    ctx: RunContext,
    declared: Fleet,
    wave: int,
    parts: list[list[str]],
    steps: Steps,
) -> list[DatabaseOutcome]:
    """The wave's shards at once, each a subflow of this process on the fleet's own context
    (one Flyway engine for every shard)."""
    size = sum(len(p) for p in parts)
    if len(parts) == 1:  # the wave's subflow is its one shard
        return _migrate_targets(ctx, declared, wave, size, parts[0], steps)
    found: dict[int, list[DatabaseOutcome]] = {}

    def shard(index: int, databases: list[str]) -> State[Any]:
        found[index] = _migrate_targets(ctx, declared, wave, size, databases, steps)
        return _shard_ended(ctx.environment, declared.name, found[index])

    def start(index: int, databases: list[str]) -> None:
        shard_flow: Any = flow(
            name=SHARD_FLOW,
            flow_run_name=f"{declared.name} wave {wave} shard {index + 1} of {len(parts)}",
            persist_result=False,
        )(shard)
        shard_flow(index, databases, return_state=True)

    with ThreadPoolExecutor(max_workers=len(parts)) as pool:
        started = [
            pool.submit(contextvars.copy_context().run, start, index, databases)
            for index, databases in enumerate(parts)
        ]
        for future in started:
            future.result()
    return [o for index in range(len(parts)) for o in found.get(index, [])]


def _shard_deployment(environment: str) -> tuple[str, dict[str, Any]] | None:
    """(`fleet-shard/<env>`, the job variables its runs get) when this fleet run is a
    deployment's in an environment that is not local: each shard is then a run of that
    deployment (on Kubernetes, a Job each), on the image this run has."""
    if not deployment.id or environments.get(environment, get_settings()).local:
        return None
    image = flow_runs.job_variables_of(str(flow_run.id)).get("image")
    return f"{SHARD_FLOW}/{environment}", ({"image": image} if image else {})


def _shards_on_deployment(
    shard_deployment: tuple[str, dict[str, Any]],
    ctx: RunContext,
    declared: Fleet,
    wave: int,
    parts: list[list[str]],
    before: Mapping[str, list[HistoryRow] | None],
    approved_files: dict[str, str] | None,
) -> list[DatabaseOutcome]:
    """The wave's shards as runs of `fleet-shard/<env>`, all at once, collected from their
    artifacts. A shard run that outlives `shard_timeout_minutes` is cancelled (its worker, or
    the runner in its pod, stops its process) and waited for until it has stopped; the targets
    a shard run ended without reporting (cancelled, crashed, its credentials missing) are read back
    from their own histories (`before` is what the gate read), with the run's state."""
    from prefect.deployments import run_deployment

    logger = get_run_logger()
    deployment_name, job_variables = shard_deployment
    size = sum(len(p) for p in parts)
    runs = [
        cast(
            FlowRun,
            run_deployment(
                deployment_name,
                parameters={
                    "name": declared.name,
                    "wave": wave,
                    "wave_size": size,
                    "targets": [declared.target_of(d) for d in databases],
                    # Only when approved: an unprotected fleet's shard runs take what they took.
                    **({} if approved_files is None else {"approved_files": approved_files}),
                },
                flow_run_name=f"{declared.name} wave {wave} shard {index + 1} of {len(parts)}",
                job_variables=job_variables or None,
                timeout=0,
                as_subflow=True,
            ),
        )
        for index, databases in enumerate(parts)
    ]
    logger.info("wave %d: %d shard run(s) of %s started", wave, len(runs), deployment_name)
    shard_of = {run.id: databases for run, databases in zip(runs, parts, strict=True)}
    outcomes: list[DatabaseOutcome] = []

    def ended(run: flow_runs.EndedRun) -> None:
        got = _collected(ctx, run, shard_of[run.flow_run_id], before, declared.waves)
        for outcome in got:
            fleet.target_done(wave, size, outcome)
        outcomes.extend(got)
        logger.info(
            "wave %d: shard run %s ended %s (%d target(s))", wave, run.name, run.state, len(got)
        )

    flow_runs.await_runs(list(shard_of), declared.waves.shard_timeout_minutes * 60, ended)
    order = {d: i for i, d in enumerate(d for p in parts for d in p)}
    return sorted(outcomes, key=lambda o: order.get(o.database, len(order)))


def _collected(
    ctx: RunContext,
    run: flow_runs.EndedRun,
    databases: list[str],
    before: Mapping[str, list[HistoryRow] | None],
    waves: Waves,
) -> list[DatabaseOutcome]:
    """The shard run's outcomes, from its artifact; the targets it has none for, as their
    histories say once the run has ended: what it committed before it stopped is applied."""
    found = {o.database: o for o in fleet.outcomes_of_rows(run.rows)}
    missing = [d for d in databases if d not in found]
    if not missing:
        return [found[d] for d in databases]
    said = ""
    if run.overdue and run.stopped:
        why = (
            f"its shard run {run.name} outlived shard_timeout_minutes = "
            f"{waves.shard_timeout_minutes:g}: cancelled, it stopped {run.state}"
        )
    elif run.overdue:
        why = (
            f"its shard run {run.name} outlived shard_timeout_minutes = "
            f"{waves.shard_timeout_minutes:g} and was cancelled, but is still {run.state} "
            f"{flow_runs.STOP_GRACE_SECONDS:g}s later: its process may still be migrating "
            "(`fleet status` reads where each target stands)"
        )
    else:
        why = f"its shard run {run.name} ended {run.state} before reporting it"
        said = " ".join(run.message.split())[:300]
    now = _histories_once_stopped(ctx, missing, shard_session_name(str(run.flow_run_id)))
    for database in missing:
        found[database] = fleet.read_back(
            database,
            ctx.databases[database],
            before.get(database),
            now[database],
            why,
            run.seconds,
            said,
        )
    return [found[d] for d in databases]


def shard_session_name(flow_run_id: str) -> str:
    """The application_name of a shard run's Flyway sessions, by which the fleet finds them."""
    return f"ameide-migrate shard {flow_run_id}"


def _histories_once_stopped(
    ctx: RunContext, names: list[str], session_name: str
) -> dict[str, list[HistoryRow] | str | None]:
    """The targets' histories once the sessions `session_name` left on them are gone, 8 at
    once; for a target whose state cannot be known, why."""
    settings = get_settings()

    def read(database: str) -> list[HistoryRow] | str | None:
        creds = ctx.credentials[database]
        try:
            left = retried(end_sessions, settings)(creds, session_name, timeout=ctx.connect_timeout)
            if left:
                return (
                    f"{left} session(s) of the run still open on it after it was ended: "
                    "it may yet commit (`fleet status` reads where it stands)"
                )
            return retried(read_history, settings)(
                creds, ctx.history_table(database), timeout=ctx.connect_timeout
            )
        except MigrateError as error:
            return f"its history could not be read: {error}"

    with ThreadPoolExecutor(max_workers=8) as pool:
        return dict(zip(names, pool.map(read, names), strict=True))


@flow(name=SHARD_FLOW, log_prints=False, validate_parameters=True, persist_result=False)
def fleet_shard_flow(
    environment: str = "local",
    name: str = "",
    wave: int = 1,
    wave_size: int = 0,
    targets: list[str] | None = None,
    approved_files: dict[str, str] | None = None,
) -> State[Any]:
    """A shard of a fleet's wave: its targets migrated `parallel` at once, their outcomes in
    its artifact. The fleet run starts it; it runs only as a shard of a running fleet run.

    Args:
        environment: local, staging or prod.
        name: The fleet, as ameide.toml declares it ([fleets.NAME]).
        wave: The wave this shard belongs to.
        wave_size: The wave's targets, over all its shards.
        targets: The shard's targets.
        approved_files: In a protected environment, the template's files (name: SHA-256) the
            fleet's plan was approved on: the shard migrates a copy of them, or nothing when
            its own files differ.
    """
    own_environment(environment)
    stopped_at_once()
    started_by_a_fleet()
    settings = get_settings()
    declared = environments.fleet(name, settings)
    template = environments.fleet_template(environment, declared, settings)
    names = checked_targets(declared, targets or [], "the shard's targets")
    with ExitStack() as stack:
        if approved_files is not None:
            pins = stack.enter_context(tempfile.TemporaryDirectory(prefix="ameide-approved-"))
            template = plan.pinned_as_approved(
                declared, environment, template, approved_files, Path(pins)
            )
        databases = {declared.database_of(t): template for t in names}
        verified = with_retries(verify_credentials, settings)(
            environment, list(databases), shown_as=declared.database_of("<target>")
        )
        ctx = RunContext.create(
            environment,
            databases,
            verified,
            settings,
            session_name=shard_session_name(flow_run.id),
            fleet=declared,
        )
        stack.callback(ctx.close)
        outcomes = _migrate_targets(
            ctx, declared, wave, wave_size or len(names), list(databases), _steps(settings)
        )
    return _shard_ended(environment, name, outcomes)


def started_by_a_fleet() -> None:
    """A deployment's shard run runs only under a running fleet run: started alone (from the
    UI, or the API) it would migrate targets past the fleet's approval and halt rules."""
    if not deployment.id:
        return
    parent = flow_run.parent_flow_run_id
    if parent and flow_runs.running_flow_name(str(parent)) in ("fleet", "fleet wave"):
        return
    raise UsageError(
        f"{SHARD_FLOW}/{deployment.name} runs a shard of a running fleet run only: start the "
        f"fleet with `ameide-migrate trigger --env {deployment.name} --flow fleet --fleet NAME` "
        f"or its deployment fleet/{deployment.name}"
    )


def _ledger(found: FleetReport) -> None:
    """The fleet's ledger as its table artifact: every target's outcome, and why it stopped."""
    create_table_artifact(
        key=artifact_key(found.environment, found.fleet),
        table=found.rows(),
        description=f"### Fleet `{found.fleet}`, `{found.environment}`\n\n{found.summary()}",
    )


def _sorted(
    ctx: RunContext,
    declared: Fleet,
    template: DatabaseCatalog,
    names: list[str],
    histories: Mapping[str, list[HistoryRow] | None],
    unreachable: Collection[str],
    undo_interrupted: bool,
) -> fleet.Sorted:
    """The targets sorted on the `template` the context runs (the approved copy, in a
    protected environment): the interrupted ones looked up, and undone when asked (just before
    the first wave: they then migrate in the waves, approved with the others); set apart
    otherwise, or when their undo failed, and the waves planned without them."""
    current = _up_to_date(ctx.databases, template, histories)
    cut_short = _interrupted(ctx, histories, current)
    failed = _undo(ctx, cut_short) if undo_interrupted else {}
    return fleet.sort_targets(
        declared,
        ctx.environment,
        names,
        template,
        histories,
        up_to_date=current,
        set_apart={d: i for d, i in cut_short.items() if not undo_interrupted or d in failed},
        unreachable=unreachable,
        undo_failed=failed,
    )


def _run_waves(
    ctx: RunContext,
    declared: Fleet,
    found: FleetReport,
    waves: list[list[str]],
    histories: Mapping[str, list[HistoryRow] | None],
    approved_files: dict[str, str] | None,
) -> None:
    """The waves one after the other, each a subflow, into `found`, until one breaks the
    fleet's halt rules."""
    logger = get_run_logger()
    name = declared.name
    steps = _steps(get_settings())
    shards_on = _shard_deployment(ctx.environment)

    def run_wave(number: int, targets: list[str]) -> list[DatabaseOutcome]:
        """One wave's targets in shards, each a flow run: a deployment's, or in this process."""
        stopped_at_once()
        parts = [
            [declared.database_of(t) for t in part]
            for part in fleet.shards_of(targets, declared.waves.shards)
        ]
        if shards_on is not None:
            return _shards_on_deployment(
                shards_on, ctx, declared, number, parts, histories, approved_files
            )
        return _shards_in_process(ctx, declared, number, parts, steps)

    for number, wave in enumerate(waves, start=1):
        wave_flow: Any = flow(
            name="fleet wave",
            flow_run_name=f"{name} wave {number} of {len(waves)}",
            persist_result=False,
        )(run_wave)
        outcomes = wave_flow(number, wave)
        found.waves.append(outcomes)
        logger.info(
            "wave %d of %d: %d target(s) in %d shard(s), %d failed",
            number,
            len(waves),
            len(outcomes),
            len(fleet.shards_of(wave, declared.waves.shards)),
            sum(1 for o in outcomes if o.state is OutcomeState.FAILED),
        )
        reason = fleet.halt_reason(outcomes, declared.waves)
        if reason is not None:
            found.halted = reason
            found.not_started = [declared.database_of(t) for later in waves[number:] for t in later]
            logger.error("fleet %s halted after wave %d: %s", name, number, reason)
            return
        if number < len(waves) and declared.waves.bake_seconds:
            logger.info("baking %gs before wave %d", declared.waves.bake_seconds, number + 1)
            time.sleep(declared.waves.bake_seconds)


@flow(name=FLEET_FLOW, log_prints=False, validate_parameters=True)
def fleet_flow(
    environment: str = "local",
    name: str = "",
    targets: list[str] | None = None,
    wait_for_lock: bool = False,
    undo_interrupted: bool = False,
) -> FleetReport | State[Any]:
    """Migrate a fleet's targets in waves: a canary first, each wave larger, a halt when a wave
    breaks the fleet's halt rules. One run of a fleet in an environment at a time.

    Args:
        environment: local, staging or prod.
        name: The fleet, as ameide.toml declares it ([fleets.NAME]).
        targets: Only these targets (in the fleet's order). Leave it empty for all of them.
        wait_for_lock: When another run of this fleet has not ended, wait for it (else this
            run is refused, naming it).
        undo_interrupted: On each target whose last migration a crash cut short, drop what it
            built (its fix's statements) and migrate it in the waves, instead of setting it
            apart.
    """
    own_environment(environment)
    stopped_at_once()
    _take_the_fleets_turn(environment, name, wait_for_lock)
    settings = get_settings()
    logger = get_run_logger()
    declared = environments.fleet(name, settings)
    template = environments.fleet_template(environment, declared, settings)
    names = fleet.chosen_targets(declared, _targets(environment, declared, settings), targets)
    databases = {declared.database_of(t): template for t in names}
    # The gate logs in to every target before any is touched, and reads its history there; the
    # targets it cannot log in to are quarantined: in no wave, each named with its fix.
    gate = with_retries(verify_credentials_reading_histories, settings)
    read, histories = gate(
        environment,
        list(databases),
        history_table_of(template, settings.flyway_table),
        shown_as=declared.database_of("<target>"),
    )
    unreachable = read.unreachable
    found = FleetReport(environment, name, server_of=read.servers)
    found.quarantined = fleet.quarantined(declared, environment, unreachable)
    for q in found.quarantined:
        logger.warning("quarantined %s: %s", q.database, q.reason)
    reachable = {d: t for d, t in databases.items() if d not in unreachable}
    too_many = fleet.quarantine_reason(found.quarantined, declared.waves)
    policy = environments.get(environment, settings).approval
    with ExitStack() as stack:
        # The copies of the template a plan was approved on, private to this run (what Flyway
        # reads), gone however it ends: a suspended run's process ends in the wait, too.
        pins = (
            Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ameide-approved-")))
            if too_many is None and policy.required and reachable
            else None
        )
        ctx = RunContext.create(environment, reachable, read.credentials, settings, fleet=declared)
        # The approval swaps the context for one on the copy approved: the last one is closed.
        stack.callback(lambda: ctx.close())
        if pins is not None:
            decision, ctx, histories = _approved(ctx, declared, policy, histories, pins)
            if decision is not None and not decision.approved:
                # No ledger: the last one still says where the fleet's targets stand.
                return Cancelled(
                    name=REJECTED_STATE,
                    message=f"plan {decision.verdict.value}: {decision.reason}; "
                    "nothing was migrated",
                )
            # The waves of what was approved: the files and histories read after the decision.
            template = next(iter(ctx.databases.values()))
        try:
            if too_many is not None:
                # Before any lookup on a target: what each would need, its history alone says.
                ordered = fleet.sort_targets(
                    declared,
                    environment,
                    names,
                    template,
                    histories,
                    up_to_date=_up_to_date(reachable, template, histories),
                    set_apart={},
                    unreachable=unreachable,
                )
                found.up_to_date = ordered.up_to_date
                found.halted = too_many
                found.not_started = [declared.database_of(t) for w in ordered.waves for t in w]
                logger.error("fleet %s stopped before its first wave: %s", name, too_many)
                raise FleetHalted(found.summary(), found)
            ordered = _sorted(
                ctx, declared, template, names, histories, unreachable, undo_interrupted
            )
            found.up_to_date, found.interrupted = ordered.up_to_date, ordered.interrupted
            for outcome in found.interrupted:
                logger.error("%s: %s Fix: %s", outcome.database, outcome.message, outcome.recovery)
            logger.info(
                "fleet %s: %d targets, %d up to date, %d quarantined, %d interrupted; the others "
                "in %d wave(s) (%s)",
                name,
                len(names),
                len(found.up_to_date),
                len(found.quarantined),
                len(found.interrupted),
                len(ordered.waves),
                ", ".join(str(len(w)) for w in ordered.waves) or "none",
            )
            # A shard run reads its own template (its image's): it migrates only the approved
            # files.
            approved = (
                {m.script: m.sha256 for m in template.migrations} if pins is not None else None
            )
            _run_waves(ctx, declared, found, ordered.waves, histories, approved)
        finally:
            _ledger(found)
    if not found.ok:
        raise FleetHalted(found.summary(), found)
    return found
