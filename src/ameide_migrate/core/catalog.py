"""The SQL tree as Flyway sees it: per database its migrations, latest version and checksums.

Checksums are computed exactly as Flyway computes them, so that a database whose history already
matches the catalog can be recognised without starting a JVM: CRC-32 over the UTF-8 bytes of every
line without its terminator (Java's `BufferedReader.readLine`, which splits on LF, CR and CRLF
only), a leading byte-order mark dropped, the result read as a signed 32-bit integer. Repeatable
migrations are checksummed after placeholder replacement, so a changed placeholder value reapplies
them, as Flyway does.

Each database is read with its Flyway configuration (`flyway_config`): the migration prefixes,
separator and suffixes, the files' encoding, the placeholders with their prefix and suffix, and
the history table, as Flyway itself will read them.
"""

from __future__ import annotations

import hashlib
import re
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from functools import total_ordering
from pathlib import Path

from ameide_migrate.core import flyway_config
from ameide_migrate.core.errors import CatalogError, UnknownDatabase
from ameide_migrate.core.flyway_config import FlywayConfig

PLATFORM_DATABASES = (
    "platform",
    "agents",
    "graph",
    "transformation",
    "threads",
    "agents_runtime",
    "workflows",
    "langgraph",
)

_VERSION = re.compile(r"[0-9][0-9._]*")
_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_BOM = "\ufeff"


@total_ordering
@dataclass(frozen=True)
class Version:
    """A Flyway version: dot- or underscore-separated integers, compared numerically."""

    parts: tuple[int, ...]

    @classmethod
    def parse(cls, text: str) -> Version:
        pieces = [p for p in re.split(r"[._]", text) if p != ""]
        if not pieces or not all(p.isdigit() for p in pieces):
            raise ValueError(f"not a Flyway version: {text!r}")
        parts = [int(p) for p in pieces]
        while len(parts) > 1 and parts[-1] == 0:
            parts.pop()
        return cls(tuple(parts))

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Version):
            return NotImplemented
        return self.parts < other.parts

    def __str__(self) -> str:
        return ".".join(str(p) for p in self.parts)


class Kind(StrEnum):
    VERSIONED = "versioned"
    REPEATABLE = "repeatable"


@dataclass(frozen=True)
class Migration:
    kind: Kind
    version: Version | None
    description: str
    script: str
    path: Path
    checksum: int | None
    """None when a placeholder's value is only known to Flyway at run time."""
    sha256: str
    """Of the file's bytes: what an approval holds for. Flyway's checksum is blind to line
    breaks and placeholders' values, and a CRC-32 is easy to match with other content."""
    encoding: str = "utf-8"
    """The file's encoding, as its Flyway configuration gives it."""

    def text(self) -> str:
        """The script as Flyway reads it: in its configured encoding, a byte-order mark dropped."""
        return self.path.read_bytes().decode(self.encoding).removeprefix(_BOM)


@dataclass(frozen=True)
class DatabaseCatalog:
    name: str
    directory: Path
    migrations: tuple[Migration, ...]
    flyway: FlywayConfig = field(default_factory=FlywayConfig)
    """Its Flyway settings, as its flyway.toml or flyway.conf and FLYWAY_* variables give them."""

    @property
    def versioned(self) -> tuple[Migration, ...]:
        return tuple(m for m in self.migrations if m.kind is Kind.VERSIONED)

    @property
    def repeatables(self) -> tuple[Migration, ...]:
        return tuple(m for m in self.migrations if m.kind is Kind.REPEATABLE)

    @property
    def latest_version(self) -> Version | None:
        versions = [m.version for m in self.versioned if m.version is not None]
        return max(versions) if versions else None


@dataclass(frozen=True)
class Catalog:
    root: Path
    databases: Mapping[str, DatabaseCatalog] = field(default_factory=dict)
    fleets: Mapping[str, str] = field(default_factory=dict)
    """The fleets whose templates the tree holds, by template: their targets' databases
    (`<template>_<target>`) are no databases of the tree."""

    def select(self, names: list[str] | tuple[str, ...] | None) -> list[DatabaseCatalog]:
        """The databases asked for, in catalog order; all of them when none is named. An
        unknown name that is a fleet's target's database is refused naming the fleet's form."""
        if not names:
            return list(self.databases.values())
        unknown = [n for n in names if n not in self.databases]
        if unknown:
            targets = {
                name: (fleet, name[len(template) + 1 :])
                for name in unknown
                for template, fleet in self.fleets.items()
                if name.startswith(f"{template}_") and len(name) > len(template) + 1
            }
            raise UnknownDatabase(unknown, self.databases, self.root, targets)
        return [db for name, db in self.databases.items() if name in set(names)]


