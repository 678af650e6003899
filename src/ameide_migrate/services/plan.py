"""A run's plan: per database, what a migrate would apply now, its lint findings and the locks it
would take. The dry run and the approval of a protected environment read the same plan, so what
an approver reads is what will run.

The plan is read-only and runs no Flyway: the dry run's verdict (`dry_run`), with each pending
migration's version, description, file, checksum and estimated lock level added.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import Path

from ameide_migrate.adapters.postgres.index_catalog import invalid_indexes
from ameide_migrate.adapters.postgres.schema_history import read_history
from ameide_migrate.config.fleets import Fleet
from ameide_migrate.core import locking, recovery
from ameide_migrate.core.catalog import DatabaseCatalog, pinned_copy
from ameide_migrate.core.errors import ApprovedFilesChanged
from ameide_migrate.core.history import PENDING, pending_migrations
from ameide_migrate.core.outcomes import DatabaseOutcome, OutcomeState
from ameide_migrate.services import drift
from ameide_migrate.services.context import RunContext
from ameide_migrate.services.migrate import lint_of_pending, lint_stop, statement_locks


@dataclass(frozen=True)
class PlannedMigration:
    script: str
    """The file, relative to the SQL tree's root."""
    version: str | None
    """None for a repeatable migration."""
    description: str
    checksum: int | None
    sha256: str
    """Of the file's bytes, as the plan read them: what an approval of the plan holds for."""
    locks: tuple[locking.StatementLock, ...]
    """Per statement, each lock it takes: the relation, the mode, what the relation holds, and
    whether CONCURRENTLY applies."""

    @property
    def lock(self) -> str:
        """The strongest lock it takes on a relation that exists before it runs."""
        return locking.strongest(self.locks)


@dataclass(frozen=True)
class DatabasePlan:
    outcome: DatabaseOutcome
    """The dry run's verdict: would apply, up to date, or failed (a lint error, drift)."""
    migrations: tuple[PlannedMigration, ...]

    @property
    def database(self) -> str:
        return self.outcome.database

    @property
    def lock(self) -> str:
        """The strongest lock of its migrations."""
        return locking.strongest(lock for m in self.migrations for lock in m.locks)


def dry_run(ctx: RunContext, database: str) -> DatabaseOutcome:
    """A dry run: what a migrate would apply to this database, read-only and without Flyway."""
    started = time.monotonic()
    db = ctx.databases[database]
    history = read_history(
        ctx.credentials[database], ctx.history_table(database), timeout=ctx.connect_timeout
    )
    invalid = invalid_indexes(ctx.credentials[database], timeout=ctx.connect_timeout)
    report = drift.check(ctx.subject(database), db, history, invalid_indexes=invalid)
    pending = [m.script for m in report.migrations if m.state in PENDING]
    would_apply = [m.script for m in pending_migrations(db, history)]
    latest = str(db.latest_version) if db.latest_version else None
    # As the run does: the lint of what is pending stops the database before anything else.
    findings = lint_of_pending(ctx, database, history)
    stop = lint_stop(ctx.environment, database, findings)

    def stopped(message: str, fix: str) -> DatabaseOutcome:
        """Where the run would stop this database, before Flyway."""
        return DatabaseOutcome(
            database,
            OutcomeState.FAILED,
            report.version,
            report.version,
            latest,
            0,
            time.monotonic() - started,
            message=message,
            recovery=fix,
            findings=findings,
            pending=would_apply,
        )

    if stop is not None:
        return stopped(str(stop), recovery.after_lint(ctx.subject(database), stop))
    if report.verdict in (drift.Verdict.DRIFTED, drift.Verdict.NO_HISTORY):
        return stopped("; ".join(report.problems.values()) or "drifted", report.fix)
    return DatabaseOutcome(
        database,
        OutcomeState.WOULD_APPLY if pending else OutcomeState.UP_TO_DATE,
        report.version,
        latest if pending else report.version,
        latest,
        len(pending),
        time.monotonic() - started,
        message=", ".join(pending),
        findings=findings,
        pending=would_apply,
    )


