"""The local environment on more than one server: each server's entries in the local store are
its own, a run given another server's admin URL seeds and migrates that server, and every
outcome names the server it was read on.

With real PostgreSQL servers (the session's and a spare one), Flyway and Prefect, through the
command line.
"""

from __future__ import annotations

import json
import os
import re
import stat
from datetime import UTC, datetime
from uuid import UUID

import psycopg
import pytest

from ameide_migrate.adapters import secret_sources
from ameide_migrate.adapters.pg_cluster import Cluster
from ameide_migrate.adapters.prefect import artifacts
from ameide_migrate.config.settings import get_settings
from ameide_migrate.core.errors import ExitCode
from ameide_migrate.core.outcomes import DatabaseOutcome, OutcomeState, RunReport
from ameide_migrate.services import local
from ameide_migrate.services.fleet import FleetReport
from ameide_migrate.terminal import print_run

from .fix_platform import Platform, admin_url_of, ameide, drop_owners
from .fix_vault import Vault
from .test_approval import artifact
from .test_fleet import add_fleet, tenant

GRAPH_VERSIONS = ["1", "2", "3"]


def applied_on(cluster: Cluster, database: str) -> list[str]:
    """The versions in `database`'s history on that server, read as its superuser."""
    info = {**cluster.admin.conninfo(5), "dbname": database}
    with psycopg.connect(**info) as conn:  # type: ignore[arg-type]
        rows = conn.execute(
            "SELECT version FROM flyway_schema_history "
            "WHERE version IS NOT NULL AND success ORDER BY installed_rank"
        ).fetchall()
    return [str(version) for (version,) in rows]


def tables_on(cluster: Cluster, database: str) -> set[str]:
    info = {**cluster.admin.conninfo(5), "dbname": database}
    with psycopg.connect(**info) as conn:  # type: ignore[arg-type]
        rows = conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
        ).fetchall()
    return {str(name) for (name,) in rows}


def test_a_run_given_another_servers_admin_url_migrates_that_server_and_names_it(
    platform: Platform, spare_cluster: Cluster
) -> None:
    here, there = platform.admin.server, spare_cluster.admin.server
    graph = platform.owners["graph"].database
    first = ameide("run", "--env", "local", "--db", "graph")
    assert first.returncode == 0, first.stderr
    assert platform.versions("graph") == GRAPH_VERSIONS
    entry_here = platform.entries()["graph"]

    other = admin_url_of(spare_cluster.admin).get_secret_value()
    done = ameide("run", "--env", "local", "--admin-url", other, "--db", "graph")

    assert done.returncode == 0, done.stdout + done.stderr
    assert f"created databases and owners on {there}" in done.stderr
    # The other server's graph itself, not what the first server's answers.
    assert applied_on(spare_cluster, graph) == GRAPH_VERSIONS
    assert "flyway_schema_history" in tables_on(spare_cluster, graph)
    assert f"Migrations: local on {there}" in done.stdout
    assert re.search(r"│ graph\s+│ empty\s+│ 3\s+│.*│ migrated", done.stdout), done.stdout
    assert here not in done.stdout
    assert spare_cluster.password.get_secret_value() not in done.stdout + done.stderr
    rows = artifacts.latest_table("migrate-local")
    assert [(r["database"], r["server"], r["state"]) for r in rows] == [
        ("graph", there, "migrated")
    ]
    # Each server's entries are its own: the first server's were left as they were.
    stored = json.loads((platform.state_dir / secret_sources.STORE_NAME).read_text())
    assert stored["servers"][here]["graph"] == entry_here
    assert stored["servers"][there]["graph"]["GRAPH_DATABASE_URL"].endswith(f"{there}/{graph}")
    assert platform.versions("graph") == GRAPH_VERSIONS

    # Without an admin URL the local environment is its own server again, and says so.
    drift = ameide("drift", "--env", "local", "--db", "graph")
    assert drift.returncode == 0, drift.stdout + drift.stderr
    assert f"Schema drift: local on {here}" in drift.stdout
    before = datetime.now(UTC)
    checked = json.loads(ameide("drift", "--env", "local", "--db", "graph", "--json").stdout)
    assert [(d["database"], d["server"], d["verdict"]) for d in checked] == [
        ("graph", here, "in sync")
    ]
    rows = json.loads(artifact("drift-local", drift_run_since(before)))
    assert [(r["database"], r["server"]) for r in rows] == [("graph", here)]