def _checksum_of_text(text: str) -> int:
    if text.startswith(_BOM):
        text = text[1:]
    lines = _LINE_BREAK.split(text)
    if lines and lines[-1] == "":
        lines.pop()
    crc = 0
    for line in lines:
        crc = zlib.crc32(line.encode("utf-8"), crc)
    return crc - (1 << 32) if crc >= (1 << 31) else crc


def _replace_placeholders(text: str, config: FlywayConfig, script: str) -> str | None:
    if not config.placeholder_replacement:
        return text
    # Flyway's own placeholders that do not depend on the connection; the others (database,
    # user, timestamp...) are known only to Flyway at run time. Flyway matches names
    # case-insensitively.
    own = f"flyway{config.placeholder_separator}"
    known = {k.lower(): v for k, v in config.placeholders.items()}
    known |= {f"{own}filename": script, f"{own}table": config.table}
    if config.settings.get("defaultSchema"):
        known[f"{own}defaultschema"] = config.settings["defaultSchema"]
    pattern = re.compile(
        re.escape(config.placeholder_prefix) + "(.+?)" + re.escape(config.placeholder_suffix)
    )
    unresolved = False

    def substitute(match: re.Match[str]) -> str:
        nonlocal unresolved
        name = match.group(1).lower()
        if name in known:
            return known[name]
        unresolved = True
        return match.group(0)

    replaced = pattern.sub(substitute, text)
    return None if unresolved else replaced


# A database's folder name becomes a PostgreSQL database and its owner role `<name>_owner` (63
# bytes at most, longer ones PostgreSQL cuts short), a segment of its Vault path and the
# `<NAME>_DATABASE_*` keys: lowercase letters, digits, `_` and `-`, starting with a letter.
_DATABASE_NAME = re.compile(r"[a-z][a-z0-9_-]{0,56}")


def _check_database_name(folder: Path) -> None:
    if not _DATABASE_NAME.fullmatch(folder.name):
        raise CatalogError(
            f"database folder {folder}: {folder.name!r} cannot name a database: PostgreSQL "
            "roles, Vault paths and secret keys are made of it. Rename the folder with lowercase "
            "letters, digits, _ and -, starting with a letter, at most 57 characters"
        )


def key_prefix(database: str) -> str:
    """The prefix of a database's names outside the tree: `<PREFIX>_DATABASE_URL` and the
    engine's per-database environment."""
    return database.upper().replace("-", "_")


def load_catalog(
    root: Path,
    *,
    placeholders: Mapping[str, str] | None = None,
    table: str = "flyway_schema_history",
    order: tuple[str, ...] = PLATFORM_DATABASES,
    environment: str | None = None,
    variables: Mapping[str, str] | None = None,
) -> Catalog:
    """Read every database folder under `root`; the platform's databases come first, in order.

    `placeholders` are the environment's own (from ameide.toml); each folder's Flyway files,
    the root's and `variables` (FLYWAY_*) are laid over them as Flyway would.
    """
    root = root.resolve()
    if not root.is_dir():
        raise CatalogError(
            f"SQL tree {root} does not exist: point AMEIDE_SQL_DIR at the folder "
            "that holds one folder of Flyway migrations per database"
        )
    # Hidden folders (.git, an editor's) hold no migrations, as in every tool that walks a tree.
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    for folder in folders:
        _check_database_name(folder)
    rank = {name: i for i, name in enumerate(order)}
    folders.sort(key=lambda p: (rank.get(p.name, len(rank)), p.name))
    databases = {
        p.name: _load_database(
            p,
            flyway_config.resolve(
                root,
                p,
                environment=environment,
                environment_placeholders=placeholders or {},
                variables=variables or {},
                default_table=table,
            ),
        )
        for p in folders
    }
    keys: dict[str, str] = {}
    for name in databases:
        key = key_prefix(name)
        if key in keys:
            raise CatalogError(
                f"databases {keys[key]} and {name} share the secret keys {key}_DATABASE_*: "
                "rename one of the folders"
            )
        keys[key] = name
    return Catalog(root=root, databases=databases)


def load_folder(
    directory: Path,
    *,
    table: str = "flyway_schema_history",
    variables: Mapping[str, str] | None = None,
) -> DatabaseCatalog | None:
    """A folder of Flyway migrations outside the SQL tree (a team's own set, one a pull request
    brings), read as Flyway reads it: its own flyway.toml or flyway.conf, its migrations in
    Flyway's order. None when no file in it is named as a Flyway migration."""
    directory = directory.resolve()
    config = flyway_config.resolve(
        directory,
        None,
        environment=None,
        environment_placeholders={},
        variables=variables or {},
        default_table=table,
    )
    if not any(_parse_name(p.name, config) for p in directory.rglob("*") if p.is_file()):
        return None
    return _load_database(directory, config)


