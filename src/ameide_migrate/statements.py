"""Which statements of a migration PostgreSQL refuses to run inside a transaction block.

Flyway runs a migration holding such a statement outside a transaction: a failure then leaves
behind whatever the statements before it did (and a CREATE INDEX CONCURRENTLY leaves an INVALID
index), so the run must know these migrations before it applies them.

The SQL text is read as PostgreSQL's lexer reads it: `--` and nested `/* */` comments, quoted
strings (E'' with backslash escapes), quoted identifiers and dollar-quoted bodies never count,
so a function body or a comment that mentions CREATE INDEX CONCURRENTLY is not flagged.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_DOLLAR_TAG = re.compile(r"\$(?:[A-Za-z_\u0080-\uffff][\w\u0080-\uffff]*)?\$")
_IDENTIFIER_CHAR = re.compile(r"[\w$\u0080-\uffff]")

# (pattern over a statement's words, what PostgreSQL calls it); matched from the statement's start.
_NON_TRANSACTIONAL: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern, re.IGNORECASE), name)
    for pattern, name in (
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


@dataclass(frozen=True)
class Statement:
    text: str
    """The statement as written, comments included, without its terminating semicolon."""
    words: str
    """Its code alone: comments dropped, strings and bodies emptied, whitespace collapsed."""
    line: int
    """The line its first word is on, counted from 1 (Flyway's "Line" in its messages)."""


@dataclass(frozen=True)
class NonTransactional:
    statement: Statement
    kind: str
    """What PostgreSQL refuses in a transaction block, e.g. "CREATE INDEX CONCURRENTLY"."""


def split(sql_text: str) -> list[Statement]:
    """The statements of a script, in order; empty ones (a lone `;`, only comments) dropped."""
    statements: list[Statement] = []
    code: list[str] = []
    start = 0
    first_word: int | None = None
    i, n = 0, len(sql_text)

    def finish(end: int) -> None:
        nonlocal code, first_word
        words = " ".join("".join(code).split())
        if words and first_word is not None:
            line = sql_text.count("\n", 0, first_word) + 1
            statements.append(Statement(sql_text[start:end].strip(), words, line))
        code, first_word = [], None

    while i < n:
        c = sql_text[i]
        if sql_text.startswith("--", i):
            end = sql_text.find("\n", i)
            i = n if end < 0 else end
            code.append(" ")
            continue
        if sql_text.startswith("/*", i):
            i = _end_of_block_comment(sql_text, i)
            code.append(" ")
            continue
        if c == ";":
            finish(i)
            i += 1
            start = i
            continue
        if c.isspace():
            code.append(" ")
            i += 1
            continue
        if first_word is None:
            first_word = i
        if c == "'" or (c in "eE" and sql_text.startswith("'", i + 1) and not _in_word(code)):
            escapes = c != "'"
            i = _end_of_string(sql_text, i + (1 if escapes else 0), backslash=escapes)
            code.append("''")
            continue
        if c == '"':
            end = sql_text.find('"', i + 1)
            while end >= 0 and sql_text.startswith('"', end + 1):
                end = sql_text.find('"', end + 2)
            stop = n if end < 0 else end + 1
            code.append(sql_text[i:stop])
            i = stop
            continue
        if c == "$" and not _in_word(code):
            tag = _DOLLAR_TAG.match(sql_text, i)
            if tag:
                end = sql_text.find(tag.group(), tag.end())
                i = n if end < 0 else end + len(tag.group())
                code.append("$$")
                continue
        code.append(c)
        i += 1
    finish(n)
    return statements


def _in_word(code: list[str]) -> bool:
    """Whether the text before is part of an identifier (`a$b$` is a name, not a quote)."""
    return bool(code) and bool(_IDENTIFIER_CHAR.fullmatch(code[-1][-1:] or " "))


def _end_of_block_comment(text: str, i: int) -> int:
    depth, i = 1, i + 2
    while i < len(text) and depth:
        if text.startswith("/*", i):
            depth, i = depth + 1, i + 2
        elif text.startswith("*/", i):
            depth, i = depth - 1, i + 2
        else:
            i += 1
    return i


def _end_of_string(text: str, i: int, *, backslash: bool) -> int:
    """The index after the string literal opening at `i` (its quote)."""
    i += 1
    while i < len(text):
        if backslash and text[i] == "\\":
            i += 2
        elif text[i] == "'":
            if text.startswith("'", i + 1):
                i += 2
            else:
                return i + 1
        else:
            i += 1
    return i


def non_transactional(sql_text: str, server_major: int | None = None) -> list[NonTransactional]:
    """The statements PostgreSQL refuses inside a transaction block. `server_major` None assumes
    a current server (12 or newer)."""
    found = []
    for statement in split(sql_text):
        kind = next((k for p, k in _NON_TRANSACTIONAL if p.match(statement.words)), None)
        too_old = server_major is not None and server_major < 12
        if kind is None and too_old and _ADD_ENUM_VALUE.match(statement.words):
            kind = "ALTER TYPE ... ADD VALUE (before PostgreSQL 12)"
        if kind is not None:
            found.append(NonTransactional(statement, kind))
    return found
