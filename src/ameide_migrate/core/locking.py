"""Which tables a migration's statements lock and in which mode, and what the target database
says about each of them: whether it exists before the statement, how many rows and bytes it
holds, and whether CONCURRENTLY would spare its readers and writers.

The statements are read from their syntax tree (`statements`; from their words by patterns when
the fallback splitter read them): PostgreSQL documents the lock each command takes (CREATE INDEX:
SHARE; CONCURRENTLY: SHARE UPDATE EXCLUSIVE; most ALTER TABLE: ACCESS EXCLUSIVE, ...).
What the tables hold comes from the database (`adapters.postgres.relations`): a
lock on a table that does not exist yet, or is empty, is nobody's problem; one on a large,
busy table is. The lint (`lint`), the plan (`plan`) and the pre-flight check before Flyway
(`migrate.preflight`) read both from here.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from pglast.keywords import RESERVED_KEYWORDS, TYPE_FUNC_NAME_KEYWORDS

from ameide_migrate.core import statements

# Any non-ASCII character may be part of a name: [^\x00-\x7f\w] says so, where a range up to
# \uffff would cost each pattern tens of milliseconds to compile with IGNORECASE. It leaves out
# the word characters [\w$] takes: with both taking é, a name of n such letters that did not
# match could be tried 2^n ways.
_IDENT = r'(?:"(?:[^"]|"")+"|(?:[\w$]|[^\x00-\x7f\w])+)'
_NAME = rf"({_IDENT}(?:\s?\.\s?{_IDENT})*)"
# A name PostgreSQL's to_regclass can read: each part quoted, or starting with a letter.
_PART = r'(?:"(?:[^"]|"")+"|[^\W\d][\w$]*)'
_RESOLVABLE = re.compile(rf"^{_PART}(?:\.{_PART})*$")

ACCESS_EXCLUSIVE = "ACCESS EXCLUSIVE"
LOCK_MODES = (
    "ACCESS SHARE",
    "ROW SHARE",
    "ROW EXCLUSIVE",
    "SHARE UPDATE EXCLUSIVE",
    "SHARE",
    "SHARE ROW EXCLUSIVE",
    "EXCLUSIVE",
    ACCESS_EXCLUSIVE,
)
"""PostgreSQL's table lock modes, weakest first."""
NO_LOCK = "none"

# PostgreSQL's table-level lock conflicts ("Conflicting Lock Modes" in its manual), by mode.
_CONFLICTS: Mapping[str, frozenset[str]] = {
    "ACCESS SHARE": frozenset({ACCESS_EXCLUSIVE}),
    "ROW SHARE": frozenset({"EXCLUSIVE", ACCESS_EXCLUSIVE}),
    "ROW EXCLUSIVE": frozenset({"SHARE", "SHARE ROW EXCLUSIVE", "EXCLUSIVE", ACCESS_EXCLUSIVE}),
    "SHARE UPDATE EXCLUSIVE": frozenset(
        {"SHARE UPDATE EXCLUSIVE", "SHARE", "SHARE ROW EXCLUSIVE", "EXCLUSIVE", ACCESS_EXCLUSIVE}
    ),
    "SHARE": frozenset(
        {"ROW EXCLUSIVE", "SHARE UPDATE EXCLUSIVE", "SHARE ROW EXCLUSIVE", "EXCLUSIVE"}
        | {ACCESS_EXCLUSIVE}
    ),
    "SHARE ROW EXCLUSIVE": frozenset(set(LOCK_MODES[2:])),
    "EXCLUSIVE": frozenset(set(LOCK_MODES[1:])),
    ACCESS_EXCLUSIVE: frozenset(LOCK_MODES),
}


def conflicts(wanted: str, held: str) -> bool:
    """Whether a session holding `held` on a table makes one asking for `wanted` wait."""
    return held in _CONFLICTS[wanted]


