"""`lint`: the SQL linted with no database connection, and which files a lint's paths name."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ameide_migrate.commands.fleet import fleet_context
from ameide_migrate.commands.shared import seed_local, verify_databases
from ameide_migrate.config import environments
from ameide_migrate.config.settings import Settings
from ameide_migrate.core.catalog import Catalog, DatabaseCatalog, load_catalog, load_folder
from ameide_migrate.core.errors import UsageError
from ameide_migrate.services import lint as linting
from ameide_migrate.services import migrate
from ameide_migrate.services.context import RunContext

if TYPE_CHECKING:
    from ameide_migrate.core.catalog import Migration
    from ameide_migrate.core.findings import Finding


@dataclass(frozen=True)
class LintReport:
    """What `lint` checked and found: findings name their files from `root`, the SQL tree."""

    root: Path
    checked: list[str]
    findings: list[tuple[str | None, Finding]]
    """(database, finding); the database is None for a file outside the tree's folders."""
    environment: str | None
    pending_only: bool
    """Only what is pending in the environment's databases was linted."""

    @property
    def errors(self) -> int:
        return sum(1 for _, f in self.findings if f.level == "error")

    @property
    def warnings(self) -> int:
        return len(self.findings) - self.errors


def lint(
    settings: Settings,
    env: str | None = None,
    databases: list[str] | None = None,
    paths: list[Path] | None = None,
    *,
    fleet_name: str | None = None,
    targets: list[str] | None = None,
) -> LintReport:
    """The lint, with no database connection: the given files or folders, else the whole tree
    (as a fresh database would receive it), at the levels of `env` or the file's `[lint]`.
    With `env` and no path: only what is pending in the environment's databases (or in the
    fleet's `targets`), read from their history tables with the secret gate's credentials."""

    if paths and (databases or fleet_name):
        raise UsageError(
            "give --db (or --fleet) or paths, not both: a path names the files itself (a "
            "database's folder lints that database)"
        )
    if targets and fleet_name is None:
        raise UsageError("--target names a fleet's target: give its --fleet NAME too")
    if fleet_name is not None and (env is None or databases):
        raise UsageError(
            "--fleet lints what is pending in its targets: give it with --env and no --db"
        )
    rules = environments.lint_rules(settings, env)
    if env is not None and not paths:
        catalog = environments.catalog(env, settings)
        if fleet_name is None:
            chosen = catalog.select(databases)
            names = [d.name for d in chosen]
            if environments.get(env, settings).local:
                # As `run --env local` would: on a machine where nothing ran yet, set it up first.
                seed_local(settings, names)
            ctx = RunContext.create(env, chosen, verify_databases(settings, env, names), settings)
        else:
            # Its local databases are set up as a fleet run sets them up.
            _, ctx = fleet_context(settings, env, fleet_name, targets)
            names = list(ctx.databases)
        checked: list[str] = []
        found: list[tuple[str | None, Finding]] = []
        try:
            for name in names:
                waiting = migrate.pending(ctx, name)
                checked += [linting.relative_name(m.path, catalog.root) for m in waiting]
                found += [(name, f) for f in migrate.lint_of(ctx, name, waiting)]
        finally:
            ctx.close()
        return LintReport(catalog.root, checked, found, env, pending_only=True)
    if env is not None:
        catalog = environments.catalog(env, settings)
    else:
        catalog = load_catalog(
            settings.sql_dir, table=settings.flyway_table, variables=settings.flyway_variables
        )
    batches = _lint_batches(catalog, databases, paths or [])
    found = []
    checked = []
    for database, batch in batches:
        if isinstance(batch, list):
            checked += [linting.relative_name(p, catalog.root) for p in batch]
            placeholders = environments.get(env, settings).flyway_placeholders() if env else {}
            findings = linting.lint_files(
                batch, rules, root=catalog.root, placeholders=placeholders
            )
        else:
            db, migrations = batch
            checked += [linting.relative_name(m.path, catalog.root) for m in migrations]
            findings = linting.lint_migrations(db, migrations, rules, root=catalog.root)
        found += [(database, f) for f in findings]
    return LintReport(catalog.root, checked, found, env, pending_only=False)


_Batch = tuple[str | None, "list[Path] | tuple[DatabaseCatalog, list[Migration]]"]


def _lint_batches(catalog: Catalog, databases: list[str] | None, paths: list[Path]) -> list[_Batch]:
    """What to lint, one batch per database in Flyway's order: the databases' migrations the
    paths name (a database folder: all of them; the tree's root: every database), then the
    folders of migrations outside the tree (each its own batch, as Flyway orders it), then the
    loose .sql files outside the tree's databases, in the order given."""
    if not paths:
        return [(d.name, (d, list(d.migrations))) for d in catalog.select(databases)]
    by_path = {m.path.resolve(): d for d in catalog.databases.values() for m in d.migrations}
    folders = {d.directory.resolve(): d for d in catalog.databases.values()}
    chosen: dict[str, set[Path]] = {}
    outside: list[_Batch] = []
    loose: list[Path] = []
    for given in paths:
        path = given.resolve()
        if not path.exists():
            raise UsageError(f"{given}: no such file or folder")
        if path == catalog.root.resolve():
            for d in catalog.databases.values():
                chosen.setdefault(d.name, set()).update(m.path.resolve() for m in d.migrations)
        elif path in folders:
            d = folders[path]
            chosen.setdefault(d.name, set()).update(m.path.resolve() for m in d.migrations)
        elif path in by_path:
            chosen.setdefault(by_path[path].name, set()).add(path)
        elif any(folder in path.parents for folder in folders):
            raise UsageError(
                f"{given} is not a Flyway migration of its database (V<version>__<name>.sql or "
                "R__<name>.sql): `ameide-migrate catalog` lists the migrations"
            )
        elif path.is_dir() and (folder := load_folder(path)) is not None:
            outside.append((path.name, (folder, list(folder.migrations))))
        elif path.is_dir():
            loose += sorted(p for p in path.rglob("*.sql") if p.is_file())
        elif path.suffix == ".sql":
            loose.append(path)
        else:
            raise UsageError(f"{given} is not SQL: give .sql files or the folders that hold them")
    batches: list[_Batch] = [
        (d.name, (d, [m for m in d.migrations if m.path.resolve() in chosen[d.name]]))
        for d in catalog.databases.values()
        if d.name in chosen
    ]
    batches += outside
    if loose:
        batches.append((None, loose))
    return batches