def _parse_name(name: str, config: FlywayConfig) -> tuple[str, str, str] | None:
    """(prefix, version, description) of a migration's file name, as Flyway splits it; None when
    the name is not a migration's."""
    suffix = next((s for s in config.sql_migration_suffixes if name.endswith(s)), None)
    if suffix is None:
        return None
    stem = name[: -len(suffix)]
    separator = config.sql_migration_separator
    for prefix in (config.repeatable_sql_migration_prefix, config.sql_migration_prefix):
        if not stem.startswith(prefix) or separator not in stem[len(prefix) :]:
            continue
        version, description = stem[len(prefix) :].split(separator, 1)
        repeatable = prefix == config.repeatable_sql_migration_prefix
        if description and (version == "" if repeatable else _VERSION.fullmatch(version)):
            return prefix, version, description.replace("_", " ")
    return None


def _load_database(directory: Path, config: FlywayConfig) -> DatabaseCatalog:
    migrations: list[Migration] = []
    seen_versions: dict[Version, str] = {}
    suffixes = config.sql_migration_suffixes
    paths = (p for p in directory.rglob("*") if p.is_file() and p.name.endswith(suffixes))
    for path in sorted(paths):
        script = path.relative_to(directory).as_posix()
        name = path.name
        data = path.read_bytes()
        try:
            text = data.decode(config.encoding)
        except UnicodeDecodeError as e:
            raise CatalogError(
                f"database {directory.name}: {script} is not {config.encoding} (byte {e.start}): "
                "save it in that encoding, or set encoding in its flyway.toml"
            ) from None
        except LookupError:
            raise CatalogError(
                f"database {directory.name}: encoding {config.encoding!r} "
                f"({', '.join(map(str, config.files)) or 'FLYWAY_ENCODING'}) is not an encoding: "
                "use a Java charset name such as UTF-8 or ISO-8859-1"
            ) from None
        parsed = _parse_name(name, config)
        if parsed is not None and parsed[0] == config.sql_migration_prefix:
            version = Version.parse(parsed[1])
            if version in seen_versions:
                raise CatalogError(
                    f"database {directory.name}: version {version} appears twice "
                    f"({seen_versions[version]} and {script}); renumber one of them"
                )
            seen_versions[version] = script
            migrations.append(
                Migration(
                    Kind.VERSIONED,
                    version,
                    parsed[2],
                    script,
                    path,
                    _checksum_of_text(text),
                    hashlib.sha256(data).hexdigest(),
                    config.encoding,
                )
            )
        elif parsed is not None:
            replaced = _replace_placeholders(text, config, name)
            migrations.append(
                Migration(
                    Kind.REPEATABLE,
                    None,
                    parsed[2],
                    script,
                    path,
                    None if replaced is None else _checksum_of_text(replaced),
                    hashlib.sha256(data).hexdigest(),
                    config.encoding,
                )
            )
        else:
            v, r, sep = (
                config.sql_migration_prefix,
                config.repeatable_sql_migration_prefix,
                config.sql_migration_separator,
            )
            raise CatalogError(
                f"database {directory.name}: {script} is not a Flyway migration name; "
                f"use {v}<version>{sep}<description>{suffixes[0]} or "
                f"{r}{sep}<description>{suffixes[0]}"
            )
    versioned_sorted = sorted(
        (m for m in migrations if m.kind is Kind.VERSIONED),
        key=lambda m: m.version or Version((0,)),
    )
    repeatables_sorted = sorted(
        (m for m in migrations if m.kind is Kind.REPEATABLE), key=lambda m: m.description
    )
    return DatabaseCatalog(
        directory.name, directory, tuple(versioned_sorted + repeatables_sorted), config
    )


def pinned_copy(db: DatabaseCatalog, into: Path) -> DatabaseCatalog:
    """`db`'s folder as it is now, its migrations copied into a folder of their own under `into`
    and read back from there: a run whose Flyway reads the copy applies the very bytes its plan
    was made of, whatever happens to the SQL tree after the copy. `into` should be private to
    the run."""
    copy = into / db.name
    suffixes = db.flyway.sql_migration_suffixes
    for path in sorted(p for p in db.directory.rglob("*") if p.is_file()):
        if not path.name.endswith(suffixes):
            continue
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            continue  # removed since the folder was listed: the copy is the tree without it
        target = copy / path.relative_to(db.directory)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    copy.mkdir(parents=True, exist_ok=True)
    return _load_database(copy, db.flyway)