def mode_of_pg_locks(mode: str) -> str:
    """pg_locks' name of a mode ("ShareRowExclusiveLock") as the manual writes it."""
    return " ".join(re.findall(r"[A-Z][a-z]+", mode.removesuffix("Lock"))).upper()


# `IF NOT EXISTS` makes no table new by itself: the table may exist, busy, before it runs.
_CREATES = re.compile(
    r"^CREATE (?:(?:GLOBAL |LOCAL )?(?:TEMP|TEMPORARY|UNLOGGED) )?(?:TABLE|MATERIALIZED VIEW) "
    rf"(IF NOT EXISTS )?{_NAME}",
    re.IGNORECASE,
)
_CREATES_INDEX = re.compile(
    r"^CREATE (?:UNIQUE )?INDEX (?P<concurrently>CONCURRENTLY )?(?P<if_not_exists>IF NOT EXISTS )?"
    rf"(?:(?P<index>{_NAME}) )?ON (?:ONLY )?(?P<table>{_NAME})",
    re.IGNORECASE,
)
_REFERENCES = re.compile(rf"\bREFERENCES {_NAME}", re.IGNORECASE)
# (pattern, lock mode): the first to match a statement's words names the table it works on.
_STATEMENT_LOCKS: tuple[tuple[str, str], ...] = (
    (rf"^DROP INDEX CONCURRENTLY (?:IF EXISTS )?{_NAME}", "SHARE UPDATE EXCLUSIVE"),
    (rf"^DROP INDEX (?:IF EXISTS )?{_NAME}", ACCESS_EXCLUSIVE),
    (rf"^REINDEX (?:\([^)]*\) )?\w+ CONCURRENTLY {_NAME}", "SHARE UPDATE EXCLUSIVE"),
    (rf"^REINDEX \([^)]*CONCURRENTLY[^)]*\) \w+ {_NAME}", "SHARE UPDATE EXCLUSIVE"),
    (rf"^REINDEX (?:\([^)]*\) )?(?:TABLE|INDEX) {_NAME}", ACCESS_EXCLUSIVE),
    (rf"^DROP (?:TABLE|MATERIALIZED VIEW) (?:IF EXISTS )?{_NAME}", ACCESS_EXCLUSIVE),
    (rf"^TRUNCATE (?:TABLE )?(?:ONLY )?{_NAME}", ACCESS_EXCLUSIVE),
    (rf"^CLUSTER (?:\([^)]*\) )?{_NAME}", ACCESS_EXCLUSIVE),
    (rf"^VACUUM (?:\([^)]*\bFULL\b[^)]*\)|FULL)\s?(?:\w+ )*?{_NAME}", ACCESS_EXCLUSIVE),
    (rf"^(?:VACUUM|ANALYZE)(?: \([^)]*\))?(?: \w+)*? {_NAME}", "SHARE UPDATE EXCLUSIVE"),
    (rf"^REFRESH MATERIALIZED VIEW CONCURRENTLY {_NAME}", "EXCLUSIVE"),
    (rf"^REFRESH MATERIALIZED VIEW {_NAME}", ACCESS_EXCLUSIVE),
    (rf"^ALTER INDEX (?:IF EXISTS )?{_NAME}", ACCESS_EXCLUSIVE),
    (rf"^CREATE (?:OR REPLACE )?(?:CONSTRAINT )?TRIGGER .*? ON {_NAME}", "SHARE ROW EXCLUSIVE"),
    (rf"^DROP TRIGGER (?:IF EXISTS )?{_IDENT} ON {_NAME}", ACCESS_EXCLUSIVE),
    (rf"^COMMENT ON TABLE {_NAME}", "SHARE UPDATE EXCLUSIVE"),
    (rf"^COMMENT ON COLUMN {_NAME}\s?\.\s?{_IDENT} IS\b", "SHARE UPDATE EXCLUSIVE"),
    (rf"^(?:UPDATE|DELETE FROM|INSERT INTO|MERGE INTO) (?:ONLY )?{_NAME}", "ROW EXCLUSIVE"),
)
# The patterns as one alternation, tried in their order by one match (a seed file's hundred
# thousand INSERTs are each read once, not by each pattern in turn): the group `p<i>` of the one
# that matched says which, and the first group inside it holds the name.
_ANY_STATEMENT_LOCK = re.compile(
    "|".join(f"(?P<p{i}>{pattern})" for i, (pattern, _) in enumerate(_STATEMENT_LOCKS)),
    re.IGNORECASE,
)
_LOCK_TABLE = re.compile(
    rf"^LOCK (?:TABLE )?(?:ONLY )?{_NAME}(?: IN ([A-Z ]+?) MODE)?", re.IGNORECASE
)
_ALTER_TABLE = re.compile(rf"^ALTER TABLE (?:IF EXISTS )?(?:ONLY )?{_NAME} (.*)$", re.IGNORECASE)
# ALTER TABLE subcommands weaker than ACCESS EXCLUSIVE (PostgreSQL's ALTER TABLE page).
_ALTER_TABLE_WEAKER = statements.ignoring_case(
    (
        (r"^VALIDATE CONSTRAINT\b", "SHARE UPDATE EXCLUSIVE"),
        (r"^ALTER (?:COLUMN )?\S+ SET STATISTICS\b", "SHARE UPDATE EXCLUSIVE"),
        (r"^(?:SET|RESET) \(", "SHARE UPDATE EXCLUSIVE"),
        (r"^(?:CLUSTER ON|SET WITHOUT CLUSTER)\b", "SHARE UPDATE EXCLUSIVE"),
        (r"^ATTACH PARTITION\b", "SHARE UPDATE EXCLUSIVE"),
        (r"^DETACH PARTITION .* CONCURRENTLY$", "SHARE UPDATE EXCLUSIVE"),
        (r"^ADD (?:CONSTRAINT \S+ )?FOREIGN KEY\b", "SHARE ROW EXCLUSIVE"),
        (r"^(?:ENABLE|DISABLE) (?:ALWAYS |REPLICA )?TRIGGER\b", "SHARE ROW EXCLUSIVE"),
    )
)
# Statements with a CONCURRENTLY form that spares the table's readers and writers: (the form
# without it, the form with it).
_CONCURRENT_FORMS: tuple[tuple[re.Pattern[str], re.Pattern[str]], ...] = tuple(
    (re.compile(plain, re.IGNORECASE), re.compile(concurrent, re.IGNORECASE))
    for plain, concurrent in (
        (r"^CREATE (?:UNIQUE )?INDEX\b", r"^CREATE (?:UNIQUE )?INDEX CONCURRENTLY\b"),
        (r"^DROP INDEX\b", r"^DROP INDEX CONCURRENTLY\b"),
        (
            r"^REINDEX\b",
            r"^REINDEX (?:\([^)]*\) )?\w+ CONCURRENTLY\b|^REINDEX \([^)]*CONCURRENTLY",
        ),
        (r"^REFRESH MATERIALIZED VIEW\b", r"^REFRESH MATERIALIZED VIEW CONCURRENTLY\b"),
        (r"^ALTER TABLE .* DETACH PARTITION\b", r"^ALTER TABLE .* DETACH PARTITION .*CONCURRENTLY"),
    )
)


