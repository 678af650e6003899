"""Flyway's own configuration, as Flyway users write it: `flyway.toml` (Flyway 10+) or the older
`flyway.conf`, at the SQL tree's root and in each database's folder, and `FLYWAY_*` variables.

Precedence is Flyway's, lowest first:
1. `[flyway]` (or `flyway.*` lines) of the root's file, then of the database folder's file (a later
   file wins, as Flyway's `-configFiles=a,b` does), then the files FLYWAY_CONFIG_FILES names;
2. the environment's own table: the placeholders `ameide.toml` gives the environment (with
   `${environment}`), then `[environments.<env>]` and `[environments.<env>.flyway]` of the same
   files, in the same order (Flyway lays the chosen environment over `[flyway]`);
3. `FLYWAY_*` variables (`FLYWAY_PLACEHOLDERS_<NAME>` included), over every file.

Why this is read in Python and not left to Flyway's loader inside the engine: the native catalog
must know before any JVM starts what Flyway will see (the placeholders of repeatables, the
migration prefixes, separator and suffixes, the encoding, the history table and its schema), so
that a database already up to date starts none. The resolved settings reach the engine as the
flat `flyway.*` map that Flyway's own `configure().configuration(Map)` reads, so Flyway itself
parses every value and refuses what it does not know; the tests run Flyway's command line on the
same files and compare what both record.
"""

from __future__ import annotations

import difflib
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ameide_migrate.core.errors import FlywayConfigInvalid

TOML_FILE = "flyway.toml"
CONF_FILE = "flyway.conf"
PREFIX = "flyway."

# The settings of Flyway 10's `[flyway]` table (its FlywayEnvironmentModel), by their flat names
# (`flyway.<name>` in a .conf file and in Flyway's configuration map).
_FLYWAY_KEYS = frozenset(
    {
        "baselineDescription",
        "baselineOnMigrate",
        "baselineVersion",
        "batch",
        "callbacks",
        "cleanDisabled",
        "cleanOnValidationError",
        "communityDBSupportEnabled",
        "createSchemas",
        "defaultSchema",
        "detectEncoding",
        "dryRunOutput",
        "encoding",
        "errorOverrides",
        "executeInTransaction",
        "failOnMissingLocations",
        "group",
        "ignoreMigrationPatterns",
        "installedBy",
        "kerberosConfigFile",
        "lockRetryCount",
        "loggers",
        "mixed",
        "outOfOrder",
        "outputQueryResults",
        "placeholderPrefix",
        "placeholderReplacement",
        "placeholderSeparator",
        "placeholderSuffix",
        "repeatableSqlMigrationPrefix",
        "reportEnabled",
        "reportFilename",
        "resolvers",
        "scriptPlaceholderPrefix",
        "scriptPlaceholderSuffix",
        "skipDefaultCallbacks",
        "skipDefaultResolvers",
        "skipExecutingMigrations",
        "sqlMigrationPrefix",
        "sqlMigrationSeparator",
        "sqlMigrationSuffixes",
        "stream",
        "table",
        "tablespace",
        "target",
        "undoSqlMigrationPrefix",
        "validateMigrationNaming",
        "validateOnMigrate",
    }
)
# The settings of an `[environments.<name>]` table (EnvironmentModel) that are also flat settings.
_ENVIRONMENT_KEYS = frozenset({"schemas", "connectRetries", "connectRetriesInterval", "initSql"})
# The connection: the secret gate's credentials of the database in the --env environment, so a
# file that sets it is refused (it would be ignored, and a run would go elsewhere than it says).
_CONNECTION = frozenset({"url", "user", "password"})
# Read but not passed on: the product connects to the database its folder names, and reads
# Flyway's answers as objects.
_PRODUCT_OWNED = frozenset(
    {
        "driver",
        "environment",
        "jarDirs",
        "provisioner",
        "environmentProvisionMode",
        "outputType",
        "outputProgress",
        "licenseKey",
        "configFileEncoding",
    }
)
_MAPS = frozenset({"placeholders", "jdbcProperties"})
_POSTGRESQL_LOCK = "postgresql.transactional.lock"
_FLAT_KEYS = _FLYWAY_KEYS | _ENVIRONMENT_KEYS | {_POSTGRESQL_LOCK}


def _env_name(key: str) -> str:
    return "FLYWAY_" + re.sub(r"(?<!^)(?=[A-Z])", "_", key).replace(".", "_").upper()


# FLYWAY_BASELINE_ON_MIGRATE -> baselineOnMigrate, as Flyway's ConfigUtils.convertKey maps them.
_VARIABLES = {_env_name(k): k for k in _FLAT_KEYS}