def drift_run_since(since: datetime) -> UUID:
    """The one run of the drift flow started since `since` by a command: the command's own (a
    worker of the session may start another test's nightly drift deployment meanwhile)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowFilter,
        FlowFilterName,
        FlowRunFilter,
        FlowRunFilterDeploymentId,
        FlowRunFilterStartTime,
    )

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=["drift"])),
            flow_run_filter=FlowRunFilter(
                start_time=FlowRunFilterStartTime(after_=since),
                deployment_id=FlowRunFilterDeploymentId(is_null_=True),
            ),
        )
    (run,) = runs
    return run.id


def test_a_server_without_entries_in_the_store_is_named_with_the_command_that_seeds_it(
    platform: Platform, spare_cluster: Cluster
) -> None:
    here, there = platform.admin.server, spare_cluster.admin.server
    other = admin_url_of(spare_cluster.admin).get_secret_value()
    env = {**os.environ, "AMEIDE_LOCAL_ADMIN_URL": other}

    refused = ameide("secrets", "verify", "--env", "local", "--db", "threads", env=env)

    assert refused.returncode == ExitCode.FAILED, refused.stdout + refused.stderr
    assert f"threads on {there}" in refused.stderr
    assert f"the store holds threads's of {here}, another server" in refused.stderr
    (fix,) = re.findall(r"run `(ameide-migrate secrets seed-local [^`]*)`", refused.stderr)
    assert spare_cluster.password.get_secret_value() not in refused.stderr
    args = fix.removeprefix("ameide-migrate ").split()
    password = spare_cluster.password.get_secret_value()
    seeded = ameide(*[a.replace("PASSWORD", password) for a in args], env=env)
    assert seeded.returncode == 0, seeded.stderr
    verified = ameide("secrets", "verify", "--env", "local", "--db", "threads", env=env)
    assert verified.returncode == 0, verified.stderr
    assert f"@ postgresql://{there}/" in verified.stdout


def test_local_secrets_in_vault_naming_another_server_stop_the_run_before_it_makes_anything(
    platform: Platform, spare_cluster: Cluster, vault: Vault, monkeypatch: pytest.MonkeyPatch
) -> None:
    here, there = platform.admin.server, spare_cluster.admin.server
    template = f"{platform.prefix}{{environment}}/databases/{{database}}"
    vault.set_for_runs(monkeypatch, template)
    local.seed(platform.state_dir, platform.owners, get_settings().vault_connection())
    graph = platform.owners["graph"].database
    other = admin_url_of(spare_cluster.admin).get_secret_value()

    refused = ameide("run", "--env", "local", "--admin-url", other, "--db", "graph")

    assert refused.returncode == ExitCode.USAGE, refused.stdout + refused.stderr
    assert f"names {here}" in refused.stderr
    assert f"than {there}, the one this command uses" in refused.stderr
    path = template.format(environment="local", database="graph")
    assert f"`vault kv metadata delete -mount=secret {path}`" in refused.stderr
    assert spare_cluster.password.get_secret_value() not in refused.stderr
    with psycopg.connect(**spare_cluster.admin.conninfo(5)) as conn:  # type: ignore[arg-type]
        made = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (graph,)).fetchall()
    assert made == [], "a database was made before the refusal"

    vault.client().secrets.kv.v2.delete_metadata_and_all_versions(path)
    done = ameide("run", "--env", "local", "--admin-url", other, "--db", "graph")

    assert done.returncode == 0, done.stdout + done.stderr
    assert applied_on(spare_cluster, graph) == GRAPH_VERSIONS
    assert f"Migrations: local on {there}" in done.stdout
    get_settings.cache_clear()


def test_a_store_of_the_first_layout_is_read_for_its_server_and_rewritten_when_seeded(
    platform: Platform,
) -> None:
    store = platform.state_dir / secret_sources.STORE_NAME
    entries = platform.entries()
    store.write_text(json.dumps(entries))  # {database: secret}, as stores were first written

    verified = ameide("secrets", "verify", "--env", "local", "--db", "threads")
    assert verified.returncode == 0, verified.stderr
    seeded = ameide("secrets", "seed-local")

    assert seeded.returncode == 0, seeded.stderr
    assert platform.admin.server in seeded.stdout
    assert json.loads(store.read_text()) == {
        "version": secret_sources.STORE_VERSION,
        "servers": {platform.admin.server: entries},
    }
    assert stat.S_IMODE(store.stat().st_mode) == 0o600


def test_the_run_table_names_its_server_in_the_heading_or_a_column_when_there_are_several() -> None:
    from rich.console import Console

    def outcome(database: str) -> DatabaseOutcome:
        return DatabaseOutcome(database, OutcomeState.MIGRATED, None, "3", "3", 3, 0.5)

    one = RunReport("local", [outcome("graph")], server_of={"graph": "127.0.0.1:5433"})
    two = RunReport(
        "local",
        [outcome("graph"), outcome("threads")],
        server_of={"graph": "127.0.0.1:5433", "threads": "10.0.0.7:5432"},
    )

    def printed(run: RunReport) -> str:
        console = Console(width=160, record=True)
        print_run(run, console)
        return console.export_text()

    assert "Migrations: local on 127.0.0.1:5433" in printed(one)
    assert "server" not in printed(one)
    shown = printed(two)
    assert shown.splitlines()[0].strip() == "Migrations: local"
    assert re.search(r"graph\s+│ 127\.0\.0\.1:5433\s+│", shown), shown
    assert re.search(r"threads\s+│ 10\.0\.0\.7:5432\s+│", shown), shown
    ledger = FleetReport(
        "local", "tenants", waves=[[outcome("tenant_a")]], not_started=["tenant_b"]
    )
    ledger.server_of = {"tenant_a": "127.0.0.1:5433", "tenant_b": "10.0.0.7:5432"}
    assert [(r["target"], r["server"]) for r in ledger.rows()] == [
        ("tenant_a", "127.0.0.1:5433"),
        ("tenant_b", "10.0.0.7:5432"),
    ]


def test_a_fleet_run_given_another_servers_admin_url_migrates_its_targets_there(
    platform: Platform, spare_cluster: Cluster
) -> None:
    targets = ["acme", "globex", "initech"]
    add_fleet(platform, targets)
    there = spare_cluster.admin.server
    try:
        first = ameide("fleet", "run", "--env", "local", "--fleet", "tenants", timeout=600)
        assert first.returncode == 0, first.stdout + first.stderr
        other = admin_url_of(spare_cluster.admin).get_secret_value()

        done = ameide(
            "fleet",
            "run",
            "--env",
            "local",
            "--fleet",
            "tenants",
            "--admin-url",
            other,
            timeout=600,
        )

        assert done.returncode == 0, done.stdout + done.stderr
        for target in targets:
            assert applied_on(spare_cluster, tenant(platform, target).database) == ["1", "2", "3"]
        assert f"Fleet tenants: local on {there}" in done.stdout
        ledger = artifacts.latest_table("fleet-local-tenants")
        assert sorted((r["target"], r["server"], r["state"]) for r in ledger) == [
            (f"tenant_{t}", there, "migrated") for t in targets
        ]
    finally:
        drop_owners(platform.admin, {t: tenant(platform, t) for t in targets})
