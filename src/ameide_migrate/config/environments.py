"""The environments a platform migrates, declared in one file the user edits, and where each
one's database credentials come from.

The file is `ameide.toml` at the root of the SQL tree (beside a `flyway.toml`), so it travels with
the SQL into the migrations image: the CLI, the flows, the deployments and the secret source all
read the same `Environment` records from it. A site adds an environment by adding a table:

    [environments.qa]
    work_pool = "ameide-kubernetes"
    pool_type = "kubernetes"
    namespace = "ameide-qa"

Without the file, the one environment is the embedded local default, `local`.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ameide_migrate.config.fleets import Fleet
from ameide_migrate.config.lint_rules import LintRules
from ameide_migrate.config.settings import Settings
from ameide_migrate.config.vault_settings import VaultLayout
from ameide_migrate.core.catalog import Catalog, DatabaseCatalog, load_catalog
from ameide_migrate.core.errors import (
    CatalogError,
    EnvironmentsFileInvalid,
    FleetInvalid,
    UnknownEnvironment,
    UsageError,
)

FILE_NAME = "ameide.toml"


class ApprovalPolicy(BaseModel):
    """Whether a run here waits for a person to approve its plan first, and for how long."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    required: bool = Field(
        default=False,
        description="A run builds its plan and waits for a person's decision in the Prefect UI "
        "(or `ameide-migrate approve`) before it migrates anything.",
    )
    timeout_minutes: float = Field(
        default=240,
        gt=0,
        description="Without a decision within this time the run ends as rejected.",
    )


class Environment(BaseModel):
    """One environment, as `ameide.toml` declares it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    local: bool = Field(
        default=False,
        description="The embedded local default: its own PostgreSQL when none is given, and the "
        "local credential store when no Vault is configured.",
    )
    work_pool: str = Field(
        description="The Prefect work pool its deployments run on (a local environment's "
        "default: ameide-local)."
    )
    pool_type: Literal["process", "kubernetes"] = Field(
        default="kubernetes", description="A local environment's default: process."
    )
    namespace: str | None = Field(default=None, description="Kubernetes: the Jobs' namespace.")
    service_account: str | None = Field(
        default=None, description="Kubernetes: the Jobs' service account (Vault's role binds it)."
    )
    drift_cron: str = Field(default="0 3 * * *", description="When the drift check runs.")
    timezone: str = "UTC"
    concurrency: int | None = Field(
        default=None, ge=1, description="Databases migrated at once (AMEIDE_MAX_CONCURRENCY)."
    )
    databases: tuple[str, ...] | None = Field(
        default=None, description="The databases this environment has; all of the tree's if unset."
    )
    placeholders: dict[str, str] = Field(
        default_factory=dict, description="Flyway placeholders of this environment."
    )
    job_variables: dict[str, Any] = Field(
        default_factory=dict, description="Laid over the work pool's job variables."
    )
    tags: tuple[str, ...] = ()
    lock_timeout_seconds: float | None = Field(
        default=None,
        ge=0.1,
        description="How long each try of a migration waits for a table lock, while every "
        "session after it waits too (AMEIDE_LOCK_TIMEOUT_SECONDS, 1 s, if unset).",
    )
    vault: VaultLayout = VaultLayout()
    lint: LintRules = Field(
        default_factory=LintRules,
        description="The lint's rule levels here, over the file's [lint.rules] and the defaults.",
    )
    approval: ApprovalPolicy = ApprovalPolicy()

    @model_validator(mode="before")
    @classmethod
    def _local_defaults(cls, values: Any) -> Any:
        """A local environment runs on this machine's process pool unless it says otherwise,
        and its lint keeps findings at warning (its own database: nobody waits for its locks)."""
        if not isinstance(values, Mapping) or values.get("local") is not True:
            return values
        lint = values.get("lint", {})
        if isinstance(lint, Mapping) and "max_level" not in lint:
            lint = {**lint, "max_level": "warning"}
        return {
            "work_pool": _LOCAL_POOL,
            "pool_type": "process",
            **values,
            "lint": lint,
        }

    def deployment_job_variables(self) -> dict[str, Any]:
        """The job variables of this environment's deployments."""
        derived: dict[str, Any] = {}
        if self.namespace:
            derived["namespace"] = self.namespace
        if self.service_account:
            derived["service_account_name"] = self.service_account
        return {**derived, **self.job_variables}

    def chart_values(self, chart: str) -> dict[str, Any]:
        """What a Helm chart of this project takes from the environment: the worker chart's
        pool, the migrations Job's environment, service account, Vault role and databases. A
        values file holds the rest (the site's addresses, resources)."""
        if chart == "prefect-worker":
            return {"workPool": self.work_pool}
        if chart == "db-migrations":
            values: dict[str, Any] = {
                "environment": self.name,
                "databases": list(self.databases or ()),
            }
            if self.service_account:
                values["serviceAccountName"] = self.service_account
            if self.vault.kubernetes_role:
                values["vault"] = {"kubernetesRole": self.vault.kubernetes_role}
            return values
        raise UsageError(f"unknown chart {chart!r}: choose prefect-worker or db-migrations")

    def flyway_placeholders(self) -> dict[str, str]:
        """What every database of the environment sees: `${environment}` and the file's own."""
        return {"environment": self.name, **self.placeholders}


