"""Which statements of a migration PostgreSQL refuses to run inside a transaction block.

Flyway runs a migration holding such a statement outside a transaction: a failure then leaves
behind whatever the statements before it did (and a CREATE INDEX CONCURRENTLY leaves an INVALID
index), so the run must know these migrations before it applies them.

The SQL text is read as PostgreSQL's lexer reads it: `--` and nested `/* */` comments, quoted
strings (E'' with backslash escapes), quoted identifiers and dollar-quoted bodies never count,
so a function body or a comment that mentions CREATE INDEX CONCURRENTLY is not flagged.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass

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
    return list(_split(sql_text))


# A run reads each pending script several times in a row (the names to ask the database about,
# the lint, the locks of the plan and of the pre-flight): a large script is split once. A few
# scripts are kept, not all: each costs about three times its text.
@functools.lru_cache(maxsize=8)
def _split(sql_text: str) -> tuple[Statement, ...]:
    """One pass over the text, in time proportional to it: the runs of plain code between two
    places where the lexer's state may change (`_TURNS`) are taken whole."""
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
    return tuple(statements)


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
    for statement in parsed:
        kind = next((k for p, k in _NON_TRANSACTIONAL if p.match(statement.words)), None)
        too_old = server_major is not None and server_major < 12
        if kind is None and too_old and _ADD_ENUM_VALUE.match(statement.words):
            kind = "ALTER TYPE ... ADD VALUE (before PostgreSQL 12)"
        if kind is not None:
            found.append(NonTransactional(statement, kind))
    return found
