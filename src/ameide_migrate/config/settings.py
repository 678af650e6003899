"""The one settings object: every knob comes in here, from `AMEIDE_*` variables or arguments."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import (
    BaseModel,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from ameide_migrate.config.vault_settings import VaultLayout, VaultSettings
from ameide_migrate.core.errors import SettingInvalid

DEFAULT_FLYWAY_VERSION = "10.17.0"
DEFAULT_POSTGRESQL_DRIVER_VERSION = "42.7.4"
DEFAULT_FLYWAY_BASE = "flyway/flyway:10.17"
"""The seed's image; `migrations/Dockerfile.flyway-base` makes one where it cannot be pulled."""


def _default_state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "ameide-migrate"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="AMEIDE_", extra="ignore")

    sql_dir: Path = Field(
        default=Path("db/flyway/sql"),
        description="Root of the SQL tree: one folder per database.",
    )
    state_dir: Path = Field(
        default_factory=_default_state_dir,
        description="Local state: the embedded PostgreSQL, Prefect server and local secret store.",
    )
    cache_dir: Path = Field(
        default=Path(".cache"),
        description="Downloads and builds kept between runs (Flyway's jars); git-ignored.",
    )
    environments_file: Path | None = Field(
        default=None,
        description="The environments the platform migrates; default <sql_dir>/ameide.toml.",
    )
    project_dir: Path = Field(
        default=Path("."),
        description="The workspace the migrations image is built from (migrations/, uv.lock).",
    )
    flyway_version: str = Field(
        default=DEFAULT_FLYWAY_VERSION,
        description="The Flyway release resolved from Maven Central, as 10.17.0",
    )
    postgresql_driver_version: str = DEFAULT_POSTGRESQL_DRIVER_VERSION
    java: str = Field(default="java", description="The Java 17+ launcher that runs Flyway.")
    maven: str = Field(default="mvn", description="Maven, used once to resolve Flyway's jars.")
    flyway_table: str = "flyway_schema_history"
    flyway_variables: dict[str, str] = Field(
        default_factory=lambda: {k: v for k, v in os.environ.items() if k.startswith("FLYWAY_")},
        exclude=True,
        description="Flyway's own FLYWAY_* variables, laid over its flyway.toml or flyway.conf.",
    )

    image_repository: str = Field(
        default="ameide-migrations", description="Name of the migrations image, without registry."
    )
    image_registry: str | None = Field(
        default=None, description="Registry the migrations image is pushed to (HOST[:PORT][/PATH])."
    )
    flyway_base: str = Field(
        default=DEFAULT_FLYWAY_BASE, description="Base image of the migrations image."
    )
    image_python: str = Field(
        default="3.11",
        description="The base image's python3 (MAJOR.MINOR): the wheels are fetched for it.",
    )
    image_pull_base: bool = Field(
        default=True, description="Pull the base image at every build, so a moved tag is seen."
    )

    local_admin_url: SecretStr | None = Field(
        default=None,
        description="Superuser URL of an existing PostgreSQL for the local environment; "
        "when unset the local environment runs its own cluster.",
    )
    local_database_prefix: str = Field(
        default="",
        description="Local only: prefix of every physical database name, to share one server "
        "between several stacks.",
    )
    max_concurrency: int = Field(default=8, ge=1, description="Databases migrated at once.")
    # The defaults ride through a PostgreSQL restart or failover (10-60 s): waits of 1, 2, 4, 8,
    # then 15 s, about 75 s in all before a step gives up (`retry_budget_seconds`).
    retries: int = Field(default=8, ge=0, description="Retries of a transient fault per step.")
    retry_delay_seconds: float = Field(
        default=1.0, gt=0, description="First retry delay; doubles every retry."
    )
    retry_max_delay_seconds: float = Field(
        default=15.0, gt=0, description="The longest wait between two retries."
    )
    connect_timeout_seconds: int = Field(default=5, ge=1)
    lock_timeout_seconds: float = Field(
        default=1.0,
        ge=0.1,
        description="How long a migration may wait for a table lock before it fails with a "
        "lock wait, which is retried: short, so that a statement queued behind another session "
        "does not block everyone queued behind it for long (an environment's "
        "lock_timeout_seconds in ameide.toml wins).",
    )
    long_transaction_seconds: float = Field(
        default=2.0,
        gt=0,
        description="A session whose transaction has been open this long, holding a lock a "
        "pending migration would wait for, keeps Flyway from starting (the pre-flight check, "
        "retried with backoff until it ends).",
    )
    lock_retry_count: int = Field(
        default=10, ge=0, description="Seconds Flyway waits for another run's lock before failing."
    )

    metrics_textfile: Path | None = Field(
        default=None,
        description="Where the drift check writes Prometheus metrics (node_exporter textfile "
        "collector); default <state_dir>/metrics/ameide_migrate.prom.",
    )
    pushgateway_url: str | None = Field(
        default=None, description="Push the drift metrics to this Pushgateway instead."
    )

    vault: VaultSettings | None = Field(
        default=None,
        description="The Vault of VAULT_ADDR (or AMEIDE_VAULT_ADDR), with Vault's own VAULT_TOKEN, "
        "VAULT_NAMESPACE and VAULT_CACERT and AMEIDE_VAULT_<FIELD> for the rest; the Prefect "
        "block `vault-<env>` takes precedence where it is saved.",
    )

    @field_validator("flyway_version")
    @classmethod
    def _a_flyway_release(cls, value: str) -> str:
        # Checked here: Maven would otherwise answer a typo with a page of its own output.
        if not re.fullmatch(r"\d+\.\d+(\.\d+)*", value):
            raise ValueError("not a Flyway release: numbers separated by dots")
        return value

    @model_validator(mode="before")
    @classmethod
    def _vault_from_variables(cls, data: Any) -> Any:
        if not isinstance(data, dict) or "vault" in data:
            return data
        found = {field: value for field, (_, value) in vault_variables(os.environ).items()}
        if "address" in found:
            return {**data, "vault": found}
        if found:
            # No Vault to talk to, but a mistyped AMEIDE_VAULT_* is still said now, not when an
            # address or a block makes it matter.
            try:
                VaultSettings.model_validate({**found, "address": "unset"})
            except ValidationError as e:
                raise ValueError(_described(e, vault_variables(os.environ))) from None
        return data

    def vault_connection(self, layout: VaultLayout | None = None) -> VaultSettings | None:
        """The Vault of the variables, laid out as the environment's file says, unless an
        AMEIDE_VAULT_* variable says otherwise."""
        if self.vault is None or layout is None:
            return self.vault
        declared = {
            field: value
            for field, value in layout.model_dump(exclude_none=True).items()
            if field not in self.vault.model_fields_set
        }
        return self.vault.model_copy(update=declared)

    @property
    def retry_delays(self) -> list[float]:
        """The waits before each retry of a transient fault: doubling, capped."""
        return [
            min(self.retry_delay_seconds * 2**attempt, self.retry_max_delay_seconds)
            for attempt in range(self.retries)
        ]

    @property
    def retry_budget_seconds(self) -> float:
        """How long a step keeps retrying a transient fault, waits only."""
        return sum(self.retry_delays)

    @property
    def metrics_path(self) -> Path:
        return self.metrics_textfile or self.state_dir / "metrics" / "ameide_migrate.prom"

    @property
    def flyway_home(self) -> Path:
        return (self.cache_dir / "flyway" / self.flyway_version).resolve()


