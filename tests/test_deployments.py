"""Deployments on a real Prefect server, run by a real process worker, triggered like CI does."""

from __future__ import annotations

import time
from uuid import UUID

from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import FlowRun

from ameide_migrate.adapters.prefect.local_server import Server
from ameide_migrate.core.catalog import PLATFORM_DATABASES

from .fix_platform import Platform, ameide


def test_deploy_registers_both_deployments_and_a_second_run_changes_nothing(
    deployed: Platform, prefect_server: Server
) -> None:
    with get_client(sync_client=True) as client:
        first = {
            name: client.read_deployment_by_name(name) for name in ("migrate/local", "drift/local")
        }
    again = ameide("deploy", "--env", "local")
    assert again.returncode == 0, again.stderr
    with get_client(sync_client=True) as client:
        second = {name: client.read_deployment_by_name(name) for name in first}

    assert {n: d.id for n, d in first.items()} == {n: d.id for n, d in second.items()}
    drift = second["drift/local"]
    assert [s.schedule.cron for s in drift.schedules] == ["0 3 * * *"]  # type: ignore[union-attr]
    migrate = second["migrate/local"]
    assert migrate.global_concurrency_limit is not None
    assert migrate.global_concurrency_limit.limit == 1
    assert migrate.concurrency_options is not None
    assert migrate.concurrency_options.collision_strategy.value == "ENQUEUE"
    assert migrate.work_pool_name == "ameide-local"


def test_the_run_forms_fix_the_environment_and_offer_the_catalogs_databases(
    deployed: Platform,
) -> None:
    with get_client(sync_client=True) as client:
        forms = {
            name: client.read_deployment_by_name(name) for name in ("migrate/local", "drift/local")
        }

    titles = {
        "migrate/local": {
            "databases": "Databases",
            "concurrency": "Concurrency",
            "dry_run": "Dry run",
        },
        "drift/local": {"databases": "Databases", "engine": "Engine", "concurrency": "Concurrency"},
    }
    for name, deployment in forms.items():
        form = (deployment.parameter_openapi_schema or {})["properties"]
        # The environment is the deployment's own, out of the form; so is the image build.
        assert deployment.parameters == {"environment": "local"}
        assert {f: form[f]["title"] for f in form} == titles[name]
        assert list(titles[name]) == sorted(form, key=lambda f: form[f]["position"])
        assert all(form[f]["description"].endswith(".") for f in form), form
        databases = form["databases"]
        assert databases["type"] == "array"
        assert databases["items"] == {"type": "string", "enum": list(PLATFORM_DATABASES)}
        assert databases["default"] == []


def test_trigger_waits_for_the_run_and_exits_0_when_it_completes(process_worker: Platform) -> None:
    done = ameide("trigger", "--env", "local", "--db", "threads", "--wait", "--timeout", "240")

    assert done.returncode == 0, done.stdout + done.stderr
    assert "/runs/flow-run/" in done.stdout
    assert "state: Completed" in done.stdout
    assert "threads: empty -> 4, 4 applied" in done.stdout
    assert process_worker.versions("threads")[-1] == "4"


def test_trigger_exit_codes_for_failure_drift_and_timeout(process_worker: Platform) -> None:
    (process_worker.sql_dir / "graph" / "V9__graph_broken.sql").write_text("SELECT * FROM nope;\n")
    failed = ameide(
        "trigger",
        "--env",
        "local",
        "--db",
        "graph",
        "--db",
        "threads",
        "--wait",
        "--timeout",
        "240",
    )
    assert failed.returncode == 1, failed.stdout + failed.stderr
    # Readable in a CI log: a line per task state with the task's name, Flyway's error once,
    # no traceback, a row per database, the UI link on a line of its own, then the verdict.
    lines = failed.stdout.splitlines()
    assert "  task migrate graph: Failed" in "\n".join(lines)
    assert "  task migrate threads: Completed" in lines
    assert failed.stdout.count('ERROR: relation "nope" does not exist') == 1, failed.stdout
    assert "Traceback" not in failed.stdout + failed.stderr
    rows = {line.split()[1]: line.split() for line in lines if line.startswith("│ ")}
    assert "failed" in rows["graph"]
    assert "migrated" in rows["threads"]
    assert lines[-2] == f"Flow run: {failed.stdout.split()[3]}"
    assert lines[-1] == "Failed: environment local: 1 migrated, 1 failed"

    drift = ameide(
        "trigger",
        "--env",
        "local",
        "--flow",
        "drift",
        "--db",
        "graph",
        "--wait",
        "--timeout",
        "240",
    )
    assert drift.returncode == 3, drift.stdout + drift.stderr
    assert "state: Drifted" in drift.stdout
    assert "Traceback" not in drift.stdout + drift.stderr
    assert drift.stdout.splitlines()[-1] == "Drifted: environment local: 1 behind"

    slow = ameide("trigger", "--env", "local", "--db", "threads", "--wait", "--timeout", "0.1")
    assert slow.returncode == 4, slow.stdout + slow.stderr
    assert "the run keeps going" in slow.stdout
    # It does: it completes after trigger gave up on it.
    (run,) = wait_until_final([flow_run_id(slow.stdout)])
    assert run.state is not None
    assert run.state.is_completed()


