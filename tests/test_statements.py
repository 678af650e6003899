"""A migration's SQL split into statements as PostgreSQL's lexer reads it, and the locks read from
each statement: the same split, words and lines on every tricky input as the splitter gave before
it was made linear, on a seed file of thousands of statements as on a short one; and a seed's
thousands of locks shown to a person as the runs they make."""

from __future__ import annotations

import re

import pytest
from rich.console import Console

from ameide_migrate import terminal
from ameide_migrate.core import locking, statements
from ameide_migrate.core.outcomes import DatabaseOutcome, OutcomeState
from ameide_migrate.services import report
from ameide_migrate.services.plan import DatabasePlan, PlannedMigration

# (script, [(text, words, line)]) as the splitter before the linear one gave them.
TRICKY = [
    ("SELECT 1; SELECT 2", [("SELECT 1", "SELECT 1", 1), ("SELECT 2", "SELECT 2", 1)]),
    (
        "select e'a\\'b;c' ; select name'x;y'",
        [("select e'a\\'b;c'", "select ''", 1), ("select name'x;y'", "select name''", 1)],
    ),
    (
        "SELECT xe'a;b'; SELECT $$e'$$ ;",
        [("SELECT xe'a;b'", "SELECT xe''", 1), ("SELECT $$e'$$", "SELECT $$", 1)],
    ),
    (
        "SELECT a$b$c; SELECT $b$ ; $b$",
        [("SELECT a$b$c", "SELECT a$b$c", 1), ("SELECT $b$ ; $b$", "SELECT $$", 1)],
    ),
    (
        "SELECT $$a$$$$b$$; SELECT 2",
        [("SELECT $$a$$$$b$$", "SELECT $$$$b$$", 1), ("SELECT 2", "SELECT 2", 1)],
    ),
    (
        "SELECT $tag$ ; $other$ ; $tag$, $1; SELECT 'x'",
        [
            ("SELECT $tag$ ; $other$ ; $tag$, $1", "SELECT $$, $1", 1),
            ("SELECT 'x'", "SELECT ''", 1),
        ],
    ),
    (
        "/* a /* nested ; */ still ; */ SELECT 1 /* ; */; -- only a comment ;\n;",
        [("/* a /* nested ; */ still ; */ SELECT 1 /* ; */", "SELECT 1", 1)],
    ),
    (
        'SELECT "a"";b", "c"e\'\\\';\'; SELECT 2',
        [
            ('SELECT "a"";b", "c"e\'\\\';\'', 'SELECT "a"";b", "c"\'\'', 1),
            ("SELECT 2", "SELECT 2", 1),
        ],
    ),
    (
        "SELECT 'it''s; fine', E'\\\\'; SELECT 3",
        [("SELECT 'it''s; fine', E'\\\\'", "SELECT '', ''", 1), ("SELECT 3", "SELECT 3", 1)],
    ),
    (
        "SELECT E'ends with a backslash \\",
        [("SELECT E'ends with a backslash \\", "SELECT ''", 1)],
    ),
    ("SELECT 'never closed; SELECT 2", [("SELECT 'never closed; SELECT 2", "SELECT ''", 1)]),
    (
        'SELECT "never closed; SELECT 2',
        [('SELECT "never closed; SELECT 2', 'SELECT "never closed; SELECT 2', 1)],
    ),
    ("SELECT $x$ never closed; SELECT 2", [("SELECT $x$ never closed; SELECT 2", "SELECT $$", 1)]),
    ("SELECT 1 /* never closed; SELECT 2", [("SELECT 1 /* never closed; SELECT 2", "SELECT 1", 1)]),
    (
        "SELECT\xa0E'\\';'; SELECT é$1; SELECT 東京$$x$$",
        [
            ("SELECT\xa0E'\\';'", "SELECT ''", 1),
            ("SELECT é$1", "SELECT é$1", 1),
            ("SELECT 東京$$x$$", "SELECT 東京$$x$$", 1),
        ],
    ),
    (
        "\r\n\r\n  INSERT INTO t VALUES ('a\nb');\r\n\n  -- c\n  SELECT 😀e'x;y'; ;;",
        [
            ("INSERT INTO t VALUES ('a\nb')", "INSERT INTO t VALUES ('')", 3),
            ("-- c\n  SELECT 😀e'x;y'", "SELECT 😀''", 7),
        ],
    ),
    (
        "SELECT 1; SELECT 2; SELECT 3; -- three on one line\nSELECT\n\n4",
        [
            ("SELECT 1", "SELECT 1", 1),
            ("SELECT 2", "SELECT 2", 1),
            ("SELECT 3", "SELECT 3", 1),
            ("-- three on one line\nSELECT\n\n4", "SELECT 4", 2),
        ],
    ),
]


