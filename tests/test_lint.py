"""The migration lint: squawk and the transaction checks over the SQL Flyway will run.

Fast (no server): each unsafe pattern of a fixture set found at its rule and line, work on a table
the same batch creates left alone, the shipped sample passing in every environment, the levels of
ameide.toml, and the command line's exit codes and formats. With a real PostgreSQL, Flyway and
Prefect: a lint error stops its database before Flyway, and only that one.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ameide_migrate.adapters import secret_sources
from ameide_migrate.adapters.postgres.connection import Credentials, connect
from ameide_migrate.commands.lint import lint as lint_command
from ameide_migrate.config import environments
from ameide_migrate.config.lint_rules import (
    MIXED_TRANSACTION,
    NON_TRANSACTIONAL_IN_TRANSACTION,
    SQUAWK_RULES,
    SYNTAX_ERROR,
    LintRules,
)
from ameide_migrate.config.settings import Settings
from ameide_migrate.core import locking
from ameide_migrate.core.catalog import PLATFORM_DATABASES
from ameide_migrate.core.errors import EnvironmentsFileInvalid, LinterNotInstalled
from ameide_migrate.core.findings import Finding, Level
from ameide_migrate.core.outcomes import OutcomeState
from ameide_migrate.services import lint

from .fix_actionlint import run_actionlint
from .fix_platform import REPO, Platform, admin_url_of, ameide, drop_owners

DATA = REPO / "tests" / "data" / "lint"
SHOP = DATA / "shop"
PLACEHOLDERS = {"index_name": "orders_note_idx", "schema": "shop", "text_type": "text"}
LINT_WORKFLOW = REPO / ".github" / "workflows" / "lint.yml"

# Each unsafe pattern: (file, rule, line) every one of them must be found at, at level error.
UNSAFE = {
    "index on an existing table": (
        "V1__index_on_existing_table.sql",
        "require-concurrent-index-creation",
        2,
    ),
    "NOT NULL column without default": (
        "V2__not_null_without_default.sql",
        "adding-required-field",
        2,
    ),
    "column type change": ("V3__column_type_change.sql", "changing-column-type", 3),
    "foreign key without NOT VALID": (
        "V4__foreign_key_without_not_valid.sql",
        "adding-foreign-key-constraint",
        2,
    ),
    "CONCURRENTLY mixed with transactional statements": (
        "V5__concurrently_mixed_with_transactional.sql",
        MIXED_TRANSACTION,
        3,
    ),
    "DROP INDEX CONCURRENTLY inside BEGIN ... COMMIT": (
        "V6__concurrently_in_begin_commit.sql",
        NON_TRANSACTIONAL_IN_TRANSACTION,
        2,
    ),
    "CREATE INDEX CONCURRENTLY inside BEGIN ... COMMIT (squawk's rule)": (
        "V6__concurrently_in_begin_commit.sql",
        "ban-concurrent-index-creation-in-transaction",
        3,
    ),
    "placeholders replaced, lines kept": (
        "V7__placeholders.sql",
        "require-concurrent-index-creation",
        2,
    ),
    "non-ASCII file and object names": (
        "V8__größe_ünïcödé.sql",
        "require-concurrent-index-creation",
        4,
    ),
    "a repeatable migration": ("R__recent_orders.sql", "require-concurrent-index-creation", 3),
}


def lint_one(name: str, rules: LintRules | None = None) -> list[Finding]:
    return lint.lint_files(
        [SHOP / name], rules or LintRules(), root=DATA, placeholders=PLACEHOLDERS
    )


@pytest.mark.parametrize("pattern", list(UNSAFE))
def test_each_unsafe_pattern_is_found_with_its_rule_and_line(pattern: str) -> None:
    name, rule, line = UNSAFE[pattern]

    found = lint_one(name)

    assert (f"shop/{name}", line, rule, Level.ERROR) in [
        (f.file, f.line, f.rule, f.level) for f in found
    ], [f.describe() for f in found]
    assert all(f.fix or f.message for f in found)


def test_placeholders_are_replaced_before_squawk_parses() -> None:
    found = lint_one("V7__placeholders.sql")

    assert SYNTAX_ERROR not in {f.rule for f in found}
    # Without its values, an unknown placeholder still parses (its name stands in).
    bare = lint.lint_files([SHOP / "V7__placeholders.sql"], LintRules(), root=DATA)
    assert SYNTAX_ERROR not in {f.rule for f in bare}


def test_work_on_a_table_the_same_file_creates_is_not_flagged() -> None:
    found = lint_one("V9__table_created_here_is_not_flagged.sql")

    assert found == []
    created_here = [f for f in lint_one("V8__größe_ünïcödé.sql") if f.line == 3]
    assert created_here == []


def test_a_table_created_earlier_in_the_batch_is_new_and_alone_it_is_not() -> None:
    index = SHOP / "V11__shipments_order_index.sql"

    together = lint.lint_files([SHOP / "V10__shipments.sql", index], LintRules(), root=DATA)
    alone = lint.lint_files([index], LintRules(), root=DATA)

    assert together == []
    assert [(f.rule, f.line) for f in alone] == [("require-concurrent-index-creation", 1)]


# --- Judged against what the target database holds ----------------------------------------------

ORDERS = "public.orders"


def facts_of_orders(rows: int, megabytes: float = 1) -> dict[str, locking.RelationFacts | None]:
    return {"orders": locking.RelationFacts(1, ORDERS, rows, int(megabytes * 1024 * 1024))}


def judged(
    sql_text: str, facts: locking.Facts | None, rules: LintRules | None = None
) -> list[tuple[str, Level]]:
    script = lint.Script("shop/V20__x.sql", sql_text)
    return [(f.rule, f.level) for f in lint.lint_scripts([script], rules or LintRules(), facts)]


INDEX = "CREATE INDEX orders_note_idx ON orders (note);\n"


def test_a_lock_on_a_table_the_database_lacks_or_holds_empty_is_nothing() -> None:
    assert judged(INDEX, {"orders": None}) == []
    assert judged(INDEX, facts_of_orders(0)) == []
    # A table created IF NOT EXISTS where none exists is new: nobody holds it.
    created = "CREATE TABLE IF NOT EXISTS orders (id bigint, note text);\n" + INDEX
    assert judged(created, {"orders": None}) == []


def test_a_lock_on_a_small_table_warns_and_on_a_large_one_keeps_its_level() -> None:
    rule = "require-concurrent-index-creation"
    assert judged(INDEX, facts_of_orders(5_000)) == [(rule, Level.WARNING)]
    assert judged(INDEX, facts_of_orders(1_000_000)) == [(rule, Level.ERROR)]
    # Size in bytes counts too: few rows, a large table (wide rows, TOAST).
    assert judged(INDEX, facts_of_orders(10, megabytes=500)) == [(rule, Level.ERROR)]
    # Unknown rows (no statistics, no count allowed) count as large.
    unknown = {"orders": locking.RelationFacts(1, ORDERS, None, 8192)}
    assert judged(INDEX, unknown) == [(rule, Level.ERROR)]
    # Where a table starts being large is the environment's.
    strict = LintRules(large_table_rows=1_000)
    assert judged(INDEX, facts_of_orders(5_000), strict) == [(rule, Level.ERROR)]


def test_the_finding_names_the_table_its_rows_and_size() -> None:
    script = lint.Script("shop/V20__x.sql", INDEX)
    (finding,) = lint.lint_scripts([script], LintRules(), facts_of_orders(1_000_000, 73))

    assert (
        "[public.orders: ~1,000,000 rows, 73.0 MB: a large table, from 100,000 rows or 100 MB]"
        in (finding.message)
    )


def test_a_rename_or_drop_matters_wherever_the_table_exists_even_empty() -> None:
    rename = "ALTER TABLE orders RENAME COLUMN note TO remark;\n"
    assert judged(rename, facts_of_orders(0)) == [("renaming-column", Level.ERROR)]
    assert judged(rename, {"orders": None}) == []


def test_a_not_null_column_without_default_matters_only_where_rows_are() -> None:
    required = "ALTER TABLE orders ADD COLUMN code text NOT NULL;\n"
    assert judged(required, facts_of_orders(0)) == []
    assert ("adding-required-field", Level.ERROR) in judged(required, facts_of_orders(3))


def test_without_a_database_any_table_the_batch_does_not_create_may_be_large() -> None:
    assert judged(INDEX, None) == [("require-concurrent-index-creation", Level.ERROR)]


def test_a_syntax_error_is_one_finding_at_its_line(tmp_path: Path) -> None:
    broken = tmp_path / "V1__broken.sql"
    broken.write_text("SELECT 1;\nCREATE TABLE (oops;\nSELECT 2;\n")

    found = lint.lint_files([broken], LintRules(), root=tmp_path)

    assert [(f.rule, f.line, f.level) for f in found] == [(SYNTAX_ERROR, 2, Level.ERROR)]


def test_the_lock_level_is_the_strongest_on_tables_that_exist_before() -> None:
    def level(name: str) -> str:
        return lint.lock_level(SHOP / name, placeholders=PLACEHOLDERS)

    assert level("V1__index_on_existing_table.sql") == "SHARE"
    assert level("V3__column_type_change.sql") == "ACCESS EXCLUSIVE"
    assert level("V4__foreign_key_without_not_valid.sql") == "SHARE ROW EXCLUSIVE"
    assert level("V6__concurrently_in_begin_commit.sql") == "SHARE UPDATE EXCLUSIVE"
    assert level("V10__shipments.sql") == "none"
    # The new table's work is nobody's lock; its foreign key still locks the orders it names.
    assert level("V9__table_created_here_is_not_flagged.sql") == "SHARE ROW EXCLUSIVE"
    assert lint.lock_level(SHOP / "V11__shipments_order_index.sql", new_tables={"shipments"}) == (
        "none"
    )


def sample_settings() -> Settings:
    return Settings(sql_dir=REPO / "db" / "flyway" / "sql", flyway_variables={})


def test_the_shipped_sample_has_no_error_in_any_environment() -> None:
    settings = sample_settings()
    declared = environments.all_of(settings)
    assert set(declared) == {"local", "staging", "prod"}

    for name in [None, *declared]:
        linted = lint_command(settings, name, paths=[settings.sql_dir])
        assert linted.errors == 0, (name, [f.describe() for _, f in linted.findings])
        assert len(linted.checked) == 30


def test_the_lock_rules_are_errors_by_default_and_style_rules_off() -> None:
    rules = LintRules()

    for rule in (
        "require-concurrent-index-creation",
        "adding-required-field",
        "changing-column-type",
        "adding-foreign-key-constraint",
        "constraint-missing-not-valid",
        "renaming-column",
        "ban-drop-column",
        "ban-drop-table",
        MIXED_TRANSACTION,
        NON_TRANSACTIONAL_IN_TRANSACTION,
    ):
        assert rules.level(rule) is Level.ERROR, rule
    for rule in ("prefer-bigint-over-int", "prefer-text-field", "require-lock-timeout"):
        assert rules.level(rule) is Level.OFF, rule
    assert rules.level("ban-drop-not-null") is Level.WARNING


SITE_TOML = """\
[lint.rules]
"prefer-robust-stmts" = "off"