def flow_run_id(trigger_output: str) -> UUID:
    """The id `trigger` prints first: `flow run <id>: <ui address>`."""
    return UUID(trigger_output.split()[2].rstrip(":"))


def wait_until_final(ids: list[UUID], timeout: float = 240) -> list[FlowRun]:
    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while True:
            runs = [client.read_flow_run(i) for i in ids]
            if all(r.state is not None and r.state.is_final() for r in runs):
                return runs
            assert time.monotonic() < deadline, [r.state for r in runs]
            time.sleep(1)


def test_two_triggers_of_one_environment_run_one_after_the_other(process_worker: Platform) -> None:
    first = ameide("trigger", "--env", "local", "--db", "threads")
    second = ameide("trigger", "--env", "local", "--db", "graph")
    assert first.returncode == second.returncode == 0, first.stderr + second.stderr

    runs = wait_until_final([flow_run_id(first.stdout), flow_run_id(second.stdout)])

    assert all(r.state is not None and r.state.is_completed() for r in runs)
    spans = sorted((r.start_time, r.end_time) for r in runs if r.start_time and r.end_time)
    assert len(spans) == 2
    (_, first_end), (second_start, _) = spans
    assert first_end <= second_start, "the two migrate runs overlapped"


def test_a_local_run_registers_the_local_deployments_again_only_when_they_changed(
    platform: Platform, prefect_server: Server
) -> None:
    """Every local run and dev-loop save asks for the local deployments: registered once, then
    again only when their definition changed (here the environments file's drift schedule)."""
    from ameide_migrate.adapters.prefect import api_choice, local_server
    from ameide_migrate.commands.deploy import serve_local_deployments
    from ameide_migrate.config import environments
    from ameide_migrate.config.settings import get_settings

    settings = get_settings()
    api = api_choice.Api(prefect_server.api_url, prefect_server.ui_url, local=True)

    def serve() -> dict[str, object]:
        catalog = environments.catalog("local", settings)
        serve_local_deployments(settings, api, catalog)
        with get_client(sync_client=True) as client:
            return {
                n: client.read_deployment_by_name(n).updated
                for n in ("migrate/local", "drift/local")
            }

    try:
        first = serve()
        assert serve() == first
        toml = platform.sql_dir / "ameide.toml"
        toml.write_text(
            toml.read_text().replace('drift_cron = "0 3 * * *"', 'drift_cron = "0 4 * * *"')
        )
        changed = serve()
        assert changed["drift/local"] != first["drift/local"]
        with get_client(sync_client=True) as client:
            drift = client.read_deployment_by_name("drift/local")
        assert [s.schedule.cron for s in drift.schedules] == ["0 4 * * *"]  # type: ignore[union-attr]
    finally:
        local_server.stop_worker(platform.state_dir / "prefect")


def test_a_deployment_refuses_a_run_for_another_environment(process_worker: Platform) -> None:
    """The server lays an API caller's parameters over the deployment's: migrate/local asked
    for prod must not migrate prod with local's worker."""
    from ameide_migrate.adapters.prefect import following

    run_id = following.start_deployment("migrate/local", {"environment": "prod"})
    outcome = following.follow_flow_run(run_id, 300, on_log=print, on_state=print)

    assert outcome.state == "Failed"
    assert "deployment migrate/local asked for environment 'prod'" in outcome.message
    assert "trigger migrate/prod for prod" in outcome.message
    assert all(process_worker.history(db) is None for db in PLATFORM_DATABASES)
