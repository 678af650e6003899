"""A run's plan: per database, what a migrate would apply now, its lint findings and the locks it
would take. The dry run and the approval of a protected environment read the same plan, so what
an approver reads is what will run.

The plan is read-only and runs no Flyway: the dry run's verdict (`drift.plan`), with each pending
migration's version, description, file, checksum and estimated lock level added.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from enum import StrEnum

from ameide_migrate import drift, lint
from ameide_migrate.migrate import DatabaseOutcome, OutcomeState, RunContext


@dataclass(frozen=True)
class PlannedMigration:
    script: str
    """The file, relative to the SQL tree's root."""
    version: str | None
    """None for a repeatable migration."""
    description: str
    checksum: int | None
    lock: str
    """The strongest lock it takes on a table that exists before the run (`lint.lock_level`)."""


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
        modes = [m.lock for m in self.migrations if m.lock in lint.LOCK_MODES]
        return max(modes, key=lint.LOCK_MODES.index) if modes else lint.NO_LOCK


def plan_database(ctx: RunContext, database: str) -> DatabasePlan:
    """What a migrate of `database` would do now, read-only."""
    outcome = drift.plan(ctx, database)
    db = ctx.databases[database]
    root = db.directory.parent
    by_script = {m.script: m for m in db.migrations}
    pending = [by_script[script] for script in outcome.pending if script in by_script]
    scripts = [lint.script_of_migration(db, m, root) for m in pending]
    locks = lint.lock_levels(scripts)
    return DatabasePlan(
        outcome,
        tuple(
            PlannedMigration(
                script.name,
                str(m.version) if m.version is not None else None,
                m.description,
                m.checksum,
                locks[script.name],
            )
            for m, script in zip(pending, scripts, strict=True)
        ),
    )


def digest(plans: list[DatabasePlan]) -> str:
    """A short fingerprint of what the plans would apply: an approval holds for this plan only."""
    content = [
        [p.database, p.outcome.state.value, [[m.script, m.checksum] for m in p.migrations]]
        for p in plans
    ]
    return hashlib.sha256(json.dumps(content).encode()).hexdigest()[:16]


def needs_decision(plans: list[DatabasePlan]) -> bool:
    """Something would be applied: with nothing pending there is nothing to approve."""
    return any(p.outcome.state is OutcomeState.WOULD_APPLY for p in plans)


class Verdict(StrEnum):
    APPROVED = "approved"
    REJECTED = "rejected"
    TIMED_OUT = "timed out"


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    reason: str
    by: str
    """Who decided: the UI, a terminal's user, or the timeout."""

    @property
    def approved(self) -> bool:
        return self.verdict is Verdict.APPROVED