class Concurrently(StrEnum):
    USED = "used"
    POSSIBLE = "possible"
    """The statement has a CONCURRENTLY form, and does not use it."""
    NONE = "-"
    """No CONCURRENTLY form exists."""


def concurrently(statement: statements.Statement) -> Concurrently:
    if statement.tree is not None:
        return _tree_concurrently(statement.tree)
    for plain, concurrent in _CONCURRENT_FORMS:
        if concurrent.search(statement.words):
            return Concurrently.USED
        if plain.search(statement.words):
            return Concurrently.POSSIBLE
    return Concurrently.NONE


@dataclass(frozen=True)
class _Named:
    name: str
    """As written (schema-qualified and quoted as it is), what the database resolves."""

    @property
    def table(self) -> str:
        """Its own name as PostgreSQL folds it, schema left out: what the batch tracks."""
        return bare(self.name)


@dataclass(frozen=True)
class LockTarget(_Named):
    """A relation a statement locks beyond ACCESS SHARE."""

    mode: str


def bare(name: str) -> str:
    """A relation's name as PostgreSQL resolves it, schema left out: unquoted folded to lower
    case, quotes removed."""
    last: str = re.findall(_IDENT, name)[-1]
    if last.startswith('"'):
        return last[1:-1].replace('""', '"')
    return last.lower()


