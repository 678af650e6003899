"""The fleets ameide.toml declares (`[fleets.NAME]`): a template, its targets and its waves, each
checked as it is read; what a fleet run does with them is `fleet`."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ameide_migrate.core.errors import FleetInvalid

_TARGET = re.compile(r"[a-z0-9][a-z0-9_-]*")
_MAX_DATABASE_NAME = 57
"""As for the tree's folders: the `_owner` role must stay within PostgreSQL's 63 characters."""


class Waves(BaseModel):
    """How a fleet's waves grow, and when they stop."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    canary: int = Field(default=1, ge=1, description="Targets in the first wave.")
    canary_targets: tuple[str, ...] | None = Field(
        default=None, description="The first wave by name, instead of the first `canary`."
    )
    growth: float = Field(default=4, gt=1, description="Each wave this many times the last.")
    max_wave: int | None = Field(default=None, ge=1, description="No wave larger than this.")
    parallel: int = Field(
        default=8, ge=1, description="Targets migrated at once in a shard of a wave."
    )
    shards: int = Field(
        default=1,
        ge=1,
        description="A wave split into at most this many shards, each a flow run of its own: "
        "on a deployment, one Kubernetes Job each.",
    )
    shard_timeout_minutes: float = Field(
        default=60,
        gt=0,
        description="A shard run of a deployment not ended by then is cancelled (its worker "
        "stops it), its targets read back from their histories once it has stopped.",
    )
    bake_seconds: float = Field(default=0, ge=0, description="The wait between two waves.")
    halt_failures: int = Field(
        default=0, ge=0, description="More failed targets than this in a wave halts the fleet."
    )
    halt_failure_percent: float | None = Field(
        default=None, gt=0, le=100, description="More than this % of a wave failed halts it."
    )
    halt_p95_seconds: float | None = Field(
        default=None, gt=0, description="A wave whose p95 duration is above this halts it."
    )
    quarantine_max: int = Field(
        default=1,
        ge=0,
        description="Targets the gate finds unreachable (server down, CONNECT refused) are "
        "quarantined, the waves go on without them, up to this many; more stops the fleet "
        "before it touches any.",
    )


class Fleet(BaseModel):
    """One `[fleets.NAME]` table of ameide.toml."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    template: str = Field(description="The folder of the SQL tree every target gets.")
    targets: tuple[str, ...] | None = None
    targets_file: str | None = Field(
        default=None, description="One target a line, relative to ameide.toml; # comments."
    )
    targets_query: str | None = Field(
        default=None, description="A query whose first column names the targets."
    )
    registry: str | None = Field(
        default=None, description="The database of the tree `targets_query` runs on."
    )
    vault_path: str | None = Field(
        default=None,
        description="Where each target's secret lives in Vault, over the environment's "
        "path_template: {environment}, {target}, {database}, {template}.",
    )
    waves: Waves = Waves()

    @model_validator(mode="after")
    def _one_vault_path_a_target(self) -> Self:
        if self.vault_path is None:
            return self
        try:
            self.vault_path.format(environment="e", target="t", database="d", template="x")
        except (KeyError, IndexError, ValueError) as e:
            raise ValueError(
                f"vault_path {self.vault_path!r} names {e}: it may name {{environment}}, "
                "{target}, {database} and {template}"
            ) from None
        if "{target}" not in self.vault_path and "{database}" not in self.vault_path:
            raise ValueError(
                f"vault_path {self.vault_path!r} names no {{target}} (or {{database}}): every "
                "target would read the same secret"
            )
        example = self.vault_path.format(
            environment="staging", target="acme", database="tenant_acme", template="tenant"
        )
        if example.startswith("/") or any(p in ("", ".", "..") for p in example.split("/")):
            raise ValueError(
                f"vault_path {self.vault_path!r} makes paths such as {example!r}: a secret's "
                "path under the KV mount has no leading or trailing /, no empty part and no "
                "'.' or '..'"
            )
        return self

    def vault_path_of(self, environment: str, database: str) -> str | None:
        """Where this fleet's target `database` keeps its secret, when the fleet says so."""
        if self.vault_path is None or not database.startswith(self.database_of("")):
            return None
        return self.vault_path.format(
            environment=environment,
            target=self.target_of(database),
            database=database,
            template=self.template,
        )

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        given = [
            key
            for key in ("targets", "targets_file", "targets_query")
            if getattr(self, key) is not None
        ]
        if len(given) != 1:
            raise ValueError(
                "give its targets one way: targets = [...], targets_file = FILE or "
                f"targets_query = SQL (found {', '.join(given) or 'none'})"
            )
        if self.targets_query is not None and self.registry is None:
            raise ValueError("targets_query needs registry = the database of the tree it runs on")
        return self

    def database_of(self, target: str) -> str:
        return f"{self.template}_{target}"

    def target_of(self, database: str) -> str:
        """The target whose database `database` is: `database_of` undone."""
        return database[len(self.database_of("")) :]


def checked_targets(fleet: Fleet, names: Sequence[str], source: str) -> list[str]:
    """The targets as given, in order; FleetInvalid naming a bad one, or those named more than
    once (a list that repeats a target is a mistake to show, not to tidy), and `source`."""
    repeated = sorted(name for name, times in Counter(names).items() if times > 1)
    if repeated:
        raise FleetInvalid(
            f"fleet {fleet.name}: {', '.join(repeated)} named more than once ({source}): name "
            "each target once"
        )
    found: list[str] = []
    for name in names:
        if not _TARGET.fullmatch(name):
            raise FleetInvalid(
                f"fleet {fleet.name}: target {name!r} ({source}) cannot name a database: use "
                "lowercase letters, digits, _ and -, starting with a letter or digit"
            )
        if len(fleet.database_of(name)) > _MAX_DATABASE_NAME:
            raise FleetInvalid(
                f"fleet {fleet.name}: target {name!r} ({source}) makes the database name "
                f"{fleet.database_of(name)!r}, over {_MAX_DATABASE_NAME} characters"
            )
        found.append(name)
    if not found:
        raise FleetInvalid(f"fleet {fleet.name}: {source} names no target")
    return found


def targets_of_file(fleet: Fleet, path: Path) -> list[str]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise FleetInvalid(
            f"fleet {fleet.name}: cannot read its targets_file {path}: {e.strerror}"
        ) from None
    names = [line.split("#", 1)[0].strip() for line in lines]
    return checked_targets(fleet, [n for n in names if n], str(path))