[environments.local]
local = true
work_pool = "ameide-local"
pool_type = "process"

[environments.local.lint]
max_level = "warning"

[environments.staging]
work_pool = "k8s"

[environments.staging.lint.rules]
"require-concurrent-index-creation" = "off"

[environments.prod]
work_pool = "k8s"
"""


def site(tmp_path: Path, toml: str = SITE_TOML) -> Settings:
    root = tmp_path / "sql"
    shutil.copytree(SHOP, root / "shop")
    (root / "ameide.toml").write_text(toml)
    return Settings(sql_dir=root, flyway_variables={})


def test_each_environment_has_its_own_levels(tmp_path: Path) -> None:
    settings = site(tmp_path)
    index = settings.sql_dir / "shop" / "V1__index_on_existing_table.sql"

    def levels(env: str | None) -> list[tuple[str, str]]:
        linted = lint_command(settings, env, paths=[index])
        return [(f.rule, f.level.value) for _, f in linted.findings]

    assert levels("prod") == [("require-concurrent-index-creation", "error")]
    assert levels(None) == [("require-concurrent-index-creation", "error")]
    assert levels("staging") == []
    assert levels("local") == [("require-concurrent-index-creation", "warning")]
    # The file's [lint] is under every environment's: prefer-robust-stmts is off in all.
    mixed = settings.sql_dir / "shop" / "V5__concurrently_mixed_with_transactional.sql"
    rules = {f.rule for _, f in lint_command(settings, "prod", paths=[mixed]).findings}
    assert rules == {MIXED_TRANSACTION}


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        (
            '[environments.prod]\nwork_pool = "k8s"\n[environments.prod.lint.rules]\n'
            '"require-concurent-index-creation" = "error"\n',
            [
                "environments.prod: lint.rules: unknown rule 'require-concurent-index-creation' "
                "(did you mean 'require-concurrent-index-creation'?)",
                "ban-mixed-non-transactional",
            ],
        ),
        (
            '[environments.prod]\nwork_pool = "k8s"\n[environments.prod.lint.rules]\n'
            '"ban-drop-table" = "fatal"\n',
            ["environments.prod: lint.rules.ban-drop-table", "'error', 'warning' or 'off'"],
        ),
        (
            '[lint]\nrules = { "nope" = "off" }\n[environments.prod]\nwork_pool = "k8s"\n',
            ["lint: rules: unknown rule 'nope'"],
        ),
        (
            '[environments.prod]\nwork_pool = "k8s"\n[environments.prod.lint]\nlevel = "x"\n',
            ["environments.prod: unknown key lint.level"],
        ),
    ],
)
def test_an_unknown_rule_or_level_names_the_file_the_key_and_the_choices(
    tmp_path: Path, toml: str, expected: list[str]
) -> None:
    settings = site(tmp_path, toml)

    with pytest.raises(EnvironmentsFileInvalid) as raised:
        environments.all_of(settings)

    assert str(settings.sql_dir / "ameide.toml") in str(raised.value)
    for part in expected:
        assert part in str(raised.value)


def test_squawk_accepts_every_rule_name_this_module_knows(tmp_path: Path) -> None:
    excludable = [r for r in SQUAWK_RULES if r != "unused-ignore"]
    sql = tmp_path / "one.sql"
    sql.write_text("SELECT 1;\n")

    done = subprocess.run(
        [str(lint.squawk_binary()), "--exclude=" + ",".join(excludable), str(sql)],
        capture_output=True,
        text=True,
        check=False,
    )

    assert done.returncode == 0, done.stderr
    refused = subprocess.run(
        [str(lint.squawk_binary()), "--exclude=no-such-rule", str(sql)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert refused.returncode != 0


def test_a_missing_squawk_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))

    with pytest.raises(LinterNotInstalled, match="squawk-cli"):
        lint_one("V1__index_on_existing_table.sql")


def cli(*args: str, sql_dir: Path, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "AMEIDE_SQL_DIR": str(sql_dir)}
    env.pop("AMEIDE_ENVIRONMENTS_FILE", None)
    return ameide("lint", *args, env=env, timeout=120, cwd=cwd)


def test_the_command_exits_0_clean_or_warnings_1_on_an_error_2_on_a_mistake(
    tmp_path: Path,
) -> None:
    settings = site(tmp_path)
    shop = settings.sql_dir / "shop"

    clean = cli(str(shop / "V10__shipments.sql"), sql_dir=settings.sql_dir)
    warned = cli(
        "--env", "local", str(shop / "V1__index_on_existing_table.sql"), sql_dir=settings.sql_dir
    )
    failed = cli(str(shop / "V1__index_on_existing_table.sql"), sql_dir=settings.sql_dir)
    unknown_db = cli("--db", "nope", sql_dir=settings.sql_dir)
    missing = cli(str(shop / "V99__missing.sql"), sql_dir=settings.sql_dir)
    bad_format = cli("--format", "xml", sql_dir=settings.sql_dir)

    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert clean.stdout.splitlines()[-1] == "lint passed: no finding in 1 migration(s)"
    assert warned.returncode == 0, warned.stdout + warned.stderr
    assert "warning" in warned.stdout
    assert warned.stdout.splitlines()[-1].startswith("lint passed: 1 warning(s)")
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "shop/V1__index_on_existing_table.sql" in failed.stdout
    assert "require-concurrent-index-creation" in failed.stdout
    assert "Use `concurrently`" in failed.stdout
    assert failed.stdout.splitlines()[-1].startswith("lint FAILED: 1 error(s)")
    for mistake in (unknown_db, missing, bad_format):
        assert mistake.returncode == 2, mistake.stdout + mistake.stderr
        assert mistake.stderr.startswith("FAILED: ")
        assert "Traceback" not in mistake.stderr
    assert "choose from shop" in unknown_db.stderr
    assert "V99__missing.sql: no such file or folder" in missing.stderr


def test_json_lists_every_finding_for_tools(tmp_path: Path) -> None:
    settings = site(tmp_path)

    done = cli("--format", "json", str(settings.sql_dir / "shop"), sql_dir=settings.sql_dir)

    assert done.returncode == 1
    report = json.loads(done.stdout)
    assert report["errors"] >= len(UNSAFE) - 1
    assert len(report["checked"]) == len(list(SHOP.iterdir()))
    found = {(f["file"], f["line"], f["rule"]) for f in report["findings"]}
    assert ("shop/V8__größe_ünïcödé.sql", 4, "require-concurrent-index-creation") in found
    assert all(f["level"] in ("error", "warning") for f in report["findings"])
    assert {"database", "message", "fix"} <= set(report["findings"][0])


def test_github_annotations_name_the_file_from_the_repository_root(tmp_path: Path) -> None:
    settings = site(tmp_path)
    index = settings.sql_dir / "shop" / "V1__index_on_existing_table.sql"

    done = cli("--format", "github", str(index), sql_dir=settings.sql_dir, cwd=tmp_path)

    assert done.returncode == 1
    annotation, verdict = done.stdout.splitlines()
    assert annotation.startswith(
        "::error file=sql/shop/V1__index_on_existing_table.sql,line=2,"
        "title=require-concurrent-index-creation::"
    )
    assert "Fix: Use `concurrently`" in annotation
    assert verdict.startswith("lint FAILED")


def test_the_pull_request_workflow_lints_with_annotations_and_passes_actionlint(
    actionlint: str,
) -> None:
    text = LINT_WORKFLOW.read_text()
    assert "db/flyway/sql/**" in text
    assert "--format github" in text

    done = run_actionlint(actionlint, LINT_WORKFLOW)

    assert done.returncode == 0, done.stdout + done.stderr


# --- With a real PostgreSQL, Flyway and Prefect --------------------------------------------------


def test_a_lint_error_stops_its_database_before_flyway_and_the_others_migrate(
    platform: Platform,
) -> None:
    # The sample's local environment caps findings at warning; this one keeps the errors, and
    # its tables are large from 100 rows.
    toml = platform.sql_dir / "ameide.toml"
    toml.write_text(
        toml.read_text().replace(
            'max_level = "warning"', 'max_level = "error"\nlarge_table_rows = 100'
        )
    )
    state, report = platform.run(databases=["graph", "threads"])
    assert state.is_completed()
    platform.query(
        "graph",
        "WITH g AS (INSERT INTO graphs (tenant_id, name) VALUES (gen_random_uuid(), 'g') "
        "RETURNING id) INSERT INTO graph_nodes (graph_id, label, node_key) "
        "SELECT g.id, 'label', 'node ' || n FROM g, generate_series(1, 300) AS n RETURNING 1",
    )
    graph_versions = platform.versions("graph")
    offending = platform.sql_dir / "graph" / "V9__graph_nodes_label_index.sql"
    offending.write_text(
        "-- graph_nodes holds every node by now\n"
        "CREATE INDEX graph_nodes_label_idx ON graph_nodes (label);\n"
    )
    (platform.sql_dir / "threads" / "V5__threads_archive.sql").write_text(
        "CREATE TABLE threads_archive (id bigint PRIMARY KEY);\n"
    )

    state, report = platform.run(databases=["graph", "threads"])

    assert state.is_failed()
    outcome = {o.database: o for o in report.outcomes}
    graph = outcome["graph"]
    assert graph.state is OutcomeState.FAILED
    assert "graph/V9__graph_nodes_label_index.sql line 2" in graph.message
    assert "require-concurrent-index-creation" in graph.message
    assert "Use `concurrently`" in graph.message
    assert "[public.graph_nodes: at least 100 rows" in graph.message
    assert "Flyway was not started" in graph.message
    assert '[environments.local.lint.rules] "require-concurrent-index-creation"' in (graph.recovery)
    assert [(f.file, f.line, f.rule) for f in graph.findings] == [
        ("graph/V9__graph_nodes_label_index.sql", 2, "require-concurrent-index-creation")
    ]
    assert platform.versions("graph") == graph_versions
    assert "9" not in [r.version for r in platform.history("graph") or []]
    assert not platform.query(
        "graph", "SELECT 1 FROM pg_indexes WHERE indexname = 'graph_nodes_label_idx'"
    )
    assert outcome["threads"].state is OutcomeState.MIGRATED
    assert platform.versions("threads")[-1] == "5"
    for database in PLATFORM_DATABASES:
        if database not in ("graph", "threads"):
            assert platform.history(database) is None, database


def test_a_table_created_if_not_exists_is_not_new(tmp_path: Path) -> None:
    """IF NOT EXISTS may meet a busy table that exists: its lock counts in the plan."""
    script = tmp_path / "V1__maybe_new.sql"
    script.write_text(
        "CREATE TABLE IF NOT EXISTS orders (id bigint PRIMARY KEY);\n"
        "CREATE INDEX orders_id_idx ON orders (id);\n"
    )
    assert lint.lock_level(script) == "SHARE"
    script.write_text(script.read_text().replace(" IF NOT EXISTS", ""))
    assert lint.lock_level(script) == "none"


def test_the_findings_table_keeps_line_level_and_fix_in_a_narrow_terminal() -> None:
    from rich.console import Console

    from ameide_migrate import terminal

    finding = Finding(
        "/a/long/checkout/path/db/flyway/sql/graph/V9__graph_nodes_label_index.sql",
        2,
        "require-concurrent-index-creation",
        Level.ERROR,
        "During normal index creation, table updates are blocked",
        "Use `concurrently` to avoid blocking writes.",
    )
    console = Console(width=80, record=True)
    terminal.print_findings([(None, finding)], console, title="lint")
    text = console.export_text()
    assert "│    2 │" in text
    assert "error" in text
    assert "Use `concurrently`" in text


def test_lint_of_the_local_environment_sets_it_up_as_a_run_would(
    pg_admin: Credentials, db_prefix: str, tmp_path: Path
) -> None:
    """On a machine where nothing ran yet (no local secrets, no databases under its prefix),
    `lint --env local` makes the local databases and their credentials as `run --env local`
    would, then lints what is pending."""
    sql_dir = tmp_path / "sql"
    shutil.copytree(REPO / "db" / "flyway" / "sql", sql_dir)
    state_dir = tmp_path / "fresh-state"
    env = {
        **os.environ,
        "AMEIDE_SQL_DIR": str(sql_dir),
        "AMEIDE_STATE_DIR": str(state_dir),
        "AMEIDE_LOCAL_DATABASE_PREFIX": db_prefix,
        "AMEIDE_CACHE_DIR": str(REPO / ".cache"),
        "AMEIDE_LOCAL_ADMIN_URL": admin_url_of(pg_admin).get_secret_value(),
    }
    env.pop("AMEIDE_ENVIRONMENTS_FILE", None)
    owners = {
        db: secret_sources.local_credentials(
            db, host=pg_admin.host, port=pg_admin.port, prefix=db_prefix
        )
        for db in PLATFORM_DATABASES
    }
    graph_database = owners["graph"].database
    assert not databases_named(pg_admin, graph_database)
    try:
        done = ameide("lint", "--env", "local", "--db", "graph", env=env)

        graph = environments.catalog("local", Settings(sql_dir=sql_dir)).databases["graph"]
        assert done.returncode == 0, done.stdout + done.stderr
        assert databases_named(pg_admin, graph_database) == [graph_database]
        pending = f"no finding in {len(graph.migrations)} pending migration(s) in local"
        assert pending in done.stdout, done.stdout
        assert (state_dir / "local-secrets.json").is_file()
    finally:
        drop_owners(pg_admin, owners)


def databases_named(admin: Credentials, name: str) -> list[str]:
    with connect(admin, timeout=5) as conn:
        rows = conn.execute("SELECT datname FROM pg_database WHERE datname = %s", (name,))
        return [str(datname) for (datname,) in rows.fetchall()]
