"""The one settings object: every knob comes in here, from `AMEIDE_*` variables or arguments."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import AliasChoices, Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from ameide_migrate.errors import SettingInvalid
from ameide_migrate.vault import VaultConnection

if TYPE_CHECKING:
    from ameide_migrate.environments import VaultLayout

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
    flyway_version: str = DEFAULT_FLYWAY_VERSION
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
    lock_timeout_seconds: int = Field(
        default=30,
        ge=1,
        description="How long a migration may wait for a table lock before it fails with a "
        "lock wait, which is retried.",
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

    # Vault, read from the variables Vault's own tools use, or AMEIDE_VAULT_*. The Prefect block
    # `vault-<env>` (blocks/vault.py) takes precedence where it is registered.
    vault_addr: str | None = Field(
        default=None, validation_alias=AliasChoices("AMEIDE_VAULT_ADDR", "VAULT_ADDR")
    )
    vault_token: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("AMEIDE_VAULT_TOKEN", "VAULT_TOKEN")
    )
    vault_namespace: str | None = Field(
        default=None, validation_alias=AliasChoices("AMEIDE_VAULT_NAMESPACE", "VAULT_NAMESPACE")
    )
    vault_cacert: Path | None = Field(
        default=None, validation_alias=AliasChoices("AMEIDE_VAULT_CACERT", "VAULT_CACERT")
    )
    vault_kv_mount: str = "secret"
    vault_path_template: str = "{environment}/databases/{database}"
    vault_auth_method: Literal["token", "approle", "kubernetes"] = "token"
    vault_role_id: str | None = None
    vault_secret_id: SecretStr | None = None
    vault_kubernetes_role: str | None = None
    vault_kubernetes_mount: str = "kubernetes"

    def vault_connection(self, layout: VaultLayout | None = None) -> VaultConnection | None:
        """The Vault of VAULT_ADDR, laid out as the environment's file says, unless an
        AMEIDE_VAULT_* variable says otherwise."""
        if not self.vault_addr:
            return None

        def chosen(setting: str, declared: str) -> object:
            in_file = None if layout is None else getattr(layout, declared)
            if in_file is None or setting in self.model_fields_set:
                return getattr(self, setting)
            return in_file

        return VaultConnection(
            address=self.vault_addr,
            namespace=self.vault_namespace,
            kv_mount=str(chosen("vault_kv_mount", "kv_mount")),
            path_template=str(chosen("vault_path_template", "path_template")),
            auth_method=chosen("vault_auth_method", "auth_method"),  # type: ignore[arg-type]
            token=self.vault_token,
            role_id=self.vault_role_id,
            secret_id=self.vault_secret_id,
            kubernetes_role=chosen("vault_kubernetes_role", "kubernetes_role"),  # type: ignore[arg-type]
            kubernetes_mount=str(chosen("vault_kubernetes_mount", "kubernetes_mount")),
            ca_cert_path=self.vault_cacert,
            timeout_seconds=float(self.connect_timeout_seconds),
        )

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


def _variable_of(field_name: str) -> str:
    """The environment variable a person sets for a field: its alias's first choice, or
    AMEIDE_<FIELD>."""
    alias = Settings.model_fields[field_name].validation_alias
    if isinstance(alias, AliasChoices) and isinstance(alias.choices[0], str):
        return alias.choices[0]
    return f"AMEIDE_{field_name.upper()}"


def _described(error: ValidationError) -> str:
    problems = []
    for problem in error.errors():
        field = str(problem["loc"][0]) if problem["loc"] else ""
        variable = _variable_of(field) if field in Settings.model_fields else field
        value = os.environ.get(variable, problem.get("input"))
        secret = field in Settings.model_fields and "SecretStr" in str(
            Settings.model_fields[field].annotation
        )
        shown = "" if secret else f"={value!r}"
        doc = Settings.model_fields[field].description if field in Settings.model_fields else None
        meaning = f" ({doc.rstrip('.')})" if doc else ""
        problems.append(f"{variable}{shown}: {problem['msg'].lower()}{meaning}")
    return "; ".join(problems) + ": set a valid value, or unset the variable for the default"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The settings of this process, read and checked once; SettingInvalid names each bad
    variable, its value and what it must be."""
    try:
        return Settings()
    except ValidationError as e:
        raise SettingInvalid(_described(e)) from None
