"""Migrations PostgreSQL cannot run in a transaction: CREATE INDEX CONCURRENTLY and the rest.

They migrate with nothing set, as Flyway's own command line applies them; one that fails midway
stops its database, names what it left and how to clean it up, is never retried over its
leftovers, and the drift check sees the INVALID index it left.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from ameide_migrate.adapters.flyway import Installation, Request, classify
from ameide_migrate.adapters.postgres.connection import Credentials, connect
from ameide_migrate.adapters.postgres.index_catalog import (
    drop_indexes_concurrently,
    indexes_named,
    invalid_indexes,
)
from ameide_migrate.config.settings import get_settings
from ameide_migrate.core import interruption, recovery, statements
from ameide_migrate.core.catalog import DatabaseCatalog, Version, load_folder
from ameide_migrate.core.errors import NonTransactionalMigrationFailed
from ameide_migrate.core.history import HistoryRow
from ameide_migrate.core.indexes import IndexOnTable, NamedIndex
from ameide_migrate.core.outcomes import OutcomeState
from ameide_migrate.services import migrate

from .fix_platform import REPO, Platform, ameide, drop_owners, wait_for
from .fix_processes import children, gone
from .test_fleet import add_fleet, histories, tenant

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
    with connect(creds) as conn:
        return conn.execute(
            sql.SQL("SELECT {} FROM flyway_schema_history ORDER BY installed_rank").format(
                sql.SQL(HISTORY_COLUMNS)
            )
        ).fetchall()


def invalid_index_names(creds: Credentials) -> list[str]:
    return [i.qualified for i in invalid_indexes(creds)]


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


def success_rows_of_10(platform: Platform) -> list[HistoryRow]:
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
    with connect(graph) as conn:
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
    with connect(platform.owners["threads"]) as conn:
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


# --- a non-transactional migration cut short by a crash ---------------------------------------

TWO_INDEXES = (
    "CREATE INDEX CONCURRENTLY accounts_name_idx ON accounts (name);\n"
    "-- the second waits for a lock the test holds: the run is killed there\n"
    "CREATE INDEX CONCURRENTLY notes_body_idx ON notes (body);\n"
)


def tenant_template(root: Path, second: str) -> DatabaseCatalog:
    folder = root / "tenant"
    folder.mkdir(exist_ok=True)
    (folder / "V1__tables.sql").write_text("CREATE TABLE accounts (name text);\n")
    (folder / "V2__two_indexes.sql").write_text(second)
    template = load_folder(folder)
    assert template is not None
    return template


def applied_up_to(template: DatabaseCatalog, version: str) -> list[HistoryRow]:
    """The history Flyway writes for the template's migrations up to `version`."""
    return [
        HistoryRow(rank, str(m.version), m.description, "SQL", m.script, m.checksum, True)
        for rank, m in enumerate(template.migrations, start=1)
        if m.version is not None and m.version <= Version.parse(version)
    ]


