"""Every statement of the sample tree (db/flyway/sql) and of the lint's fixture files, read by
PostgreSQL's parser, gets the split and the lock modes the hand splitter gave before it (frozen
below as that splitter gave them, and as the fallback splitter still gives them), or a better
reading each named in BETTER; what the parser rejects is read by the fallback splitter, and the
lint's findings and the plan's locks say so."""

from __future__ import annotations

from pathlib import Path

import pytest

from ameide_migrate.config.lint_rules import NON_TRANSACTIONAL_IN_TRANSACTION, LintRules
from ameide_migrate.core import locking, statements
from ameide_migrate.core.findings import Level
from ameide_migrate.services import lint

REPO = Path(__file__).resolve().parent.parent
SHOP = REPO / "tests/data/lint/shop"

Reading = tuple[int, tuple[tuple[str, str], ...], tuple[str, bool] | None, str, str | None]
"""(line, the locks (relation, mode), what it creates (name, IF NOT EXISTS), CONCURRENTLY,
what PostgreSQL refuses in a transaction)."""


def readings(text: str) -> list[Reading]:
    kinds = {n.statement.line: n.kind for n in statements.non_transactional(text)}
    found: list[Reading] = []
    for statement in statements.split(text):
        made = locking.created(statement)
        found.append(
            (
                statement.line,
                tuple((t.name, t.mode) for t in locking.locks(statement)),
                (made.name, made.if_not_exists) if made else None,
                locking.concurrently(statement).value,
                kinds.get(statement.line),
            )
        )
    return found