def unqualified(name: str) -> bool:
    """Whether the name has no schema part (`"a.b"` is one quoted part)."""
    return len(re.findall(_IDENT, name)) == 1


def written(name: str) -> str:
    """A name as a statement writes it, spaces around its dots left out (`s . t` is `s.t`)."""
    return re.sub(r"\s?\.\s?", ".", name)


@dataclass(frozen=True)
class Creation(_Named):
    """A table (or materialized view, or index) a statement creates."""

    if_not_exists: bool


@dataclass(frozen=True)
class IndexCreation:
    """A CREATE INDEX statement: the names it gives its index and its table, as written."""

    name: str | None
    """None when PostgreSQL makes one up."""
    table: str
    concurrently: bool
    if_not_exists: bool


def index_creation(statement: statements.Statement) -> IndexCreation | None:
    """The statement's index build; None when it is no CREATE INDEX."""
    if statement.tree is not None:
        kind, fields = statements.node(statement.tree)
        if kind != "IndexStmt":
            return None
        name = fields.get("idxname")
        return IndexCreation(
            quoted(name) if name else None,
            _range_name(_relation(fields)),
            bool(fields.get("concurrent")),
            bool(fields.get("if_not_exists")),
        )
    index = _CREATES_INDEX.match(statement.words)
    if index is None:
        return None
    return IndexCreation(
        written(index["index"]) if index["index"] else None,
        written(index["table"]),
        bool(index["concurrently"]),
        bool(index["if_not_exists"]),
    )


def created(statement: statements.Statement) -> Creation | None:
    index = index_creation(statement)
    if index is not None:
        return None if index.name is None else Creation(index.name, index.if_not_exists)
    if statement.tree is not None:
        return _tree_created(statement.tree)
    match = _CREATES.match(statement.words)
    return Creation(written(match.group(2)), bool(match.group(1))) if match else None


def locks(statement: statements.Statement) -> list[LockTarget]:
    """Each relation the statement locks beyond ACCESS SHARE; its first is the one it works on."""
    index = index_creation(statement)
    if index is not None:
        return [LockTarget(index.table, _SUE if index.concurrently else "SHARE")]
    if statement.tree is not None:
        return _tree_locks(statement.tree)
    words = statement.words
    if _CREATES.match(words):
        return [LockTarget(written(r), "SHARE ROW EXCLUSIVE") for r in _REFERENCES.findall(words)]
    alter = _ALTER_TABLE.match(words)
    if alter:
        modes = [_alter_table_mode(part) for part in _subcommands(alter.group(2))]
        strongest = max(modes, key=LOCK_MODES.index, default=ACCESS_EXCLUSIVE)
        referenced = [
            LockTarget(written(r), "SHARE ROW EXCLUSIVE") for r in _REFERENCES.findall(words)
        ]
        return [LockTarget(written(alter.group(1)), strongest), *referenced]
    lock = _LOCK_TABLE.match(words)
    if lock:
        mode = (lock.group(2) or ACCESS_EXCLUSIVE).upper()
        known = mode if mode in LOCK_MODES else ACCESS_EXCLUSIVE
        return [LockTarget(written(lock.group(1)), known)]
    match = _ANY_STATEMENT_LOCK.match(words)
    if match is None or match.lastgroup is None or match.lastindex is None:
        return []
    mode = _STATEMENT_LOCKS[int(match.lastgroup.removeprefix("p"))][1]
    return [LockTarget(written(match.group(match.lastindex + 1)), mode)]