def test_a_migration_cut_short_is_found_by_the_index_its_first_statement_built(
    tmp_path: Path,
) -> None:
    template = tenant_template(tmp_path, TWO_INDEXES)
    at_v1 = applied_up_to(template, "1")
    built = NamedIndex("public", "accounts_name_idx", "accounts", True)
    asked: list[list[IndexOnTable]] = []

    def lookup(
        wanted: Sequence[IndexOnTable],
    ) -> dict[IndexOnTable, NamedIndex]:
        asked.append(list(wanted))
        return {w: built for w in wanted if w[0] == "accounts_name_idx"}

    found = interruption.find("tenant_t1", template, at_v1, lookup)

    assert found is not None
    assert asked == [[("accounts_name_idx", "accounts"), ("notes_body_idx", "notes")]]
    assert found.undo() == ['DROP INDEX CONCURRENTLY IF EXISTS "public"."accounts_name_idx";']
    assert [st.line for st in found.remaining()] == [3]
    described = found.describe()
    assert "V2__two_indexes.sql was interrupted" in described
    assert "index public.accounts_name_idx on accounts (line 1)" in described
    assert "line 3: CREATE INDEX CONCURRENTLY notes_body_idx ON notes (body)" in described
    assert "did not roll it back" in described
    fix = recovery.after_interrupted(found, recovery.Subject("local", "tenant_t1", "tenants", "t1"))
    rerun = "then rerun `ameide-migrate fleet run --env local --fleet tenants --target t1`"
    assert fix.index("DROP INDEX CONCURRENTLY") < fix.index(rerun)
    assert fix.endswith(f"; or let `{rerun[len('then rerun `') : -1]} --undo-interrupted` do both")
    tree = recovery.after_interrupted(found, recovery.Subject("local", "graph"))
    assert "--undo-interrupted" not in tree  # run leaves a database of the tree to its owner

    # Nothing built yet: not interrupted. Applied: nothing pending, nothing asked.
    assert interruption.find("tenant_t1", template, at_v1, lambda names: {}) is None
    asked.clear()
    assert interruption.find("tenant_t1", template, applied_up_to(template, "2"), lookup) is None
    assert asked == []


def test_what_if_not_exists_makes_safe_is_left_to_the_rerun_and_never_what_is_invalid(
    tmp_path: Path,
) -> None:
    template = tenant_template(
        tmp_path, TWO_INDEXES.replace("CONCURRENTLY ", "CONCURRENTLY IF NOT EXISTS ")
    )
    at_v1 = applied_up_to(template, "1")
    valid = NamedIndex("public", "accounts_name_idx", "accounts", True)
    half = NamedIndex("public", "accounts_name_idx", "accounts", False)

    complete = interruption.find("tenant_t1", template, at_v1, lambda names: {names[0]: valid})
    cut_in_its_build = interruption.find(
        "tenant_t1", template, at_v1, lambda names: {names[0]: half}
    )

    assert complete is None  # the rerun skips the valid index and builds the other
    assert cut_in_its_build is not None
    assert "(INVALID: its build was cut short)" in cut_in_its_build.describe()
    assert [st.line for st in cut_in_its_build.remaining()] == [1, 3]


def test_a_transactional_migration_is_never_taken_for_one_cut_short(tmp_path: Path) -> None:
    template = tenant_template(tmp_path, "CREATE INDEX accounts_name_idx ON accounts (name);\n")
    asked: list[Sequence[IndexOnTable]] = []

    def lookup(
        wanted: Sequence[IndexOnTable],
    ) -> dict[IndexOnTable, NamedIndex]:
        asked.append(wanted)
        return {}

    assert interruption.find("tenant_t1", template, applied_up_to(template, "1"), lookup) is None
    assert asked == []  # PostgreSQL rolled all of it back: nothing to look for


def test_index_names_are_read_as_postgresql_reads_them() -> None:
    script = (
        'CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS "Odd ""name""" ON t (a);\n'
        "create index concurrently by_b on app . t (b);\n"
        "CREATE INDEX CONCURRENTLY app.by_c ON app.t (c);\n"  # PostgreSQL refuses: no schema
        "CREATE INDEX CONCURRENTLY ON t (c);\n"
        "CREATE INDEX by_d ON t (d);\n"
    )
    builds = interruption.index_builds(script)
    assert [(b.name, b.table, b.if_not_exists, b.statement.line) for b in builds] == [
        ('"Odd ""name"""', "t", True, 1),
        ("by_b", "app.t", False, 2),
    ]
    assert [b.looked_for for b in interruption.index_builds(script, "tenant")] == [
        ('"Odd ""name"""', '"tenant".t'),
        ("by_b", "app.t"),
    ]