# As the hand splitter read each file, statement by statement.
BEFORE: dict[str, list[Reading]] = {
    "db/flyway/sql/agents/R__agents_views.sql": [
        (3, (), None, "-", None),
        (18, (), None, "-", None),
        (20, (), None, "-", None),
        (31, (), None, "-", None),
    ],
    "db/flyway/sql/agents/V1__agents_initial_schema.sql": [
        (3, (), ("agents", False), "-", None),
        (15, (("agents", "SHARE"),), ("agents_tenant_id_idx", False), "possible", None),
        (17, (("agents", "SHARE UPDATE EXCLUSIVE"),), None, "-", None),
        (19, (("agents", "SHARE ROW EXCLUSIVE"),), ("agent_versions", False), "-", None),
        (36, (("agent_versions", "SHARE UPDATE EXCLUSIVE"),), None, "-", None),
    ],
    "db/flyway/sql/agents/V2__agents_tools_catalog.sql": [
        (3, (), ("tools", False), "-", None),
        (18, (("tools", "SHARE"),), ("tools_global_name_key", False), "possible", None),
        (19, (("tools", "SHARE"),), ("tools_tenant_name_key", False), "possible", None),
        (21, (("tools", "SHARE UPDATE EXCLUSIVE"),), None, "-", None),
        (
            23,
            (("agent_versions", "SHARE ROW EXCLUSIVE"), ("tools", "SHARE ROW EXCLUSIVE")),
            ("agent_version_tools", False),
            "-",
            None,
        ),
        (
            31,
            (("agent_version_tools", "SHARE"),),
            ("agent_version_tools_tool_id_idx", False),
            "possible",
            None,
        ),
        (33, (("agent_version_tools", "SHARE UPDATE EXCLUSIVE"),), None, "-", None),
    ],
    "db/flyway/sql/agents/V3__agents_add_status_and_triggers.sql": [
        (
            3,
            (("agents", "ACCESS EXCLUSIVE"), ("agent_versions", "SHARE ROW EXCLUSIVE")),
            None,
            "-",
            None,
        ),
        (8, (("agents", "SHARE"),), ("agents_tenant_status_idx", False), "possible", None),
        (10, (("agents", "SHARE UPDATE EXCLUSIVE"),), None, "-", None),
        (12, (), None, "-", None),
        (22, (("agents", "SHARE ROW EXCLUSIVE"),), None, "-", None),
        (26, (("tools", "SHARE ROW EXCLUSIVE"),), None, "-", None),
    ],
    "db/flyway/sql/agents_runtime/V1__agents_runtime_initial_schema.sql": [
        (3, (), ("runtime_sessions", False), "-", None),
        (
            16,
            (("runtime_sessions", "SHARE"),),
            ("runtime_sessions_tenant_agent_idx", False),
            "possible",
            None,
        ),
        (
            17,
            (("runtime_sessions", "SHARE"),),
            ("runtime_sessions_thread_id_idx", False),
            "possible",
            None,
        ),
        (19, (("runtime_sessions", "SHARE UPDATE EXCLUSIVE"),), None, "-", None),
        (21, (("runtime_sessions", "SHARE ROW EXCLUSIVE"),), ("runs", False), "-", None),
        (38, (("runs", "SHARE"),), ("runs_session_created_idx", False), "possible", None),
        (39, (("runs", "SHARE"),), ("runs_pending_idx", False), "possible", None),
        (41, (("runs", "SHARE UPDATE EXCLUSIVE"),), None, "-", None),
    ],
    "db/flyway/sql/agents_runtime/V2__agents_runtime_tool_calls.sql": [
        (3, (("runs", "SHARE ROW EXCLUSIVE"),), ("run_tool_calls", False), "-", None),
        (
            19,
            (("run_tool_calls", "SHARE"),),
            ("run_tool_calls_tool_name_idx", False),
            "possible",
            None,
        ),
        (21, (("run_tool_calls", "SHARE UPDATE EXCLUSIVE"),), None, "-", None),
    ],
    "db/flyway/sql/agents_runtime/V3__agents_runtime_checkpoints_and_triggers.sql": [
        (3, (("runs", "SHARE ROW EXCLUSIVE"),), ("run_checkpoints", False), "-", None),
        (12, (("run_checkpoints", "SHARE UPDATE EXCLUSIVE"),), None, "-", None),
        (14, (), None, "-", None),
        (24, (("runs", "SHARE ROW EXCLUSIVE"),), None, "-", None),
        (28, (), None, "-", None),
        (40, (), None, "-", None),
    ],
    "db/flyway/sql/graph/R__graph_functions.sql": [
        (3, (), None, "-", None),
        (14, (), None, "-", None),
        (16, (), None, "-", None),
        (36, (), None, "-", None),
        (38, (), None, "-", None),
        (47, (), None, "-", None),
    ],
    "db/flyway/sql/graph/V1__graph_initial_schema.sql": [
        (3, (), ("graphs", False), "-", None),
        (13, (("graphs", "SHARE UPDATE EXCLUSIVE"),), None, "-", None),
        (15, (("graphs", "SHARE ROW EXCLUSIVE"),), ("graph_nodes", False), "-", None),
        (26, (("graph_nodes", "SHARE"),), ("graph_nodes_graph_label_idx", False), "possible", None),
        (28, (("graph_nodes", "SHARE UPDATE EXCLUSIVE"),), None, "-", None),
        (
            30,
            (
                ("graph_nodes", "SHARE ROW EXCLUSIVE"),
                ("graph_nodes", "SHARE ROW EXCLUSIVE"),
                ("graphs", "SHARE ROW EXCLUSIVE"),
            ),
            ("graph_edges", False),
            "-",
            None,
        ),
        (47, (("graph_edges", "SHARE UPDATE EXCLUSIVE"),), None, "-", None),
    ],
    "db/flyway/sql/graph/V2__graph_edge_indexes_and_constraints.sql": [
        (3, (("graph_edges", "SHARE"),), ("graph_edges_source_idx", False), "possible", None),
        (4, (("graph_edges", "SHARE"),), ("graph_edges_target_idx", False), "possible", None),
        (6, (("graph_edges", "ACCESS EXCLUSIVE"),), None, "-", None),
        (10, (), None, "-", None),
    ],
    "db/flyway/sql/graph/V3__graph_add_node_properties.sql": [
        (3, (("graph_nodes", "ACCESS EXCLUSIVE"),), None, "-", None),
        (7, (("graph_edges", "ACCESS EXCLUSIVE"),), None, "-", None),
        (
            10,
            (("graph_nodes", "SHARE"),),
            ("graph_nodes_properties_gin_idx", False),
            "possible",
            None,
        ),
        (12, (("graph_nodes", "SHARE UPDATE EXCLUSIVE"),), None, "-", None),
        (14, (), None, "-", None),
        (24, (("graphs", "SHARE ROW EXCLUSIVE"),), None, "-", None),
        (28, (("graph_nodes", "SHARE ROW EXCLUSIVE"),), None, "-", None),
    ],
    "db/flyway/sql/langgraph/V1__langgraph_initial_schema.sql": [
        (3, (), ("checkpoint_migrations", False), "-", None),
        (7, (("checkpoint_migrations", "SHARE UPDATE EXCLUSIVE"),), None, "-", None),
        (9, (), ("checkpoints", False), "-", None),
        (20, (("checkpoints", "SHARE UPDATE EXCLUSIVE"),), None, "-", None),
        (22, (), ("checkpoint_blobs", False), "-", None),
        (32, (("checkpoint_blobs", "SHARE UPDATE EXCLUSIVE"),), None, "-", None),
        (34, (), ("checkpoint_writes", False), "-", None),
        (46, (("checkpoint_writes", "SHARE UPDATE EXCLUSIVE"),), None, "-", None),
    ],
    "db/flyway/sql/langgraph/V2__langgraph_checkpoint_indexes.sql": [
        (3, (("checkpoints", "SHARE"),), ("checkpoints_thread_id_idx", False), "possible", None),
        (
            4,
            (("checkpoint_blobs", "SHARE"),),
            ("checkpoint_blobs_thread_id_idx", False),
            "possible",
            None,
        ),
        (
            5,
            (("checkpoint_writes", "SHARE"),),
            ("checkpoint_writes_thread_id_idx", False),
            "possible",
            None,
        ),
        (7, (("checkpoint_writes", "ACCESS EXCLUSIVE"),), None, "-", None),
        (11, (("checkpoint_migrations", "ROW EXCLUSIVE"),), None, "-", None),
    ],
    "db/flyway/sql/langgraph/V3__langgraph_store.sql": [
        (3, (), ("store", False), "-", None),
        (15, (("store", "SHARE"),), ("store_prefix_pattern_idx", False), "possible", None),
        (16, (("store", "SHARE"),), ("store_expires_at_idx", False), "possible", None),
        (18, (("store", "SHARE UPDATE EXCLUSIVE"),), None, "-", None),
        (19, (("store", "SHARE UPDATE EXCLUSIVE"),), None, "-", None),
        (21, (), None, "-", None),
        (34, (), None, "-", None),
        (36, (("store", "SHARE ROW EXCLUSIVE"),), None, "-", None),
    ],
    "db/flyway/sql/langgraph/V4__langgraph_thread_overview_view.sql": [
        (3, (), None, "-", None),
        (12, (), None, "-", None),
    ],
    "db/flyway/sql/platform/V1__platform_initial_schema.sql": [
        (3, (), ("tenants", False), "-", None),
        (18, (("tenants", "SHARE UPDATE EXCLUSIVE"),), None, "-", None),
        (19, (("tenants", "SHARE UPDATE EXCLUSIVE"),), None, "-", None),
        (21, (), ("users", False), "-", None),
        (33, (("users", "SHARE"),), ("users_email_lower_key", False), "possible", None),
        (34, (("users", "SHARE"),), ("users_external_id_key", False), "possible", None),
        (36, (("users", "SHARE UPDATE EXCLUSIVE"),), None, "-", None),
        (
            38,
            (("tenants", "SHARE ROW EXCLUSIVE"), ("users", "SHARE ROW EXCLUSIVE")),
            ("tenant_memberships", False),
            "-",
            None,
        ),
        (
            47,
            (("tenant_memberships", "SHARE"),),
            ("tenant_memberships_user_id_idx", False),
            "possible",
            None,
        ),
        (49, (("tenant_memberships", "SHARE UPDATE EXCLUSIVE"),), None, "-", None),
    ],
    "db/flyway/sql/platform/V2__platform_api_keys_and_audit_log.sql": [
        (
            3,
            (("tenants", "SHARE ROW EXCLUSIVE"), ("users", "SHARE ROW EXCLUSIVE")),
            ("api_keys", False),
            "-",
            None,
        ),
        (20, (("api_keys", "SHARE"),), ("api_keys_tenant_id_idx", False), "possible", None),
        (21, (("api_keys", "SHARE"),), ("api_keys_active_prefix_idx", False), "possible", None),
        (23, (("api_keys", "SHARE UPDATE EXCLUSIVE"),), None, "-", None),
        (24, (("api_keys", "SHARE UPDATE EXCLUSIVE"),), None, "-", None),
        (26, (("tenants", "SHARE ROW EXCLUSIVE"),), ("audit_log", False), "-", None),
        (39, (("audit_log", "SHARE"),), ("audit_log_tenant_time_idx", False), "possible", None),
        (40, (("audit_log", "SHARE"),), ("audit_log_action_idx", False), "possible", None),
        (42, (("audit_log", "SHARE UPDATE EXCLUSIVE"),), None, "-", None),
    ],
    "db/flyway/sql/platform/V3__platform_updated_at_triggers.sql": [
        (3, (), None, "-", None),
        (13, (), None, "-", None),
        (15, (("tenants", "SHARE ROW EXCLUSIVE"),), None, "-", None),
        (19, (("users", "SHARE ROW EXCLUSIVE"),), None, "-", None),
    ],
    "db/flyway/sql/platform/V4__platform_tenant_quotas_and_summary_view.sql": [
        (3, (("tenants", "SHARE ROW EXCLUSIVE"),), ("tenant_quotas", False), "-", None),
        (13, (("tenant_quotas", "SHARE ROW EXCLUSIVE"),), None, "-", None),
        (17, (("tenant_quotas", "SHARE UPDATE EXCLUSIVE"),), None, "-", None),
        (19, (), None, "-", None),
        (38, (), None, "-", None),
    ],
    "db/flyway/sql/threads/V1__threads_initial_schema.sql": [
        (3, (), ("threads", False), "-", None),
        (14, (("threads", "SHARE"),), ("threads_agent_id_idx", False), "possible", None),
        (16, (("threads", "SHARE UPDATE EXCLUSIVE"),), None, "-", None),
        (18, (("threads", "SHARE ROW EXCLUSIVE"),), ("messages", False), "-", None),
        (33, (("messages", "SHARE UPDATE EXCLUSIVE"),), None, "-", None),
    ],
    "db/flyway/sql/threads/V2__threads_message_attachments_and_triggers.sql": [
        (3, (("messages", "SHARE ROW EXCLUSIVE"),), ("message_attachments", False), "-", None),
        (
            14,
            (("message_attachments", "SHARE"),),
            ("message_attachments_message_id_idx", False),
            "possible",
            None,
        ),
        (16, (("message_attachments", "SHARE UPDATE EXCLUSIVE"),), None, "-", None),
        (18, (("threads", "ACCESS EXCLUSIVE"),), None, "-", None),
        (20, (), None, "-", None),
        (30, (("threads", "SHARE ROW EXCLUSIVE"),), None, "-", None),
        (34, (), None, "-", None),
        (47, (), None, "-", None),
        (49, (("messages", "SHARE ROW EXCLUSIVE"),), None, "-", None),
    ],
    "db/flyway/sql/threads/V3__threads_add_tenant_metadata_columns.sql": [
        (3, (("threads", "ACCESS EXCLUSIVE"),), None, "-", None),
        (8, (("threads", "SHARE"),), ("threads_tenant_created_idx", False), "possible", None),
        (9, (("threads", "SHARE"),), ("threads_metadata_gin_idx", False), "possible", None),
        (11, (("threads", "SHARE UPDATE EXCLUSIVE"),), None, "-", None),
        (12, (("threads", "SHARE UPDATE EXCLUSIVE"),), None, "-", None),
    ],
    "db/flyway/sql/threads/V4__threads_summary_view.sql": [
        (3, (), None, "-", None),
        (19, (), None, "-", None),
    ],
    "db/flyway/sql/transformation/V1__transformation_initial_schema.sql": [
        (3, (), ("pipelines", False), "-", None),
        (14, (("pipelines", "SHARE UPDATE EXCLUSIVE"),), None, "-", None),
        (16, (("pipelines", "SHARE ROW EXCLUSIVE"),), ("pipeline_steps", False), "-", None),
        (29, (("pipeline_steps", "SHARE UPDATE EXCLUSIVE"),), None, "-", None),
    ],
    "db/flyway/sql/transformation/V2__transformation_runs.sql": [
        (3, (("pipelines", "SHARE ROW EXCLUSIVE"),), ("pipeline_runs", False), "-", None),
        (
            23,
            (("pipeline_runs", "SHARE"),),
            ("pipeline_runs_pipeline_queued_idx", False),
            "possible",
            None,
        ),
        (24, (("pipeline_runs", "SHARE"),), ("pipeline_runs_active_idx", False), "possible", None),
        (26, (("pipeline_runs", "SHARE UPDATE EXCLUSIVE"),), None, "-", None),
        (
            28,
            (("pipeline_runs", "SHARE ROW EXCLUSIVE"), ("pipeline_steps", "SHARE ROW EXCLUSIVE")),
            ("pipeline_step_runs", False),
            "-",
            None,
        ),
        (
            40,
            (("pipeline_step_runs", "SHARE"),),
            ("pipeline_step_runs_run_id_idx", False),
            "possible",
            None,
        ),
        (
            41,
            (("pipeline_step_runs", "SHARE"),),
            ("pipeline_step_runs_step_id_idx", False),
            "possible",
            None,
        ),
    ],
    "db/flyway/sql/transformation/V3__transformation_schema_registry_and_triggers.sql": [
        (3, (("pipelines", "SHARE ROW EXCLUSIVE"),), ("output_schemas", False), "-", None),
        (14, (("output_schemas", "SHARE UPDATE EXCLUSIVE"),), None, "-", None),
        (16, (), None, "-", None),
        (26, (("pipelines", "SHARE ROW EXCLUSIVE"),), None, "-", None),
        (30, (), None, "-", None),
        (45, (), None, "-", None),
    ],
    "db/flyway/sql/workflows/R__workflows_environment_settings.sql": [
        (4, (), None, "-", None),
        (12, (), None, "-", None),
    ],
    "db/flyway/sql/workflows/V1__workflows_initial_schema.sql": [
        (3, (), ("workflow_definitions", False), "-", None),
        (14, (("workflow_definitions", "SHARE UPDATE EXCLUSIVE"),), None, "-", None),
        (
            16,
            (("workflow_definitions", "SHARE ROW EXCLUSIVE"),),
            ("workflow_versions", False),
            "-",
            None,
        ),
        (28, (("workflow_versions", "SHARE UPDATE EXCLUSIVE"),), None, "-", None),
    ],
    "db/flyway/sql/workflows/V2__workflows_runs_and_steps.sql": [
        (3, (("workflow_versions", "SHARE ROW EXCLUSIVE"),), ("workflow_runs", False), "-", None),
        (
            19,
            (("workflow_runs", "SHARE"),),
            ("workflow_runs_tenant_created_idx", False),
            "possible",
            None,
        ),
        (20, (("workflow_runs", "SHARE"),), ("workflow_runs_version_idx", False), "possible", None),
        (21, (("workflow_runs", "SHARE"),), ("workflow_runs_open_idx", False), "possible", None),
        (23, (("workflow_runs", "SHARE UPDATE EXCLUSIVE"),), None, "-", None),
        (25, (("workflow_runs", "SHARE ROW EXCLUSIVE"),), ("workflow_step_runs", False), "-", None),
        (41, (("workflow_step_runs", "SHARE UPDATE EXCLUSIVE"),), None, "-", None),
        (43, (), None, "-", None),
        (53, (("workflow_definitions", "SHARE ROW EXCLUSIVE"),), None, "-", None),
        (57, (("workflow_runs", "SHARE ROW EXCLUSIVE"),), None, "-", None),
    ],
    "db/flyway/sql/workflows/V3__workflows_schedules.sql": [
        (
            3,
            (("workflow_definitions", "SHARE ROW EXCLUSIVE"),),
            ("workflow_schedules", False),
            "-",
            None,
        ),
        (
            17,
            (("workflow_schedules", "SHARE"),),
            ("workflow_schedules_due_idx", False),
            "possible",
            None,
        ),
        (19, (("workflow_schedules", "SHARE UPDATE EXCLUSIVE"),), None, "-", None),
        (20, (("workflow_schedules", "SHARE UPDATE EXCLUSIVE"),), None, "-", None),
    ],
    "tests/data/lint/shop/R__recent_orders.sql": [
        (1, (), None, "-", None),
        (3, (("orders", "SHARE"),), ("orders_created_idx", False), "possible", None),
    ],
    "tests/data/lint/shop/V10__shipments.sql": [
        (1, (), ("shipments", False), "-", None),
    ],
    "tests/data/lint/shop/V11__shipments_order_index.sql": [
        (1, (("shipments", "SHARE"),), ("shipments_order_idx", False), "possible", None),
    ],
    "tests/data/lint/shop/V1__index_on_existing_table.sql": [
        (2, (("orders", "SHARE"),), ("orders_customer_idx", False), "possible", None),
    ],
    "tests/data/lint/shop/V2__not_null_without_default.sql": [
        (1, (("orders", "ACCESS EXCLUSIVE"),), None, "-", None),
    ],
    "tests/data/lint/shop/V3__column_type_change.sql": [
        (1, (), None, "-", None),
        (3, (("orders", "ACCESS EXCLUSIVE"),), None, "-", None),
    ],
    "tests/data/lint/shop/V4__foreign_key_without_not_valid.sql": [
        (
            1,
            (("orders", "SHARE ROW EXCLUSIVE"), ("customers", "SHARE ROW EXCLUSIVE")),
            None,
            "-",
            None,
        ),
    ],
    "tests/data/lint/shop/V5__concurrently_mixed_with_transactional.sql": [
        (1, (), ("audit", False), "-", None),
        (
            3,
            (("orders", "SHARE UPDATE EXCLUSIVE"),),
            ("orders_note_idx", False),
            "used",
            "CREATE INDEX CONCURRENTLY",
        ),
    ],
    "tests/data/lint/shop/V6__concurrently_in_begin_commit.sql": [
        (1, (), None, "-", None),
        (
            2,
            (("orders_old_idx", "SHARE UPDATE EXCLUSIVE"),),
            None,
            "used",
            "DROP INDEX CONCURRENTLY",
        ),
        (
            3,
            (("orders", "SHARE UPDATE EXCLUSIVE"),),
            ("orders_new_idx", False),
            "used",
            "CREATE INDEX CONCURRENTLY",
        ),
        (4, (), None, "-", None),
    ],
    "tests/data/lint/shop/V7__placeholders.sql": [
        (1, (), ("$", False), "-", None),
        (2, (), None, "possible", None),
    ],
    "tests/data/lint/shop/V8__größe_ünïcödé.sql": [
        (2, (), ('"neu_größe"', False), "-", None),
        (3, (('"neu_größe"', "SHARE"),), ('"neu_größe_maß"', False), "possible", None),
        (4, (('"bestellungen_ä"', "SHARE"),), ('"bestellungen_größe"', False), "possible", None),
    ],
    "tests/data/lint/shop/V9__table_created_here_is_not_flagged.sql": [
        (1, (), ("invoices", False), "-", None),
        (2, (("invoices", "SHARE"),), ("invoices_order_idx", False), "possible", None),
        (
            3,
            (("invoices", "SHARE ROW EXCLUSIVE"), ("orders", "SHARE ROW EXCLUSIVE")),
            None,
            "-",
            None,
        ),
        (4, (("invoices", "ACCESS EXCLUSIVE"),), None, "-", None),
        (5, (("invoices", "ACCESS EXCLUSIVE"),), None, "-", None),
        (6, (("invoices", "ACCESS EXCLUSIVE"),), None, "-", None),
    ],
}

