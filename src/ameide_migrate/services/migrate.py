"""The migrate verbs as plain functions: inspect, validate, migrate, smoke-check, repair.

Flows and the CLI are thin wrappers over these; they can be tested without Prefect.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from ameide_migrate.adapters import flyway
from ameide_migrate.adapters.flyway import LogSink
from ameide_migrate.adapters.postgres import relations
from ameide_migrate.adapters.postgres.fingerprint import read_schema_state, record_fingerprint
from ameide_migrate.adapters.postgres.index_catalog import indexes_named, invalid_indexes
from ameide_migrate.adapters.postgres.read_session import read_only_session
from ameide_migrate.adapters.postgres.schema_history import read_history
from ameide_migrate.adapters.postgres.sessions import LockHolder, lock_holders
from ameide_migrate.core import interruption, locking, recovery, statements
from ameide_migrate.core.catalog import DatabaseCatalog, Migration, Version
from ameide_migrate.core.errors import (
    FlywayCommandFailed,
    HistoryMissing,
    LeftoversFound,
    LintErrorsFound,
    LockTimedOut,
    MigrateError,
    MigrationFailed,
    NonTransactionalMigrationFailed,
    TablesBusy,
    TransientFlywayFault,
)
from ameide_migrate.core.findings import Finding, Level
from ameide_migrate.core.history import (
    PENDING,
    SETTLED_STATES,
    HistoryRow,
    current_version,
    native_info,
    pending_migrations,
    validate_problems,
)
from ameide_migrate.core.indexes import InvalidIndex
from ameide_migrate.core.outcomes import (
    DatabaseFailed,
    DatabaseOutcome,
    Inspection,
    OutcomeState,
    SmokeResult,
)
from ameide_migrate.core.placeholders import as_run
from ameide_migrate.services import lint
from ameide_migrate.services.context import RunContext

# History rows the native check understands; any other (DELETE after a repair, UNDO, JDBC...)
# sends the database to Flyway.
_UNDERSTOOD_TYPES = frozenset({"SQL", "BASELINE", "SCHEMA"})


def compare(db: DatabaseCatalog, history: list[HistoryRow] | None) -> Inspection:
    """Whether the history already holds every migration of the catalog, unchanged: Flyway's
    `info` and `validate` as `history` computes them, with nothing pending or unsettled.

    Conservative: anything unusual (a row type or a placeholder only Flyway understands) answers
    "not up to date", and Flyway decides.
    """
    if history is None:
        return Inspection(None, False, "no schema history yet")
    version = current_version(history)
    rows = sum(1 for r in history if r.success)

    def needs_flyway(reason: str) -> Inspection:
        return Inspection(version, False, reason, rows)

    unusual = [r for r in history if r.type not in _UNDERSTOOD_TYPES]
    if unusual:
        return needs_flyway(f"the history holds a {unusual[0].type} row ({unusual[0].script})")
    unresolved = [m for m in db.repeatables if m.checksum is None]
    if unresolved:
        return needs_flyway(f"{unresolved[0].script} needs Flyway to resolve its placeholders")
    statuses = native_info(db, history)
    problems = validate_problems(db, history, statuses)
    if problems:
        return needs_flyway(next(iter(problems.values())))
    for status in statuses:
        if status.state in PENDING:
            return needs_flyway(f"pending: {status.script}")
        if status.state not in SETTLED_STATES:
            label = status.version or status.description
            return needs_flyway(f"{status.category.lower()} {label} is {status.state}")
    return Inspection(version, True, "at the latest version", rows)


def inspect(ctx: RunContext, database: str) -> Inspection:
    history = read_history(
        ctx.credentials[database], ctx.history_table(database), timeout=ctx.connect_timeout
    )
    return compare(ctx.databases[database], history)


def validate(ctx: RunContext, database: str, on_log: LogSink) -> None:
    """Flyway validate of what is applied; pending migrations are expected here, not errors.

    First, the leftovers of a failed or interrupted non-transactional migration stop it:
    migrating over an INVALID index would let `CREATE INDEX CONCURRENTLY IF NOT EXISTS` skip it
    and Flyway record the migration as a success, and over an index an interrupted migration
    built, applying it again fails on "already exists".
    """
    with read_only_session(ctx.credentials[database], timeout=ctx.connect_timeout) as session:
        history = session.history(ctx.history_table(database))
        found = interruption.find(database, ctx.databases[database], history, session.indexes_named)
        leftovers = session.invalid_indexes()
    if found is not None:
        raise interruption.MigrationInterrupted(
            f"database {database}: {found.describe()} Nothing was migrated over it.", found
        )
    if leftovers:
        raise LeftoversFound(
            f"database {database} holds what a failed CREATE INDEX CONCURRENTLY left: "
            f"{describe_leftovers(leftovers)}; nothing was migrated over it"
        )
    request = ctx.request("validate", database, ignore_migration_patterns=("*:pending", "*:future"))
    result = ctx.engine().run(request, on_log)
    problem = flyway.validation_error(request, result)
    if problem is not None:
        raise problem


def interrupted(
    ctx: RunContext, database: str, history: list[HistoryRow] | None
) -> interruption.Interrupted | None:
    """The database's first pending migration, when a crash cut it short (see interruption)."""
    creds = ctx.credentials[database]
    return interruption.find(
        database,
        ctx.databases[database],
        history,
        lambda names: indexes_named(creds, names, timeout=ctx.connect_timeout),
    )