# --- The same, from the statement's syntax tree ------------------------------------------------

_SUE, _SRE = "SHARE UPDATE EXCLUSIVE", "SHARE ROW EXCLUSIVE"
# ALTER TABLE subcommands weaker than ACCESS EXCLUSIVE (PostgreSQL's ALTER TABLE page), by the
# parser's name of each.
_SUBCOMMAND_MODES: Mapping[str, str] = {
    "AT_ValidateConstraint": _SUE,
    "AT_SetStatistics": _SUE,
    "AT_SetRelOptions": _SUE,
    "AT_ResetRelOptions": _SUE,
    "AT_ClusterOn": _SUE,
    "AT_DropCluster": _SUE,
    "AT_AttachPartition": _SUE,
    **dict.fromkeys(
        (
            "AT_EnableTrig",
            "AT_EnableAlwaysTrig",
            "AT_EnableReplicaTrig",
            "AT_EnableTrigAll",
            "AT_EnableTrigUser",
            "AT_DisableTrig",
            "AT_DisableTrigAll",
            "AT_DisableTrigUser",
        ),
        _SRE,
    ),
}
_RENAMES_TABLE = frozenset({"OBJECT_TABLE", "OBJECT_INDEX", "OBJECT_TABCONSTRAINT"})
_DROPS = {"OBJECT_INDEX", "OBJECT_TABLE", "OBJECT_MATVIEW"}
_DML = frozenset({"InsertStmt", "UpdateStmt", "DeleteStmt", "MergeStmt"})
# Names that need no quotes (PostgreSQL folds unquoted ASCII letters to lower case, and reserves
# some words).
_PLAIN_NAME = re.compile(r"[^\W\dA-Z][^\WA-Z]*")
_RESERVED = frozenset(RESERVED_KEYWORDS) | frozenset(TYPE_FUNC_NAME_KEYWORDS)


# A seed file names its table in each of its statements.
@functools.lru_cache(maxsize=1024)
def quoted(part: str) -> str:
    """One part of a name as PostgreSQL reads it back: quoted unless plain."""
    if _PLAIN_NAME.fullmatch(part) and part not in _RESERVED:
        return part
    return '"' + part.replace('"', '""') + '"'


def _range_name(range_var: Mapping[str, Any]) -> str:
    """A RangeVar's name, schema-qualified as written."""
    parts = (range_var.get(k) for k in ("catalogname", "schemaname", "relname"))
    return ".".join(quoted(p) for p in parts if p)


def _list_name(items: Sequence[Mapping[str, Any]]) -> str:
    """A name the tree gives as a list of strings (DROP's, COMMENT's)."""
    return ".".join(quoted(item["String"]["sval"]) for item in items)


def _relation(fields: Mapping[str, Any], key: str = "relation") -> Mapping[str, Any]:
    """A RangeVar, whether the tree wraps it in a node or not."""
    value: Mapping[str, Any] = fields[key]
    wrapped: Mapping[str, Any] = value.get("RangeVar", value)
    return wrapped


def _referenced(fields: Any) -> list[LockTarget]:
    """The tables a CREATE or ALTER TABLE's foreign keys reference: SHARE ROW EXCLUSIVE each."""
    found: list[LockTarget] = []
    if isinstance(fields, Mapping):
        for key, value in fields.items():
            if key == "pktable":
                found.append(LockTarget(_range_name(_relation(fields, key)), _SRE))
            else:
                found += _referenced(value)
    elif isinstance(fields, list):
        for value in fields:
            found += _referenced(value)
    return found


def _subcommand_mode(command: Mapping[str, Any]) -> str:
    cmd = command["AlterTableCmd"]
    subtype = cmd.get("subtype", "")
    definition = cmd.get("def", {})
    if subtype == "AT_DetachPartition" and definition.get("PartitionCmd", {}).get("concurrent"):
        return _SUE
    foreign = definition.get("Constraint", {}).get("contype") == "CONSTR_FOREIGN"
    if subtype == "AT_AddConstraint" and foreign:
        return _SRE
    return _SUBCOMMAND_MODES.get(subtype, ACCESS_EXCLUSIVE)


