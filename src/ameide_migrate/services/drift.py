"""Schema drift without a JVM: each database's history read against the catalog (as `history`
computes Flyway's `info` and `validate`), its schema against the fingerprint recorded after the
last migrate, and a verdict with its fix per database."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from ameide_migrate.adapters.postgres.connection import server_major
from ameide_migrate.adapters.postgres.fingerprint import Fingerprint, read_schema_state
from ameide_migrate.adapters.postgres.index_catalog import invalid_indexes
from ameide_migrate.adapters.postgres.schema_history import read_history
from ameide_migrate.core import recovery
from ameide_migrate.core.catalog import DatabaseCatalog, Version
from ameide_migrate.core.errors import ExitCode, MigrateError
from ameide_migrate.core.history import (
    PENDING,
    SETTLED_STATES,
    HistoryRow,
    MigrationStatus,
    checksum_mismatches,
    native_info,
    validate_problems,
)
from ameide_migrate.core.indexes import InvalidIndex
from ameide_migrate.core.interruption import Interrupted
from ameide_migrate.services import migrate
from ameide_migrate.services.context import RunContext


class Verdict(StrEnum):
    IN_SYNC = "in sync"
    BEHIND = "behind"
    DRIFTED = "drifted"
    NO_HISTORY = "schema present, no history"
    """Objects in the schema and no Flyway history: built by another tool, or by hand."""
    UNREACHABLE = "unreachable"
    INTERRUPTED = "interrupted"
    """Its first pending migration ran outside a transaction and was cut short: what its first
    statements built is there, with no history row."""


@dataclass
class DatabaseDrift:
    database: str
    verdict: Verdict
    version: str | None = None
    latest: str | None = None
    migrations: list[MigrationStatus] = field(default_factory=list)
    problems: dict[str, str] = field(default_factory=dict)
    """What `flyway validate` would report (pending and future aside): migration -> reason."""
    fix: str = ""
    engine: str = "native"
    schema_changes: dict[str, str] = field(default_factory=dict)
    """Objects changed outside Flyway since the fingerprint recorded after the last migrate."""
    known_good: str | None = None
    """When the schema was last recorded as Flyway left it: drift happened since then."""
    invalid_indexes: list[InvalidIndex] = field(default_factory=list)
    """INVALID indexes: drift whatever the history and the fingerprint say."""
    edited: list[str] = field(default_factory=list)
    """The applied migrations whose file was edited since (checksum mismatch)."""
    checked_at: float = 0.0
    duration_s: float = 0.0
    server: str = ""
    """The server (HOST:PORT) its credentials name: where it was read."""

    @property
    def pending(self) -> int:
        return sum(1 for m in self.migrations if m.state in PENDING)

    def as_json(self) -> dict[str, Any]:
        return {
            "database": self.database,
            "server": self.server,
            "verdict": self.verdict.value,
            "version": self.version,
            "latest": self.latest,
            "pending": self.pending,
            "problems": list(self.problems.values()),
            "schema_changes": list(self.schema_changes.values()),
            "known_good": self.known_good,
            "fix": self.fix,
            "engine": self.engine,
            "migrations": [m.__dict__ for m in self.migrations],
        }


def verdict(statuses: list[MigrationStatus], problems: Mapping[str, str]) -> Verdict:
    if problems or any(s.state not in SETTLED_STATES | PENDING for s in statuses):
        return Verdict.DRIFTED
    if any(s.state in PENDING for s in statuses):
        return Verdict.BEHIND
    return Verdict.IN_SYNC


def fix_for(subject: recovery.Subject, drift: DatabaseDrift) -> str:
    """The command (or file to restore) that brings the database back, as `recovery` words it
    for the database as the commands reach it (a fleet's target by its fleet and target)."""
    if drift.verdict is Verdict.IN_SYNC:
        return ""
    if drift.verdict is Verdict.BEHIND:
        return recovery.apply_pending(subject)
    if drift.verdict is Verdict.UNREACHABLE:
        return recovery.check_connection(subject)
    if drift.verdict is Verdict.NO_HISTORY:
        return recovery.baseline_first(subject)
    return recovery.for_drifted(
        subject,
        states={s.state for s in drift.migrations},
        invalid_indexes=drift.invalid_indexes,
        schema_changes=list(drift.schema_changes),
        edited=drift.edited,
    )


def schema_changes(recorded: Fingerprint | None, live: Mapping[str, str]) -> dict[str, str]:
    """What changed in the live schema since Flyway left it: added, dropped, altered objects."""
    if recorded is None:
        return {}
    was = recorded.objects
    changes = {name: f"{name} dropped outside Flyway" for name in was.keys() - live.keys()}
    changes |= {name: f"{name} added outside Flyway" for name in live.keys() - was.keys()}
    changes |= {
        name: f"{name} changed outside Flyway: was {was[name]!r}, now {live[name]!r}"
        for name in was.keys() & live.keys()
        if was[name] != live[name]
    }
    return dict(sorted(changes.items()))


def invalid_index_problems(indexes: Sequence[InvalidIndex]) -> dict[str, str]:
    """An INVALID index is drift even when the history says its migration succeeded: that is
    what a CREATE INDEX CONCURRENTLY that failed, and a retry that skipped it, leave."""
    return {
        f"index {index.qualified}": (
            f"index {index.qualified} on {index.table} is INVALID (a CREATE INDEX CONCURRENTLY "
            f"that failed or was cancelled): PostgreSQL maintains it on every write and never "
            f"uses it ({index.definition})"
        )
        for index in indexes
    }


def check(
    subject: recovery.Subject,
    db: DatabaseCatalog,
    history: list[HistoryRow] | None,
    fingerprint: Fingerprint | None = None,
    live: Mapping[str, str] | None = None,
    invalid_indexes: Sequence[InvalidIndex] = (),
) -> DatabaseDrift:
    statuses = native_info(db, history)
    problems = validate_problems(db, history, statuses) | invalid_index_problems(invalid_indexes)
    # Flyway's current version: the highest of the applied ones, failed ones included.
    applied = [
        Version.parse(s.version)
        for s in statuses
        if s.version and s.state not in ("Pending", "Ignored", "Below Baseline")
    ]
    drift = DatabaseDrift(
        database=db.name,
        verdict=verdict(statuses, problems),
        version=str(max(applied)) if applied else None,
        latest=str(db.latest_version) if db.latest_version else None,
        migrations=statuses,
        problems=problems,
        invalid_indexes=list(invalid_indexes),
        edited=[migration.script for _, migration in checksum_mismatches(db, history)],
    )
    if history is None and live:
        drift.verdict = Verdict.NO_HISTORY
        drift.problems = {
            **problems,
            "history": f"{len(live)} schema objects and no {db.name} schema history table",
        }
    # A fingerprint of another version was not taken by our last migrate: nothing to compare.
    if fingerprint is not None and live is not None and fingerprint.version == drift.version:
        drift.known_good = fingerprint.recorded_at
        drift.schema_changes = schema_changes(fingerprint, live)
        if drift.schema_changes:
            drift.verdict = Verdict.DRIFTED
    drift.fix = fix_for(subject, drift)
    return drift


def from_flyway(
    subject: recovery.Subject,
    db: DatabaseCatalog,
    info: Mapping[str, Any],
    validation: Mapping[str, Any],
    invalid_indexes: Sequence[InvalidIndex] = (),
) -> DatabaseDrift:
    """The same report from Flyway's own `info` and `validate` results."""
    statuses = [
        MigrationStatus(
            m.get("category", ""),
            m.get("version") or None,
            m.get("description", ""),
            m.get("state", ""),
            (m.get("filepath") or "").rsplit("/", 1)[-1],
        )
        for m in info.get("migrations") or ()
    ]
    invalid = validation.get("invalidMigrations") or ()
    problems = {
        str(m.get("version") or m.get("description")): str(
            (m.get("errorDetails") or {}).get("errorMessage", "")
        )
        for m in invalid
    } | invalid_index_problems(invalid_indexes)
    shown = info.get("schemaVersion")
    drift = DatabaseDrift(
        database=db.name,
        verdict=verdict(statuses, problems),
        version=str(Version.parse(shown)) if shown else None,
        latest=str(db.latest_version) if db.latest_version else None,
        migrations=statuses,
        problems=problems,
        engine="flyway",
        invalid_indexes=list(invalid_indexes),
        edited=[
            (m.get("filepath") or "").rsplit("/", 1)[-1]
            for m in invalid
            if (m.get("errorDetails") or {}).get("errorCode") == "CHECKSUM_MISMATCH"
        ],
    )
    drift.fix = fix_for(subject, drift)
    return drift


@dataclass(frozen=True)
class ServerSupport:
    """A PostgreSQL server's major version against the range the pinned Flyway supports."""

    server: str
    major: int
    flyway: str
    supported: tuple[int, int] | None

    @property
    def warning(self) -> str | None:
        if self.supported is None:
            return (
                f"{self.server}: PostgreSQL {self.major}; Flyway {self.flyway}'s range is unknown"
            )
        oldest, newest = self.supported
        if self.major > newest:
            return (
                f"{self.server}: PostgreSQL {self.major} is newer than Flyway {self.flyway} "
                f"supports ({oldest} to {newest}): upgrade Flyway (AMEIDE_FLYWAY_VERSION)"
            )
        if self.major < oldest:
            return (
                f"{self.server}: PostgreSQL {self.major} is older than Flyway {self.flyway}'s "
                f"open-source edition supports ({oldest} to {newest}): upgrade the server"
            )
        if self.major == newest:
            return (
                f"{self.server}: PostgreSQL {self.major} is the newest Flyway {self.flyway} "
                "supports: upgrade Flyway before the next PostgreSQL major"
            )
        return None


@dataclass
class DriftReport:
    environment: str
    databases: list[DatabaseDrift] = field(default_factory=list)
    servers: list[ServerSupport] = field(default_factory=list)
    fleet: str | None = None
    """The fleet whose targets were checked; None for the environment's databases (the tree)."""

    @property
    def artifact_key(self) -> str:
        """The key of its table artifact: a fleet's apart from its environment's, so that one
        check never stands for the other as the latest."""
        if self.fleet is None:
            return f"drift-{self.environment}"
        return f"drift-fleet-{self.environment}-{self.fleet}".replace("_", "-").lower()

    @property
    def in_sync(self) -> bool:
        return all(d.verdict is Verdict.IN_SYNC for d in self.databases)

    @property
    def servers_read(self) -> list[str]:
        """The servers (HOST:PORT) the check read, in the order of its databases."""
        return list(dict.fromkeys(d.server for d in self.databases if d.server))

    @property
    def unreachable(self) -> list[DatabaseDrift]:
        return [d for d in self.databases if d.verdict is Verdict.UNREACHABLE]

    def summary(self) -> str:
        counts: dict[str, int] = {}
        for d in self.databases:
            counts[d.verdict.value] = counts.get(d.verdict.value, 0) + 1
        head = ", ".join(f"{n} {v}" for v, n in counts.items())
        lines = [f"environment {self.environment}: {head}"]
        lines += [
            f"- {d.database}: {d.verdict.value}; fix: {d.fix}"
            for d in self.databases
            if d.verdict is not Verdict.IN_SYNC
        ]
        return "\n".join(lines)


def unreachable(
    subject: recovery.Subject, db: DatabaseCatalog, reason: str, *, server: str
) -> DatabaseDrift:
    """`db` unread: reported under the subject's name (a fleet's target is a database of its
    template's catalog)."""
    report = DatabaseDrift(
        database=subject.database,
        server=server,
        verdict=Verdict.UNREACHABLE,
        checked_at=time.time(),
        latest=str(db.latest_version) if db.latest_version else None,
        problems={"connection": reason},
    )
    report.fix = fix_for(subject, report)
    return report


def interrupted(drift: DatabaseDrift, found: Interrupted, subject: recovery.Subject) -> None:
    """`drift` is of a database whose first pending migration `found` was cut short: named so,
    with what undoes it and the rerun that applies it whole."""
    drift.verdict = Verdict.INTERRUPTED
    drift.problems = {**drift.problems, found.migration.script: found.describe()}
    drift.fix = recovery.after_interrupted(found, subject)


def check_database(ctx: RunContext, database: str, engine: str = "native") -> DatabaseDrift:
    """One database's report: natively from its history, or from Flyway's own info/validate.
    A database behind (or holding an INVALID index) is looked at for a migration cut short."""
    # A fleet's target is a database of its template's catalog: reported under its own name.
    db = dataclasses.replace(ctx.databases[database], name=database)
    checked_at, started = time.time(), time.monotonic()
    if engine == "flyway":
        info = ctx.engine().run(ctx.request("info", database))
        validation = ctx.engine().run(
            ctx.request("validate", database, ignore_migration_patterns=("*:pending", "*:future"))
        )
        # Flyway knows nothing of index validity: PostgreSQL is asked either way.
        invalid = invalid_indexes(ctx.credentials[database], timeout=ctx.connect_timeout)
        report = from_flyway(ctx.subject(database), db, info, validation, invalid)
    else:
        state = read_schema_state(
            ctx.credentials[database], ctx.history_table(database), timeout=ctx.connect_timeout
        )
        report = check(
            ctx.subject(database),
            db,
            state.history,
            state.recorded,
            state.live,
            state.invalid_indexes,
        )
    if report.verdict in (Verdict.BEHIND, Verdict.DRIFTED) and report.pending:
        # The native check read the history already; Flyway's engine gave only its view of it.
        if engine == "flyway":
            history = read_history(
                ctx.credentials[database], ctx.history_table(database), timeout=ctx.connect_timeout
            )
        else:
            history = state.history
        found = migrate.interrupted(ctx, database, history)
        if found is not None:
            interrupted(report, found, ctx.subject(database))
    report.checked_at, report.duration_s = checked_at, time.monotonic() - started
    report.server = ctx.credentials[database].server
    return report


def server_support(ctx: RunContext, reachable: list[str]) -> list[ServerSupport]:
    """One check per PostgreSQL server behind these databases."""
    supported = ctx.installation.postgresql_support if ctx.installation else None
    flyway_version = ctx.installation.version if ctx.installation else "unknown"
    servers: dict[str, str] = {}
    for database in reachable:
        creds = ctx.credentials[database]
        servers.setdefault(f"{creds.host}:{creds.port}", database)
    return [
        ServerSupport(
            server,
            server_major(ctx.credentials[database], timeout=ctx.connect_timeout),
            flyway_version,
            supported,
        )
        for server, database in servers.items()
    ]


class DriftFound(MigrateError):
    """A drift check found databases not in sync; `report` holds every database's verdict."""

    exit_code = ExitCode.DRIFT

    def __init__(self, message: str, report: DriftReport) -> None:
        super().__init__(message)
        self.report = report