@dataclass(frozen=True)
class MigrateSummary:
    before: str | None
    after: str | None
    applied: int
    started: float
    """When (time.monotonic) Flyway's migrate that applied them was started: any wait for
    other sessions' locks ended there."""


def outside_a_transaction(db: DatabaseCatalog, history: list[HistoryRow] | None) -> list[str]:
    """A note per pending migration PostgreSQL cannot run in a transaction: its statements
    refused in one, and the reading they come from when the parser rejected the file. Each is
    read as Flyway runs it, placeholders replaced, as the lint and the locks read it."""
    notes = []
    for m in pending_migrations(db, history):
        refused = statements.non_transactional(as_run(db, m))
        if not refused:
            continue
        kinds = ", ".join(sorted({f"{r.kind} (line {r.statement.line})" for r in refused}))
        # A file is read whole by the parser or whole by the fallback: its first says which.
        reading = refused[0].statement
        how = "" if reading.fallback is None else f" [{reading.reading}]"
        notes.append(
            f"{m.script} runs outside a transaction ({kinds}){how}: if it fails, what it did "
            "stays, and it is not retried"
        )
    return notes


def migrate(ctx: RunContext, database: str, on_log: LogSink) -> MigrateSummary:
    history = read_history(
        ctx.credentials[database], ctx.history_table(database), timeout=ctx.connect_timeout
    )
    for note in outside_a_transaction(ctx.databases[database], history):
        on_log("info", note)
    request = ctx.request("migrate", database, lock_retry_count=ctx.lock_retry_count)
    started = time.monotonic()
    try:
        result = ctx.engine().run(request, on_log)
    except TransientFlywayFault as error:
        if "55P03" not in error.sql_states:
            ctx.first_failures.setdefault(database, error)
            raise
        # Rolled back and retried: what a user needs is whom it waited for, not the engine's text.
        raise lock_timed_out(ctx, database, error) from error
    except FlywayCommandFailed as error:
        ctx.first_failures.setdefault(database, error)
        raise
    before = result.get("initialSchemaVersion")
    after = result.get("targetSchemaVersion") or before
    # The schema as Flyway left it: the drift check names what changes outside Flyway later.
    version = str(Version.parse(after)) if after else None
    record_fingerprint(
        ctx.credentials[database], version, ctx.history_table(database), timeout=ctx.connect_timeout
    )
    return MigrateSummary(
        before=before,
        after=after,
        applied=int(result.get("migrationsExecuted", 0)),
        started=started,
    )


def pending(ctx: RunContext, database: str) -> list[Migration]:
    """What a migrate would apply to the database now, read from its history (no Flyway)."""
    history = read_history(
        ctx.credentials[database], ctx.history_table(database), timeout=ctx.connect_timeout
    )
    return pending_migrations(ctx.databases[database], history)


def lint_pending(ctx: RunContext, database: str) -> list[Finding]:
    """The lint's findings on what a migrate would apply to the database now, at the
    environment's levels."""
    return lint_of(ctx, database, pending(ctx, database))


def lint_of_pending(
    ctx: RunContext, database: str, history: list[HistoryRow] | None
) -> list[Finding]:
    return lint_of(ctx, database, pending_migrations(ctx.databases[database], history))


