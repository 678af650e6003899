"""Flyway's `info` and `validate`, computed from a database's history table and the catalog:
the one comparison of history with catalog, serving migrate's inspect and smoke steps and the
drift check. Tests prove it equal to real Flyway's answers on tampered databases.

The states follow Flyway's `MigrationInfoImpl.getState()`: an applied versioned migration is
Success, Failed, Out of Order, or, when the repository lacks it, Missing (below the latest
resolved version) or Future (above it); a resolved one not applied is Pending, or Ignored when a
later version is already applied, or Below Baseline; of a repeatable's runs the latest is Success
or Outdated (its file changed since) and the older ones Superseded.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from ameide_migrate.core.catalog import DatabaseCatalog, Migration, Version


@dataclass(frozen=True)
class HistoryRow:
    installed_rank: int
    version: str | None
    description: str
    type: str
    script: str
    checksum: int | None
    success: bool
    installed_on: datetime | None = None
    """When Flyway applied it (the dev loop names since when an applied file was edited)."""


PENDING = frozenset({"Pending", "Outdated"})
# The states of a migration that needs nothing more; "Ignored (Baseline)" is Flyway's name for
# the file whose version is the baseline's: the baseline stands for it.
SETTLED_STATES = frozenset(
    {"Success", "Baseline", "Below Baseline", "Ignored (Baseline)", "Superseded"}
)


@dataclass(frozen=True)
class MigrationStatus:
    category: str  # "Versioned" or "Repeatable", as Flyway prints it
    version: str | None
    description: str
    state: str
    script: str

    @property
    def key(self) -> tuple[str, str, str, str]:
        return (self.category, self.version or "", self.description, self.state)


def _parse(version: str | None) -> Version | None:
    return Version.parse(version) if version else None


def native_info(db: DatabaseCatalog, history: list[HistoryRow] | None) -> list[MigrationStatus]:
    """Flyway's `info` of this database, computed from its history and the catalog."""
    rows = history or []
    versioned: dict[Version, Migration] = {m.version: m for m in db.versioned if m.version}
    repeatable = {m.description: m for m in db.repeatables}
    baseline = max(
        (Version.parse(r.version) for r in rows if r.type == "BASELINE" and r.version),
        default=None,
    )
    applied_versions = [
        (r, v) for r in rows if r.version and r.type not in ("SCHEMA",) and (v := _parse(r.version))
    ]
    last_applied = max((v for _, v in applied_versions), default=None)
    last_resolved = max(versioned, default=None)
    latest_run = {r.description: r.installed_rank for r in rows if r.version is None}

    statuses: list[MigrationStatus] = []
    highest: Version | None = None
    for row in rows:
        version = _parse(row.version)
        if row.type == "SCHEMA" and version is None:
            # Flyway 10 records the schemas it created as a row without a version; it is no
            # repeatable, and it stays a success.
            statuses.append(MigrationStatus("Schema", None, row.description, "Success", row.script))
            continue
        if version is None:
            statuses.append(_repeatable_state(row, repeatable.get(row.description), latest_run))
            continue
        out_of_order = False
        if row.type in ("SQL", "BASELINE"):
            out_of_order = highest is not None and version < highest and row.type == "SQL"
            highest = version if highest is None else max(highest, version)
        if row.type == "BASELINE":
            # Flyway lists the baseline row of its own, with no category; a file of the same
            # version is "Ignored (Baseline)": the baseline stands for it.
            statuses.append(
                MigrationStatus("", str(version), row.description, "Baseline", row.script)
            )
            if (resolved := versioned.get(version)) is not None:
                statuses.append(
                    MigrationStatus(
                        "Versioned",
                        str(version),
                        resolved.description,
                        "Ignored (Baseline)",
                        resolved.script,
                    )
                )
            continue
        resolved = versioned.get(version)
        statuses.append(_versioned_state(row, version, resolved, out_of_order, last_resolved))

    applied = {v for _, v in applied_versions}
    for version, migration in sorted(versioned.items()):
        if version in applied:
            continue
        if baseline is not None and version < baseline:
            state = "Below Baseline"
        elif last_applied is not None and version < last_applied:
            state = "Ignored"
        else:
            state = "Pending"
        statuses.append(
            MigrationStatus(
                "Versioned", str(version), migration.description, state, migration.script
            )
        )
    applied_repeatables = {r.description: r for r in rows if r.version is None}
    for description, migration in sorted(repeatable.items()):
        run = applied_repeatables.get(description)
        if run is None or (run.success and run.checksum != migration.checksum):
            statuses.append(
                MigrationStatus("Repeatable", None, description, "Pending", migration.script)
            )
    return statuses


