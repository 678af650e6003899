"""Migrations PostgreSQL cannot run in a transaction: CREATE INDEX CONCURRENTLY and the rest.

They migrate with nothing set, as Flyway's own command line applies them; one that fails midway
stops its database, names what it left and how to clean it up, is never retried over its
leftovers, and the drift check sees the INVALID index it left.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest
from psycopg import sql

from ameide_migrate import postgres, statements
from ameide_migrate.errors import NonTransactionalMigrationFailed
from ameide_migrate.flyway import Installation, Request, classify
from ameide_migrate.outcomes import OutcomeState
from ameide_migrate.postgres import Credentials
from ameide_migrate.settings import get_settings

from .fix_platform import Platform, ameide

# --- which statements PostgreSQL refuses in a transaction, read from the SQL text -------------

TRICKY_BUT_TRANSACTIONAL = """
-- CREATE INDEX CONCURRENTLY in a line comment
/* a block /* nested: CREATE INDEX CONCURRENTLY x ON t (a); */ still a comment; VACUUM; */
CREATE FUNCTION make_index() RETURNS void LANGUAGE plpgsql AS $body$
BEGIN
    EXECUTE 'CREATE INDEX CONCURRENTLY x ON t (a)';
    PERFORM $$ VACUUM $$;
END
$body$;
SELECT 'VACUUM; CREATE INDEX CONCURRENTLY', E'it\\'s; DROP INDEX CONCURRENTLY x', 'a''b;';
CREATE INDEX "CONCURRENTLY" ON t (a);
CREATE TABLE vacuum_log (id int);
"""


def kinds(text: str, server_major: int | None = None) -> list[tuple[str, int]]:
    return [(f.kind, f.statement.line) for f in statements.non_transactional(text, server_major)]


def test_text_in_comments_strings_and_dollar_quoted_bodies_is_not_flagged() -> None:
    assert kinds(TRICKY_BUT_TRANSACTIONAL) == []
    assert [s.line for s in statements.split(TRICKY_BUT_TRANSACTIONAL)] == [4, 10, 11, 12]


def test_every_statement_postgresql_refuses_in_a_transaction_is_named_with_its_line() -> None:
    script = (
        "create unique index\n  concurrently if not exists items_code_key on items (code);\n"
        "DROP INDEX CONCURRENTLY IF EXISTS old_idx;\n"
        "REINDEX (VERBOSE) INDEX CONCURRENTLY items_code_key;\n"
        "REINDEX (CONCURRENTLY) TABLE items;\n"
        "REINDEX SCHEMA public;\n"
        "VACUUM (ANALYZE) items;\n"
        "CREATE DATABASE other;\n"
        "ALTER SYSTEM SET work_mem = '8MB';\n"
        "ALTER TABLE measures DETACH PARTITION measures_2020 CONCURRENTLY;\n"
        "CREATE INDEX items_tenant_idx ON items (tenant);\n"
    )
    assert kinds(script) == [
        ("CREATE INDEX CONCURRENTLY", 1),
        ("DROP INDEX CONCURRENTLY", 3),
        ("REINDEX CONCURRENTLY", 4),
        ("REINDEX CONCURRENTLY", 5),
        ("REINDEX SCHEMA/DATABASE/SYSTEM", 6),
        ("VACUUM", 7),
        ("CREATE/DROP DATABASE", 8),
        ("ALTER SYSTEM", 9),
        ("DETACH PARTITION CONCURRENTLY", 10),
    ]


def test_adding_an_enum_value_is_non_transactional_only_before_postgresql_12() -> None:
    script = "ALTER TYPE mood ADD VALUE IF NOT EXISTS 'meh';"
    assert kinds(script) == []
    assert kinds(script, server_major=15) == []
    assert kinds(script, server_major=11) == [
        ("ALTER TYPE ... ADD VALUE (before PostgreSQL 12)", 1)
    ]


# --- the migration sets ------------------------------------------------------------------------

TABLE = (
    "CREATE TABLE cic_items (id bigint PRIMARY KEY, tenant int NOT NULL, code text NOT NULL);\n"
    "INSERT INTO cic_items SELECT g, g % 13, 'c' || g FROM generate_series(1, 20000) g;\n"
    "-- CREATE INDEX CONCURRENTLY only in a comment: this one runs in a transaction\n"
    "CREATE FUNCTION cic_reindex() RETURNS void LANGUAGE plpgsql AS $$\n"
    "BEGIN EXECUTE 'REINDEX INDEX CONCURRENTLY cic_items_tenant_idx'; END $$;\n"
)
CONCURRENTLY_SET = {
    "V9__cic_items.sql": TABLE,
    "V10__cic_items_tenant_idx.sql": (
        "CREATE INDEX CONCURRENTLY cic_items_tenant_idx ON cic_items (tenant);\n"
    ),
    "V11__cic_items_if_not_exists.sql": (
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS cic_items_tenant_code_idx\n"
        "    ON cic_items (tenant, code);\n"
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS cic_items_tenant_idx ON cic_items (tenant);\n"
    ),
    "V12__cic_items_code_key.sql": (
        "CREATE UNIQUE INDEX CONCURRENTLY cic_items_code_key ON cic_items (code);\n"
    ),
    "V13__cic_items_rebuild.sql": (
        "DROP INDEX CONCURRENTLY IF EXISTS cic_items_tenant_code_idx;\n"
        "DROP INDEX CONCURRENTLY IF EXISTS cic_items_never_built_idx;\n"
    ),
}
HISTORY_COLUMNS = "version, description, type, script, checksum, success"


def history_rows(creds: Credentials) -> list[tuple[Any, ...]]:
    with postgres.connect(creds) as conn:
        return conn.execute(
            sql.SQL("SELECT {} FROM flyway_schema_history ORDER BY installed_rank").format(
                sql.SQL(HISTORY_COLUMNS)
            )
        ).fetchall()


def invalid_index_names(creds: Credentials) -> list[str]:
    return [i.qualified for i in postgres.invalid_indexes(creds)]


@contextmanager
def scratch_database(admin: Credentials, name: str, owner: Credentials) -> Iterator[Credentials]:
    with psycopg.connect(**admin.conninfo(5), autocommit=True) as conn:  # type: ignore[arg-type]
        conn.execute(
            sql.SQL("CREATE DATABASE {} OWNER {}").format(
                sql.Identifier(name), sql.Identifier(owner.user)
            )
        )
    try:
        yield Credentials(owner.host, owner.port, name, owner.user, owner.password)
    finally:
        with psycopg.connect(**admin.conninfo(5), autocommit=True) as conn:  # type: ignore[arg-type]
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def flyway_command_line(
    inst: Installation, creds: Credentials, platform: Platform, *args: str
) -> subprocess.CompletedProcess[str]:
    """Flyway's own command line on graph's folder, configured as the product runs it."""
    env = {
        **os.environ,
        "FLYWAY_URL": creds.jdbc_url,
        "FLYWAY_USER": creds.user,
        "FLYWAY_PASSWORD": creds.password.get_secret_value(),
        "FLYWAY_LOCATIONS": f"filesystem:{platform.sql_dir / 'graph'}",
        "FLYWAY_PLACEHOLDERS_ENVIRONMENT": "local",
    }
    return subprocess.run(
        [str(inst.home / "bin" / "flyway"), "-skipCheckForUpdate", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_concurrently_migrations_apply_fast_with_nothing_set_as_flyways_command_line_does(
    platform: Platform, flyway_installation: Installation
) -> None:
    for script, text in CONCURRENTLY_SET.items():
        (platform.sql_dir / "graph" / script).write_text(text)

    started = time.monotonic()
    state, report = platform.run(databases=["graph"])

    assert state.is_completed(), report.summary()
    (outcome,) = report.outcomes
    assert outcome.state is OutcomeState.MIGRATED
    assert outcome.after == "13"
    # Waiting on Flyway's own lock would last until lock_timeout (30 s) cancelled the build.
    assert time.monotonic() - started < 25
    graph = platform.owners["graph"]
    assert invalid_index_names(graph) == []
    assert {name for (name,) in platform.query("graph", "SELECT indexname FROM pg_indexes")} >= {
        "cic_items_tenant_idx",
        "cic_items_code_key",
    }
    assert not platform.table_exists("graph", "cic_items_tenant_code_idx")

    with scratch_database(platform.admin, f"{platform.prefix}graph_cli", graph) as cli_db:
        done = flyway_command_line(
            flyway_installation, cli_db, platform, "-postgresql.transactional.lock=false", "migrate"
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert history_rows(graph) == history_rows(cli_db)
        assert invalid_index_names(cli_db) == []


# --- a CONCURRENTLY migration that fails midway ---------------------------------------------------

CANCELLED_SCRIPT = "V10__cic_items_code_idx.sql"
CANCELLED_INDEX = "cic_items_code_idx"
CANCELLED_SQL = f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {CANCELLED_INDEX} ON cic_items (code)"


@contextmanager
def old_snapshot(creds: Credentials) -> Iterator[None]:
    """A session holding a snapshot older than any index build: CREATE INDEX CONCURRENTLY waits
    for it after building the index, which is then INVALID until the build ends."""
    with psycopg.connect(**creds.conninfo(5)) as conn:  # type: ignore[arg-type]
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        conn.execute("SELECT 1")
        yield
        conn.rollback()


def cancel_waiting_build(admin: Credentials, database: str, stop: threading.Event) -> None:
    """Cancel the CREATE INDEX CONCURRENTLY once it waits, as an operator would."""
    with psycopg.connect(**admin.with_database(database).conninfo(5), autocommit=True) as conn:  # type: ignore[arg-type]
        while not stop.is_set():
            row = conn.execute(
                "SELECT pg_cancel_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND wait_event_type = 'Lock' "
                "AND query ILIKE '%%CREATE INDEX CONCURRENTLY%%'"
            ).fetchone()
            if row and row[0]:
                return
            time.sleep(0.1)


def prepare_table(platform: Platform) -> None:
    (platform.sql_dir / "graph" / "V9__cic_items.sql").write_text(TABLE)
    state, report = platform.run(databases=["graph"])
    assert state.is_completed(), report.summary()
    (platform.sql_dir / "graph" / CANCELLED_SCRIPT).write_text(CANCELLED_SQL + ";\n")


def success_rows_of_10(platform: Platform) -> list[postgres.HistoryRow]:
    return [r for r in platform.history("graph") or [] if r.version == "10" and r.success]


def test_a_cancelled_concurrently_migration_stops_names_its_invalid_index_and_is_never_retried_over(
    platform: Platform,
) -> None:
    prepare_table(platform)
    graph = platform.owners["graph"]

    stop = threading.Event()
    canceller = threading.Thread(
        target=cancel_waiting_build, args=(platform.admin, graph.database, stop)
    )
    with old_snapshot(graph):
        canceller.start()
        try:
            state, report = platform.run(databases=["graph"])
        finally:
            stop.set()
            canceller.join()

    assert state.is_failed()
    (outcome,) = report.outcomes
    assert outcome.state is OutcomeState.FAILED
    # The original failure, not what a retry would have met ("already exists", or a success).
    assert "57014" in outcome.message
    assert CANCELLED_SQL in outcome.message
    assert "canceling statement due to user request" in outcome.message
    assert "on a retry" not in outcome.message
    assert f"INVALID index public.{CANCELLED_INDEX} on cic_items" in outcome.message
    assert "ran outside a transaction" in outcome.message
    assert "rolled the failed migration back" not in outcome.recovery
    drop = f'DROP INDEX CONCURRENTLY IF EXISTS "public"."{CANCELLED_INDEX}";'
    assert f"`{drop}`" in outcome.recovery
    assert "ameide-migrate run --env local --db graph" in outcome.recovery
    failed_row = any(not r.success for r in platform.history("graph") or [])
    assert ("ameide-migrate repair" in outcome.recovery) is failed_row
    assert success_rows_of_10(platform) == []
    assert invalid_index_names(graph) == [f"public.{CANCELLED_INDEX}"]

    # A rerun without the fix: IF NOT EXISTS would skip the INVALID index and record a success.
    state, report = platform.run(databases=["graph"])
    assert state.is_failed()
    (outcome,) = report.outcomes
    assert f"INVALID index public.{CANCELLED_INDEX}" in outcome.message
    assert f"`{drop}`" in outcome.recovery
    assert success_rows_of_10(platform) == []

    # Drift sees it under both engines, with its fix.
    for engine in ("native", "flyway"):
        done = ameide("drift", "--env", "local", "--json", "--db", "graph", "--engine", engine)
        assert done.returncode == 3, done.stdout + done.stderr
        (verdict,) = json.loads(done.stdout)
        assert verdict["verdict"] == "drifted", engine
        assert any(
            f"public.{CANCELLED_INDEX} on cic_items is INVALID" in p for p in verdict["problems"]
        )
        assert drop in verdict["fix"], engine

    # The recovery, exactly as printed, then the rerun.
    with postgres.connect(graph) as conn:
        for statement in re.findall(r"`(DROP INDEX CONCURRENTLY [^`]*)`", outcome.recovery):
            conn.execute(statement)
    if failed_row:
        repaired = ameide("repair", "--env", "local", "--db", "graph")
        assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    state, report = platform.run(databases=["graph"])
    assert state.is_completed(), report.summary()
    assert len(success_rows_of_10(platform)) == 1
    assert invalid_index_names(graph) == []
    done = ameide("drift", "--env", "local", "--json", "--db", "graph")
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_concurrently_build_cancelled_by_lock_timeout_is_not_retried(
    platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    prepare_table(platform)
    # The environment's own lock_timeout, over AMEIDE_LOCK_TIMEOUT_SECONDS.
    monkeypatch.setenv("AMEIDE_LOCK_TIMEOUT_SECONDS", "30")
    toml = platform.sql_dir / "ameide.toml"
    toml.write_text(
        toml.read_text().replace(
            "[environments.local]\n", "[environments.local]\nlock_timeout_seconds = 2\n"
        )
    )
    get_settings.cache_clear()

    started = time.monotonic()
    with old_snapshot(platform.owners["graph"]):
        state, report = platform.run(databases=["graph"])

    assert state.is_failed()
    (outcome,) = report.outcomes
    # 55P03 is a lock wait, retried for a transactional migration; here it would build on the
    # INVALID index, so the run stops at the first attempt and says why it was cancelled.
    assert "55P03" in outcome.message
    assert "on a retry" not in outcome.message
    assert "already exists" not in outcome.message
    assert "It was cancelled by lock_timeout (2s)" in outcome.message
    assert "raise lock_timeout_seconds of [environments.local] in ameide.toml" in outcome.message
    assert f"INVALID index public.{CANCELLED_INDEX}" in outcome.message
    assert time.monotonic() - started < 20
    assert success_rows_of_10(platform) == []


# --- what the catalog's definitions hide ----------------------------------------------------------


def test_a_lock_wait_while_applying_a_non_transactional_migration_is_not_transient() -> None:
    request = Request("migrate", "graph", ("filesystem:graph",), {}, "flyway_schema_history")
    lock_wait = {"message": "Script V10__x.sql failed", "sqlStates": ["55P03"]}

    in_transaction = classify(request, {**lock_wait, "executableInTransaction": True})
    outside = classify(request, {**lock_wait, "executableInTransaction": False, "script": "V10"})

    assert in_transaction.transient  # rolled back: the same migration may pass a moment later
    assert isinstance(outside, NonTransactionalMigrationFailed)
    assert not outside.transient
    assert outside.script == "V10"


def test_drift_sees_a_disabled_trigger_and_a_constraint_made_not_valid(platform: Platform) -> None:
    platform.run(databases=["threads"])
    with postgres.connect(platform.owners["threads"]) as conn:
        conn.execute("ALTER TABLE threads DISABLE TRIGGER threads_set_updated_at")
        conn.execute("ALTER TABLE messages DROP CONSTRAINT messages_role_chk")
        conn.execute(
            "ALTER TABLE messages ADD CONSTRAINT messages_role_chk "
            "CHECK (role IN ('system', 'user', 'assistant', 'tool')) NOT VALID"
        )

    done = ameide("drift", "--env", "local", "--json", "--db", "threads")

    assert done.returncode == 3, done.stdout + done.stderr
    (report,) = json.loads(done.stdout)
    changes = {c.split(" changed outside Flyway")[0]: c for c in report["schema_changes"]}
    trigger = changes["trigger public.threads.threads_set_updated_at"]
    constraint = changes["constraint public.messages.messages_role_chk"]
    assert trigger.split(", now ")[1].rstrip("'\"").endswith(" DISABLED")
    assert "DISABLED" not in trigger.split(", now ")[0]
    assert constraint.split(", now ")[1].rstrip("'\"").endswith(" NOT VALID")
    assert "NOT VALID" not in constraint.split(", now ")[0]