# Where the parser's reading differs from the hand splitter's, and why it is better: a name is
# given as PostgreSQL reads it back, quoted only where it must be (`größe` needs no quotes; the
# hand splitter kept the quotes as written, and both name the same relation).
BETTER: dict[str, list[Reading]] = {
    "tests/data/lint/shop/V8__größe_ünïcödé.sql": [
        (2, (), ("neu_größe", False), "-", None),
        (3, (("neu_größe", "SHARE"),), ("neu_größe_maß", False), "possible", None),
        (4, (("bestellungen_ä", "SHARE"),), ("bestellungen_größe", False), "possible", None),
    ],
}


def fixture_files() -> list[str]:
    files = sorted(REPO.glob("db/flyway/sql/**/*.sql")) + sorted(SHOP.glob("*.sql"))
    return [f.relative_to(REPO).as_posix() for f in files]


def test_the_frozen_table_holds_every_fixture_file() -> None:
    assert sorted(BEFORE) == sorted(fixture_files())
    assert sum(len(found) for found in BEFORE.values()) == 198


# Flyway's placeholders are not SQL: the file as written goes to the fallback splitter.
FALLBACK = {"tests/data/lint/shop/V7__placeholders.sql": 'line 1: syntax error at or near "$"'}


@pytest.mark.parametrize("name", fixture_files())
def test_each_statement_reads_as_before_or_as_named_better(name: str) -> None:
    text = (REPO / name).read_text(encoding="utf-8").removeprefix("\ufeff")
    parsed = statements.split(text)
    why = FALLBACK.get(name)
    expected = None if why is None else f"the parser rejected {why}"
    assert [s.fallback for s in parsed] == [expected] * len(parsed)
    assert readings(text) == BETTER.get(name, BEFORE[name])