def lint_of(ctx: RunContext, database: str, migrations: list[Migration]) -> list[Finding]:
    """The lint of `migrations`, judged against what the database holds now."""
    scripts = scripts_of(ctx, database, migrations)
    return lint.lint_scripts(scripts, ctx.lint_rules, relation_facts(ctx, database, scripts))


def scripts_of(ctx: RunContext, database: str, migrations: list[Migration]) -> list[lint.Script]:
    db = ctx.databases[database]
    # The catalog's folders sit directly under the SQL tree's root: findings name files from it.
    return [lint.script_of_migration(db, m, db.directory.parent) for m in migrations]


def relation_facts(ctx: RunContext, database: str, scripts: list[lint.Script]) -> locking.Facts:
    """What the database holds now under each name the scripts lock or create."""
    return relations.relation_facts(
        ctx.credentials[database],
        locking.referenced(s.text for s in scripts),
        schema=ctx.databases[database].flyway.schema,
        count_up_to=ctx.lint_rules.large_table.rows,
        timeout=ctx.connect_timeout,
    )


def statement_locks(
    ctx: RunContext, database: str, migrations: list[Migration]
) -> dict[str, list[locking.StatementLock]]:
    """Per pending script, the locks its statements take, judged against what the database
    holds now and what the scripts before it create."""
    scripts = scripts_of(ctx, database, migrations)
    batch = locking.Batch(relation_facts(ctx, database, scripts))
    return {s.name: locking.statement_locks(s.text, batch) for s in scripts}


def preflight(ctx: RunContext, database: str) -> None:
    """Before Flyway starts: no session in a long transaction, of whatever role, holds (or waits
    for) a lock that a pending migration's statements would queue behind (and, queued, block
    every session after them). TablesBusy names each such session; the step is retried with
    backoff while they last."""
    wanted = _wanted(ctx, database)
    if not wanted:
        return
    found = _in_the_way(ctx, database, wanted)
    hidden = {(s.pid, s.transaction) for s in found if s.transaction_seconds is None}
    if hidden:
        # Another role's transaction start is hidden from a login without pg_read_all_stats,
        # not its virtual transaction id in pg_locks: one still holding its lock under the same
        # id a while later has been in that transaction at least that long.
        looked = time.monotonic()
        time.sleep(ctx.long_transaction_seconds)
        found = _in_the_way(ctx, database, wanted)
        seen_for = time.monotonic() - looked
        found = [
            replace(s, at_least_seconds=seen_for) if (s.pid, s.transaction) in hidden else s
            for s in found
        ]
    blocking = [
        s
        for s in found
        if s.open_seconds is not None and s.open_seconds >= ctx.long_transaction_seconds
    ]
    if not blocking:
        return
    described = _waited_for(ctx, database, blocking)
    raise TablesBusy(
        f"database {database}: Flyway was not started, since {len(blocking)} session(s) in a "
        "long transaction hold locks its pending migrations would wait for (waiting, they "
        "would block every session after them): " + "; ".join(described),
        described,
        _pids(blocking),
    )


def _wanted(ctx: RunContext, database: str) -> dict[int, tuple[str, str]]:
    found = statement_locks(ctx, database, pending(ctx, database))
    return locking.wanted([lock for locks in found.values() for lock in locks])


def _in_the_way(
    ctx: RunContext, database: str, wanted: dict[int, tuple[str, str]]
) -> list[LockHolder]:
    """Every other session holding or waiting for a lock that the statements would wait for."""
    sessions = lock_holders(ctx.credentials[database], list(wanted), timeout=ctx.connect_timeout)
    return [
        session
        for oid, session in sessions
        if locking.conflicts(wanted[oid][0], locking.mode_of_pg_locks(session.mode))
    ]


def _waited_for(ctx: RunContext, database: str, sessions: list[LockHolder]) -> tuple[str, ...]:
    """The sessions, described, and remembered as what this run waited for."""
    ctx.waiting_since.setdefault(database, time.monotonic())
    seen = ctx.waited_for.setdefault(database, {})
    for session in sessions:
        seen[session.pid] = session.describe()
    return tuple(session.describe() for session in sessions)


def _pids(sessions: list[LockHolder]) -> tuple[int, ...]:
    return tuple(dict.fromkeys(s.pid for s in sessions))


