"""A fleet: the same migrations on many tenant databases, in waves with a canary and a halt.

A team that gives each tenant its own database declares a fleet in ameide.toml: a template (a
folder of the SQL tree, which is then no database of its own), its targets (a list, a file, or a
query against a registry database of the tree) and how its waves grow:

    [fleets.tenants]
    template = "tenant"
    targets_file = "tenants.txt"           # one per line; # comments
    [fleets.tenants.waves]
    canary = 1                             # the first wave: 1 target (or canary_targets = [...])
    growth = 4                             # each wave 4 times the last
    halt_failures = 0                      # more failures than this in a wave halts the fleet

Each target is a database of its own, `<template>_<target>`, with its credentials where every
database's live (`<TEMPLATE>_<TARGET>_DATABASE_URL`, ...), through the same secret gate. A wave
is split into at most `shards` shards, each a flow run (on a deployment, a Kubernetes Job), each
running its targets `parallel` at once; after each wave, the halt rules decide whether the next
starts.
Nothing is recorded apart from the targets' own history tables: a rerun finds the migrated
targets up to date (no JVM) and goes on with the failed and the new ones.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ameide_migrate.config.fleets import Fleet, Waves, checked_targets, targets_of_file
from ameide_migrate.core import recovery
from ameide_migrate.core.catalog import DatabaseCatalog
from ameide_migrate.core.errors import DatabaseRefusedConnection, FleetInvalid, MigrateError
from ameide_migrate.core.history import HistoryRow, current_version, pending_migrations
from ameide_migrate.core.interruption import Interrupted
from ameide_migrate.core.outcomes import DatabaseOutcome, OutcomeState, servers_of
from ameide_migrate.services.credential_gate import Unreachable


def resolve_targets(
    declared: Fleet, targets_file: Path, run_query: Callable[[str, str], list[str]]
) -> list[str]:
    """The fleet's targets: its list, its file (`targets_file`, resolved by the caller), or its
    query, which `run_query(registry, sql)` runs on the registry database."""
    if declared.targets is not None:
        return checked_targets(declared, declared.targets, "its targets list")
    if declared.targets_file is not None:
        return targets_of_file(declared, targets_file)
    registry = declared.registry or ""
    names = run_query(registry, declared.targets_query or "")
    return checked_targets(declared, names, f"its targets_query on {registry}")


def chosen_targets(
    declared: Fleet, names: Sequence[str], chosen: Sequence[str] | None
) -> list[str]:
    """The fleet's targets `names`, or those of them `chosen` (each once), in the fleet's order;
    FleetInvalid naming a chosen one that is no target of it."""
    if not chosen:
        return list(names)
    checked_targets(declared, chosen, "the targets asked for")
    unknown = [t for t in chosen if t not in names]
    if unknown:
        raise FleetInvalid(
            f"fleet {declared.name}: {', '.join(unknown)} are no targets of it; its targets begin "
            f"{', '.join(names[:5])}"
        )
    return [t for t in names if t in chosen]


def check_vault_paths(
    declared: Fleet,
    others: Sequence[Fleet],
    environment: str,
    names: Sequence[str],
    path_of: Callable[[str], str | None],
) -> None:
    """FleetInvalid when a target's secret would be read anywhere but where its fleet says:
    `path_of` (each database's path as the secret gate finds it) picks the first fleet whose
    databases begin as the target's does, which may be another's of a like template."""
    for target in names:
        database = declared.database_of(target)
        read = path_of(database)
        if read == declared.vault_path_of(environment, database):
            continue
        claimed = next(
            (f.name for f in others if f.vault_path_of(environment, database) == read), "?"
        )
        meant = declared.vault_path_of(environment, database) or "the environment's path_template"
        raise FleetInvalid(
            f"fleet {declared.name}: the secret of its target {target} would be read at {read}, "
            f"by the vault_path of fleet {claimed} (whose databases begin as {database} does), "
            f"not at {meant}: give the two fleets templates that do not begin alike, or one "
            "vault_path"
        )


WaveProgress = Callable[[int, int, DatabaseOutcome], None]
"""(wave number, the wave's size, a target's outcome), called as each target of a wave ends."""

_listeners: list[WaveProgress] = []


@contextmanager
def progress_to(listener: WaveProgress) -> Iterator[None]:
    """`listener` told of each target as it ends, while a fleet runs in this process (the
    command line's bar per wave): the flow's threads call it, so it is no flow parameter."""
    _listeners.append(listener)
    try:
        yield
    finally:
        _listeners.remove(listener)


def target_done(wave: int, size: int, outcome: DatabaseOutcome) -> None:
    for listener in list(_listeners):
        listener(wave, size, outcome)


def plan_waves(targets: Sequence[str], waves: Waves) -> list[list[str]]:
    """The targets in waves: the canary first (named, or the first `canary`), then waves
    growing by `growth` up to `max_wave`, in the targets' order."""
    if waves.canary_targets is not None:
        unknown = [t for t in waves.canary_targets if t not in targets]
        if unknown:
            raise FleetInvalid(
                f"canary_targets {', '.join(unknown)} are no targets of the fleet; its targets "
                f"begin {', '.join(list(targets)[:5])}"
            )
        first = list(waves.canary_targets)
    else:
        first = list(targets[: waves.canary])
    rest = [t for t in targets if t not in first]
    planned = [first]
    size = len(first)
    while rest:
        size = math.ceil(size * waves.growth)
        if waves.max_wave is not None:
            size = min(size, waves.max_wave)
        planned.append(rest[:size])
        rest = rest[size:]
    return planned


def plan_pending_waves(
    targets: Sequence[str], pending: Sequence[str], waves: Waves
) -> list[list[str]]:
    """The waves of the `pending` targets alone (those up to date need none): a named canary
    must be one of `targets`, and one that is up to date already proves nothing and is left
    out; with none of them left, the first `canary` pending targets are the canary."""
    named = waves.canary_targets
    if named is not None:
        plan_waves(targets, Waves(canary_targets=named))  # FleetInvalid names a stranger
        still = tuple(t for t in named if t in pending)
        waves = waves.model_copy(update={"canary_targets": still or None})
    return plan_waves(pending, waves) if pending else []


@dataclass(frozen=True)
class Sorted:
    """A fleet's reachable targets as their histories found them: those that need no wave,
    those set apart, and the waves of the others."""

    up_to_date: list[DatabaseOutcome]
    interrupted: list[DatabaseOutcome]
    waves: list[list[str]]


def sort_targets(
    declared: Fleet,
    environment: str,
    names: Sequence[str],
    template: DatabaseCatalog,
    histories: Mapping[str, Sequence[HistoryRow] | None],
    *,
    up_to_date: Collection[str],
    set_apart: Mapping[str, Interrupted],
    unreachable: Collection[str],
    undo_failed: Mapping[str, str] | None = None,
) -> Sorted:
    """The targets (`names`) sorted: the databases `up_to_date` (at the latest version when the
    fleet began), those `set_apart` (a crash cut their first pending migration short; why
    undoing it failed, when it did, in `undo_failed`), each with its fix, and the waves of the
    others but the `unreachable`, planned on them alone: a canary set apart leaves the canary's
    place to another pending target, not to the next, larger wave."""
    latest = str(template.latest_version) if template.latest_version else None

    def version(database: str) -> str | None:
        return current_version(list(histories.get(database) or []))

    def interrupted(database: str, found: Interrupted) -> DatabaseOutcome:
        failed = (undo_failed or {}).get(database)
        was = version(database)
        return DatabaseOutcome(
            database,
            OutcomeState.INTERRUPTED,
            was,
            was,
            latest,
            0,
            0.0,
            message=found.describe() + (f" Undoing it failed: {failed}" if failed else ""),
            recovery=recovery.after_interrupted(
                found,
                recovery.Subject(
                    environment, database, declared.name, declared.target_of(database)
                ),
            ),
        )

    databases = [declared.database_of(t) for t in names]
    current = [
        DatabaseOutcome(d, OutcomeState.UP_TO_DATE, version(d), version(d), latest, 0, 0.0)
        for d in databases
        if d in up_to_date
    ]
    apart = [interrupted(d, set_apart[d]) for d in databases if d in set_apart]
    done = {*up_to_date, *set_apart, *unreachable}
    pending = [t for t in names if declared.database_of(t) not in done]
    return Sorted(current, apart, plan_pending_waves(names, pending, declared.waves))


def shards_of(targets: Sequence[str], shards: int) -> list[list[str]]:
    """The wave's targets in at most `shards` parts of near-equal size, in order; never an
    empty one."""
    count = max(1, min(shards, len(targets)))
    size, extra = divmod(len(targets), count)
    parts, start = [], 0
    for index in range(count):
        end = start + size + (1 if index < extra else 0)
        parts.append(list(targets[start:end]))
        start = end
    return [p for p in parts if p]


def shard_rows(outcomes: Sequence[DatabaseOutcome]) -> list[dict[str, Any]]:
    """A shard's outcomes as its artifact holds them, for a person and for the fleet run that
    collects them through the API (numbers as numbers)."""
    return [
        {
            "target": o.database,
            "state": o.state.value,
            "before": o.before,
            "after": o.after,
            "latest": o.latest,
            "applied": o.applied,
            "duration_s": round(o.duration_s, 3),
            "message": o.message,
            "recovery": o.recovery,
        }
        for o in outcomes
    ]


def outcomes_of_rows(rows: Sequence[Mapping[str, Any]]) -> list[DatabaseOutcome]:
    """What `shard_rows` wrote, back (the API returns its cells as strings)."""

    def text(row: Mapping[str, Any], key: str) -> str | None:
        value = row.get(key)
        return None if value in (None, "", "None") else str(value)

    return [
        DatabaseOutcome(
            database=str(row["target"]),
            state=OutcomeState(str(row["state"])),
            before=text(row, "before"),
            after=text(row, "after"),
            latest=text(row, "latest"),
            applied=int(float(row.get("applied") or 0)),
            duration_s=float(row.get("duration_s") or 0),
            message=str(row.get("message") or ""),
            recovery=str(row.get("recovery") or ""),
        )
        for row in rows
    ]


def p95_nearest_rank(durations: Sequence[float]) -> float:
    """The 95th percentile by nearest rank: the smallest duration with 95 % of the wave at or
    below it. Always one of the durations, never above the slowest (an interpolating quantile
    extrapolates past it on a small wave: [2.56, 2.56, 2.57, 5.56] would read 7.8)."""
    ordered = sorted(durations)
    return ordered[math.ceil(0.95 * len(ordered)) - 1]


def _named(databases: Sequence[str], limit: int = 10) -> str:
    more = len(databases) - limit
    return ", ".join(databases[:limit]) + (f" and {more} more" if more > 0 else "")


def read_back(
    database: str,
    template: DatabaseCatalog,
    before: Sequence[HistoryRow] | None,
    now: Sequence[HistoryRow] | str | None,
    why: str,
    seconds: float,
    said: str = "",
) -> DatabaseOutcome:
    """A target whose shard run ended without reporting it (crashed, cancelled), as its own
    history says now: what the run committed counts as applied, and a target it brought to the
    latest version is migrated, whatever became of the run. `now` is why its state cannot be
    known, when it cannot. What the run's state `said` (Prefect's words on a crash run long)
    comes last, so that a ledger cut to its first characters still says where the target is."""
    latest = str(template.latest_version) if template.latest_version else None
    was = current_version(list(before or []))
    said = f"; the run's state said: {said}" if said else ""
    if isinstance(now, str):
        return DatabaseOutcome(
            database=database,
            state=OutcomeState.FAILED,
            before=was,
            after=None,
            latest=latest,
            applied=0,
            duration_s=seconds,
            message=f"{why}; {now}{said}",
        )
    rows = list(now or [])
    version = current_version(rows)
    applied = max(0, sum(1 for r in rows if r.success) - sum(1 for r in before or () if r.success))
    reached = now is not None and not pending_migrations(template, rows)
    if reached:
        state = OutcomeState.MIGRATED if applied else OutcomeState.UP_TO_DATE
        message = f"{why}; its history shows it at {version}, the latest{said}"
    else:
        state = OutcomeState.FAILED
        message = (
            f"{why}; its history shows it at {version or 'empty'} of {latest}: "
            f"{applied} migration(s) applied, the rest not{said}"
        )
    return DatabaseOutcome(
        database=database,
        state=state,
        before=was,
        after=version,
        latest=latest,
        applied=applied,
        duration_s=seconds,
        message=message,
    )


def halt_reason(outcomes: Sequence[DatabaseOutcome], waves: Waves) -> str | None:
    """Why the fleet stops after a wave with these outcomes, or None to go on: the rule and its
    limit, what the wave read against it, and the targets that made that reading."""
    failed = [o.database for o in outcomes if o.state is OutcomeState.FAILED]
    if len(failed) > waves.halt_failures:
        return (
            f"halt_failures = {waves.halt_failures}: {len(failed)} of {len(outcomes)} "
            f"target(s) failed: {_named(failed)}"
        )
    if waves.halt_failure_percent is not None and outcomes:
        percent = 100 * len(failed) / len(outcomes)
        if percent > waves.halt_failure_percent:
            return (
                f"halt_failure_percent = {waves.halt_failure_percent:g}: {percent:.0f} % of the "
                f"wave failed ({len(failed)} of {len(outcomes)}): {_named(failed)}"
            )
    limit = waves.halt_p95_seconds
    if limit is not None and len(outcomes) > 1:
        p95 = p95_nearest_rank([o.duration_s for o in outcomes])
        if p95 > limit:
            slow = sorted(
                (o for o in outcomes if o.duration_s > limit), key=lambda o: -o.duration_s
            )
            return (
                f"halt_p95_seconds = {limit:g}: the wave's p95 duration was {p95:.2f}s (nearest "
                f"rank of {len(outcomes)} target(s)); slower than {limit:g}s: "
                + _named([f"{o.database} {o.duration_s:.2f}s" for o in slow])
            )
    return None


QUARANTINED = "quarantined"
"""A target's state in the ledger when the gate could not log in to it."""


@dataclass(frozen=True)
class Quarantined:
    """A target the gate could not log in to: in no wave, named with why and its fix."""

    database: str
    reason: str
    fix: str


def quarantined(
    declared: Fleet, environment: str, unreachable: Mapping[str, Unreachable]
) -> list[Quarantined]:
    """The targets the gate could not log in to (`unreachable`, each with why), with their fix:
    a refusal's reason is what was refused, its fix having a column of its own."""
    return [
        Quarantined(
            database,
            error.what if isinstance(error, DatabaseRefusedConnection) else str(error),
            recovery.for_unreachable_target(
                recovery.Subject(
                    environment, database, declared.name, declared.target_of(database)
                ),
                error,
            ),
        )
        for database, error in unreachable.items()
    ]


def quarantine_reason(quarantined: Sequence[Quarantined], waves: Waves) -> str | None:
    """Why the fleet stops before its first wave: more targets unreachable than it may leave
    behind (a server of many down, a grant gone from all); None to go on without them."""
    if len(quarantined) <= waves.quarantine_max:
        return None
    return (
        f"quarantine_max = {waves.quarantine_max}: {len(quarantined)} target(s) unreachable at "
        f"the gate: {_named([q.database for q in quarantined])}; no target was touched"
    )


STANDINGS = (
    "up to date",
    "interrupted",
    "failed",
    QUARANTINED,
    "not started",
    "behind",
    "no history",
    "unreachable",
)
"""Where `fleet status` finds a target, in the order it counts them. A target not at the latest
version is counted by what its last run did to it, so that a failed one and one its fleet never
reached are not both `behind`. A target found `interrupted` (a non-transactional migration cut
short, see interruption) comes before `failed`: it needs its own fix first."""


def standing(*, up_to_date: bool, has_history: bool, last_outcome: str) -> str:
    """A reachable target's standing: its history read now, then its ledger's `last_outcome`."""
    if up_to_date:
        return "up to date"
    if last_outcome in ("failed", QUARANTINED, "not started"):
        return last_outcome
    return "behind" if has_history else "no history"


@dataclass(frozen=True)
class StateGroup:
    """Targets whose histories are in the same state: one approval covers them all, since the
    same migrations would apply to each."""

    fingerprint: str
    """Of the applied versions and checksums, in order."""
    version: str | None
    targets: tuple[str, ...]
    pending: tuple[tuple[str, int | None, str], ...]
    """(script, Flyway checksum, SHA-256) of what a migrate would apply, in Flyway's order."""


def history_fingerprint(history: Sequence[HistoryRow] | None) -> str:
    applied = [
        [r.version, r.script, r.checksum, r.success] for r in history or () if r.type != "SCHEMA"
    ]
    return hashlib.sha256(json.dumps(applied).encode()).hexdigest()[:12]


def group_by_state(
    template: DatabaseCatalog, histories: Mapping[str, Sequence[HistoryRow] | None]
) -> list[StateGroup]:
    """The targets with something pending, grouped by the state of their history (the largest
    group first); up-to-date targets need no approval and are left out."""
    groups: dict[str, list[str]] = {}
    for target, history in histories.items():
        if pending_migrations(template, list(history) if history is not None else None):
            groups.setdefault(history_fingerprint(history), []).append(target)
    found = []
    for fingerprint, targets in groups.items():
        history = histories[targets[0]]
        rows = list(history) if history is not None else None
        found.append(
            StateGroup(
                fingerprint,
                current_version(rows or []),
                tuple(targets),
                tuple((m.script, m.checksum, m.sha256) for m in pending_migrations(template, rows)),
            )
        )
    return sorted(found, key=lambda g: (-len(g.targets), g.fingerprint))


def groups_digest(groups: Sequence[StateGroup]) -> str:
    """What an approval holds for: every group, its targets and what would apply to them (each
    file's name, Flyway checksum and SHA-256)."""
    content = [[g.fingerprint, list(g.targets), [list(p) for p in g.pending]] for g in groups]
    return hashlib.sha256(json.dumps(content).encode()).hexdigest()[:16]


def files_of_groups(groups: Sequence[StateGroup]) -> dict[str, str]:
    """The files the groups would apply, each with its SHA-256."""
    return {script: sha256 for g in groups for script, _, sha256 in g.pending}


@dataclass
class FleetReport:
    environment: str
    fleet: str
    waves: list[list[DatabaseOutcome]] = field(default_factory=list)
    halted: str | None = None
    """Why the fleet stopped before its last wave."""
    up_to_date: list[DatabaseOutcome] = field(default_factory=list)
    """The targets at the latest version when the fleet began: in no wave."""
    not_started: list[str] = field(default_factory=list)
    """The target databases of the waves that never started."""
    quarantined: list[Quarantined] = field(default_factory=list)
    """The targets the gate could not log in to: in no wave."""
    server_of: dict[str, str] = field(default_factory=dict)
    """Each target's server (HOST:PORT), as its credentials name it: what the fleet read."""

    @property
    def servers_read(self) -> list[str]:
        """The servers of the fleet's targets, in their order."""
        quarantined = (q.database for q in self.quarantined)
        names = [*(o.database for o in self.outcomes), *self.not_started, *quarantined]
        return servers_of(names, self.server_of)

    interrupted: list[DatabaseOutcome] = field(default_factory=list)
    """The targets whose last migration a crash cut short when the fleet began: in no wave
    (migrating them would fail on what it built), each with its fix."""

    @property
    def outcomes(self) -> list[DatabaseOutcome]:
        return [*self.up_to_date, *self.interrupted, *(o for wave in self.waves for o in wave)]

    @property
    def failed(self) -> list[DatabaseOutcome]:
        return [o for o in self.outcomes if o.state is OutcomeState.FAILED]

    @property
    def ok(self) -> bool:
        return (
            not self.failed
            and not self.interrupted
            and self.halted is None
            and not self.quarantined
        )

    def next_step(self) -> str:
        """What to do after a halt: let the quarantined targets in when they stopped it, fix
        the failed targets when there are, else look at what the rule judged (a slow wave
        fails no target)."""
        rerun = (
            f"run the fleet again (`ameide-migrate fleet run --env {self.environment} --fleet "
            f"{self.fleet}`): the migrated targets are up to date and skipped"
        )
        if self.quarantined and not self.waves:
            return (
                "Let the unreachable targets in as each fix says (or, to migrate the others "
                f"without them, raise quarantine_max in [fleets.{self.fleet}.waves]), then "
                f"{rerun}."
            )
        if self.failed:
            return f"Fix the failed targets as each says, then {rerun}."
        return (
            "No target failed: find why the targets named above were slow (locks, load), or "
            f"raise the rule's limit in [fleets.{self.fleet}.waves] if that is their normal "
            f"pace, then {rerun}."
        )

    def summary(self) -> str:
        counts: dict[str, int] = {}
        for outcome in self.outcomes:
            counts[outcome.state.value] = counts.get(outcome.state.value, 0) + 1
        done = ", ".join(f"{n} {state}" for state, n in counts.items()) or "nothing"
        lines = [
            f"fleet {self.fleet} in {self.environment}: {done} in {len(self.waves)} wave(s)"
            + (f", {len(self.not_started)} not started" if self.not_started else "")
            + (f", {len(self.quarantined)} quarantined" if self.quarantined else "")
        ]
        if self.halted:
            after = f"after wave {len(self.waves)}" if self.waves else "before its first wave"
            lines.append(f"halted {after}: {self.halted}")
            lines.append(self.next_step())
        lines += [f"- {o.database}: {o.message}" for o in self.failed]
        lines += [f"- {q.database} quarantined: {q.reason}; fix: {q.fix}" for q in self.quarantined]
        lines += [f"- {o.database}: {o.message} Fix: {o.recovery}" for o in self.interrupted]
        return "\n".join(lines)

    def rows(self) -> list[dict[str, Any]]:
        """The ledger as the fleet's artifact holds it: one row a target."""
        return [
            *(self._row(o, "up to date when the fleet began: in no wave") for o in self.up_to_date),
            *(self._row(o, f"{o.message} Fix: {o.recovery}") for o in self.interrupted),
            *(
                self._row(
                    o,
                    " ".join(o.message.split())[:300],
                    wave=str(number),
                    applied=str(o.applied),
                    duration=f"{o.duration_s:.2f}s",
                )
                for number, wave in enumerate(self.waves, start=1)
                for o in wave
            ),
            *(
                self._row(name, "halted before its wave", state="not started")
                for name in self.not_started
            ),
            *(
                self._row(
                    q.database,
                    " ".join(f"{q.reason}; fix: {q.fix}".split())[:600],
                    state=QUARANTINED,
                )
                for q in self.quarantined
            ),
        ]

    def _row(
        self,
        target: DatabaseOutcome | str,
        message: str,
        *,
        wave: str = "-",
        applied: str = "0",
        duration: str = "",
        state: str = "",
    ) -> dict[str, Any]:
        """A ledger row: an outcome's versions and state, or for a target with none (never
        started, quarantined) its `state`."""
        outcome = target if isinstance(target, DatabaseOutcome) else None
        database = outcome.database if outcome is not None else str(target)
        return {
            "target": database,
            "server": self.server_of.get(database, ""),
            "wave": wave,
            "before": (outcome.before or "empty") if outcome is not None else "",
            "after": (outcome.after or "empty") if outcome is not None else "",
            "applied": applied,
            "duration": duration,
            "state": outcome.state.value if outcome is not None else state,
            "message": message,
        }


class FleetHalted(MigrateError):
    """A fleet's wave broke a halt rule, or a target failed: `report` holds every target's
    outcome and the waves that never started."""

    def __init__(self, message: str, report: FleetReport) -> None:
        super().__init__(message)
        self.report = report