def _tree_locks(tree: statements.Tree) -> list[LockTarget]:
    name, fields = statements.node(tree)
    if name in _DML:
        return [LockTarget(_range_name(_relation(fields)), "ROW EXCLUSIVE")]
    if name == "CreateStmt":
        return _referenced(fields)
    if name == "AlterTableStmt" and fields.get("objtype") in ("OBJECT_TABLE", "OBJECT_INDEX"):
        modes = [_subcommand_mode(c) for c in fields.get("cmds", ())]
        strongest = max(modes, key=LOCK_MODES.index, default=ACCESS_EXCLUSIVE)
        return [LockTarget(_range_name(_relation(fields)), strongest), *_referenced(fields)]
    return _other_locks(name, fields)


def _other_locks(name: str, fields: Mapping[str, Any]) -> list[LockTarget]:
    """`_tree_locks` of the statements that are neither DML, CREATE nor ALTER TABLE."""
    rename = fields.get("renameType")
    if name == "RenameStmt" and "relation" in fields and rename in _RENAMES_TABLE:
        return [LockTarget(_range_name(_relation(fields)), ACCESS_EXCLUSIVE)]
    of_table = rename == "OBJECT_COLUMN" and fields.get("relationType") == "OBJECT_TABLE"
    if name == "RenameStmt" and of_table:
        return [LockTarget(_range_name(_relation(fields)), ACCESS_EXCLUSIVE)]
    moved = fields.get("objectType") in ("OBJECT_TABLE", "OBJECT_INDEX")
    if name == "AlterObjectSchemaStmt" and "relation" in fields and moved:
        return [LockTarget(_range_name(_relation(fields)), ACCESS_EXCLUSIVE)]
    if name == "LockStmt":
        mode = LOCK_MODES[int(fields.get("mode", len(LOCK_MODES))) - 1]
        return [LockTarget(_range_name(r["RangeVar"]), mode) for r in fields["relations"]]
    if name == "TruncateStmt":
        return [
            LockTarget(_range_name(r["RangeVar"]), ACCESS_EXCLUSIVE) for r in fields["relations"]
        ]
    if name == "DropStmt":
        return _dropped(fields)
    if name == "ReindexStmt" and "relation" in fields:
        concurrent = "concurrently" in statements.options(fields, "params")
        mode = _SUE if concurrent else ACCESS_EXCLUSIVE
        return [LockTarget(_range_name(_relation(fields)), mode)]
    if name == "ClusterStmt" and "relation" in fields:
        return [LockTarget(_range_name(_relation(fields)), ACCESS_EXCLUSIVE)]
    if name == "VacuumStmt":
        full = fields.get("is_vacuumcmd") and "full" in statements.options(fields, "options")
        mode = ACCESS_EXCLUSIVE if full else _SUE
        return [
            LockTarget(_range_name(r["VacuumRelation"]["relation"]), mode)
            for r in fields.get("rels", ())
        ]
    if name == "RefreshMatViewStmt":
        mode = "EXCLUSIVE" if fields.get("concurrent") else ACCESS_EXCLUSIVE
        return [LockTarget(_range_name(_relation(fields)), mode)]
    if name == "CreateTrigStmt":
        return [LockTarget(_range_name(_relation(fields)), _SRE)]
    if name == "CommentStmt" and fields.get("objtype") in ("OBJECT_TABLE", "OBJECT_COLUMN"):
        items = fields["object"]["List"]["items"]
        table = items if fields["objtype"] == "OBJECT_TABLE" else items[:-1]
        return [LockTarget(_list_name(table), _SUE)]
    return []


