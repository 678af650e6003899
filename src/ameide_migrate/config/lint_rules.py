"""The lint's rules and their levels: squawk's rules and the lint's own, the default level of
each, and the `[lint]` and `[environments.NAME.lint]` tables of ameide.toml laid over them."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError

from ameide_migrate.core import locking
from ameide_migrate.core.findings import Level

# The rules of squawk 2.70, as its --exclude and --include accept them.
SQUAWK_RULES: tuple[str, ...] = (
    "adding-field-with-default",
    "adding-foreign-key-constraint",
    "adding-not-nullable-field",
    "adding-required-field",
    "adding-serial-primary-key-field",
    "ban-add-column",
    "ban-add-composite-attribute",
    "ban-add-enum-value",
    "ban-alter-database-options",
    "ban-alter-domain-with-add-constraint",
    "ban-alter-extension",
    "ban-alter-function-options",
    "ban-alter-generated-expression",
    "ban-alter-identity",
    "ban-alter-policy-condition",
    "ban-alter-policy-roles",
    "ban-alter-role-options",
    "ban-alter-row-level-security",
    "ban-alter-sequence-values",
    "ban-alter-system-options",
    "ban-alter-view-options",
    "ban-char-field",
    "ban-concurrent-index-creation-in-transaction",
    "ban-create-domain-with-constraint",
    "ban-create-policy",
    "ban-detach-inheritance",
    "ban-disable-trigger",
    "ban-drop-column",
    "ban-drop-constraint",
    "ban-drop-database",
    "ban-drop-domain",
    "ban-drop-extension",
    "ban-drop-function",
    "ban-drop-generated-expression",
    "ban-drop-index",
    "ban-drop-not-null",
    "ban-drop-policy",
    "ban-drop-schema",
    "ban-drop-sequence",
    "ban-drop-table",
    "ban-drop-type",
    "ban-drop-view",
    "ban-new-write-restriction",
    "ban-replace-view-function",
    "ban-replica-identity",
    "ban-revoke",
    "ban-set-default",
    "ban-set-schema",
    "ban-truncate-cascade",
    "ban-uncommitted-transaction",
    "changing-column-type",
    "constraint-missing-not-valid",
    "disallowed-unique-constraint",
    "identifier-too-long",
    "prefer-bigint-over-int",
    "prefer-bigint-over-smallint",
    "prefer-identity",
    "prefer-repack",
    "prefer-robust-stmts",
    "prefer-text-field",
    "prefer-timestamp-tz",
    "renaming-column",
    "renaming-object",
    "renaming-table",
    "require-concurrent-index-creation",
    "require-concurrent-index-deletion",
    "require-concurrent-partition-detach",
    "require-concurrent-reindex",
    "require-enum-value-ordering",
    "require-lock-timeout",
    "require-statement-timeout",
    "require-table-schema",
    "require-timeout-settings",
    "transaction-nesting",
)
SYNTAX_ERROR = "syntax-error"
"""squawk could not parse a statement, so nothing in it was checked."""
MIXED_TRANSACTION = "ban-mixed-non-transactional"
"""A statement PostgreSQL refuses inside a transaction shares its file with other statements."""
NON_TRANSACTIONAL_IN_TRANSACTION = "ban-non-transactional-in-transaction"
"""A statement PostgreSQL refuses inside a transaction sits in an explicit BEGIN ... COMMIT
(squawk's ban-concurrent-index-creation-in-transaction reports CREATE INDEX CONCURRENTLY)."""
OWN_RULES = (MIXED_TRANSACTION, NON_TRANSACTIONAL_IN_TRANSACTION, SYNTAX_ERROR)
RULES: frozenset[str] = frozenset(SQUAWK_RULES) | frozenset(OWN_RULES)

_E, _W, _OFF = Level.ERROR, Level.WARNING, Level.OFF
DEFAULT_LEVELS: Mapping[str, Level] = {
    # Locks a busy table for as long as a scan or a rewrite takes, or fails on existing rows.
    "require-concurrent-index-creation": _E,
    "require-concurrent-index-deletion": _E,
    "require-concurrent-reindex": _E,
    "require-concurrent-partition-detach": _E,
    "constraint-missing-not-valid": _E,
    "adding-foreign-key-constraint": _E,
    "disallowed-unique-constraint": _E,
    "adding-field-with-default": _E,
    "adding-not-nullable-field": _E,
    "adding-required-field": _E,
    "adding-serial-primary-key-field": _E,
    "changing-column-type": _E,
    # Breaks the clients running against the table, or destroys data.
    "renaming-column": _E,
    "renaming-table": _E,
    "ban-drop-column": _E,
    "ban-drop-table": _E,
    "ban-drop-database": _E,
    "ban-truncate-cascade": _E,
    # Refused by PostgreSQL or Flyway, or breaks the transaction Flyway runs a migration in.
    "ban-concurrent-index-creation-in-transaction": _E,
    "transaction-nesting": _E,
    "ban-uncommitted-transaction": _E,
    MIXED_TRANSACTION: _E,
    NON_TRANSACTIONAL_IN_TRANSACTION: _E,
    SYNTAX_ERROR: _E,
    # Style: a site that wants them says so.
    "prefer-bigint-over-int": _OFF,
    "prefer-bigint-over-smallint": _OFF,
    "prefer-identity": _OFF,
    "prefer-text-field": _OFF,
    "prefer-timestamp-tz": _OFF,
    "ban-char-field": _OFF,
    # Every Flyway connection of a run already sets lock_timeout (AMEIDE_LOCK_TIMEOUT_SECONDS).
    "require-lock-timeout": _OFF,
    "require-statement-timeout": _OFF,
    "require-timeout-settings": _OFF,
}
"""Every other rule is a warning where squawk reports it by default (its opt-in rules stay
off unless a level is given)."""


class LintRules(BaseModel):
    """The level of each rule, over `DEFAULT_LEVELS`: `[lint]` of ameide.toml for every
    environment, `[environments.NAME.lint]` for one."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rules: dict[str, Level] = Field(
        default_factory=dict,
        description="Rule name to error, warning or off: squawk's rules "
        "(https://squawkhq.com/docs/rules) and " + ", ".join(OWN_RULES) + ".",
    )
    max_level: Level | None = Field(
        default=None,
        description="No finding is reported above this level here: `warning` lets every "
        "migration run and still shows what the lint found (the local default's own database).",
    )
    large_table_rows: int | None = Field(
        default=None,
        gt=0,
        description="From this many rows (default 100000) a table is large: a lock rule on it is "
        "at its full level; on a smaller one, at most a warning; on an empty one, nothing.",
    )
    large_table_mb: float | None = Field(
        default=None,
        gt=0,
        description="From this size in MB (default 100; heap, indexes and TOAST) a table is large.",
    )

    @field_validator("rules", mode="before")
    @classmethod
    def _known_rules(cls, value: Any) -> Any:
        if isinstance(value, Mapping):
            for name in value:
                if name not in RULES:
                    raise PydanticCustomError(
                        "unknown_lint_rule",
                        "unknown rule '{rule}'{hint}; the rules: {valid}",
                        {"rule": name, "hint": _hint(str(name)), "valid": ", ".join(sorted(RULES))},
                    )
        return value

    def level(self, rule: str) -> Level:
        level = self.rules.get(rule, DEFAULT_LEVELS.get(rule, Level.WARNING))
        if self.max_level is not None and _SEVERITY[level] > _SEVERITY[self.max_level]:
            return self.max_level
        return level

    @property
    def large_table(self) -> locking.LargeTable:
        return locking.LargeTable(
            self.large_table_rows or DEFAULT_LARGE_TABLE_ROWS,
            self.large_table_mb or DEFAULT_LARGE_TABLE_MB,
        )

    def over(self, base: LintRules) -> LintRules:
        """These levels laid over `base`'s (an environment's over the file's defaults)."""
        return LintRules(
            rules={**base.rules, **self.rules},
            max_level=self.max_level or base.max_level,
            large_table_rows=self.large_table_rows or base.large_table_rows,
            large_table_mb=self.large_table_mb or base.large_table_mb,
        )


DEFAULT_LARGE_TABLE_ROWS = 100_000
DEFAULT_LARGE_TABLE_MB = 100.0


_SEVERITY = {Level.OFF: 0, Level.WARNING: 1, Level.ERROR: 2}


def _hint(name: str) -> str:
    close = difflib.get_close_matches(name, sorted(RULES), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""