def test_a_migration_cut_short_is_found_by_the_names_its_placeholders_give(
    tmp_path: Path,
) -> None:
    (tmp_path / "tenant").mkdir()
    (tmp_path / "tenant" / "flyway.conf").write_text(
        "flyway.schemas=tenant\nflyway.placeholders.suffix=_v2\n"
    )
    template = tenant_template(
        tmp_path,
        "CREATE INDEX CONCURRENTLY accounts${suffix} ON ${flyway:defaultSchema}.accounts (name);\n"
        "CREATE INDEX CONCURRENTLY notes_body_idx ON notes (body);\n",
    )
    built = NamedIndex("tenant", "accounts_v2", "accounts", True)
    asked: list[list[IndexOnTable]] = []

    def lookup(wanted: Sequence[IndexOnTable]) -> dict[IndexOnTable, NamedIndex]:
        asked.append(list(wanted))
        return {w: built for w in wanted if w[0] == "accounts_v2"}

    found = interruption.find("tenant_t1", template, applied_up_to(template, "1"), lookup)
    # Read as Flyway runs it: the raw text named the table `$`, and no index was found.
    assert asked == [[("accounts_v2", "tenant.accounts"), ("notes_body_idx", '"tenant".notes')]]
    assert found is not None
    assert [(b.statement.line, b.statement.fallback) for b, _ in found.built] == [(1, None)]


def test_index_names_the_parser_reads_are_folded_as_postgresql_folds_them() -> None:
    script = (
        "CREATE INDEX CONCURRENTLY By_B ON App.T (b);\n"
        'CREATE INDEX CONCURRENTLY "Odd" ON t (a);\n'
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS c ON ONLY t (c);\n"
        "CREATE INDEX d ON t (d);\n"
        "CREATE INDEX CONCURRENTLY ON t (e);\n"
    )
    builds = interruption.index_builds(script, "tenant")
    assert {s.fallback for s in statements.split(script)} == {None}
    # The words as written would look for "By_B" on "App.T": the tree gives what PostgreSQL made.
    assert [(b.looked_for, b.if_not_exists, b.statement.line) for b in builds] == [
        (("by_b", "app.t"), False, 1),
        (('"Odd"', '"tenant".t'), False, 2),
        (("c", '"tenant".t'), True, 3),
    ]


def test_a_pending_migration_run_outside_a_transaction_is_noted_with_the_reading_it_comes_from(
    tmp_path: Path,
) -> None:
    (tmp_path / "parsed").mkdir()
    (tmp_path / "meta").mkdir()
    # Read with its placeholders replaced, as Flyway runs it: the parser reads it.
    parsed = tenant_template(
        tmp_path / "parsed",
        "VACUUM ${flyway:defaultSchema}.accounts;\n"
        "CREATE INDEX CONCURRENTLY i ON accounts (name);\n",
    )
    # A psql meta-command is no SQL: the parser rejects the file, the fallback reads it.
    meta = tenant_template(tmp_path / "meta", "VACUUM accounts;\n\\echo done\n")
    assert migrate.outside_a_transaction(parsed, applied_up_to(parsed, "1")) == [
        "V2__two_indexes.sql runs outside a transaction (CREATE INDEX CONCURRENTLY (line 2), "
        "VACUUM (line 1)): if it fails, what it did stays, and it is not retried"
    ]
    assert migrate.outside_a_transaction(parsed, applied_up_to(parsed, "2")) == []
    assert migrate.outside_a_transaction(meta, applied_up_to(meta, "1")) == [
        "V2__two_indexes.sql runs outside a transaction (VACUUM (line 1)) [read by the fallback "
        'splitter: the parser rejected line 2: syntax error at or near "\\"]: if it fails, '
        "what it did stays, and it is not retried"
    ]


