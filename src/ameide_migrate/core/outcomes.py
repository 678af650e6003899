"""What a run found and did, per database and in all: the outcomes the verbs return, the flows
record as artifacts and the CLI prints."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from ameide_migrate.core import locking
from ameide_migrate.core.errors import MigrateError
from ameide_migrate.core.findings import Finding


class OutcomeState(StrEnum):
    MIGRATED = "migrated"
    UP_TO_DATE = "up to date"
    FAILED = "failed"
    WOULD_APPLY = "would apply"
    INTERRUPTED = "interrupted"
    """A fleet's target whose last migration a crash cut short: set apart, in no wave."""


@dataclass(frozen=True)
class Inspection:
    """What the history table says, read without Flyway."""

    version: str | None
    up_to_date: bool
    reason: str
    applied_rows: int = 0
    """Successful rows in the history: the difference across a run is what it applied."""


@dataclass
class DatabaseOutcome:
    database: str
    state: OutcomeState
    before: str | None
    after: str | None
    latest: str | None
    applied: int
    duration_s: float
    message: str = ""
    recovery: str = ""
    findings: list[Finding] = field(default_factory=list)
    """The lint's findings on the migrations that were pending."""
    pending: list[str] = field(default_factory=list)
    """A dry run's (and a plan's): the scripts a migrate would apply now, in Flyway's order."""
    locks: list[tuple[str, locking.StatementLock]] = field(default_factory=list)
    """A dry run's: (script, lock) for each lock its statements take on a relation that exists
    before them."""


@dataclass(frozen=True)
class SmokeResult:
    database: str
    version: str | None
    latest: str | None
    problems: tuple[str, ...]
    source: str
    """'flyway info' when Flyway answered, 'history' when read natively."""

    @property
    def ok(self) -> bool:
        return not self.problems


def servers_of(databases: Iterable[str], server_of: Mapping[str, str]) -> list[str]:
    """The servers (HOST:PORT) `server_of` names for the `databases`, each once, in their
    order: what a report says it read."""
    return [s for s in dict.fromkeys(server_of.get(d, "") for d in databases) if s]


@dataclass
class RunReport:
    environment: str
    outcomes: list[DatabaseOutcome] = field(default_factory=list)
    smoke: list[SmokeResult] = field(default_factory=list)
    jvm_starts: int = 0
    server_of: dict[str, str] = field(default_factory=dict)
    """Each database's server (HOST:PORT), as its credentials name it: what the run read."""

    @property
    def servers_read(self) -> list[str]:
        """The servers the run read, in the order of its outcomes."""
        return servers_of((o.database for o in self.outcomes), self.server_of)

    @property
    def failed(self) -> list[DatabaseOutcome]:
        return [o for o in self.outcomes if o.state is OutcomeState.FAILED]

    @property
    def smoke_failures(self) -> list[SmokeResult]:
        return [s for s in self.smoke if not s.ok]

    @property
    def ok(self) -> bool:
        return not self.failed and not self.smoke_failures

    def summary(self) -> str:
        counts = {state: 0 for state in OutcomeState}
        for outcome in self.outcomes:
            counts[outcome.state] += 1
        parts = [f"{n} {state.value}" for state, n in counts.items() if n]
        lines = [f"environment {self.environment}: {', '.join(parts) or 'nothing targeted'}"]
        lines += [f"- {o.database}: {o.message} {o.recovery}".rstrip() for o in self.failed]
        lines += [
            f"- {s.database}: smoke check: {'; '.join(s.problems)}" for s in self.smoke_failures
        ]
        return "\n".join(lines)


class DatabaseFailed(MigrateError):
    """One database failed; carries its outcome so the run can report it beside the others."""

    def __init__(self, outcome: DatabaseOutcome) -> None:
        super().__init__(f"{outcome.database}: {outcome.message}")
        self.outcome = outcome


class RunFailed(MigrateError):
    """At least one database failed; `report` holds the outcome of every database."""

    def __init__(self, message: str, report: RunReport) -> None:
        super().__init__(message)
        self.report = report