def plan_database(ctx: RunContext, database: str) -> DatabasePlan:
    """What a migrate of `database` would do now, read-only."""
    outcome = dry_run(ctx, database)
    db = ctx.databases[database]
    by_script = {m.script: m for m in db.migrations}
    pending = [by_script[script] for script in outcome.pending if script in by_script]
    locks = statement_locks(ctx, database, pending)
    outcome.locks = [
        (script, lock) for script, found in locks.items() for lock in found if not lock.new
    ]
    return DatabasePlan(
        outcome,
        tuple(
            PlannedMigration(
                name,
                str(m.version) if m.version is not None else None,
                m.description,
                m.checksum,
                m.sha256,
                tuple(found),
            )
            for m, (name, found) in zip(pending, locks.items(), strict=True)
        ),
    )


def digest(plans: list[DatabasePlan]) -> str:
    """The plan's fingerprint: each database's state and the name, Flyway checksum and SHA-256
    of every file it lists. An approval holds for this fingerprint only."""
    content = [
        [
            p.database,
            p.outcome.state.value,
            [[m.script, m.checksum, m.sha256] for m in p.migrations],
        ]
        for p in plans
    ]
    return hashlib.sha256(json.dumps(content).encode()).hexdigest()[:16]


def files_of(plans: list[DatabasePlan]) -> dict[str, str]:
    """The files the plans list, each with its SHA-256."""
    return {m.script: m.sha256 for p in plans for m in p.migrations}


@dataclass(frozen=True)
class FileChanges:
    """How the files a plan lists differ from those of the plan approved before it."""

    approved: str
    """The fingerprint of the plan approved."""
    edited: tuple[str, ...]
    added: tuple[str, ...]
    dropped: tuple[str, ...]
    """Listed by the approved plan, no longer by this one (removed, or applied meanwhile)."""

    def __bool__(self) -> bool:
        return bool(self.edited or self.added or self.dropped)

    @property
    def listed(self) -> str:
        """`edited A; added B; no longer listed C`."""
        return "; ".join(
            f"{label} {', '.join(files)}"
            for label, files in (
                ("edited", self.edited),
                ("added", self.added),
                ("no longer listed", self.dropped),
            )
            if files
        )

    def __str__(self) -> str:
        return f"since plan {self.approved} was approved, files changed: {self.listed}"


def file_changes(approved: str, before: dict[str, str], after: dict[str, str]) -> FileChanges:
    """The files edited, added and dropped between the approved plan's `before` and `after`
    (each a file's name and SHA-256)."""
    return FileChanges(
        approved,
        tuple(f for f in after if f in before and after[f] != before[f]),
        tuple(f for f in after if f not in before),
        tuple(f for f in before if f not in after),
    )


def pinned_as_approved(
    declared: Fleet,
    environment: str,
    template: DatabaseCatalog,
    approved_files: Mapping[str, str],
    into: Path,
) -> DatabaseCatalog:
    """A copy under `into` of the fleet's `template` as the disk holds it, for a shard of the
    fleet to migrate, when its files are those (name: SHA-256) the fleet's plan was approved
    on; ApprovedFilesChanged naming those that differ otherwise."""
    pinned = pinned_copy(template, into)
    changes = file_changes(
        declared.name, dict(approved_files), {m.script: m.sha256 for m in pinned.migrations}
    )
    if changes:
        raise ApprovedFilesChanged(
            f"a shard of fleet {declared.name} in {environment}: the files of its template "
            f"{declared.template} are not those the fleet's plan was approved on "
            f"({changes.listed}): the shard migrated nothing. Run the fleet again and "
            "approve the plan of the files as they are now"
        )
    return pinned


def needs_decision(plans: list[DatabasePlan]) -> bool:
    """Something would be applied: with nothing pending there is nothing to approve."""
    return any(p.outcome.state is OutcomeState.WOULD_APPLY for p in plans)


class Ruling(StrEnum):
    """A person's decision on a plan (a drift check's verdict is `drift.Verdict`)."""

    APPROVED = "approved"
    REJECTED = "rejected"
    TIMED_OUT = "timed out"


@dataclass(frozen=True)
class Decision:
    verdict: Ruling
    reason: str
    by: str
    """Who decided: the UI, a terminal's user, or the timeout."""

    @property
    def approved(self) -> bool:
        return self.verdict is Ruling.APPROVED


def asked_again(decision: Decision, changes: FileChanges | None) -> Decision:
    """A decision that did not approve a plan asked again: its reason names the files that
    changed since the plan approved before it, the reason the run could not go on."""
    if not changes:
        return decision
    return replace(decision, reason=f"{decision.reason} ({changes})")