def _dropped(fields: Mapping[str, Any]) -> list[LockTarget]:
    """DROP INDEX, TABLE, MATERIALIZED VIEW: each relation dropped; DROP TRIGGER: its table."""
    kind = fields.get("removeType")
    names = [o["List"]["items"] for o in fields.get("objects", ()) if "List" in o]
    if kind == "OBJECT_TRIGGER":
        return [LockTarget(_list_name(items[:-1]), ACCESS_EXCLUSIVE) for items in names]
    if kind not in _DROPS:
        return []
    mode = _SUE if fields.get("concurrent") else ACCESS_EXCLUSIVE
    return [LockTarget(_list_name(items), mode) for items in names]


def _tree_created(tree: statements.Tree) -> Creation | None:
    name, fields = statements.node(tree)
    if name == "CreateStmt":
        return Creation(_range_name(_relation(fields)), bool(fields.get("if_not_exists")))
    if name == "CreateTableAsStmt" and fields.get("objtype") in ("OBJECT_TABLE", "OBJECT_MATVIEW"):
        made = _range_name(fields["into"]["rel"])
        return Creation(made, bool(fields.get("if_not_exists")))
    return None


def _tree_concurrently(tree: statements.Tree) -> Concurrently:
    name, fields = statements.node(tree)
    used: bool | None = None
    drops_index = name == "DropStmt" and fields.get("removeType") == "OBJECT_INDEX"
    if name in ("IndexStmt", "RefreshMatViewStmt") or drops_index:
        used = bool(fields.get("concurrent"))
    elif name == "ReindexStmt":
        used = "concurrently" in statements.options(fields, "params")
    elif name == "AlterTableStmt":
        used = statements.detaches_concurrently(fields)
    if used is None:
        return Concurrently.NONE
    return Concurrently.USED if used else Concurrently.POSSIBLE


def _subcommands(text: str) -> list[str]:
    """ALTER TABLE's comma-separated actions (commas inside parentheses kept)."""
    parts, depth, start = [], 0, 0
    for i, c in enumerate(text):
        if c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
        elif c == "," and depth == 0:
            parts.append(text[start:i].strip())
            start = i + 1
    parts.append(text[start:].strip())
    return [p for p in parts if p]


def _alter_table_mode(action: str) -> str:
    return next((mode for p, mode in _ALTER_TABLE_WEAKER if p.search(action)), ACCESS_EXCLUSIVE)


# --- What the target database holds ---------------------------------------------------------------


@dataclass(frozen=True)
class RelationFacts:
    """A relation as the target database has it before the run."""

    oid: int
    qualified: str
    """schema.name, as PostgreSQL resolved the written name."""
    rows: int | None
    """An estimate from the statistics scaled to the relation's pages now (the planner's own
    estimate), a count where it has none yet; None when neither could be read."""
    bytes: int
    """pg_total_relation_size: its heap, indexes and TOAST, partitions included."""
    at_least: bool = False
    """`rows` is a lower bound: the count stopped at the rows a large table has."""

    @property
    def empty(self) -> bool:
        return self.rows == 0

    @property
    def rows_text(self) -> str:
        if self.rows is None:
            return "unknown"
        return f"at least {self.rows:,}" if self.at_least else f"~{self.rows:,}"

    def describe(self) -> str:
        return f"{self.qualified}: {self.rows_text} rows, {human_bytes(self.bytes)}"


Facts = Mapping[str, RelationFacts | None]
"""What the database holds under each written name (`LockTarget.name`); None: it does not
exist there."""


def human_bytes(size: int) -> str:
    amount = float(size)
    for unit in ("B", "kB", "MB", "GB"):
        if amount < 1024 or unit == "GB":
            return f"{amount:.0f} {unit}" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1024
    raise AssertionError("unreachable")