@pytest.mark.parametrize(("script", "expected"), TRICKY)
def test_tricky_scripts_split_into_the_same_statements_words_and_lines(
    script: str, expected: list[tuple[str, str, int]]
) -> None:
    assert [(s.text, s.words, s.line) for s in statements.split(script)] == expected


def seed_rows(count: int) -> str:
    """A seed file: a table, then `count` INSERTs of two lines each with quotes, E'' strings,
    dollar-quoted bodies and comments that hold semicolons."""
    rows = [
        f"-- row {n}: Zoë's café; naïve\n"
        f"INSERT INTO items VALUES ({n}, 'Ærø ''{n}''; 東京', E'\\'{n};', $b${n}; $$ -- $b$);\n"
        for n in range(count)
    ]
    return "CREATE TABLE items (id int, name text, note text, body text);\n" + "".join(rows)


def test_a_seed_file_of_thousands_of_statements_splits_with_each_ones_line() -> None:
    found = statements.split(seed_rows(20_000))
    assert len(found) == 20_001
    assert [s.line for s in found[:3]] == [1, 3, 5]
    assert found[-1].line == 3 + 2 * 19_999
    assert found[-1].words == "INSERT INTO items VALUES (19999, '', '', $$)"
    assert found[-1].text.startswith("-- row 19999: Zoë's café; naïve\nINSERT INTO items")


def test_the_statements_of_a_seed_file_lock_their_table_in_row_exclusive() -> None:
    batch = locking.Batch()
    found = locking.statement_locks(seed_rows(2_000), batch)
    assert len(found) == 2_000
    assert {(lock.relation, lock.mode, lock.new) for lock in found} == {
        ("items", "ROW EXCLUSIVE", True)
    }
    without_its_table = seed_rows(10).split("\n", 1)[1]
    assert not any(lock.new for lock in locking.statement_locks(without_its_table, locking.Batch()))


@pytest.mark.parametrize(
    ("sql", "locked"),
    [
        ("CREATE INDEX " + "é" * 40 + " (a)", []),
        ("COMMENT ON COLUMN t." + "ü" * 40 + " IS 'x'", [("t", "SHARE UPDATE EXCLUSIVE")]),
        ("DROP TRIGGER " + "東" * 40 + " x", []),
    ],
)
def test_a_statement_with_a_long_non_ascii_name_is_read_at_once(
    sql: str, locked: list[tuple[str, str]]
) -> None:
    # A name of 40 such letters was tried 2^40 ways where a pattern did not fit it at first:
    # the lint and the plan never returned.
    statement = statements.split(sql)[0]
    assert [(t.name, t.mode) for t in locking.locks(statement)] == locked
    assert locking.created(statement) is None


def test_a_seeds_locks_on_a_table_that_exists_read_as_one_row_a_run_of_alike_statements() -> None:
    script = (
        "INSERT INTO items VALUES (1);\n" * 1_000
        + "CREATE INDEX items_name ON items (name);\n"
        + "INSERT INTO items VALUES (2);\n" * 2
    )
    facts = {"items": locking.RelationFacts(7, "public.items", 5_000, 1 << 20)}
    found = locking.statement_locks(script, locking.Batch(facts))
    assert len(found) == 1_003
    outcome = DatabaseOutcome("shop", OutcomeState.WOULD_APPLY, "1", "2", "2", 1, 0.1)
    planned = DatabasePlan(
        outcome,
        (PlannedMigration("shop/V2__seed.sql", "2", "seed", 1, "0" * 64, tuple(found)),),
    )
    rows = [
        row
        for row in report.plan_markdown("prod", [planned], "abc", asks=False).splitlines()
        if row.startswith("| shop/V2__seed.sql:")
    ]
    assert rows == [
        "| shop/V2__seed.sql:1-1000 (1,000 statements) | INSERT INTO items VALUES (1) "
        "| ROW EXCLUSIVE | public.items | ~5,000 | 1.0 MB | - |",
        "| shop/V2__seed.sql:1001 | CREATE INDEX items_name ON items (name) | SHARE | public.items "
        "| ~5,000 | 1.0 MB | possible |",
        "| shop/V2__seed.sql:1002-1003 (2 statements) | INSERT INTO items VALUES (2) "
        "| ROW EXCLUSIVE | public.items | ~5,000 | 1.0 MB | - |",
    ]
    console = Console(width=200, record=True)
    terminal.print_locks(
        [("shop", "shop/V2__seed.sql", lock) for lock in found], console, title="Locks"
    )
    printed = [r for r in console.export_text().splitlines() if "shop/V2__seed.sql:" in r]
    assert [r.split()[1] for r in printed] == [
        "shop/V2__seed.sql:1-1000",
        "shop/V2__seed.sql:1001",
        "shop/V2__seed.sql:1002-1003",
    ]
    assert re.search(r"\(1,000 statements\)\s+│ ROW EXCLUSIVE │ public\.items", printed[0])