@dataclass(frozen=True)
class FlywayConfig:
    """One database's Flyway settings, resolved: what the catalog reads and the engine is given."""

    settings: Mapping[str, str] = field(default_factory=dict)
    """Flat settings without the `flyway.` prefix, placeholders apart."""
    placeholders: Mapping[str, str] = field(default_factory=dict)
    files: tuple[Path, ...] = ()
    default_table: str = "flyway_schema_history"

    def get(self, key: str, default: str) -> str:
        return self.settings.get(key, default)

    def flag(self, key: str, default: bool) -> bool:
        value = self.settings.get(key)
        return default if value is None else value.strip().lower() == "true"

    def listed(self, key: str, default: Sequence[str]) -> tuple[str, ...]:
        value = self.settings.get(key)
        if value is None:
            return tuple(default)
        return tuple(v.strip() for v in value.split(",") if v.strip())

    @property
    def table(self) -> str:
        return self.get("table", self.default_table)

    @property
    def schema(self) -> str | None:
        """The history table's schema, as Flyway picks it: defaultSchema, else the first of
        schemas; None when the connection's own (its search_path's first) is used."""
        return self.settings.get("defaultSchema") or next(iter(self.listed("schemas", ())), None)

    @property
    def encoding(self) -> str:
        return self.get("encoding", "UTF-8")

    @property
    def sql_migration_prefix(self) -> str:
        return self.get("sqlMigrationPrefix", "V")

    @property
    def repeatable_sql_migration_prefix(self) -> str:
        return self.get("repeatableSqlMigrationPrefix", "R")

    @property
    def sql_migration_separator(self) -> str:
        return self.get("sqlMigrationSeparator", "__")

    @property
    def sql_migration_suffixes(self) -> tuple[str, ...]:
        return self.listed("sqlMigrationSuffixes", (".sql",))

    @property
    def placeholder_replacement(self) -> bool:
        return self.flag("placeholderReplacement", True)

    @property
    def placeholder_prefix(self) -> str:
        return self.get("placeholderPrefix", "${")

    @property
    def placeholder_suffix(self) -> str:
        return self.get("placeholderSuffix", "}")

    @property
    def placeholder_separator(self) -> str:
        return self.get("placeholderSeparator", ":")

    def engine_settings(self) -> dict[str, str]:
        """Flyway's configuration map for the engine, placeholders and table apart (the request
        carries those)."""
        return {PREFIX + k: v for k, v in self.settings.items() if k != "table"}


@dataclass
class _Layer:
    settings: dict[str, str] = field(default_factory=dict)
    placeholders: dict[str, str] = field(default_factory=dict)
    sets_placeholders: bool = False
    """An environment's `placeholders` table replaces `[flyway.placeholders]` whole, as Flyway
    merges an environment over `[flyway]`."""

    def over(self, other: _Layer) -> None:
        self.settings.update(other.settings)
        self.placeholders.update(other.placeholders)
        self.sets_placeholders |= other.sets_placeholders


def resolve(
    root: Path,
    folder: Path | None,
    *,
    environment: str | None,
    environment_placeholders: Mapping[str, str],
    variables: Mapping[str, str],
    default_table: str = "flyway_schema_history",
) -> FlywayConfig:
    """The Flyway settings of the database in `folder` (None: the tree's own), in `environment`."""
    files = [f for f in (_config_file(root), folder and _config_file(folder)) if f is not None]
    files += [
        _named_file(Path(p.strip()))
        for p in variables.get("FLYWAY_CONFIG_FILES", "").split(",")
        if p.strip()
    ]
    kinds = {f.suffix for f in files}
    if len(kinds) > 1:
        raise FlywayConfigInvalid(
            f"{', '.join(map(str, files))}: TOML and CONF configuration together, which Flyway "
            f"refuses too: move the settings of the {CONF_FILE} into a {TOML_FILE}"
        )
    chosen = _Layer(placeholders={k.lower(): v for k, v in environment_placeholders.items()})
    general = _Layer()
    for path in files:
        file_general, file_environments = _read(path, variables)
        general.over(file_general)
        if environment is not None and environment in file_environments:
            chosen.over(file_environments[environment])
    if chosen.sets_placeholders:
        general.placeholders.clear()
    general.over(chosen)
    general.over(_from_variables(variables))
    return FlywayConfig(
        settings=general.settings,
        placeholders=general.placeholders,
        files=tuple(files),
        default_table=default_table,
    )


