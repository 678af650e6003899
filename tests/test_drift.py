"""The native drift check agrees with real Flyway (`info` and `validate`) on tampered databases."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
from prefect.client.schemas.sorting import ArtifactSort
from prometheus_client.parser import text_string_to_metric_families
from psycopg import sql

from ameide_migrate.adapters.flyway import Installation
from ameide_migrate.adapters.pg_cluster import Cluster
from ameide_migrate.adapters.ports import free_port
from ameide_migrate.adapters.postgres.connection import connect
from ameide_migrate.adapters.postgres.schema_history import read_history
from ameide_migrate.commands.shared import seed_local
from ameide_migrate.config import environments
from ameide_migrate.config.settings import get_settings
from ameide_migrate.core import recovery
from ameide_migrate.services import drift
from ameide_migrate.services.context import RunContext
from ameide_migrate.services.drift import Verdict

from .fix_platform import REPO, Platform
from .test_fleet import add_fleet

Tamper = Callable[[Platform], None]


def _history_sql(platform: Platform, database: str, statement: str, *params: object) -> None:
    with connect(platform.owners[database]) as conn:
        conn.execute(statement, params)


def edit_applied_file(p: Platform) -> None:
    path = p.sql_dir / "threads" / "V2__threads_message_attachments_and_triggers.sql"
    path.write_text(path.read_text() + "-- edited by hand\n")


def delete_history_row(p: Platform) -> None:
    _history_sql(p, "threads", "DELETE FROM flyway_schema_history WHERE version = '2'")


def add_failed_row(p: Platform) -> None:
    _history_sql(
        p,
        "threads",
        "INSERT INTO flyway_schema_history (installed_rank, version, description, type, script, "
        "checksum, installed_by, execution_time, success) "
        "SELECT max(installed_rank) + 1, '9', 'broken', 'SQL', 'V9__broken.sql', 1, 'me', 1, false "
        "FROM flyway_schema_history",
    )


def apply_unknown_versions(p: Platform) -> None:
    for version, script in (("2.5", "V2_5__by_hand.sql"), ("12", "V12__from_a_branch.sql")):
        _history_sql(
            p,
            "threads",
            "INSERT INTO flyway_schema_history (installed_rank, version, description, type, "
            "script, checksum, installed_by, execution_time, success) "
            "SELECT max(installed_rank) + 1, %s, 'unknown', 'SQL', %s, 7, 'me', 1, true "
            "FROM flyway_schema_history",
            version,
            script,
        )


def apply_out_of_order(p: Platform) -> None:
    _history_sql(
        p,
        "threads",
        "UPDATE flyway_schema_history SET installed_rank = "
        "(SELECT max(installed_rank) + 1 FROM flyway_schema_history) WHERE version = '2'",
    )


def change_repeatable(p: Platform) -> None:
    path = p.sql_dir / "threads" / "R__threads_recent.sql"
    path.write_text("CREATE OR REPLACE VIEW threads_recent AS SELECT 2 AS two;\n")


def remove_file(p: Platform) -> None:
    (p.sql_dir / "threads" / "V3__threads_add_tenant_metadata_columns.sql").unlink()


TAMPERINGS: dict[str, tuple[Tamper, Verdict]] = {
    "untouched": (lambda p: None, Verdict.IN_SYNC),
    "edited applied file": (edit_applied_file, Verdict.DRIFTED),
    "deleted history row": (delete_history_row, Verdict.DRIFTED),
    "failed row": (add_failed_row, Verdict.DRIFTED),
    "versions the repository lacks": (apply_unknown_versions, Verdict.DRIFTED),
    "out of order": (apply_out_of_order, Verdict.DRIFTED),
    "changed repeatable": (change_repeatable, Verdict.BEHIND),
    "file removed": (remove_file, Verdict.DRIFTED),
}


@pytest.mark.parametrize("tampering", list(TAMPERINGS))
def test_native_report_agrees_with_flyway(platform: Platform, tampering: str) -> None:
    (platform.sql_dir / "threads" / "R__threads_recent.sql").write_text(
        "CREATE OR REPLACE VIEW threads_recent AS SELECT 1 AS one;\n"
    )
    platform.run(databases=["threads"])
    tamper, expected = TAMPERINGS[tampering]
    tamper(platform)

    catalog = environments.catalog("local", get_settings())
    db = catalog.databases["threads"]
    native = drift.check(
        recovery.Subject("local", "threads"),
        db,
        read_history(platform.owners["threads"], "flyway_schema_history"),
    )
    ctx = RunContext.create("local", [db], {"threads": platform.owners["threads"]}, get_settings())
    try:
        info = ctx.engine().run(ctx.request("info", "threads"))
        validation = ctx.engine().run(
            ctx.request("validate", "threads", ignore_migration_patterns=("*:pending", "*:future"))
        )
    finally:
        ctx.close()
    flyway = drift.from_flyway(recovery.Subject("local", "threads"), db, info, validation)

    assert sorted(m.key for m in native.migrations) == sorted(m.key for m in flyway.migrations)
    assert set(native.problems) == set(flyway.problems), (native.problems, flyway.problems)
    assert native.verdict is flyway.verdict is expected
    assert native.version == flyway.version
    if expected is not Verdict.IN_SYNC:
        assert "ameide-migrate" in native.fix or "restore" in native.fix or "deploy" in native.fix


def test_fix_names_the_file_to_restore_and_repair(platform: Platform) -> None:
    platform.run(databases=["threads"])
    edit_applied_file(platform)
    catalog = environments.catalog("local", get_settings())
    report = drift.check(
        recovery.Subject("local", "threads"),
        catalog.databases["threads"],
        read_history(platform.owners["threads"], "flyway_schema_history"),
    )
    assert report.verdict is Verdict.DRIFTED
    assert "restore V2__threads_message_attachments_and_triggers.sql" in report.fix
    assert "ameide-migrate repair --env local --db threads" in report.fix


def test_a_database_never_migrated_is_behind(platform: Platform) -> None:
    catalog = environments.catalog("local", get_settings())
    report = drift.check(recovery.Subject("local", "graph"), catalog.databases["graph"], None)
    assert report.verdict is Verdict.BEHIND
    assert report.pending == len(catalog.databases["graph"].migrations)
    assert report.fix == "apply what is pending: `ameide-migrate run --env local --db graph`"


def drift_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ameide_migrate.cli.main", "drift", "--env", "local", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
    )


def test_drift_command_exits_0_in_sync_and_3_on_drift_with_the_same_verdicts_either_engine(
    platform: Platform,
) -> None:
    platform.run()
    clean = drift_cli("--json")
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert {d["verdict"] for d in json.loads(clean.stdout)} == {"in sync"}

    edit_applied_file(platform)
    (platform.sql_dir / "graph" / "V9__graph_more.sql").write_text("CREATE TABLE more (id int);\n")
    verdicts = {}
    for engine in ("native", "flyway"):
        done = drift_cli("--json", "--engine", engine)
        assert done.returncode == 3, done.stdout + done.stderr
        verdicts[engine] = {d["database"]: d["verdict"] for d in json.loads(done.stdout)}
    assert verdicts["native"] == verdicts["flyway"]
    assert verdicts["native"]["threads"] == "drifted"
    assert verdicts["native"]["graph"] == "behind"
    assert verdicts["native"]["platform"] == "in sync"

    table = drift_cli("--db", "threads")
    assert table.returncode == 3
    assert "restore V2__threads_message_attachments_and_triggers.sql" in table.stdout


def test_drift_flow_artifact_names_the_drift_and_the_fix(platform: Platform) -> None:
    from ameide_migrate.flows.drift import drift_flow

    platform.run(databases=["threads", "graph"])
    edit_applied_file(platform)

    state = drift_flow(environment="local", databases=["threads", "graph"], return_state=True)

    assert state.is_failed()
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["drift-local-summary"]))
        )
    mine = [a for a in artifacts if a.flow_run_id == state.state_details.flow_run_id]
    assert len(mine) == 1
    markdown = str(mine[0].data)
    assert f"### Schema drift `local` on {platform.admin.server}" in markdown
    assert f"**threads**: drifted on {platform.admin.server}" in markdown
    assert "checksum mismatch for version 2" in markdown
    assert "ameide-migrate repair --env local --db threads" in markdown
    assert "**graph**" not in markdown


def test_an_unreachable_database_is_reported_and_exits_1(
    platform: Platform, spare_cluster: Cluster
) -> None:
    platform.move_to("threads", spare_cluster)
    spare_cluster.stop()

    done = drift_cli("--json", "--db", "threads", "--db", "graph")

    assert done.returncode == 1, done.stdout + done.stderr
    verdicts = {d["database"]: d for d in json.loads(done.stdout)}
    assert verdicts["threads"]["verdict"] == "unreachable"
    assert "unreachable" in verdicts["threads"]["problems"][0]
    assert verdicts["graph"]["verdict"] == "behind"


def test_drift_check_writes_prometheus_metrics(
    platform: Platform, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ameide_migrate.flows.drift import drift_flow

    textfile = tmp_path / "metrics" / "ameide.prom"
    monkeypatch.setenv("AMEIDE_METRICS_TEXTFILE", str(textfile))
    get_settings.cache_clear()
    platform.run(databases=["threads", "graph"])
    edit_applied_file(platform)
    (platform.sql_dir / "graph" / "V9__graph_more.sql").write_text("CREATE TABLE more (id int);\n")

    drift_flow(environment="local", databases=["threads", "graph"], return_state=True)

    samples = {
        (s.name, s.labels["database"]): s.value
        for family in text_string_to_metric_families(textfile.read_text())
        for s in family.samples
    }
    assert samples[("ameide_migrate_schema_version", "threads")] == 4.0
    assert samples[("ameide_migrate_drift", "threads")] == 1.0
    assert samples[("ameide_migrate_drift", "graph")] == 0.0
    assert samples[("ameide_migrate_pending_migrations", "graph")] == 1.0
    assert samples[("ameide_migrate_latest_version", "graph")] == 9.0
    assert samples[("ameide_migrate_last_check_timestamp_seconds", "graph")] > 1.7e9
    assert samples[("ameide_migrate_check_duration_seconds", "graph")] > 0


def latest_artifact(key: str) -> tuple[object, str]:
    """The flow run that wrote the latest artifact under `key`, and what it holds."""
    with get_client(sync_client=True) as client:
        (latest,) = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])),
            sort=ArtifactSort.CREATED_DESC,
            limit=1,
        )
    return latest.flow_run_id, str(latest.data)


def metric_samples(exposed: str) -> dict[tuple[str, str | None, str | None], float]:
    """(metric, database, fleet) -> value, as Prometheus reads them."""
    return {
        (s.name, s.labels.get("database"), s.labels.get("fleet")): s.value
        for family in text_string_to_metric_families(exposed)
        for s in family.samples
    }


def test_a_fleets_drift_leaves_its_environments_artifacts_and_metrics_as_they_were(
    platform: Platform, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ameide_migrate.flows.drift import drift_flow

    textfile = tmp_path / "metrics" / "ameide.prom"
    monkeypatch.setenv("AMEIDE_METRICS_TEXTFILE", str(textfile))
    add_fleet(platform, ["t1", "t2"])
    seed_local(get_settings(), ["tenant_t1", "tenant_t2"])
    platform.run(databases=["threads"])
    tree = drift_flow(environment="local", databases=["threads"], return_state=True)
    tree_metrics = textfile.read_text()

    fleet = drift_flow(environment="local", fleet="tenants", return_state=True)

    tree_run, fleet_run = tree.state_details.flow_run_id, fleet.state_details.flow_run_id
    assert tree_run != fleet_run
    ran, rows = latest_artifact("drift-local")
    assert ran == tree_run
    assert [r["database"] for r in json.loads(rows)] == ["threads"]
    ran, markdown = latest_artifact("drift-local-summary")
    assert ran == tree_run
    assert "tenant_" not in markdown
    ran, rows = latest_artifact("drift-fleet-local-tenants")
    assert ran == fleet_run
    assert [r["database"] for r in json.loads(rows)] == ["tenant_t1", "tenant_t2"]
    ran, markdown = latest_artifact("drift-fleet-local-tenants-summary")
    assert ran == fleet_run
    assert "**tenant_t1**" in markdown
    assert "--fleet tenants --target t1" in markdown
    assert textfile.read_text() == tree_metrics
    fleet_metrics = metric_samples((textfile.parent / "ameide-fleet-tenants.prom").read_text())
    assert {database for _, database, _ in fleet_metrics} == {"tenant_t1", "tenant_t2"}
    assert {database for _, database, _ in metric_samples(tree_metrics)} == {"threads"}


def test_changes_made_outside_flyway_are_named(platform: Platform) -> None:
    platform.run(databases=["threads"])
    creds = platform.owners["threads"]
    index = "threads_agent_id_idx"
    with connect(creds) as conn:
        conn.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(index)))
        conn.execute("ALTER TABLE threads ADD COLUMN added_by_hand text")

    done = drift_cli("--json", "--db", "threads")

    assert done.returncode == 3, done.stdout + done.stderr
    (report,) = json.loads(done.stdout)
    assert report["verdict"] == "drifted"
    assert f"index public.{index} dropped outside Flyway" in report["schema_changes"]
    assert "column public.threads.added_by_hand added outside Flyway" in report["schema_changes"]
    assert "capture the change in a new migration" in report["fix"]
    assert report["known_good"]  # when the schema was last as Flyway left it


def test_server_support_is_read_from_flyway_and_warns_before_an_upgrade_leaves_it(
    flyway_installation: Installation, platform: Platform
) -> None:
    from ameide_migrate.flows.drift import drift_flow

    supported = flyway_installation.postgresql_support
    assert supported == (10, 16)  # Flyway 10.17's own check: newer than 16 is untested
    seventeen = drift.ServerSupport("db:5432", 17, flyway_installation.version, supported)
    assert seventeen.warning is not None
    assert "PostgreSQL 17 is newer than Flyway 10.17.0 supports (10 to 16)" in seventeen.warning
    assert "newest" in str(drift.ServerSupport("db:5432", 16, "10.17.0", supported).warning)
    assert drift.ServerSupport("db:5432", 15, "10.17.0", supported).warning is None

    platform.run(databases=["threads"])
    state = drift_flow(environment="local", databases=["threads"], return_state=True)
    report = state.result()
    (server,) = report.servers
    assert server.major == 15
    assert server.supported == (10, 16)


@pytest.fixture
def pushgateway(tmp_path: Path) -> Iterator[str]:
    """Debian's prometheus-pushgateway on a loopback port of its own."""
    port = free_port()
    process = subprocess.Popen(
        ["prometheus-pushgateway", f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while True:
        try:
            urllib.request.urlopen(f"{url}/-/ready", timeout=1).close()  # noqa: S310
            break
        except OSError:
            if time.monotonic() > deadline:
                process.kill()
                raise
            time.sleep(0.1)
    try:
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_drift_metrics_are_pushed_to_a_pushgateway_when_configured(
    platform: Platform, pushgateway: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ameide_migrate.flows.drift import drift_flow

    monkeypatch.setenv("AMEIDE_PUSHGATEWAY_URL", pushgateway)
    get_settings.cache_clear()
    platform.run(databases=["threads"])
    edit_applied_file(platform)

    drift_flow(environment="local", databases=["threads"], return_state=True)

    with urllib.request.urlopen(f"{pushgateway}/metrics", timeout=5) as response:  # noqa: S310
        exposed = response.read().decode()
    pushed = {
        (s.name, s.labels.get("database"), s.labels.get("job")): s.value
        for family in text_string_to_metric_families(exposed)
        for s in family.samples
    }
    assert pushed[("ameide_migrate_drift", "threads", "ameide_migrate_drift")] == 1.0
    assert pushed[("ameide_migrate_schema_version", "threads", "ameide_migrate_drift")] == 4.0


def test_a_fleets_drift_metrics_are_pushed_to_a_group_the_environments_push_leaves_alone(
    platform: Platform, pushgateway: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ameide_migrate.flows.drift import drift_flow

    monkeypatch.setenv("AMEIDE_PUSHGATEWAY_URL", pushgateway)
    add_fleet(platform, ["t1", "t2"])
    seed_local(get_settings(), ["tenant_t1", "tenant_t2"])
    platform.run(databases=["threads"])

    drift_flow(environment="local", fleet="tenants", return_state=True)
    drift_flow(environment="local", databases=["threads"], return_state=True)

    with urllib.request.urlopen(f"{pushgateway}/metrics", timeout=5) as response:  # noqa: S310
        pushed = metric_samples(response.read().decode())
    assert pushed[("ameide_migrate_drift", "threads", None)] == 0.0
    for target in ("tenant_t1", "tenant_t2"):
        assert ("ameide_migrate_drift", target, "tenants") in pushed
    assert ("ameide_migrate_drift", "threads", "tenants") not in pushed
