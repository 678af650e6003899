"""The SQL tree as Flyway sees it: per database its migrations, latest version and checksums.

Checksums are computed exactly as Flyway computes them, so that a database whose history already
matches the catalog can be recognised without starting a JVM: CRC-32 over the UTF-8 bytes of every
line without its terminator (Java's `BufferedReader.readLine`, which splits on LF, CR and CRLF
only), a leading byte-order mark dropped, the result read as a signed 32-bit integer. Repeatable
migrations are checksummed after placeholder replacement, so a changed placeholder value reapplies
them, as Flyway does.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from functools import total_ordering
from pathlib import Path

from ameide_migrate.errors import CatalogError, UnknownDatabase

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

_VERSIONED = re.compile(r"^V(?P<version>[0-9][0-9._]*?)__(?P<description>.+)\.sql$")
_REPEATABLE = re.compile(r"^R__(?P<description>.+)\.sql$")
_PLACEHOLDER = re.compile(r"\$\{([^}]+)\}")
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


@dataclass(frozen=True)
class DatabaseCatalog:
    name: str
    directory: Path
    migrations: tuple[Migration, ...]

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

    def select(self, names: list[str] | tuple[str, ...] | None) -> list[DatabaseCatalog]:
        """The databases asked for, in catalog order; all of them when none is named."""
        if not names:
            return list(self.databases.values())
        unknown = [n for n in names if n not in self.databases]
        if unknown:
            raise UnknownDatabase(unknown, self.databases)
        return [db for name, db in self.databases.items() if name in set(names)]


def flyway_checksum(data: bytes) -> int:
    """Flyway's checksum of a file's bytes (UTF-8)."""
    text = data.decode("utf-8")
    return _checksum_of_text(text)


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


def _replace_placeholders(
    text: str, placeholders: Mapping[str, str], script: str, table: str
) -> str | None:
    # Flyway's own placeholders that do not depend on the connection; the others (database,
    # user, timestamp...) are known only to Flyway at run time.
    known = {**placeholders, "flyway:filename": script, "flyway:table": table}
    unresolved = False

    def substitute(match: re.Match[str]) -> str:
        nonlocal unresolved
        name = match.group(1)
        if name in known:
            return known[name]
        unresolved = True
        return match.group(0)

    replaced = _PLACEHOLDER.sub(substitute, text)
    return None if unresolved else replaced


def load_catalog(
    root: Path,
    *,
    placeholders: Mapping[str, str] | None = None,
    table: str = "flyway_schema_history",
    order: tuple[str, ...] = PLATFORM_DATABASES,
) -> Catalog:
    """Read every database folder under `root`; the platform's databases come first, in order."""
    root = root.resolve()
    if not root.is_dir():
        raise CatalogError(
            f"SQL tree {root} does not exist: point AMEIDE_SQL_DIR at the folder "
            "that holds one folder of Flyway migrations per database"
        )
    folders = sorted(p for p in root.iterdir() if p.is_dir())
    rank = {name: i for i, name in enumerate(order)}
    folders.sort(key=lambda p: (rank.get(p.name, len(rank)), p.name))
    databases = {p.name: _load_database(p, placeholders or {}, table) for p in folders}
    keys: dict[str, str] = {}
    for name in databases:
        key = name.upper().replace("-", "_")
        if key in keys:
            raise CatalogError(
                f"databases {keys[key]} and {name} share the secret keys {key}_DATABASE_*: "
                "rename one of the folders"
            )
        keys[key] = name
    return Catalog(root=root, databases=databases)


def _load_database(directory: Path, placeholders: Mapping[str, str], table: str) -> DatabaseCatalog:
    migrations: list[Migration] = []
    seen_versions: dict[Version, str] = {}
    for path in sorted(directory.rglob("*.sql")):
        script = path.relative_to(directory).as_posix()
        name = path.name
        data = path.read_bytes()
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise CatalogError(
                f"database {directory.name}: {script} is not UTF-8 (byte {e.start}): "
                "save it as UTF-8, the encoding Flyway reads"
            ) from None
        if versioned := _VERSIONED.match(name):
            version = Version.parse(versioned["version"])
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
                    versioned["description"].replace("_", " "),
                    script,
                    path,
                    flyway_checksum(data),
                )
            )
        elif repeatable := _REPEATABLE.match(name):
            text = data.decode("utf-8")
            replaced = _replace_placeholders(text, placeholders, name, table)
            migrations.append(
                Migration(
                    Kind.REPEATABLE,
                    None,
                    repeatable["description"].replace("_", " "),
                    script,
                    path,
                    None if replaced is None else _checksum_of_text(replaced),
                )
            )
        else:
            raise CatalogError(
                f"database {directory.name}: {script} is not a Flyway migration name; "
                "use V<version>__<description>.sql or R__<description>.sql"
            )
    versioned_sorted = sorted(
        (m for m in migrations if m.kind is Kind.VERSIONED),
        key=lambda m: m.version or Version((0,)),
    )
    repeatables_sorted = sorted(
        (m for m in migrations if m.kind is Kind.REPEATABLE), key=lambda m: m.description
    )
    return DatabaseCatalog(directory.name, directory, tuple(versioned_sorted + repeatables_sorted))