# (script, as the hand splitter read it, as the parser reads it): each a better reading.
BETTER_INLINE: list[tuple[str, list[Reading], list[Reading]]] = [
    (
        # A BEGIN ATOMIC body's semicolons end no statement: one function, not three pieces.
        "CREATE FUNCTION one() RETURNS int LANGUAGE sql\nBEGIN ATOMIC\n  SELECT 1;\n"
        "  SELECT 2;\nEND;\nCREATE INDEX i ON t (a)",
        [
            (1, (), None, "-", None),
            (4, (), None, "-", None),
            (5, (), None, "-", None),
            (6, (("t", "SHARE"),), ("i", False), "possible", None),
        ],
        [
            (1, (), None, "-", None),
            (6, (("t", "SHARE"),), ("i", False), "possible", None),
        ],
    ),
    (
        # The mode written after a list of tables, on each of them.
        "LOCK TABLE a, b IN SHARE MODE",
        [(1, (("a", "ACCESS EXCLUSIVE"),), None, "-", None)],
        [(1, (("a", "SHARE"), ("b", "SHARE")), None, "-", None)],
    ),
    (
        "TRUNCATE a, s.b",
        [(1, (("a", "ACCESS EXCLUSIVE"),), None, "-", None)],
        [(1, (("a", "ACCESS EXCLUSIVE"), ("s.b", "ACCESS EXCLUSIVE")), None, "-", None)],
    ),
    (
        "DROP TABLE a, b",
        [(1, (("a", "ACCESS EXCLUSIVE"),), None, "-", None)],
        [(1, (("a", "ACCESS EXCLUSIVE"), ("b", "ACCESS EXCLUSIVE")), None, "-", None)],
    ),
    (
        "ANALYZE a, b",
        [(1, (("a", "SHARE UPDATE EXCLUSIVE"),), None, "-", None)],
        [(1, (("a", "SHARE UPDATE EXCLUSIVE"), ("b", "SHARE UPDATE EXCLUSIVE")), None, "-", None)],
    ),
    (
        # VERBOSE is an option, not a table; without a table CLUSTER refuses a transaction.
        "CLUSTER VERBOSE",
        [(1, (("VERBOSE", "ACCESS EXCLUSIVE"),), None, "-", None)],
        [(1, (), None, "-", "CLUSTER of every table")],
    ),
    (
        # `s` is a schema, no table to lock.
        "REINDEX SCHEMA CONCURRENTLY s",
        [(1, (("s", "SHARE UPDATE EXCLUSIVE"),), None, "used", "REINDEX CONCURRENTLY")],
        [(1, (), None, "used", "REINDEX CONCURRENTLY")],
    ),
]