def test_an_index_cut_short_is_found_in_its_tables_schema_whatever_the_search_path_finds(
    tmp_path: Path, pg_admin: Credentials, db_prefix: str
) -> None:
    template = tenant_template(
        tmp_path,
        "CREATE INDEX CONCURRENTLY accounts_name_idx ON app.accounts (name);\n"
        "CREATE INDEX CONCURRENTLY accounts_body_idx ON app.accounts (body);\n",
    )
    with scratch_database(pg_admin, f"{db_prefix}tenant_t1", pg_admin) as creds:
        with connect(creds) as conn:
            # What the crash left in app, and an index of the same name in public (first on
            # the search path) that the migration never touched.
            conn.execute("CREATE SCHEMA app")
            conn.execute("CREATE TABLE app.accounts (name text, body text)")
            conn.execute("CREATE INDEX accounts_name_idx ON app.accounts (name)")
            conn.execute("CREATE TABLE public.other (name text)")
            conn.execute("CREATE INDEX accounts_name_idx ON public.other (name)")

        def lookup(
            wanted: Sequence[IndexOnTable],
        ) -> dict[IndexOnTable, NamedIndex]:
            return indexes_named(creds, wanted)

        found = interruption.find("tenant_t1", template, applied_up_to(template, "1"), lookup)

        assert found is not None
        assert [index for _, index in found.built] == [
            NamedIndex("app", "accounts_name_idx", "accounts", True)
        ]
        assert [st.line for st in found.remaining()] == [2]
        assert found.undo() == ['DROP INDEX CONCURRENTLY IF EXISTS "app"."accounts_name_idx";']
        drop_indexes_concurrently(creds, [index for _, index in found.built])
        with connect(creds) as conn:
            left = conn.execute(
                "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n "
                "ON n.oid = c.relnamespace WHERE c.relname LIKE 'accounts_%_idx'"
            ).fetchall()
        assert left == [("public", "accounts_name_idx")]
        undone = interruption.find("tenant_t1", template, applied_up_to(template, "1"), lookup)
        assert undone is None


FIVE_TENANTS = ["t0", "t1", "t2", "t3", "t4"]
FIVE_TENANTS_WAVES = "canary = 1\ngrowth = 2\nparallel = 4\n"
NOTES = {"V4__notes.sql": "CREATE TABLE notes (id bigint PRIMARY KEY, body text);\n"}


def waiting_on_notes_lock(admin: Credentials) -> set[str]:
    """The databases where the second index's build waits for the lock the test holds."""
    with connect(admin, timeout=5) as conn:
        rows = conn.execute(
            "SELECT datname FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
            "AND query ILIKE '%%CREATE INDEX CONCURRENTLY notes_body_idx%%'"
        ).fetchall()
    return {str(name) for (name,) in rows}


def building_notes_index(admin: Credentials) -> set[int]:
    """The backends still running the second index's build, waiting or not."""
    with connect(admin, timeout=5) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE state = 'active' "
            "AND pid <> pg_backend_pid() "
            "AND query ILIKE '%%CREATE INDEX CONCURRENTLY notes_body_idx%%'"
        ).fetchall()
    return {int(pid) for (pid,) in rows}


def index_states(creds: Credentials) -> dict[str, bool]:
    with connect(creds) as conn:
        rows = conn.execute(
            "SELECT c.relname, i.indisvalid FROM pg_index i "
            "JOIN pg_class c ON c.oid = i.indexrelid "
            "WHERE c.relname IN ('accounts_name_idx', 'notes_body_idx')"
        ).fetchall()
    return {str(name): bool(valid) for name, valid in rows}


def fixes_printed(output: str) -> dict[str, str]:
    """Per target database, the `next:` line printed under it."""
    return dict(re.findall(r"^(tenant_t\d): .*\n  next: (.*)$", output, re.MULTILINE))