def _config_file(folder: Path) -> Path | None:
    toml, conf = folder / TOML_FILE, folder / CONF_FILE
    if toml.is_file() and conf.is_file():
        raise FlywayConfigInvalid(
            f"{folder} holds both {TOML_FILE} and {CONF_FILE}: Flyway 10 reads only the TOML "
            f"one when both are there; move the settings of {CONF_FILE} into {TOML_FILE} and "
            f"delete {CONF_FILE}"
        )
    return toml if toml.is_file() else conf if conf.is_file() else None


def _named_file(path: Path) -> Path:
    if not path.is_file():
        raise FlywayConfigInvalid(
            f"FLYWAY_CONFIG_FILES names {path}, which does not exist: fix the path or unset it"
        )
    return path


def _read(path: Path, variables: Mapping[str, str]) -> tuple[_Layer, dict[str, _Layer]]:
    if path.suffix == ".toml":
        return _read_toml(path)
    return _read_conf(path, variables), {}


# --- flyway.toml -------------------------------------------------------------------------------


def _read_toml(path: Path) -> tuple[_Layer, dict[str, _Layer]]:
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise FlywayConfigInvalid(f"{path} is not valid TOML: {e}") from None
    for table in sorted(set(document) - {"flyway", "environments"}):
        # Flyway keeps other root tables for its own tools (`[redgateCompare]`, `id`...).
        if not isinstance(document[table], Mapping) and table != "id":
            raise _unknown(path, table, "the file's top level", {"flyway", "environments"})
    general = _Layer()
    _take_flyway_table(path, "[flyway]", _table(path, document, "flyway"), general)
    environments: dict[str, _Layer] = {}
    for name, declared in _table(path, document, "environments").items():
        where = f"[environments.{name}]"
        if not isinstance(declared, Mapping):
            raise FlywayConfigInvalid(f"{path}: {where} must be a table")
        layer = _Layer()
        for key, value in declared.items():
            if key == "flyway":
                _take_flyway_table(
                    path, f"{where[:-1]}.flyway]", _table(path, declared, key), layer
                )
            elif key == "jdbcProperties":
                for name_, v in _table(path, declared, key).items():
                    layer.settings[f"jdbcProperties.{name_}"] = _flat(v)
            elif key in _ENVIRONMENT_KEYS:
                layer.settings[key] = _flat(value)
            elif key in _CONNECTION:
                raise _connection_refused(path, key, where)
            elif key not in _PRODUCT_OWNED and key != "resolvers":
                known = _ENVIRONMENT_KEYS | _PRODUCT_OWNED | {"flyway", "jdbcProperties"}
                raise _unknown(path, key, where, known)
        environments[name] = layer
    return general, environments