@pytest.mark.parametrize(("script", "before", "now"), BETTER_INLINE)
def test_the_parser_reads_better_where_the_hand_splitter_guessed(
    script: str, before: list[Reading], now: list[Reading]
) -> None:
    assert before != now
    assert readings(script) == now


def fallback_readings(text: str) -> list[Reading]:
    """The readings of the fallback splitter: a psql meta-command at the end (after a `;`, so it
    ends the last statement) makes the parser reject the whole file."""
    forced = text + "\n;\n\\echo forced\n"
    assert {s.fallback is not None for s in statements.split(forced)} == {True}
    return readings(forced)[:-1]


@pytest.mark.parametrize("name", fixture_files())
def test_the_fallback_splitter_still_reads_each_fixture_file_as_frozen(name: str) -> None:
    text = (REPO / name).read_text(encoding="utf-8").removeprefix("\ufeff")
    assert fallback_readings(text) == BEFORE[name]


@pytest.mark.parametrize(("script", "before", "now"), BETTER_INLINE)
def test_the_fallback_splitter_still_reads_each_inline_script_as_frozen(
    script: str, before: list[Reading], now: list[Reading]
) -> None:
    assert fallback_readings(script) == before


def test_rollback_to_a_savepoint_leaves_the_transaction_block_open() -> None:
    text = "BEGIN;\nSAVEPOINT s;\nROLLBACK TO SAVEPOINT s;\nVACUUM orders;\nCOMMIT;\n"
    controls = [statements.transaction_control(s) for s in statements.split(text)]
    # The hand splitter took the ROLLBACK for the block's end, and the VACUUM for outside it.
    assert controls == ["BEGIN", None, None, None, "END"]
    found = lint.lint_scripts([lint.Script("V1__s.sql", text)], LintRules())
    inside = [f for f in found if f.rule == NON_TRANSACTIONAL_IN_TRANSACTION]
    assert [(f.line, f.level) for f in inside] == [(4, Level.ERROR)]