def lock_timed_out(ctx: RunContext, database: str, error: FlywayCommandFailed) -> LockTimedOut:
    """A migration cancelled by lock_timeout (55P03), named by the sessions in its way now: a
    fresh read of pg_locks, whatever their role or age."""
    sessions = _in_the_way(ctx, database, _wanted(ctx, database))
    described = _waited_for(ctx, database, sessions) if sessions else ()
    script = error.script or "a migration"
    in_the_way = (
        "In its way: " + "; ".join(described)
        if described
        else "No session held a conflicting lock on a table it locks when pg_locks was read "
        "right after (a short transaction, or a lock on a table the statements do not name)"
    )
    return LockTimedOut(
        f"database {database}: {script} waited {ctx.lock_timeout_seconds:g}s (lock_timeout) for "
        "a table lock and PostgreSQL cancelled it (SQLSTATE 55P03); Flyway rolled it back. "
        + in_the_way,
        described,
        _pids(sessions),
    )


def lint_stop(environment: str, database: str, findings: list[Finding]) -> LintErrorsFound | None:
    """The error that stops the database before Flyway, when a finding is at level error: each
    such finding with its file, line, rule and fix, and how to accept a rule here instead."""
    errors = [f for f in findings if f.level is Level.ERROR]
    if not errors:
        return None
    listed = "\n".join(f"- {f.describe()}" for f in errors)
    return LintErrorsFound(
        f"lint: {len(errors)} error(s) in the pending migrations of {database}; Flyway was not "
        f"started and nothing was applied:\n{listed}",
        findings,
    )


@dataclass(frozen=True)
class Steps:
    """The steps of one database's migration: the flow passes its Prefect tasks, so that each
    step is a run record of its own with its own retries."""

    inspect: Callable[[RunContext, str], Inspection]
    validate: Callable[[RunContext, str], None]
    migrate: Callable[[RunContext, str], MigrateSummary]
    lint: Callable[[RunContext, str], list[Finding]] = lint_pending
    preflight: Callable[[RunContext, str], None] = preflight


Log = logging.LoggerAdapter[Any] | logging.Logger


