"""Which statements of a migration PostgreSQL refuses to run inside a transaction block.

Flyway runs a migration holding such a statement outside a transaction: a failure then leaves
behind whatever the statements before it did (and a CREATE INDEX CONCURRENTLY leaves an INVALID
index), so the run must know these migrations before it applies them.

The SQL text is read by PostgreSQL's own parser (libpg_query, through pglast): each statement's
syntax tree says what it is, so a function body or a comment that mentions CREATE INDEX
CONCURRENTLY is not flagged, and a BEGIN ATOMIC body's semicolons end no statement. What the
parser rejects (a Flyway placeholder left in the text, a psql meta-command) is read by the
fallback splitter, a hand lexer that knows PostgreSQL's comments, quotes and dollar-quoted bodies
but not its grammar; each statement it reads says so (`Statement.fallback`), and so does every
finding or lock drawn from it.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pglast.parser

_DOLLAR_TAG = re.compile(r"\$(?:[A-Za-z_\u0080-\uffff][\w\u0080-\uffff]*)?\$")
_IDENTIFIER_CHAR = re.compile(r"[\w$\u0080-\uffff]")
# Where the lexer's state may change: a comment, a statement's end, a quote, a dollar sign.
_TURNS = re.compile(r"--|/\*|[;'\"$]")
_COMMENT_MARK = re.compile(r"/\*|\*/")
# What follows an opening quote, up to and with its closing one (to the end when none): doubled
# quotes stay inside; in E'' strings so does whatever a backslash escapes.
_STRING_REST = re.compile(r"[^']*(?:''[^']*)*'?")
_ESCAPED_STRING_REST = re.compile(r"(?:[^'\\]+|\\.?|'')*'?", re.DOTALL)
_QUOTED_REST = re.compile(r'[^"]*(?:""[^"]*)*"?')


def ignoring_case(pairs: Iterable[tuple[str, str]]) -> tuple[tuple[re.Pattern[str], str], ...]:
    """A table of (pattern over a statement's words, what it says), each pattern compiled to
    match its keywords in any case, as PostgreSQL reads them."""
    return tuple((re.compile(pattern, re.IGNORECASE), said) for pattern, said in pairs)


# (pattern over a statement's words, what PostgreSQL calls it); matched from the statement's start.
_NON_TRANSACTIONAL = ignoring_case(
    (
        (r"CREATE (UNIQUE )?INDEX CONCURRENTLY\b", "CREATE INDEX CONCURRENTLY"),
        (r"DROP INDEX CONCURRENTLY\b", "DROP INDEX CONCURRENTLY"),
        (r"REINDEX (\([^)]*\) )?\w+ CONCURRENTLY\b", "REINDEX CONCURRENTLY"),
        (r"REINDEX \([^)]*\bCONCURRENTLY\b", "REINDEX CONCURRENTLY"),
        (r"REINDEX (\([^)]*\) )?(SCHEMA|DATABASE|SYSTEM)\b", "REINDEX SCHEMA/DATABASE/SYSTEM"),
        (r"ALTER TABLE .* DETACH PARTITION .* CONCURRENTLY\b", "DETACH PARTITION CONCURRENTLY"),
        (r"VACUUM\b", "VACUUM"),
        (r"CLUSTER\s*$", "CLUSTER of every table"),
        (r"(CREATE|DROP) DATABASE\b", "CREATE/DROP DATABASE"),
        (r"ALTER DATABASE \S+ SET TABLESPACE\b", "ALTER DATABASE SET TABLESPACE"),
        (r"(CREATE|DROP) TABLESPACE\b", "CREATE/DROP TABLESPACE"),
        (r"ALTER SYSTEM\b", "ALTER SYSTEM"),
        (r"(CREATE|DROP) SUBSCRIPTION\b", "CREATE/DROP SUBSCRIPTION"),
        (r"DISCARD ALL\b", "DISCARD ALL"),
    )
)
# Refused in a transaction before PostgreSQL 12 only (Flyway knows this too).
_ADD_ENUM_VALUE = re.compile(r"ALTER TYPE .* ADD VALUE\b", re.IGNORECASE)


Tree = Mapping[str, Any]
"""A statement's syntax tree as libpg_query's JSON gives it: {"IndexStmt": {...}}."""


@dataclass(frozen=True)
class Statement:
    text: str
    """The statement as written, comments included, without its terminating semicolon."""
    code: str | None
    """Its words (below) when the fallback splitter read them; None: read from `text` on demand."""
    line: int
    """The line its first word is on, counted from 1 (Flyway's "Line" in its messages)."""
    fallback: str | None = field(default=None, compare=False)
    """Why the fallback splitter read it ("the parser rejected line 3: ..."); None: the parser
    read it, and `tree` is its syntax tree."""

    @functools.cached_property
    def words(self) -> str:
        """Its code alone: comments dropped, strings and bodies emptied, whitespace collapsed."""
        if self.code is not None:
            return self.code
        return "; ".join(piece.words for piece in _lex(self.text))

    @functools.cached_property
    def tree(self) -> Tree | None:
        """The parser's syntax tree of the statement; None when the fallback splitter read it."""
        if self.fallback is not None:
            return None
        return _tree(self.text)

    @property
    def reading(self) -> str:
        """Which reading this is, for a person: the parser's or the fallback's, and why."""
        if self.fallback is None:
            return "read by the PostgreSQL parser"
        return f"read by the fallback splitter: {self.fallback}"


@dataclass(frozen=True)
class NonTransactional:
    statement: Statement
    kind: str
    """What PostgreSQL refuses in a transaction block, e.g. "CREATE INDEX CONCURRENTLY"."""


def split(sql_text: str) -> list[Statement]:
    """The statements of a script, in order; empty ones (a lone `;`, only comments) dropped."""
    return list(_split(sql_text))


# A run reads each pending script several times in a row (the names to ask the database about,
# the lint, the locks of the plan and of the pre-flight): a large script is split once. A few
# scripts are kept, not all: each costs about three times its text.
@functools.lru_cache(maxsize=8)
def _split(sql_text: str) -> tuple[Statement, ...]:
    """The parser's statements; the fallback splitter's when the parser rejects the text."""
    try:
        # Its pieces, not its slices: pglast finds a slice's place in the text in time growing
        # with the text before it, so a seed file's slices take minutes.
        pieces = pglast.parser.split(sql_text, with_parser=True)
    except pglast.parser.ParseError as e:
        message, at = e.args
        line = sql_text.count("\n", 0, at) + 1
        why = f"the parser rejected line {line}: {message}"
        return tuple(Statement(s.text, s.words, s.line, fallback=why) for s in _lex(sql_text))
    found: list[Statement] = []
    line, counted, after = 1, 0, 0
    for piece in pieces:
        # The text starts after the `;` that ended the statement before, as the fallback's does:
        # the comments in between are this statement's.
        begins, code = _gap(sql_text, after)
        start = sql_text.find(piece, code)
        line += sql_text.count("\n", counted, start)
        counted = start
        after = start + len(piece)
        found.append(Statement(sql_text[begins:after].strip(), None, line))
    return tuple(found)


_BLANKS = re.compile(r"\s*")


def _gap(text: str, i: int) -> tuple[int, int]:
    """From the end of a statement (or the text's start), over blanks, comments and `;`: where
    the next statement's text begins (past the last `;`) and where its code does."""
    begins = i
    while True:
        i = _BLANKS.match(text, i).end()  # type: ignore[union-attr]
        if text.startswith(";", i):
            begins = i = i + 1
        elif text.startswith("--", i):
            newline = text.find("\n", i)
            i = len(text) if newline < 0 else newline
        elif text.startswith("/*", i):
            i = _end_of_block_comment(text, i)
        else:
            return begins, i


# What the statements of a seed file are: their kind and relation lead the tree's JSON, and the
# rest of it (a VALUES list) need not become Python objects.
_HEAD = re.compile(r'\{"version":\d+,"stmts":\[\{"stmt":\{"(\w+)":\{"relation":(\{[^{}]*\})')
_DML = frozenset({"InsertStmt", "UpdateStmt", "DeleteStmt", "MergeStmt"})


def _tree(text: str) -> Tree:
    parsed = pglast.parser.parse_sql_json(text)
    head = _HEAD.match(parsed)
    if head is not None and head.group(1) in _DML:
        return _dml_tree(head.group(1), head.group(2))
    stmts = json.loads(parsed)["stmts"]
    tree: Tree = stmts[0]["stmt"]
    return tree


# A seed file's thousands of INSERTs into one table share one tree (each statement keeps its
# own: a dict each would double the memory a large seed file takes).
@functools.lru_cache(maxsize=256)
def _dml_tree(kind: str, relation: str) -> Tree:
    return {kind: {"relation": json.loads(relation)}}


def _lex(sql_text: str) -> list[Statement]:
    """The fallback splitter: one pass over the text, in time proportional to it: the runs of
    plain code between two places where the lexer's state may change (`_TURNS`) are taken
    whole."""
    statements: list[Statement] = []
    code: list[str] = []
    start = 0
    first_word: int | None = None
    # The code's last character (" " for none): a `$` or an `E'` right after a name's character
    # continues the name.
    last = " "
    line, counted = 1, 0
    i, n = 0, len(sql_text)

    def finish(end: int) -> None:
        nonlocal code, first_word, last, line, counted
        words = " ".join("".join(code).split())
        if words and first_word is not None:
            line += sql_text.count("\n", counted, first_word)
            counted = first_word
            statements.append(Statement(sql_text[start:end].strip(), words, line))
        code, first_word, last = [], None, " "

    while i < n:
        turn = _TURNS.search(sql_text, i)
        j = n if turn is None else turn.start()
        before = last
        if j > i:
            plain = sql_text[i:j]
            if first_word is None and (indent := len(plain) - len(plain.lstrip())) < len(plain):
                first_word = i + indent
            code.append(plain)
            last = " " if plain[-1].isspace() else plain[-1]
        if turn is None:
            break
        mark = turn.group()
        if mark == "'":
            if first_word is None:
                first_word = j
            # E'...': the E is the plain run's last character, and no name goes on before it.
            escapes = j > i and sql_text[j - 1] in "eE"
            if escapes:
                ahead = sql_text[j - 2] if j - 2 >= i else before
                escapes = not _continues_name(" " if ahead.isspace() else ahead)
            if escapes:
                code[-1] = code[-1][:-1]
            i = _end(_ESCAPED_STRING_REST if escapes else _STRING_REST, sql_text, j + 1)
            code.append("''")
            last = "'"
        elif mark == "$":
            if first_word is None:
                first_word = j
            tag = None if _continues_name(last) else _DOLLAR_TAG.match(sql_text, j)
            if tag:
                end = sql_text.find(tag.group(), tag.end())
                i = n if end < 0 else end + len(tag.group())
                code.append("$$")
            else:
                i = j + 1
                code.append("$")
            last = "$"
        elif mark == ";":
            finish(j)
            i = start = j + 1
        elif mark == '"':
            if first_word is None:
                first_word = j
            i = _end(_QUOTED_REST, sql_text, j + 1)
            code.append(sql_text[j:i])
            last = sql_text[i - 1]
        elif mark == "--":
            end = sql_text.find("\n", j)
            i = n if end < 0 else end
            code.append(" ")
            last = " "
        else:  # "/*"
            i = _end_of_block_comment(sql_text, j)
            code.append(" ")
            last = " "
    finish(n)
    return statements


def _continues_name(last: str) -> bool:
    """Whether code's last character is part of an identifier (`a$b$` is a name, not a quote)."""
    return bool(_IDENTIFIER_CHAR.fullmatch(last))


def _end(rest: re.Pattern[str], text: str, i: int) -> int:
    """Where `rest` (one of the `_..._REST`, which match from anywhere) ends, from `i`."""
    found = rest.match(text, i)
    return i if found is None else found.end()


def _end_of_block_comment(text: str, i: int) -> int:
    """The index after the (nested) block comment opening at `i`."""
    depth, i = 1, i + 2
    while depth:
        mark = _COMMENT_MARK.search(text, i)
        if mark is None:
            return len(text)
        depth += 1 if mark.group() == "/*" else -1
        i = mark.end()
    return i


def non_transactional(sql_text: str, server_major: int | None = None) -> list[NonTransactional]:
    """The statements PostgreSQL refuses inside a transaction block. `server_major` None assumes
    a current server (12 or newer)."""
    return non_transactional_among(split(sql_text), server_major)


def non_transactional_among(
    parsed: Iterable[Statement], server_major: int | None = None
) -> list[NonTransactional]:
    """Of a script's statements (`split`), those PostgreSQL refuses inside a transaction block."""
    found = []
    too_old = server_major is not None and server_major < 12
    for statement in parsed:
        tree = statement.tree
        if tree is None:
            kind = next((k for p, k in _NON_TRANSACTIONAL if p.match(statement.words)), None)
            if kind is None and too_old and _ADD_ENUM_VALUE.match(statement.words):
                kind = _ADD_ENUM_VALUE_KIND
        else:
            kind = _refused_in_transaction(tree, too_old)
        if kind is not None:
            found.append(NonTransactional(statement, kind))
    return found


_ADD_ENUM_VALUE_KIND = "ALTER TYPE ... ADD VALUE (before PostgreSQL 12)"


def node(tree: Tree) -> tuple[str, Mapping[str, Any]]:
    """A statement's tree as (its node's name, its fields)."""
    ((name, fields),) = tree.items()
    return name, fields


def options(fields: Mapping[str, Any], key: str) -> set[str]:
    """The names of a node's DefElem options under `key` (VACUUM's, REINDEX's)."""
    return {item["DefElem"]["defname"] for item in fields.get(key, ()) if "DefElem" in item}


def detaches_concurrently(fields: Mapping[str, Any]) -> bool | None:
    """An ALTER TABLE's DETACH PARTITION: whether CONCURRENTLY; None when it detaches none."""
    for command in fields.get("cmds", ()):
        cmd = command["AlterTableCmd"]
        if cmd.get("subtype") == "AT_DetachPartition":
            return bool(cmd.get("def", {}).get("PartitionCmd", {}).get("concurrent"))
    return None


def _refused_in_transaction(tree: Tree, too_old: bool) -> str | None:
    """What PostgreSQL calls the statement it refuses inside a transaction block, from its tree."""
    name, fields = node(tree)
    kind: str | None = None
    if name == "IndexStmt" and fields.get("concurrent"):
        kind = "CREATE INDEX CONCURRENTLY"
    elif name == "DropStmt" and fields.get("concurrent"):
        kind = "DROP INDEX CONCURRENTLY"
    elif name == "ReindexStmt":
        if "concurrently" in options(fields, "params"):
            kind = "REINDEX CONCURRENTLY"
        elif fields.get("kind") in _REINDEX_MANY:
            kind = "REINDEX SCHEMA/DATABASE/SYSTEM"
    elif name == "AlterTableStmt" and detaches_concurrently(fields):
        kind = "DETACH PARTITION CONCURRENTLY"
    elif name == "AlterDatabaseStmt" and "tablespace" in options(fields, "options"):
        kind = "ALTER DATABASE SET TABLESPACE"
    elif name == "VacuumStmt" and fields.get("is_vacuumcmd"):
        kind = "VACUUM"
    elif name == "ClusterStmt" and "relation" not in fields:
        kind = "CLUSTER of every table"
    elif name == "DiscardStmt" and fields.get("target") == "DISCARD_ALL":
        kind = "DISCARD ALL"
    elif name == "AlterEnumStmt" and too_old and "oldVal" not in fields:
        kind = _ADD_ENUM_VALUE_KIND
    return kind or _ALWAYS_REFUSED.get(name)


_REINDEX_MANY = frozenset(
    {"REINDEX_OBJECT_SCHEMA", "REINDEX_OBJECT_DATABASE", "REINDEX_OBJECT_SYSTEM"}
)
_ALWAYS_REFUSED: Mapping[str, str] = {
    "CreatedbStmt": "CREATE/DROP DATABASE",
    "DropdbStmt": "CREATE/DROP DATABASE",
    "CreateTableSpaceStmt": "CREATE/DROP TABLESPACE",
    "DropTableSpaceStmt": "CREATE/DROP TABLESPACE",
    "AlterSystemStmt": "ALTER SYSTEM",
    "CreateSubscriptionStmt": "CREATE/DROP SUBSCRIPTION",
    "DropSubscriptionStmt": "CREATE/DROP SUBSCRIPTION",
}


def transaction_control(statement: Statement) -> str | None:
    """ "BEGIN" when the statement opens a transaction block, "END" when it ends one (COMMIT,
    ROLLBACK and their synonyms; not ROLLBACK TO SAVEPOINT), else None."""
    if statement.tree is None:
        word = statement.words.split(" ", 1)[0].upper()
        if word in ("BEGIN", "START"):
            return "BEGIN"
        return "END" if word in ("COMMIT", "END", "ROLLBACK", "ABORT") else None
    name, fields = node(statement.tree)
    if name != "TransactionStmt":
        return None
    kind = fields.get("kind")
    if kind in ("TRANS_STMT_BEGIN", "TRANS_STMT_START"):
        return "BEGIN"
    return "END" if kind in ("TRANS_STMT_COMMIT", "TRANS_STMT_ROLLBACK") else None