# A psql meta-command, which Flyway would send to the server as it is.
META_COMMAND = "BEGIN;\nVACUUM orders;\nCOMMIT;\n\\echo done\n"
READ_BY_FALLBACK = (
    'read by the fallback splitter: the parser rejected line 4: syntax error at or near "\\"'
)


def test_the_locks_of_a_file_the_parser_rejects_name_the_fallback() -> None:
    found = locking.statement_locks(META_COMMAND, locking.Batch())
    assert [(lock.line, lock.relation, lock.mode) for lock in found] == [
        (2, "orders", "SHARE UPDATE EXCLUSIVE")
    ]
    assert found[0].statement == f"VACUUM orders [{READ_BY_FALLBACK}]"
    parsed = locking.statement_locks("VACUUM orders;", locking.Batch())
    assert [lock.statement for lock in parsed] == ["VACUUM orders"]


def test_the_lint_of_a_file_the_parser_rejects_names_the_fallback_in_each_finding() -> None:
    found = lint.lint_scripts([lint.Script("V1__meta.sql", META_COMMAND)], LintRules())
    assert NON_TRANSACTIONAL_IN_TRANSACTION in {f.rule for f in found}
    assert all(f.message.endswith(f"[{READ_BY_FALLBACK}]") for f in found)
    read = statements.split(META_COMMAND)
    assert [(s.line, s.reading) for s in read] == [(n, READ_BY_FALLBACK) for n in (1, 2, 3, 4)]


def test_a_file_the_parser_reads_carries_no_fallback_note() -> None:
    text = "BEGIN;\nVACUUM orders;\nCOMMIT;\n"
    found = lint.lint_scripts([lint.Script("V1__v.sql", text)], LintRules())
    assert [f.rule for f in found if f.rule == NON_TRANSACTIONAL_IN_TRANSACTION] == [
        NON_TRANSACTIONAL_IN_TRANSACTION
    ]
    assert not any("fallback" in f.message for f in found)
    assert {s.reading for s in statements.split(text)} == {"read by the PostgreSQL parser"}