_LOCAL_POOL = "ameide-local"
_LOCAL_DEFAULT = Environment.model_validate({"name": "local", "local": True})


def file_of(settings: Settings) -> Path:
    return settings.environments_file or settings.sql_dir / FILE_NAME


def load(path: Path) -> dict[str, Environment]:
    """Every environment the file declares; the local default alone when there is no file."""
    if not path.exists():
        return {"local": _LOCAL_DEFAULT}
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise EnvironmentsFileInvalid(f"{path} is not valid TOML: {e}") from None
    unknown = sorted(set(document) - {"environments", "lint", "fleets"})
    if unknown:
        raise EnvironmentsFileInvalid(
            f"{path}: unknown table {', '.join(unknown)}; the file declares [environments.NAME], "
            "[lint] and [fleets.NAME]"
        )
    lint_defaults = _lint_defaults(path, document)
    declared = document.get("environments", {})
    found = {}
    for name, table in declared.items():
        if not isinstance(table, Mapping):
            raise EnvironmentsFileInvalid(f"{path}: environments.{name} must be a table")
        try:
            found[name] = Environment(name=name, **table)
            found[name] = found[name].model_copy(
                update={"lint": found[name].lint.over(lint_defaults)}
            )
        except ValidationError as e:
            raise EnvironmentsFileInvalid(
                f"{path}: environments.{name}: " + "; ".join(_problem(err) for err in e.errors())
            ) from None
    if not found:
        raise EnvironmentsFileInvalid(f"{path} declares no environment: add [environments.NAME]")
    return found


def _lint_defaults(path: Path, document: Mapping[str, Any]) -> LintRules:
    """The file's `[lint]`: every environment's rule levels, under its own."""
    try:
        return LintRules.model_validate(document.get("lint", {}))
    except ValidationError as e:
        raise EnvironmentsFileInvalid(
            f"{path}: lint: " + "; ".join(_problem(err) for err in e.errors())
        ) from None


def lint_rules(settings: Settings, environment: str | None = None) -> LintRules:
    """The lint's levels: the environment's, or without one the file's `[lint]` defaults."""
    if environment is not None:
        return get(environment, settings).lint
    path = file_of(settings)
    if not path.exists():
        return LintRules()
    all_of(settings)  # the whole file checked, as every command reads it
    return _lint_defaults(path, tomllib.loads(path.read_text(encoding="utf-8")))


def _problem(error: Mapping[str, Any]) -> str:
    where = ".".join(str(part) for part in error["loc"])
    if error["type"] == "extra_forbidden":
        return f"unknown key {where}"
    return f"{where}: {error['msg']}"


def all_of(settings: Settings) -> dict[str, Environment]:
    """The file's environments, read again only when the file changed (a run asks often)."""
    path = file_of(settings)
    try:
        found = path.stat()
    except FileNotFoundError:
        return load(path)
    return dict(_loaded(path.resolve(), found.st_mtime_ns, found.st_size))


@lru_cache(maxsize=8)
def _loaded(path: Path, _mtime_ns: int, _size: int) -> dict[str, Environment]:
    return load(path)


def fleets(settings: Settings) -> dict[str, Fleet]:
    """The fleets the environments file declares (`[fleets.NAME]`); none without the file."""
    path = file_of(settings)
    try:
        found = path.stat()
    except FileNotFoundError:
        return {}
    all_of(settings)  # the whole file checked, as every command reads it
    return dict(_fleets_loaded(path.resolve(), found.st_mtime_ns, found.st_size))


@lru_cache(maxsize=8)
def _fleets_loaded(path: Path, _mtime_ns: int, _size: int) -> dict[str, Fleet]:
    declared = tomllib.loads(path.read_text(encoding="utf-8")).get("fleets", {})
    found = {}
    for name, table in declared.items():
        if not isinstance(table, Mapping):
            raise EnvironmentsFileInvalid(f"{path}: fleets.{name} must be a table")
        try:
            found[name] = Fleet(name=name, **table)
        except ValidationError as e:
            raise EnvironmentsFileInvalid(
                f"{path}: fleets.{name}: " + "; ".join(_problem(err) for err in e.errors())
            ) from None
    return found


