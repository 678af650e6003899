"""Flyway's placeholders (`${name}`) replaced in a migration's text, its lines kept: the SQL that
PostgreSQL's parser, squawk and the lock reading see is the SQL Flyway runs, not a text the
parser rejects for its `${`."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ameide_migrate.core.catalog import DatabaseCatalog, Migration


@dataclass(frozen=True)
class PlaceholderSyntax:
    """How a migration writes its placeholders (Flyway's placeholderPrefix/Suffix/Separator)."""

    prefix: str = "${"
    suffix: str = "}"
    separator: str = ":"
    enabled: bool = True


def substitute(
    text: str,
    placeholders: Mapping[str, str],
    *,
    script: str = "",
    syntax: PlaceholderSyntax = PlaceholderSyntax(),
) -> str:
    """`text` with its placeholders replaced, keeping its lines: a value's line breaks become
    spaces. Flyway's own (`${flyway:defaultSchema}`, `${flyway:user}`, ...) get a stand-in when
    not given, and an unknown one its name, so that squawk can parse the statement."""
    if not syntax.enabled:
        return text
    own = f"flyway{syntax.separator}"
    known = {
        f"{own}defaultschema": "public",
        f"{own}user": "flyway",
        f"{own}database": "flyway",
        f"{own}timestamp": "2000-01-01 00:00:00",
        f"{own}filename": Path(script).name,
        f"{own}workingdirectory": ".",
        f"{own}table": "flyway_schema_history",
        f"{own}environment": "default",
    }
    known |= {name.lower(): value for name, value in placeholders.items()}
    pattern = re.compile(re.escape(syntax.prefix) + "(.+?)" + re.escape(syntax.suffix))

    def replace(match: re.Match[str]) -> str:
        value = known.get(match.group(1).lower(), match.group(1))
        return value.replace("\r\n", " ").replace("\n", " ").replace("\r", " ")

    return pattern.sub(replace, text)


def as_run(db: DatabaseCatalog, migration: Migration) -> str:
    """A catalog's migration as Flyway runs it: read in its encoding, its database's
    placeholders replaced in its syntax."""
    config = db.flyway
    syntax = PlaceholderSyntax(
        config.placeholder_prefix,
        config.placeholder_suffix,
        config.placeholder_separator,
        config.placeholder_replacement,
    )
    given = dict(config.placeholders)
    given.setdefault(f"flyway{syntax.separator}table", config.table)
    given.setdefault(f"flyway{syntax.separator}database", db.name)
    if config.schema:
        given[f"flyway{syntax.separator}defaultSchema"] = config.schema
    return substitute(migration.text(), given, script=migration.path.name, syntax=syntax)