def flyway_log_sink(log: Log, database: str) -> LogSink:
    """Flyway's log lines, under the database they belong to."""
    levels = {"info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}

    def sink(level: str, message: str) -> None:
        log.log(levels.get(level, logging.INFO), "%s: %s", database, message)

    return sink


def migrate_database(
    ctx: RunContext,
    database: str,
    steps: Steps,
    log: Log,
) -> DatabaseOutcome:
    """One database from its applied version to the latest: inspect, and when that is not
    enough, validate and migrate. Raises DatabaseFailed carrying the outcome of a failure."""
    started = time.monotonic()
    latest = ctx.databases[database].latest_version
    latest_text = str(latest) if latest else None
    before: Inspection | None = None
    findings: list[Finding] = []
    try:
        before = steps.inspect(ctx, database)
        if before.up_to_date:
            log.info("%s: at %s, nothing to apply (no JVM needed)", database, before.version)
            return DatabaseOutcome(
                database,
                OutcomeState.UP_TO_DATE,
                before.version,
                before.version,
                latest_text,
                0,
                time.monotonic() - started,
            )
        findings = steps.lint(ctx, database)
        for finding in findings:
            log.log(_LOG_LEVEL[finding.level], "%s: lint: %s", database, finding.describe())
        stop = lint_stop(ctx.environment, database, findings)
        if stop is not None:
            raise stop
        steps.preflight(ctx, database)
        log.info("%s: %s; validating with Flyway", database, before.reason)
        steps.validate(ctx, database)
        summary = steps.migrate(ctx, database)
    except Exception as error:
        outcome = _failed(ctx, database, error, before, latest_text, time.monotonic() - started)
        outcome.findings = findings
        if isinstance(error, MigrateError):
            log.error("%s failed: %s\n%s", database, outcome.message, outcome.recovery)
        else:
            log.exception("%s failed unexpectedly", database)
        raise DatabaseFailed(outcome) from None
    # The figures span the whole run, retries included: from the first inspection to the
    # history as it stands now (a retried migrate reports only its own last attempt).
    try:
        final = inspect(ctx, database)
        after, applied = final.version, final.applied_rows - before.applied_rows
    except MigrateError:
        after, applied = summary.after, summary.applied
    if summary.applied == 0:
        # Flyway applied nothing, yet the inspection saw work pending: another run, holding
        # Flyway's lock meanwhile, applied it.
        log.info("%s: at %s, another run applied what was pending", database, after)
        return DatabaseOutcome(
            database,
            OutcomeState.UP_TO_DATE,
            before.version,
            after,
            latest_text,
            0,
            time.monotonic() - started,
            message=_joined(
                "another run applied what was pending", _waited(ctx, database, summary.started)
            ),
            findings=findings,
        )
    log.info("%s: %s -> %s, %d applied", database, before.version or "empty", after, applied)
    return DatabaseOutcome(
        database,
        OutcomeState.MIGRATED,
        before.version,
        after,
        latest_text,
        applied,
        time.monotonic() - started,
        message=_waited(ctx, database, summary.started),
        findings=findings,
    )


def _waited(ctx: RunContext, database: str, migrate_started: float) -> str:
    """The sessions the run waited for before its migrations could take their locks, if any,
    and how long from the first sight of one to the start of the Flyway migrate that applied
    them (validating included, migrating not)."""
    seen = ctx.waited_for.get(database)
    if not seen:
        return ""
    waited = migrate_started - ctx.waiting_since[database]
    return f"waited {waited:.0f}s for {len(seen)} session(s) holding locks first: " + "; ".join(
        seen.values()
    )


def _joined(*parts: str) -> str:
    return "; ".join(p for p in parts if p)


_LOG_LEVEL = {Level.ERROR: logging.ERROR, Level.WARNING: logging.WARNING}


def _unversioned(ctx: RunContext, database: str) -> str:
    """How a schema with no history stands: its objects counted, where they can be read."""
    try:
        state = read_schema_state(
            ctx.credentials[database], ctx.history_table(database), timeout=ctx.connect_timeout
        )
    except MigrateError:
        return "no history"
    return f"no history, {len(state.live)} objects"


def _failed(
    ctx: RunContext,
    database: str,
    error: Exception,
    before: Inspection | None,
    latest: str | None,
    duration: float,
) -> DatabaseOutcome:
    """The outcome of a failure, with where the database really stands now: PostgreSQL keeps
    the migrations Flyway applied before the one that failed."""
    after = before
    if before is not None and isinstance(error, MigrationFailed):
        try:
            after = inspect(ctx, database)
        except MigrateError:
            after = before  # unreachable now: report what was last seen
    reached = after.version if after else None
    applied = (after.applied_rows - before.applied_rows) if after and before else 0
    was = before.version if before else None
    if isinstance(error, HistoryMissing):
        # "empty" would be untrue: the schema holds what another tool, or a dropped history, left.
        was = reached = _unversioned(ctx, database)
    if isinstance(error, interruption.MigrationInterrupted):
        message = str(error)
        next_step = recovery.after_interrupted(error.found, ctx.subject(database))
    elif isinstance(error, NonTransactionalMigrationFailed | LeftoversFound):
        message, next_step = _leftovers_failure(ctx, database, error)
    elif isinstance(error, LintErrorsFound):
        message, next_step = str(error), recovery.after_lint(ctx.subject(database), error)
    elif isinstance(error, MigrateError):
        message = failure_message(error, ctx.databases[database])
        next_step = recovery.after_error(ctx.subject(database), error, reached)
    else:
        message = f"unexpected {type(error).__name__}: {error}"
        next_step = recovery.after_unexpected(ctx.subject(database))
    original = ctx.first_failures.get(database)
    if original is not None and original is not error:
        message = (
            f"{failure_message(original, ctx.databases[database])}\nThen, on a retry: {message}"
        )
    return DatabaseOutcome(
        database,
        OutcomeState.FAILED,
        was,
        reached,
        latest,
        applied,
        duration,
        message=message,
        recovery=next_step,
    )


def describe_leftovers(indexes: list[InvalidIndex]) -> str:
    return ", ".join(f"INVALID index {i.qualified} on {i.table} ({i.definition})" for i in indexes)


_FAILED_LINE = re.compile(r"^Line\s*:\s*(\d+)", re.MULTILINE)


def failed_statement(
    db: DatabaseCatalog, error: FlywayCommandFailed
) -> tuple[statements.Statement | None, list[statements.Statement]]:
    """The statement of the failed migration at the line Flyway names, and those before it."""
    line = _FAILED_LINE.search(error.flyway_message)
    migration = next((m for m in db.migrations if m.script == error.script), None)
    if line is None or migration is None:
        return None, []
    script = statements.split(migration.text())
    failed = next((st for st in script if st.line == int(line.group(1))), None)
    return failed, [st for st in script if st.line < int(line.group(1))]


def _leftovers_failure(
    ctx: RunContext, database: str, error: NonTransactionalMigrationFailed | LeftoversFound
) -> tuple[str, str]:
    """(message, recovery) when a non-transactional migration failed or left something behind:
    what it left, by name, and the exact statements that clean it up."""
    try:
        leftovers = invalid_indexes(ctx.credentials[database], timeout=ctx.connect_timeout)
        history = read_history(
            ctx.credentials[database], ctx.history_table(database), timeout=ctx.connect_timeout
        )
    except MigrateError as unreachable:
        return failure_message(error), recovery.after_leftovers_unread(
            ctx.subject(database), unreachable
        )
    lines = [failure_message(error, ctx.databases[database])]
    applied_in = None
    if isinstance(error, NonTransactionalMigrationFailed):
        lines.append(
            f"{error.script or 'The migration'} ran outside a transaction (PostgreSQL refuses "
            "its CONCURRENTLY or similar statement inside one): it was not rolled back and is "
            "not retried."
        )
        _, done = failed_statement(ctx.databases[database], error)
        if done:
            shown = "; ".join(f"line {st.line}: {st.words[:80]}" for st in done)
            lines.append(f"Applied before the failure, and still in place: {shown}.")
            applied_in = error.script or "the migration"
        if "55P03" in error.sql_states:
            lines.append(
                f"It was cancelled by lock_timeout ({ctx.lock_timeout_seconds:g}s): a "
                "CONCURRENTLY build waits for every transaction older than it; end the long "
                "transactions (pg_stat_activity) or raise lock_timeout_seconds of "
                f"[environments.{ctx.environment}] in ameide.toml (AMEIDE_LOCK_TIMEOUT_SECONDS "
                "where it sets none): its wait blocks no reader or writer of the table."
            )
    if leftovers:
        lines.append(f"It left: {describe_leftovers(leftovers)}.")
    next_step = recovery.after_leftovers(
        ctx.subject(database),
        leftovers=leftovers,
        applied_in=applied_in,
        failed_row=any(not r.success for r in history or []),
    )
    return "\n".join(lines), next_step


def repair(ctx: RunContext, database: str, on_log: LogSink) -> dict[str, Any]:
    return ctx.engine().run(ctx.request("repair", database), on_log)


def smoke(ctx: RunContext, database: str) -> SmokeResult:
    """Read-only proof that the database is at the catalog's latest version, nothing pending.

    Asks Flyway (`info`) when this run already has its JVM; otherwise reads the history natively,
    which reaches the same verdict without starting one.
    """
    db = ctx.databases[database]
    latest = str(db.latest_version) if db.latest_version else None
    problems: list[str] = []
    if ctx.engine_started:
        info = ctx.engine().run(ctx.request("info", database))
        shown = info.get("schemaVersion")  # Flyway's text: "1.0" or "001" for version 1
        version = str(Version.parse(shown)) if shown else None
        for m in info.get("migrations") or ():
            if m.get("state") not in SETTLED_STATES:
                label = m.get("version") or m.get("description")
                problems.append(f"{m.get('category', '').lower()} {label} is {m.get('state')}")
        source = "flyway info"
    else:
        inspection = inspect(ctx, database)
        version = inspection.version
        if not inspection.up_to_date:
            problems.append(inspection.reason)
        source = "history"
    if version != latest:
        problems.insert(0, f"at version {version or 'none'}, expected {latest}")
    return SmokeResult(database, version, latest, tuple(problems), source)


def failure_message(error: MigrateError, db: DatabaseCatalog | None = None) -> str:
    """Flyway's own message; with the failed statement itself, which Flyway shows only with -X."""
    if not isinstance(error, FlywayCommandFailed):
        return str(error)
    message = f"flyway {error.command}: {error.flyway_message}"
    failed, _ = failed_statement(db, error) if db is not None else (None, [])
    if failed is not None and failed.text not in error.flyway_message:
        message += (
            f"\nThe statement that failed (line {failed.line} of {error.script}): {failed.text}"
        )
    return message