# Vault's own variables, which its CLI and clients read, beside AMEIDE_VAULT_<FIELD>; the first
# one set wins.
_VAULTS_OWN_VARIABLES = {
    "address": ("AMEIDE_VAULT_ADDR", "VAULT_ADDR"),
    "token": ("VAULT_TOKEN",),
    "namespace": ("VAULT_NAMESPACE",),
    "ca_cert_path": ("AMEIDE_VAULT_CACERT", "VAULT_CACERT"),
}


def vault_variables(environ: Mapping[str, str]) -> dict[str, tuple[str, str]]:
    """Each Vault setting a variable sets: field -> (the variable, its value)."""
    found = {}
    for field in VaultSettings.model_fields:
        names = (f"AMEIDE_VAULT_{field.upper()}", *_VAULTS_OWN_VARIABLES.get(field, ()))
        for name in names:
            if environ.get(name):
                found[field] = (name, environ[name])
                break
    return found


def _described(
    error: ValidationError, variables: Mapping[str, tuple[str, str]] | None = None
) -> str:
    """Each problem as the variable a person set, its value (never a secret's) and what it must
    be. `variables`: the Vault fields' variables, when `error` is VaultSettings'."""
    problems = []
    for problem in error.errors():
        loc = [str(part) for part in problem["loc"]]
        model: type[BaseModel] = Settings
        if variables is not None or loc[:1] == ["vault"]:
            model, loc = VaultSettings, loc[1:] if loc[:1] == ["vault"] else loc
        field = loc[0] if loc else ""
        info = model.model_fields.get(field)
        if model is VaultSettings:
            variable, value = (variables or vault_variables(os.environ)).get(
                field, (f"AMEIDE_VAULT_{field.upper()}", problem.get("input"))
            )
        else:
            variable = f"AMEIDE_{field.upper()}"
            value = os.environ.get(variable, problem.get("input"))
        if not field:
            problems.append(problem["msg"].removeprefix("Value error, "))
            continue
        secret = info is not None and "SecretStr" in str(info.annotation)
        shown = "" if secret else f"={value!r}"
        meaning = f" ({info.description.rstrip('.')})" if info and info.description else ""
        said = problem["msg"].removeprefix("Value error, ")
        problems.append(f"{variable}{shown}: {said[:1].lower()}{said[1:]}{meaning}")
    return "; ".join(problems)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The settings of this process, read and checked once; SettingInvalid names each bad
    variable, its value and what it must be."""
    try:
        return Settings()
    except ValidationError as e:
        raise SettingInvalid(
            _described(e) + ": set a valid value, or unset the variable for the default"
        ) from None