@dataclass(frozen=True)
class LargeTable:
    """From how many rows or bytes a table is large: a lock on it stops a busy application for
    as long as the scan or rewrite takes (`[lint] large_table_rows`, `large_table_mb`)."""

    rows: int
    megabytes: float

    def holds(self, facts: RelationFacts) -> bool:
        return (
            facts.rows is None
            or facts.rows >= self.rows
            or facts.bytes >= self.megabytes * 1024 * 1024
        )

    def describe(self) -> str:
        return f"{self.rows:,} rows or {self.megabytes:g} MB"


def resolvable(names: Iterable[str]) -> list[str]:
    """The names the database can be asked about (the others cannot name a relation)."""
    return sorted({n for n in names if _RESOLVABLE.match(n)})


def referenced(scripts_text: Iterable[str]) -> list[str]:
    """Every relation name a batch's statements lock or create, as written."""
    names: set[str] = set()
    for text in scripts_text:
        for statement in statements.split(text):
            names.update(t.name for t in locks(statement))
            made = created(statement)
            if made is not None:
                names.add(made.name)
    return resolvable(names)


class Batch:
    """The tables a batch of migrations creates as it goes: a table created earlier in the batch
    (or, with the database's facts, one that did not exist before it) is new, empty and nobody
    else's, so no lock on it is a risk."""

    def __init__(self, facts: Facts | None = None) -> None:
        self.facts = facts
        self.new: set[str] = set()

    def existing(self, target: LockTarget) -> RelationFacts | bool:
        """The facts of a relation that exists before the statement; False when it is new or
        absent; True when it may exist and no database was asked (a lint of files alone)."""
        if target.table in self.new:
            return False
        if self.facts is None:
            return True
        return self.facts.get(target.name) or False

    def after(self, statement: statements.Statement) -> None:
        """Record what the statement creates."""
        made = created(statement)
        if made is None:
            return
        absent = self.facts is not None and self.facts.get(made.name) is None
        if not made.if_not_exists or absent:
            self.new.add(made.table)


@dataclass(frozen=True)
class StatementLock:
    """One lock a statement takes on a relation, as the plan shows it."""

    line: int
    statement: str
    """The statement's first words."""
    relation: str
    mode: str
    facts: RelationFacts | None
    new: bool
    """The relation does not exist before the statement: the lock is nobody's problem."""
    concurrently: Concurrently


def statement_locks(text: str, batch: Batch) -> list[StatementLock]:
    """The locks of a script's statements, in order, judged against what exists before each;
    records what the script creates in `batch`."""
    found = []
    for statement in statements.split(text):
        for target in locks(statement):
            existing = batch.existing(target)
            facts = existing if isinstance(existing, RelationFacts) else None
            found.append(
                StatementLock(
                    statement.line,
                    _shown(statement),
                    facts.qualified if facts else target.name,
                    target.mode,
                    facts,
                    existing is False,
                    concurrently(statement),
                )
            )
        batch.after(statement)
    return found


def _shown(statement: statements.Statement) -> str:
    """A statement's first words, and which reading they come from when not the parser's."""
    if statement.fallback is None:
        return statement.words[:80]
    return f"{statement.words[:80]} [{statement.reading}]"


def strongest(found: Iterable[StatementLock]) -> str:
    """The strongest mode among the locks on relations that exist before them, or "none"."""
    modes = [lock.mode for lock in found if not lock.new]
    return max(modes, key=LOCK_MODES.index) if modes else NO_LOCK


def wanted(found: Sequence[StatementLock]) -> dict[int, tuple[str, str]]:
    """Per existing relation (by oid), the strongest mode the statements ask for on it and its
    name: what the pre-flight check looks for holders of. A CONCURRENTLY build also waits for
    the transactions that write to the table, as a SHARE lock would."""
    asked: dict[int, tuple[str, str]] = {}
    for lock in found:
        if lock.new or lock.facts is None:
            continue
        mode = "SHARE" if lock.concurrently is Concurrently.USED else lock.mode
        previous = asked.get(lock.facts.oid)
        if previous is None or LOCK_MODES.index(mode) > LOCK_MODES.index(previous[0]):
            asked[lock.facts.oid] = (mode, lock.facts.qualified)
    return asked