def _table(path: Path, document: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = document.get(key, {})
    if not isinstance(value, Mapping):
        raise FlywayConfigInvalid(f"{path}: {key} must be a table, like [{key}]")
    return value


def _take_flyway_table(path: Path, where: str, table: Mapping[str, Any], into: _Layer) -> None:
    for key, value in table.items():
        if key == "placeholders":
            into.sets_placeholders = True
            for name, v in _table(path, table, key).items():
                into.placeholders[name.lower()] = _flat(v)
        elif key == "postgresql":
            lock = _table(path, table, key).get("transactional", {})
            extra = set(_table(path, table, key)) - {"transactional"}
            extra |= set(lock) - {"lock"} if isinstance(lock, Mapping) else {"transactional"}
            if extra:
                raise _unknown(path, f"postgresql.{sorted(extra)[0]}", where, {_POSTGRESQL_LOCK})
            if isinstance(lock, Mapping) and "lock" in lock:
                into.settings[_POSTGRESQL_LOCK] = _flat(lock["lock"])
        elif key == "migrationResolvers":
            into.settings["resolvers"] = _flat(value)
        elif key == "locations":
            raise _locations_refused(path)
        elif key in _CONNECTION:
            raise _connection_refused(path, key, where)
        elif key in _FLYWAY_KEYS and key != "resolvers":
            into.settings[key] = _flat(value)
        elif key not in _PRODUCT_OWNED:
            raise _unknown(path, key, where, _FLYWAY_KEYS | _MAPS | {"postgresql"})


def _flat(value: object) -> str:
    """A TOML value as Flyway's flat configuration map holds it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(_flat(v) for v in value)
    return str(value)


# --- flyway.conf -------------------------------------------------------------------------------

_ESCAPES = {"t": "\t", "n": "\n", "r": "\r", "f": "\f"}


def _read_conf(path: Path, variables: Mapping[str, str]) -> _Layer:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise FlywayConfigInvalid(
            f"{path} is not UTF-8 (byte {e.start}): save it as UTF-8"
        ) from None
    layer = _Layer()
    for key, value in _properties(text):
        # Flyway expands ${VARIABLE} in a .conf file's values from the environment.
        value = re.sub(r"\$\{([A-Za-z0-9_]+)\}", lambda m: variables.get(m[1], m[0]), value)
        name = key.removeprefix(PREFIX) if key.startswith(PREFIX) else None
        if name is None:
            raise _unknown(path, key, "the file", {PREFIX + k for k in _FLAT_KEYS})
        if name.startswith("placeholders."):
            layer.placeholders[name.removeprefix("placeholders.").lower()] = value
        elif name.startswith("jdbcProperties."):
            layer.settings[name] = value
        elif name == "locations":
            raise _locations_refused(path)
        elif name in _CONNECTION:
            raise _connection_refused(path, key, "the file")
        elif name in _FLAT_KEYS:
            layer.settings[name] = value
        elif name not in _PRODUCT_OWNED:
            raise _unknown(path, key, "the file", {PREFIX + k for k in _FLAT_KEYS})
    return layer


def _properties(text: str) -> list[tuple[str, str]]:
    """The (key, value) pairs of a Java properties file, as java.util.Properties reads them."""
    pairs = []
    logical = ""
    for raw in text.splitlines():
        line = raw.lstrip()
        if not logical and (not line or line[0] in "#!"):
            continue
        trailing = len(line) - len(line.rstrip("\\"))
        if trailing % 2 == 1:
            logical += line[:-1]
            continue
        logical += line
        pairs.append(_split_property(logical))
        logical = ""
    if logical:
        pairs.append(_split_property(logical))
    return pairs


def _split_property(line: str) -> tuple[str, str]:
    key, i = [], 0
    while i < len(line) and line[i] not in "=: \t\f":
        if line[i] == "\\" and i + 1 < len(line):
            i += 1
        key.append(line[i])
        i += 1
    while i < len(line) and line[i] in " \t\f":
        i += 1
    if i < len(line) and line[i] in "=:":
        i += 1
    return _unescape("".join(key)), _unescape(line[i:].lstrip(" \t\f"))


def _unescape(text: str) -> str:
    def one(m: re.Match[str]) -> str:
        escaped = m[1]
        if escaped.startswith("u") and len(escaped) == 5:
            return chr(int(escaped[1:], 16))
        return _ESCAPES.get(escaped, escaped)

    return re.sub(r"\\(u[0-9a-fA-F]{4}|.)", one, text)


# --- FLYWAY_* variables ------------------------------------------------------------------------


def _from_variables(variables: Mapping[str, str]) -> _Layer:
    layer = _Layer()
    for name, value in variables.items():
        if name.startswith("FLYWAY_PLACEHOLDERS_"):
            # Flyway lower-cases these names; its placeholders are case-insensitive anyway.
            layer.placeholders[name.removeprefix("FLYWAY_PLACEHOLDERS_").lower()] = value
        elif name.startswith("FLYWAY_JDBC_PROPERTIES_"):
            layer.settings["jdbcProperties." + name.removeprefix("FLYWAY_JDBC_PROPERTIES_")] = value
        elif name in _VARIABLES:
            layer.settings[_VARIABLES[name]] = value
        # Any other FLYWAY_* variable (FLYWAY_URL, FLYWAY_EDITION...) is ignored here, as Flyway
        # ignores the ones it does not know; the connection is the environment's own.
    return layer


# --- errors ------------------------------------------------------------------------------------


def _unknown(path: Path, key: str, where: str, known: set[str] | frozenset[str]) -> Exception:
    close = difflib.get_close_matches(key, sorted(known), n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    return FlywayConfigInvalid(
        f"{path}: unknown Flyway setting {key!r} in {where}{hint}: fix its spelling or remove "
        "it; Flyway's settings: https://documentation.red-gate.com/fd/parameters-224919673.html"
    )


def _locations_refused(path: Path) -> Exception:
    return FlywayConfigInvalid(
        f"{path}: locations is set, but each database's migrations are its own folder under the "
        "SQL tree (all of it, subfolders included): remove locations, and move the migrations "
        "into the database's folder"
    )


def _connection_refused(path: Path, key: str, where: str) -> Exception:
    """Never repeats the value: it may be a password, or a URL holding one."""
    return FlywayConfigInvalid(
        f"{path}: {key} is set in {where}, but each database's connection is the URL, user and "
        "password the secret gate reads for it in the --env environment (Vault, or the local "
        f"store): remove {key}, and store the database's credentials there instead"
    )