def _versioned_state(
    row: HistoryRow,
    version: Version,
    resolved: Migration | None,
    out_of_order: bool,
    last_resolved: Version | None,
) -> MigrationStatus:
    if resolved is None:
        if row.type == "SCHEMA":
            state = "Success"
        elif last_resolved is not None and version < last_resolved:
            state = "Missing" if row.success else "Failed (Missing)"
        else:
            state = "Future" if row.success else "Failed (Future)"
    elif not row.success:
        state = "Failed"
    elif out_of_order:
        state = "Out of Order"
    else:
        state = "Success"
    return MigrationStatus("Versioned", str(version), row.description, state, row.script)


def _repeatable_state(
    row: HistoryRow, resolved: Migration | None, latest_run: Mapping[str, int]
) -> MigrationStatus:
    if resolved is None:
        state = "Missing" if row.success else "Failed (Missing)"
    elif not row.success:
        state = "Failed"
    elif latest_run.get(row.description) == row.installed_rank:
        state = "Success" if row.checksum == resolved.checksum else "Outdated"
    else:
        state = "Superseded"
    return MigrationStatus("Repeatable", None, row.description, state, row.script)


def validate_problems(
    db: DatabaseCatalog, history: list[HistoryRow] | None, statuses: list[MigrationStatus]
) -> dict[str, str]:
    """What `flyway validate` reports, pending and future migrations allowed: the invalid
    migration (its version, or a repeatable's description) to the reason."""
    problems: dict[str, str] = {}
    versioned = {m.version: m for m in db.versioned if m.version}
    for status in statuses:
        label = status.version or status.description
        if status.state in ("Failed", "Failed (Missing)"):
            problems[label] = f"failed migration {label} ({status.script})"
        elif status.state == "Missing":
            what = "migration" if status.version else "repeatable migration"
            problems[label] = f"applied {what} {label} is not in the repository ({status.script})"
        elif status.state == "Ignored":
            problems[label] = (
                f"migration {label} is not applied but a later one is ({status.script})"
            )
    edited = {row.installed_rank for row, _ in checksum_mismatches(db, history)}
    for row in history or []:
        version = _parse(row.version)
        resolved = versioned.get(version) if version else None
        if resolved is None or not row.success or row.type != "SQL" or str(version) in problems:
            continue
        if row.installed_rank in edited:
            problems[str(version)] = (
                f"checksum mismatch for version {version}: {resolved.script} was edited after it "
                f"was applied (applied {row.checksum}, now {resolved.checksum})"
            )
        elif row.description != resolved.description:
            problems[str(version)] = (
                f"description mismatch for version {version} ({resolved.script})"
            )
    return problems


def checksum_mismatches(
    db: DatabaseCatalog, history: list[HistoryRow] | None
) -> list[tuple[HistoryRow, Migration]]:
    """The applied versioned migrations whose file changed since (Flyway's validate: "checksum
    mismatch"): each successful history row with the migration of the tree it no longer matches."""
    versioned = {m.version: m for m in db.versioned if m.version}
    edited = []
    for row in history or []:
        version = _parse(row.version)
        resolved = versioned.get(version) if version else None
        if resolved is None or not row.success or row.type != "SQL":
            continue
        if row.checksum != resolved.checksum:
            edited.append((row, resolved))
    return edited


def pending_migrations(db: DatabaseCatalog, history: list[HistoryRow] | None) -> list[Migration]:
    """What a migrate would apply, in Flyway's order: the versioned migrations not applied (an
    ignored one too: with outOfOrder Flyway applies it) and the repeatables whose file changed
    since their last run."""
    waiting = {
        s.script for s in native_info(db, history) if s.state in PENDING or s.state == "Ignored"
    }
    return [m for m in db.migrations if m.script in waiting]


def current_version(history: list[HistoryRow]) -> str | None:
    """The highest version applied successfully (a baseline's included)."""
    versions = [
        Version.parse(r.version)
        for r in history
        if r.success and r.version is not None and r.type in ("SQL", "BASELINE")
    ]
    return str(max(versions)) if versions else None
