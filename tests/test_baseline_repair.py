"""A database that another tool built, and a history that needs mending: `baseline` and `repair`
say what they did, on real Flyway and PostgreSQL."""

from __future__ import annotations

import json

from ameide_migrate.adapters.postgres.connection import connect

from .fix_platform import Platform, ameide


def _apply_by_hand(platform: Platform, database: str, *scripts: str) -> None:
    """The schema as another tool left it: the migrations' SQL run without Flyway."""
    with connect(platform.owners[database]) as conn:
        for script in scripts:
            conn.execute((platform.sql_dir / database / script).read_text())
        conn.commit()


def test_a_schema_without_history_is_baselined_then_only_what_is_above_is_applied(
    platform: Platform,
) -> None:
    _apply_by_hand(
        platform,
        "threads",
        "V1__threads_initial_schema.sql",
        "V2__threads_message_attachments_and_triggers.sql",
    )
    found = ameide("drift", "--env", "local", "--db", "threads", "--json")
    assert found.returncode == 3, found.stdout + found.stderr
    (report,) = json.loads(found.stdout)
    assert report["verdict"] == "schema present, no history"
    assert "ameide-migrate baseline --env local --db threads --version VERSION" in report["fix"]

    refused = ameide("run", "--env", "local", "--db", "threads")
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "no schema history table" in refused.stdout + refused.stderr

    done = ameide("baseline", "--env", "local", "--db", "threads", "--version", "2")

    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == "threads: baselined at version 2"
    again = ameide("run", "--env", "local", "--db", "threads")
    assert again.returncode == 0, again.stdout + again.stderr
    assert [(r.version, r.type, r.success) for r in platform.history("threads") or []] == [
        ("2", "BASELINE", True),
        ("3", "SQL", True),
        ("4", "SQL", True),
    ]
    in_sync = ameide("drift", "--env", "local", "--db", "threads")
    assert in_sync.returncode == 0, in_sync.stdout + in_sync.stderr


def test_repair_says_what_it_changed_and_when_there_was_nothing(platform: Platform) -> None:
    assert ameide("run", "--env", "local", "--db", "graph").returncode == 0
    nothing = ameide("repair", "--env", "local", "--db", "graph")
    assert nothing.returncode == 0, nothing.stdout + nothing.stderr
    assert nothing.stdout.strip() == (
        "graph: nothing to repair (no failed row, every checksum matches)"
    )

    edited = platform.sql_dir / "graph" / "V1__graph_initial_schema.sql"
    edited.write_text(edited.read_text() + "\n-- reviewed\n")
    realigned = ameide("repair", "--env", "local", "--db", "graph")

    assert realigned.returncode == 0, realigned.stdout + realigned.stderr
    assert realigned.stdout.strip() == "graph: realigned checksum of 1"
    assert ameide("run", "--env", "local", "--db", "graph").returncode == 0


def test_baseline_refuses_an_empty_database_and_a_version_above_the_latest(
    platform: Platform,
) -> None:
    """Baselining an empty database, or above the last migration, would mark as applied what
    never ran: both are refused before Flyway writes a history, each naming what to run."""
    above = ameide("baseline", "--env", "local", "--db", "graph", "--version", "99")
    empty = ameide("baseline", "--env", "local", "--db", "graph", "--version", "2")

    assert above.returncode == 2, above.stdout + above.stderr
    assert "--version 99 is above the latest version of graph's migrations (3)" in above.stderr
    assert empty.returncode == 2, empty.stdout + empty.stderr
    assert "graph in local is empty: nothing to adopt" in empty.stderr
    assert "`ameide-migrate run --env local --db graph`" in empty.stderr
    assert platform.history("graph") is None