@pytest.mark.slow
def test_a_fleet_killed_between_two_index_builds_names_its_interrupted_targets_and_the_fix_works(
    platform: Platform, tmp_path: Path
) -> None:
    add_fleet(platform, FIVE_TENANTS, FIVE_TENANTS_WAVES, NOTES)
    targets = {t: tenant(platform, t) for t in FIVE_TENANTS}
    fleet_run = ("fleet", "run", "--env", "local", "--fleet", "tenants")
    try:
        first = ameide(*fleet_run, timeout=600)
        assert first.returncode == 0, first.stdout + first.stderr
        (platform.sql_dir / "tenant" / "V5__two_indexes.sql").write_text(TWO_INDEXES)

        # The second wave's targets (t1, t2) wait on their second index when the run is killed;
        # the canary (t0) finished; the third wave (t3, t4) never started.
        with ExitStack() as held:
            for target in ("t1", "t2"):
                conn = held.enter_context(psycopg.connect(**targets[target].conninfo(5)))  # type: ignore[arg-type]
                conn.execute("LOCK TABLE notes IN SHARE MODE")
            env = {
                **os.environ,
                # Neither the pre-flight check nor lock_timeout ends the wait before the kill.
                "AMEIDE_LONG_TRANSACTION_SECONDS": "600",
                "AMEIDE_LOCK_TIMEOUT_SECONDS": "600",
            }
            with (tmp_path / "killed.log").open("wb") as log:
                cli = subprocess.Popen(
                    [sys.executable, "-m", "ameide_migrate.cli.main", *fleet_run],
                    cwd=REPO,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            wanted = {targets["t1"].database, targets["t2"].database}
            wait_for("the waits", lambda: waiting_on_notes_lock(platform.admin) >= wanted, 300)
            jvms = children(cli.pid)
            cli.send_signal(signal.SIGKILL)
            cli.wait()
            wait_for("the orphaned JVM to end", lambda: all(gone(pid) for pid in jvms), 30)
            # The tool's sessions check their client every second: the builds the killed run
            # left waiting end by themselves, building nothing, while the locks are still held.
            wait_for(
                "the orphaned builds to end", lambda: not building_notes_index(platform.admin), 10
            )

        assert histories(platform, FIVE_TENANTS) == {
            "t0": ["1", "2", "3", "4", "5"],
            **{t: ["1", "2", "3", "4"] for t in FIVE_TENANTS[1:]},
        }
        for target in ("t1", "t2"):
            assert index_states(targets[target]) == {"accounts_name_idx": True}
        drop = 'DROP INDEX CONCURRENTLY IF EXISTS "public"."accounts_name_idx";'

        status = ameide("fleet", "status", "--env", "local", "--fleet", "tenants")
        assert status.returncode == 0, status.stdout + status.stderr
        assert status.stdout.strip().splitlines()[-1] == "1 up to date, 2 interrupted, 2 behind"
        for target in ("t1", "t2"):
            (line,) = [
                line for line in status.stdout.splitlines() if line.startswith(f"tenant_{target}:")
            ]
            assert "V5__two_indexes.sql was interrupted" in line
            assert "index public.accounts_name_idx on accounts (line 1)" in line
            assert "Not done: line 3: CREATE INDEX CONCURRENTLY notes_body_idx" in line
            assert f"`{drop}`" in line
            assert f"`ameide-migrate fleet run --env local --fleet tenants --target {target}`" in (
                line
            )

        drift = ameide("drift", "--env", "local", "--fleet", "tenants", "--json")
        assert drift.returncode == 3, drift.stdout + drift.stderr
        verdicts = {d["database"]: d for d in json.loads(drift.stdout)}
        assert {name: d["verdict"] for name, d in verdicts.items()} == {
            "tenant_t0": "in sync",
            "tenant_t1": "interrupted",
            "tenant_t2": "interrupted",
            "tenant_t3": "behind",
            "tenant_t4": "behind",
        }
        assert drop in verdicts["tenant_t1"]["fix"]
        assert any("was interrupted" in p for p in verdicts["tenant_t2"]["problems"])

        # The rerun sets the interrupted targets apart: its canary is t3, and nothing halts. The
        # killed run holds the fleet's lock until the heartbeat guard crashes it.
        rerun = ameide(*fleet_run, "--wait-for-lock", timeout=600)
        assert rerun.returncode == 1, rerun.stdout + rerun.stderr
        assert "Traceback" not in rerun.stdout + rerun.stderr
        assert "halted" not in rerun.stdout
        assert "already exists" not in rerun.stdout
        assert "2 interrupted, 2 migrated" in rerun.stderr
        fixes = fixes_printed(rerun.stdout)
        assert set(fixes) == {"tenant_t1", "tenant_t2"}, rerun.stdout
        assert histories(platform, FIVE_TENANTS) == {
            **{t: ["1", "2", "3", "4", "5"] for t in ("t0", "t3", "t4")},
            **{t: ["1", "2", "3", "4"] for t in ("t1", "t2")},
        }

        # The fix exactly as printed: on t1 its statements as the owner, then its rerun; on t2
        # the one command it offers that does both.
        commands = {
            database: re.findall(r"`ameide-migrate (fleet run [^`]*)`", fix)
            for database, fix in fixes.items()
        }
        rerun, undo_and_rerun = commands["tenant_t1"]
        assert rerun == "fleet run --env local --fleet tenants --target t1"
        assert undo_and_rerun == f"{rerun} --undo-interrupted"
        with connect(targets["t1"]) as conn:
            for statement in re.findall(r"`(DROP INDEX CONCURRENTLY [^`]*)`", fixes["tenant_t1"]):
                conn.execute(statement.encode())
        done = ameide(*rerun.split(), timeout=600)
        assert done.returncode == 0, done.stdout + done.stderr
        _, undo_and_rerun = commands["tenant_t2"]
        done = ameide(*undo_and_rerun.split(), timeout=600)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "interrupted" not in done.stdout  # undone, then migrated in its wave

        assert histories(platform, FIVE_TENANTS) == {
            t: ["1", "2", "3", "4", "5"] for t in FIVE_TENANTS
        }
        for creds in targets.values():
            assert index_states(creds) == {"accounts_name_idx": True, "notes_body_idx": True}
            assert invalid_indexes(creds) == []
        status = ameide("fleet", "status", "--env", "local", "--fleet", "tenants")
        assert status.stdout.strip().splitlines()[-1] == "5 up to date", status.stdout
        drift = ameide("drift", "--env", "local", "--fleet", "tenants", "--json")
        assert drift.returncode == 0, drift.stdout + drift.stderr
    finally:
        drop_owners(platform.admin, targets)


def test_run_and_drift_name_a_database_a_crash_left_between_two_index_builds(
    platform: Platform,
) -> None:
    """The state a run killed between the two statements leaves (the fleet test above kills one
    for real): the first index built, no history row."""
    prepare_table(platform)
    (platform.sql_dir / "graph" / CANCELLED_SCRIPT).write_text(
        f"CREATE INDEX CONCURRENTLY {CANCELLED_INDEX} ON cic_items (code);\n"
        "CREATE INDEX CONCURRENTLY cic_items_tenant_idx ON cic_items (tenant);\n"
    )
    graph = platform.owners["graph"]
    with connect(graph) as conn:
        conn.execute(f"CREATE INDEX CONCURRENTLY {CANCELLED_INDEX} ON cic_items (code)".encode())
    drop = f'DROP INDEX CONCURRENTLY IF EXISTS "public"."{CANCELLED_INDEX}";'

    state, report = platform.run(databases=["graph"])

    assert state.is_failed()
    (outcome,) = report.outcomes
    assert f"{CANCELLED_SCRIPT} was interrupted" in outcome.message
    assert "already exists" not in outcome.message  # Flyway was not started over it
    assert f"`{drop}`" in outcome.recovery
    assert "rerun `ameide-migrate run --env local --db graph`" in outcome.recovery
    assert success_rows_of_10(platform) == []

    done = ameide("drift", "--env", "local", "--json", "--db", "graph")
    assert done.returncode == 3, done.stdout + done.stderr
    (verdict,) = json.loads(done.stdout)
    assert verdict["verdict"] == "interrupted"
    assert drop in verdict["fix"]

    with connect(graph) as conn:
        conn.execute(drop.encode())
    state, report = platform.run(databases=["graph"])
    assert state.is_completed(), report.summary()
    assert len(success_rows_of_10(platform)) == 1
    assert {name for (name,) in platform.query("graph", "SELECT indexname FROM pg_indexes")} >= {
        CANCELLED_INDEX,
        "cic_items_tenant_idx",
    }
