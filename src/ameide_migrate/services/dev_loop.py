"""The dev loop (`ameide-migrate dev`): save a migration, see it applied to the local databases.

It watches the SQL tree and the Flyway configuration with watchfiles; each group of changes
(debounced) migrates, in one Prefect run, only the databases whose folders changed (all of them
for a configuration file at the tree's root). An applied migration edited since is named with
the two fixes local can afford, and the migrations image can be kept in step for a local cluster.

The loop itself knows no server: what it does about a change comes in as `Actions`, so that the
mapping and the grouping are tested without PostgreSQL, Prefect or a JVM.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import watchfiles

from ameide_migrate.adapters import git
from ameide_migrate.config import environments
from ameide_migrate.core import flyway_config, history, recovery
from ameide_migrate.core.catalog import Catalog, DatabaseCatalog
from ameide_migrate.core.errors import MigrateError
from ameide_migrate.core.history import HistoryRow

if TYPE_CHECKING:
    from ameide_migrate.core.findings import Finding
    from ameide_migrate.core.outcomes import RunReport
    from ameide_migrate.services.image import BuiltImage


class RunResult(Protocol):
    """What the loop reads of a migrate run (`commands.run.RunResult`, which runs it, is one)."""

    @property
    def report(self) -> RunReport | None: ...

    @property
    def flow_run_url(self) -> str: ...

    @property
    def failure(self) -> MigrateError | None: ...


Lint = Callable[[list[Path]], list[tuple[str | None, "Finding"]]]
"""The lint of some saved migrations: (database, finding) each."""

CONFIG_FILES = frozenset({flyway_config.TOML_FILE, flyway_config.CONF_FILE, environments.FILE_NAME})
"""Configuration at the tree's root: a change there may change every database's migrations."""

# watchfiles waits STEP_MS of quiet after a change before yielding, and groups at most
# DEBOUNCE_MS of changes: an editor's save (a temporary file, a rename) or a `git checkout` of
# several files is one run, while a single save is applied within about a second.
STEP_MS = 300
DEBOUNCE_MS = 1600


# --- Which databases a change touches ----------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """What one group of changes asks for."""

    databases: tuple[str, ...] = ()
    """The database folders that changed, sorted; empty when nothing of a database changed."""
    everything: bool = False
    """A configuration file every database reads changed: all of them."""
    saved: tuple[Path, ...] = ()
    """Files added or modified (not deleted), for the lint."""
    paths: tuple[Path, ...] = ()
    """Every changed path the plan acts on, to say what caused the run."""

    def __bool__(self) -> bool:
        return self.everything or bool(self.databases)

    def cause(self, root: Path) -> str:
        shown = [_relative(p, root) for p in self.paths[:3]]
        more = f" and {len(self.paths) - 3} more" if len(self.paths) > 3 else ""
        return f"changed: {', '.join(shown)}{more}"


def plan_of(
    changes: Iterable[tuple[watchfiles.Change, str]],
    root: Path,
    config_files: Iterable[Path] = (),
) -> Plan:
    """The databases a group of watchfiles changes touches.

    A path under `<root>/<database>/` is that database's (its migrations, its own flyway.toml;
    a folder removed or added shows as its files); a configuration file at the root
    (flyway.toml, flyway.conf, ameide.toml) or one of `config_files` (FLYWAY_CONFIG_FILES, an
    environments file elsewhere) is every database's. Anything else at the root (a README) and
    hidden files (an editor's) change no migration.
    """
    root = root.absolute()
    outside = {p.absolute() for p in config_files}
    databases: set[str] = set()
    everything = False
    saved: list[Path] = []
    paths: list[Path] = []
    for change, name in sorted(changes, key=lambda c: c[1]):
        path = Path(name).absolute()
        parts = path.relative_to(root).parts if path.is_relative_to(root) else ()
        if path in outside or (len(parts) == 1 and parts[0] in CONFIG_FILES):
            everything = True
        elif len(parts) > 1 and not any(part.startswith(".") for part in parts):
            databases.add(parts[0])
        else:
            continue
        paths.append(path)
        if change is not watchfiles.Change.deleted and path.is_file():
            saved.append(path)
    return Plan(tuple(sorted(databases)), everything, tuple(saved), tuple(paths))


def _relative(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)


# --- An applied migration edited since ---------------------------------------------------------


@dataclass(frozen=True)
class EditedMigration:
    """A versioned migration whose file changed after Flyway applied it (Flyway's validate then
    refuses the database: checksum mismatch)."""

    database: str
    script: str
    path: Path
    version: str
    applied_on: datetime | None
    applied_checksum: int | None
    checksum: int | None

    def message(self, cwd: Path | None = None) -> str:
        """Which file, which version, since when, and the two fixes: neither is done unasked."""
        since = (
            f" on {self.applied_on.astimezone().strftime('%Y-%m-%d %H:%M:%S %Z')}"
            if self.applied_on
            else ""
        )
        return (
            f"{self.database}: {self.script} (version {self.version}) was edited after it was "
            f"applied{since}; Flyway refuses to migrate {self.database} until they match "
            f"(checksum applied {self.applied_checksum}, now {self.checksum}). "
            + recovery.edited_in_dev(
                self.database, self.shown_path(cwd), tracked=git.tracked(self.path)
            )
        )

    def shown_path(self, cwd: Path | None = None) -> str:
        """The path as `git restore` takes it from where the command was started."""
        here = (cwd or Path.cwd()).absolute()
        path = self.path.absolute()
        return os.path.relpath(path, here) if path.is_relative_to(here) else str(path)


def edited_migrations(db: DatabaseCatalog, rows: list[HistoryRow] | None) -> list[EditedMigration]:
    """The database's applied migrations whose file was edited since, as validate finds them."""
    return [
        EditedMigration(
            database=db.name,
            script=migration.script,
            path=migration.path,
            version=str(migration.version),
            applied_on=row.installed_on,
            applied_checksum=row.checksum,
            checksum=migration.checksum,
        )
        for row, migration in history.checksum_mismatches(db, rows)
    ]


# --- The loop ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Watching:
    """The loop started: where its runs are shown, and what it watches."""

    ui_url: str
    paths: tuple[Path, ...]


@dataclass(frozen=True)
class Linted:
    """The migrations just saved, linted at once (before their run): (database, finding) each."""

    files: tuple[Path, ...]
    findings: tuple[tuple[str | None, Finding], ...]


@dataclass(frozen=True)
class Started:
    """A migrate run begins: why, and the databases it targets (None: all)."""

    cause: str
    databases: tuple[str, ...] | None


@dataclass(frozen=True)
class Ran:
    """One migrate run: the databases it targeted (None: all), why, and its result."""

    cause: str
    databases: tuple[str, ...] | None
    result: RunResult
    edited: tuple[EditedMigration, ...] = ()


@dataclass(frozen=True)
class Refused:
    """A change the loop could not act on (a file name that is no migration, an unreadable
    flyway.toml...): said, and the loop waits for the next save."""

    cause: str
    error: MigrateError


@dataclass(frozen=True)
class Rebuilt:
    """`--reset`: a local database dropped and made again, empty; the first run migrates it."""

    database: str
    physical: str


@dataclass(frozen=True)
class ImageReady:
    built: BuiltImage


@dataclass(frozen=True)
class ImageSkipped:
    reason: str


@dataclass(frozen=True)
class Stopped:
    """Ctrl-C: the runs the loop made, and the unfinished ones it ended on the server."""

    runs: int
    ended: tuple[str, ...]


Event = Watching | Rebuilt | Linted | Started | Ran | Refused | ImageReady | ImageSkipped | Stopped


@dataclass(frozen=True)
class Actions:
    """What the loop does about a change; `commands.dev` passes the verbs, tests their doubles."""

    catalog: Callable[[], Catalog]
    migrate: Callable[[list[str] | None], RunResult]
    edited: Callable[[list[str]], list[EditedMigration]]
    build_image: Callable[[], BuiltImage] | None = None
    lint: Lint | None = None


@dataclass
class DevLoop:
    root: Path
    actions: Actions
    on_event: Callable[[Event], None]
    config_files: tuple[Path, ...] = ()

    @property
    def watched(self) -> tuple[Path, ...]:
        return (self.root, *self.config_files)

    def start(self) -> None:
        """Bring every database up to date (and the image, when kept in step) before watching:
        what the loop then applies is the developer's new work alone."""
        self._migrate(None, "start")

    def changed(self, changes: Iterable[tuple[watchfiles.Change, str]]) -> None:
        plan = plan_of(changes, self.root, self.config_files)
        if plan.saved and self.actions.lint is not None:
            self._lint(self.actions.lint, plan.saved)
        if plan:
            self._migrate(None if plan.everything else list(plan.databases), plan.cause(self.root))

    def watch(self, stop_event: threading.Event | None = None) -> None:
        """Run until interrupted (KeyboardInterrupt) or `stop_event` is set. Changes made while a
        run is in progress are kept by the watcher and make the next group."""
        for changes in watchfiles.watch(
            *self.watched,
            debounce=DEBOUNCE_MS,
            step=STEP_MS,
            stop_event=stop_event,
            raise_interrupt=True,
        ):
            self.changed(changes)

    def _migrate(self, databases: list[str] | None, cause: str) -> None:
        try:
            present = self.actions.catalog().databases
            if databases is not None:
                gone = [d for d in databases if d not in present]
                databases = [d for d in databases if d in present]
                if gone and not databases:
                    return  # a database folder removed: nothing left to migrate there
            self.on_event(Started(cause, None if databases is None else tuple(databases)))
            result = self.actions.migrate(databases)
        except MigrateError as error:
            self.on_event(Refused(cause, error))
            return
        failed = [o.database for o in result.report.failed] if result.report else []
        edited: tuple[EditedMigration, ...] = ()
        try:
            edited = tuple(self.actions.edited(failed)) if failed else ()
        except MigrateError as error:
            self.on_event(Refused("looking for edited applied migrations", error))
        self.on_event(Ran(cause, None if databases is None else tuple(databases), result, edited))
        if self.actions.build_image is not None:
            self._build(self.actions.build_image, result)

    def _lint(
        self,
        lint: Callable[[list[Path]], list[tuple[str | None, Finding]]],
        saved: tuple[Path, ...],
    ) -> None:
        try:
            catalog = self.actions.catalog()
        except MigrateError:
            return  # the run that follows says what is wrong with the tree
        migrations = {m.path.absolute() for d in catalog.databases.values() for m in d.migrations}
        files = [path for path in saved if path in migrations]
        if not files:
            return
        try:
            self.on_event(Linted(tuple(files), tuple(lint(files))))
        except MigrateError as error:
            self.on_event(Refused("lint", error))

    def _build(self, build_image: Callable[[], BuiltImage], result: RunResult) -> None:
        """The image follows what local applied: after a failed run it keeps the last SQL that
        did, so a cluster never gets a migration local refused."""
        if result.failure is not None:
            self.on_event(ImageSkipped("the local run failed; the image keeps the last good SQL"))
            return
        try:
            self.on_event(ImageReady(build_image()))
        except MigrateError as error:
            self.on_event(Refused("the migrations image", error))
