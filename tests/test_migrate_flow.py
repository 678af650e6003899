"""The migrate flow end to end: real PostgreSQL, real Flyway, a real Prefect server."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

from ameide_migrate.adapters.flyway import Installation
from ameide_migrate.adapters.pg_cluster import Cluster
from ameide_migrate.config.settings import get_settings
from ameide_migrate.core.catalog import PLATFORM_DATABASES, load_catalog
from ameide_migrate.core.outcomes import OutcomeState

from .fix_platform import REPO, Platform

LATEST = {
    db.name: str(db.latest_version)
    for db in load_catalog(REPO / "db/flyway/sql").databases.values()
}


def test_fresh_run_migrates_all_eight_databases_to_the_latest_version(platform: Platform) -> None:
    state, report = platform.run()

    assert state.is_completed()
    assert [o.database for o in report.outcomes] == list(PLATFORM_DATABASES)
    assert {o.database: o.state for o in report.outcomes} == dict.fromkeys(
        PLATFORM_DATABASES, OutcomeState.MIGRATED
    )
    for db in PLATFORM_DATABASES:
        assert platform.versions(db)[-1] == LATEST[db], db
        assert all(r.success for r in platform.history(db) or [])
    outcome = {o.database: o for o in report.outcomes}
    assert outcome["threads"].before is None
    assert outcome["threads"].after == LATEST["threads"]
    assert outcome["workflows"].applied == 4  # three versions and the placeholder repeatable
    assert platform.table_exists("threads", "threads")
    assert platform.query("workflows", "SELECT environment FROM workflows_runtime_environment") == [
        ("local",)
    ]
    assert all(s.ok and s.source == "flyway info" for s in report.smoke)
    assert report.jvm_starts == 1


def test_results_artifact_lists_every_database_with_before_after_and_state(
    platform: Platform,
) -> None:
    state, _ = platform.run(databases=["threads", "graph"])

    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["migrate-local"]))
        )
    mine = [a for a in artifacts if a.flow_run_id == state.state_details.flow_run_id]
    assert len(mine) == 1
    rows = json.loads(str(mine[0].data))
    assert {r["database"]: (r["before"], r["after"], r["state"]) for r in rows} == {
        "threads": ("empty", LATEST["threads"], "migrated"),
        "graph": ("empty", LATEST["graph"], "migrated"),
    }


def test_second_run_is_a_no_op_without_a_jvm(platform: Platform) -> None:
    platform.run()
    ranks_before = {db: len(platform.history(db) or []) for db in PLATFORM_DATABASES}

    state, report = platform.run()

    assert state.is_completed()
    assert all(o.state is OutcomeState.UP_TO_DATE and o.applied == 0 for o in report.outcomes)
    assert report.jvm_starts == 0
    assert all(s.ok and s.source == "history" for s in report.smoke)
    assert {db: len(platform.history(db) or []) for db in PLATFORM_DATABASES} == ranks_before


def test_targeted_run_touches_only_its_database(platform: Platform) -> None:
    state, report = platform.run(databases=["threads"])

    assert state.is_completed()
    assert [o.database for o in report.outcomes] == ["threads"]
    assert platform.versions("threads")[-1] == LATEST["threads"]
    for db in PLATFORM_DATABASES:
        if db != "threads":
            assert platform.history(db) is None, f"{db} was touched"


def test_broken_migration_fails_its_database_and_the_others_are_migrated(
    platform: Platform,
) -> None:
    broken = platform.sql_dir / "graph" / "V9__graph_broken.sql"
    broken.write_text("CREATE TABLE graph_broken (id int);\nSELECT * FROM no_such_table;\n")

    state, report = platform.run()

    assert state.is_failed()
    outcome = {o.database: o for o in report.outcomes}
    assert outcome["graph"].state is OutcomeState.FAILED
    assert 'relation "no_such_table" does not exist' in outcome["graph"].message
    assert "ameide-migrate run --env local --db graph" in outcome["graph"].recovery
    # Flyway applied graph's good migrations before the broken one; the broken one rolled back,
    # and the outcome says where the database really stands.
    assert platform.versions("graph")[-1] == LATEST["graph"]
    assert outcome["graph"].after == LATEST["graph"]
    assert outcome["graph"].applied == 3
    assert f"stays at version {LATEST['graph']}" in outcome["graph"].recovery
    assert not platform.table_exists("graph", "graph_broken")
    assert all(r.success for r in platform.history("graph") or [])
    for db in PLATFORM_DATABASES:
        if db != "graph":
            assert outcome[db].state is OutcomeState.MIGRATED, db
            assert platform.versions(db)[-1] == LATEST[db], db

    broken.write_text("CREATE TABLE graph_fixed (id int);\n")
    state, report = platform.run(databases=["graph"])
    assert state.is_completed()
    assert platform.versions("graph")[-1] == "9"


def test_edited_applied_migration_fails_validation_and_nothing_is_migrated(
    platform: Platform,
) -> None:
    platform.run(databases=["threads"])
    rows = platform.history("threads")
    applied = platform.sql_dir / "threads" / "V1__threads_initial_schema.sql"
    applied.write_text(applied.read_text() + "\n-- edited after it ran\n")

    # Nothing pending: only the native check's checksum comparison can send it to Flyway.
    state, report = platform.run(databases=["threads"])
    assert state.is_failed()
    assert "checksum mismatch" in report.outcomes[0].message.lower()
    assert platform.history("threads") == rows

    (platform.sql_dir / "threads" / "V5__threads_more.sql").write_text(
        "CREATE TABLE more (id int);\n"
    )
    state, report = platform.run(databases=["threads"])

    assert state.is_failed()
    (outcome,) = report.outcomes
    assert outcome.state is OutcomeState.FAILED
    assert "checksum mismatch" in outcome.message.lower()
    assert "flyway validate" in outcome.message
    assert "repair" in outcome.recovery
    assert platform.versions("threads")[-1] == LATEST["threads"]
    assert not platform.table_exists("threads", "more")


def test_database_down_at_start_succeeds_through_retries(
    platform: Platform, spare_cluster: Cluster
) -> None:
    # threads lives on a server of its own that is down when the run starts.
    platform.move_to("threads", spare_cluster)
    spare_cluster.stop()
    restarter = threading.Timer(3.0, spare_cluster.start)
    restarter.start()
    started = time.monotonic()

    state, report = platform.run(databases=["threads"])

    restarter.join()
    assert state.is_completed(), report.summary()
    assert report.outcomes[0].state is OutcomeState.MIGRATED
    assert time.monotonic() - started > 3.0
    assert platform.versions("threads")[-1] == LATEST["threads"]


@pytest.mark.slow
def test_two_runs_at_once_apply_each_migration_exactly_once(
    platform: Platform, tmp_path: Path
) -> None:
    command = [
        sys.executable,
        "-m",
        "ameide_migrate.cli.main",
        "run",
        "--env",
        "local",
        "--db",
        "threads",
        "--db",
        "graph",
    ]
    runs = [
        subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO
        )
        for _ in range(2)
    ]
    outputs = [r.communicate(timeout=300)[0] for r in runs]

    assert [r.returncode for r in runs] == [0, 0], outputs
    # Between them the two tables count each migration once: the run that waited for the
    # other's lock says the other applied it, not "migrated, 0 applied".
    rows = [
        [cell.strip() for cell in line.split("│")[1:-1]]
        for output in outputs
        for line in output.splitlines()
        if line.startswith("│ threads ")
    ]
    assert sorted((int(r[3]), r[5]) for r in rows) == [(0, "up to date"), (4, "migrated")], outputs
    for db in ("threads", "graph"):
        history = platform.history(db) or []
        scripts = [r.script for r in history]
        assert len(scripts) == len(set(scripts)), f"{db}: applied twice: {scripts}"
        assert all(r.success for r in history)
        assert platform.versions(db)[-1] == LATEST[db]


@pytest.mark.slow
def test_a_newer_flyway_release_migrates_validates_and_smoke_checks(
    platform: Platform, newer_flyway: Installation, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AMEIDE_FLYWAY_VERSION", newer_flyway.version)
    get_settings.cache_clear()
    platform.run(databases=["threads"])
    applied = platform.sql_dir / "threads" / "V2__threads_message_attachments_and_triggers.sql"
    applied.write_text(applied.read_text() + "-- edited\n")

    state, report = platform.run(databases=["threads", "workflows"])

    assert state.is_failed()
    outcome = {o.database: o for o in report.outcomes}
    assert outcome["workflows"].state is OutcomeState.MIGRATED
    assert "checksum mismatch" in outcome["threads"].message.lower()
    (smoke,) = report.smoke
    assert smoke.ok
    assert smoke.source == "flyway info"


def test_dry_run_lists_what_would_be_applied_and_changes_nothing(platform: Platform) -> None:
    state, report = platform.run(databases=["threads", "workflows"], dry_run=True)

    assert state.is_completed()
    outcome = {o.database: o for o in report.outcomes}
    assert outcome["threads"].state is OutcomeState.WOULD_APPLY
    assert outcome["threads"].applied == 4
    assert "V3__threads_add_tenant_metadata_columns.sql" in outcome["threads"].message
    assert "R__workflows_environment_settings.sql" in outcome["workflows"].message
    assert platform.history("threads") is None
    assert report.jvm_starts == 0

    platform.run(databases=["threads"])
    _, again = platform.run(databases=["threads"], dry_run=True)
    assert again.outcomes[0].state is OutcomeState.UP_TO_DATE
