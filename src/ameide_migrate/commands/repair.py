"""`repair` and `baseline`, of databases and over a fleet's targets."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

from ameide_migrate.adapters import flyway
from ameide_migrate.adapters.postgres.fingerprint import read_schema_state
from ameide_migrate.commands.fleet import fleet_context
from ameide_migrate.commands.shared import install_flyway, verify_databases
from ameide_migrate.config import environments
from ameide_migrate.config.fleets import Fleet
from ameide_migrate.config.settings import Settings
from ameide_migrate.core import recovery
from ameide_migrate.core.catalog import DatabaseCatalog, Version
from ameide_migrate.core.errors import MigrateError, UsageError
from ameide_migrate.core.history import current_version
from ameide_migrate.services import migrate
from ameide_migrate.services.context import RunContext

FlywayLog = Callable[[str, str, str], None]
"""(database, level, message): a line Flyway logged while it worked on a database."""


def _no_flyway_log(_database: str, _level: str, _message: str) -> None:
    return None


@dataclass(frozen=True)
class Repaired:
    """What Flyway's repair changed in one database's history; nothing when all are empty."""

    database: str
    removed_failed: list[str]
    aligned: list[str]
    deleted_missing: list[str]

    @property
    def changed(self) -> bool:
        return bool(self.removed_failed or self.aligned or self.deleted_missing)

    def summary(self) -> str:
        if not self.changed:
            return f"{self.database}: nothing to repair (no failed row, every checksum matches)"
        parts = []
        for what, versions in (
            ("removed failed", self.removed_failed),
            ("realigned checksum of", self.aligned),
            ("marked deleted", self.deleted_missing),
        ):
            if versions:
                parts.append(f"{what} {', '.join(versions)}")
        return f"{self.database}: " + "; ".join(parts)


def _versions(entries: Any) -> list[str]:
    return [str(e.get("version") or e.get("description") or e) for e in entries or []]


def repair(
    settings: Settings,
    env: str,
    databases: list[str],
    on_log: FlywayLog = _no_flyway_log,
) -> list[Repaired]:
    """Flyway repair of each named database, and what it changed there."""

    catalog = environments.catalog(env, settings)
    targets = catalog.select(databases)
    names = [d.name for d in targets]
    install_flyway(settings)
    ctx = RunContext.create(env, targets, verify_databases(settings, env, names), settings)
    try:
        results = {name: migrate.repair(ctx, name, _log_of(name, on_log)) for name in names}
    finally:
        ctx.close()
    return [_repaired(name, result) for name, result in results.items()]


def _repaired(database: str, result: dict[str, Any]) -> Repaired:
    return Repaired(
        database,
        _versions(result.get("migrationsRemoved")),
        _versions(result.get("migrationsAligned")),
        _versions(result.get("migrationsDeleted")),
    )


def baseline(
    settings: Settings,
    env: str,
    database: str,
    version: str | None = None,
    on_log: FlywayLog = _no_flyway_log,
) -> str:
    """Flyway baseline of a database that has a schema and no history: a history table whose
    one row says the schema is at `version` (Flyway's default, 1, when None); that version. An
    empty database is refused, as a fleet's empty target is: baselining it would skip
    migrations it never had."""
    (target,) = environments.catalog(env, settings).select([database])
    _at_most_latest(version, target, f"{database}'s")
    install_flyway(settings)
    ctx = RunContext.create(env, [target], verify_databases(settings, env, [database]), settings)
    try:
        outcome, at, message = _adopt(ctx, database, version, on_log)
    finally:
        ctx.close()
    rerun = recovery.rerun_command(ctx.subject(database))
    if outcome == "empty":
        raise UsageError(f"{database} in {env} is empty: {message} (`{rerun}`)")
    if outcome == "has history":
        raise UsageError(
            f"{database} in {env} has a schema history already (at {at or 'no version'}): "
            f"baseline is for a schema without one; `{rerun}` applies what is pending"
        )
    return at or "1"


def _at_most_latest(version: str | None, template: DatabaseCatalog, whose: str) -> None:
    """A baseline version above the migrations there are would skip all of them: refused."""
    latest = template.latest_version
    if version is not None and latest is not None and Version.parse(version) > latest:
        raise UsageError(
            f"--version {version} is above the latest version of {whose} migrations ({latest}): "
            "give the version the schema matches"
        )


def _adopt(
    ctx: RunContext, database: str, version: str | None, on_log: FlywayLog
) -> tuple[str, str | None, str]:
    """A database with a schema and no history baselined at `version`; (outcome, version,
    what was done). One with a history, or an empty one, is left as it is."""
    state = read_schema_state(
        ctx.credentials[database], ctx.history_table(database), timeout=ctx.connect_timeout
    )
    if state.history is not None:
        return "has history", current_version(state.history), "left as it is"
    if not state.live:
        return "empty", None, "nothing to adopt: a run migrates it from the first version"
    request = ctx.request("baseline", database)
    if version is not None:
        request = replace(
            request, configuration={**request.configuration, "flyway.baselineVersion": version}
        )
    result = ctx.engine().run(request, _log_of(database, on_log))
    at = str(result.get("baselineVersion") or version or "1")
    return "baselined", at, f"{len(state.live)} schema object(s) adopted"


@dataclass(frozen=True)
class TargetDone:
    """What a baseline or repair over a fleet did to one of its targets (by its database)."""

    database: str
    outcome: str
    """baselined, has history, empty, repaired, nothing to repair, or failed."""
    version: str | None
    message: str


@dataclass(frozen=True)
class FleetChore:
    """A baseline or repair over a fleet's targets: each target's outcome, in the fleet's order."""

    verb: str
    environment: str
    fleet: str
    targets: list[TargetDone]

    @property
    def failed(self) -> list[TargetDone]:
        return [t for t in self.targets if t.outcome == "failed"]

    def summary(self) -> str:
        counts: dict[str, int] = {}
        for t in self.targets:
            counts[t.outcome] = counts.get(t.outcome, 0) + 1
        done = ", ".join(f"{n} {outcome}" for outcome, n in counts.items())
        return f"fleet {self.fleet} in {self.environment}, {self.verb}: {done}"


def _over_targets(
    verb: str,
    declared: Fleet,
    ctx: RunContext,
    chore: Callable[[str], tuple[str, str | None, str]],
) -> FleetChore:
    """`chore` (database -> outcome, version, message) on each target, the fleet's `parallel`
    at once; one that fails is that target's outcome, the others go on."""

    def one(database: str) -> TargetDone:
        try:
            outcome, version, message = chore(database)
        except MigrateError as error:
            outcome, version, message = "failed", None, str(error)
        return TargetDone(database, outcome, version, message)

    try:
        with ThreadPoolExecutor(max_workers=declared.waves.parallel) as pool:
            done = list(pool.map(one, ctx.databases))
    finally:
        ctx.close()
    return FleetChore(verb, ctx.environment, declared.name, done)


def fleet_baseline(
    settings: Settings,
    env: str,
    name: str,
    targets: list[str] | None = None,
    version: str | None = None,
    on_log: FlywayLog = _no_flyway_log,
) -> FleetChore:
    """A fleet adopted: each target with a schema and no history baselined at `version`
    (Flyway's default, 1, when None), so that a fleet run applies only what is above it. A
    target with a history is left as it is, an empty one too (a fleet run migrates it from the
    first version): baselining it would skip migrations it never had."""
    declared = environments.fleet(name, settings)
    template = environments.fleet_template(env, declared, settings)
    _at_most_latest(version, template, f"fleet {name}'s template's")
    install_flyway(settings)
    declared, ctx = fleet_context(settings, env, name, targets)
    return _over_targets(
        "baseline", declared, ctx, lambda database: _adopt(ctx, database, version, on_log)
    )


def fleet_repair(
    settings: Settings,
    env: str,
    name: str,
    targets: list[str] | None = None,
    on_log: FlywayLog = _no_flyway_log,
) -> FleetChore:
    """Flyway repair of a fleet's targets (all when `targets` is empty): failed rows removed,
    checksums realigned; what it changed on each."""

    install_flyway(settings)
    declared, ctx = fleet_context(settings, env, name, targets)

    def repair_one(database: str) -> tuple[str, str | None, str]:
        done = _repaired(database, migrate.repair(ctx, database, _log_of(database, on_log)))
        outcome = "repaired" if done.changed else "nothing to repair"
        return outcome, None, done.summary().removeprefix(f"{database}: ")

    return _over_targets("repair", declared, ctx, repair_one)


def _log_of(database: str, on_log: FlywayLog) -> flyway.LogSink:
    return lambda level, message: on_log(database, level, message)