def fleet(name: str, settings: Settings) -> Fleet:
    """The fleet `name`, or a usage error listing the declared ones and the file."""
    declared = fleets(settings)
    if name not in declared:
        choices = ", ".join(sorted(declared)) or "none"
        raise FleetInvalid(
            f"unknown fleet {name!r}: {file_of(settings)} declares {choices}; add "
            f"[fleets.{name}] with its template and targets"
        )
    return declared[name]


def fleet_template(environment: str, declared: Fleet, settings: Settings) -> DatabaseCatalog:
    """The template folder as this environment's Flyway sees it."""
    loaded = _tree(environment, settings)
    if declared.template not in loaded.databases:
        folders = ", ".join(loaded.databases) or "none"
        raise FleetInvalid(
            f"fleet {declared.name}: its template {declared.template!r} is no folder of the SQL "
            f"tree {loaded.root} (its folders: {folders})"
        )
    return loaded.databases[declared.template]


def fleet_registry(environment: str, declared: Fleet, settings: Settings) -> str | None:
    """The database its `targets_query` runs on: one of this environment's databases (never a
    fleet's template, which is no database of its own)."""
    if declared.registry is None:
        return None
    loaded = catalog(environment, settings)
    if declared.registry not in loaded.databases:
        raise FleetInvalid(
            f"fleet {declared.name}: its registry {declared.registry!r} is no database of "
            f"{environment} in the SQL tree {loaded.root} (its databases: "
            f"{', '.join(loaded.databases)}): set registry to the database its targets_query "
            "reads"
        )
    return declared.registry


def fleet_targets_file(declared: Fleet, settings: Settings) -> Path:
    """Its targets_file, relative to the environments file."""
    return file_of(settings).parent / (declared.targets_file or "")


def get(name: str, settings: Settings) -> Environment:
    """The environment `name`, or a usage error listing the declared ones and the file."""
    declared = all_of(settings)
    if name not in declared:
        raise UnknownEnvironment(name, declared, file_of(settings))
    return declared[name]


def _tree(environment: str, settings: Settings) -> Catalog:
    """Every folder of the SQL tree, read with this environment's placeholders."""
    env = get(environment, settings)
    return load_catalog(
        settings.sql_dir,
        placeholders=env.flyway_placeholders(),
        table=settings.flyway_table,
        environment=env.name,
        variables=settings.flyway_variables,
    )


def check(name: str, settings: Settings) -> str:
    return get(name, settings).name


def catalog(environment: str, settings: Settings) -> Catalog:
    """The SQL tree as this environment's Flyway sees it (its placeholders, its history table,
    its databases)."""
    env = get(environment, settings)
    loaded = _tree(environment, settings)
    if not loaded.databases:
        raise CatalogError(
            f"SQL tree {loaded.root} holds no database folder: put each database's Flyway "
            "migrations in a folder of its own under it (AMEIDE_SQL_DIR names another tree)"
        )
    templates = {f.template: f.name for f in fleets(settings).values()}
    if templates:
        # A fleet's template is the migrations of its targets, no database of its own.
        loaded = Catalog(
            root=loaded.root,
            databases={n: d for n, d in loaded.databases.items() if n not in templates},
            fleets=templates,
        )
    if env.databases is not None:
        unknown = [d for d in env.databases if d not in loaded.databases]
        if unknown:
            raise EnvironmentsFileInvalid(
                f"{file_of(settings)}: [environments.{environment}] databases names "
                f"{', '.join(unknown)}, no database folder of {loaded.root}: choose from "
                f"{', '.join(loaded.databases)}, or remove the name"
            )
        kept = loaded.select(list(env.databases))
        loaded = Catalog(
            root=loaded.root, databases={d.name: d for d in kept}, fleets=loaded.fleets
        )
    for database in loaded.databases.values():
        if not database.migrations:
            raise CatalogError(
                f"{database.directory} holds no Flyway migration (V<version>__<name>.sql or "
                f"R__<name>.sql): add one, or remove the folder if {database.name} is not a "
                "database"
            )
    return loaded


def vault_path_of(environment: str, settings: Settings) -> Callable[[str], str | None]:
    """A database's secret path as a fleet declares it (`vault_path`), None for the others."""
    declared = [f for f in fleets(settings).values() if f.vault_path is not None]

    def path_of(database: str) -> str | None:
        return next(
            (p for f in declared if (p := f.vault_path_of(environment, database)) is not None),
            None,
        )

    return path_of
