"""Drills: faults done for real to the running product, and bad input typed as a person types it.

Every mistake ends as `FAILED: <what and the fix>` with its exit code, never a traceback; a killed
run leaves no JVM and ends Crashed; a PostgreSQL restart is ridden through; an outage longer than
the retry budget is reported against the database and step where it happened, with the table.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from uuid import UUID

import pytest

from ameide_migrate.adapters import secret_sources
from ameide_migrate.adapters.pg_cluster import Cluster
from ameide_migrate.adapters.postgres.connection import Credentials, connect
from ameide_migrate.adapters.prefect import automations
from ameide_migrate.commands.trigger import follow
from ameide_migrate.config import environments
from ameide_migrate.core.catalog import load_catalog
from ameide_migrate.core.errors import DatabaseUnreachable, ExitCode
from ameide_migrate.core.history import HistoryRow
from ameide_migrate.services import dev_loop

from .fix_platform import REPO, Platform, admin_url_of, ameide, sleeping, wait_for
from .fix_processes import all_processes, children, command_line, descendants, gone

pytestmark = pytest.mark.drills

SLEEPING_MIGRATION = "V5__threads_drill_sleeps.sql"


def _user_environment(state_dir: Path, **overrides: str) -> dict[str, str]:
    """This process's environment without Vault or AMEIDE_* settings, and a state folder."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AMEIDE_", "VAULT_")) or k == "AMEIDE_CACHE_DIR"
    }
    env["AMEIDE_STATE_DIR"] = str(state_dir)
    env["AMEIDE_CACHE_DIR"] = str(REPO / ".cache")
    env.update(overrides)
    return env


def _store(state_dir: Path, text: str, mode: int) -> None:
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / secret_sources.STORE_NAME
    path.write_text(text)
    path.chmod(mode)


_VALID_STORE = json.dumps({"threads": {"THREADS_DATABASE_URL": "postgresql://h/threads"}})

# (what is wrong, arguments, environment, the local store as (text, mode), words of the fix)
BAD_INPUT: list[tuple[str, list[str], dict[str, str], tuple[str, int] | None, str]] = [
    ("admin URL not a URL", ["run", "--admin-url", "notaurl"], {}, None, "--admin-url"),
    ("admin URL without host", ["run", "--admin-url", "postgresql:///postgres"], {}, None, "host"),
    (
        "admin URL port not a number",
        ["run", "--admin-url", "postgresql://u:hunter2@127.0.0.1:abc/postgres"],
        {},
        None,
        "port",
    ),
    (
        "admin URL from the environment",
        ["secrets", "seed-local"],
        {"AMEIDE_LOCAL_ADMIN_URL": "notaurl"},
        None,
        "AMEIDE_LOCAL_ADMIN_URL",
    ),
    ("concurrency 0", ["run", "--concurrency", "0"], {}, None, "--concurrency 0"),
    ("concurrency not a number", ["run", "--concurrency", "x"], {}, None, "--concurrency"),
    ("empty --db", ["run", "--db", ""], {}, None, "--db"),
    (
        "--db twice",
        ["run", "--db", "graph", "--db", "graph"],
        {},
        None,
        "graph named more than once",
    ),
    (
        "baseline version not a version",
        ["baseline", "--env", "local", "--db", "graph", "--version", "abc"],
        {},
        None,
        "'abc' is not a Flyway version",
    ),
    (
        "AMEIDE_FLYWAY_VERSION not a release",
        ["flyway", "install"],
        {"AMEIDE_FLYWAY_VERSION": "notaversion"},
        None,
        "AMEIDE_FLYWAY_VERSION='notaversion': not a Flyway release",
    ),
    ("unknown option", ["run", "--sql-dir", "x"], {}, None, "--sql-dir"),
    ("AMEIDE_MAX_CONCURRENCY=0", ["run"], {"AMEIDE_MAX_CONCURRENCY": "0"}, None, "greater"),
    ("AMEIDE_RETRIES not a number", ["catalog"], {"AMEIDE_RETRIES": "many"}, None, "RETRIES"),
    (
        "AMEIDE_VAULT_AUTH_METHOD unknown",
        ["catalog"],
        {"AMEIDE_VAULT_AUTH_METHOD": "ldap"},
        None,
        "approle",
    ),
    (
        "local store not JSON",
        ["secrets", "verify", "--env", "local"],
        {},
        ("{not json", 0o600),
        "seed-local",
    ),
    (
        "local store not an object of databases",
        ["secrets", "verify", "--env", "local"],
        {},
        ("[1, 2]", 0o600),
        "seed-local",
    ),
    (
        "lint of an environment with no Vault",
        ["lint", "--env", "staging"],
        {},
        None,
        "no Vault is configured",
    ),
    (
        "local store readable by others",
        ["secrets", "verify", "--env", "local"],
        {},
        (_VALID_STORE, 0o644),
        "chmod 600",
    ),
]


@pytest.mark.parametrize(
    ("args", "environment", "store", "fix"),
    [pytest.param(*case[1:], id=case[0]) for case in BAD_INPUT],
)
def test_bad_input_is_one_failed_line_and_a_usage_exit_never_a_traceback(
    tmp_path: Path,
    args: list[str],
    environment: dict[str, str],
    store: tuple[str, int] | None,
    fix: str,
) -> None:
    state_dir = tmp_path / "state"
    if store is not None:
        _store(state_dir, *store)
    done = ameide(*args, env=_user_environment(state_dir, **environment), timeout=120)

    assert done.returncode == ExitCode.USAGE, done.stderr
    assert "FAILED:" in done.stderr
    assert fix in done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    assert "hunter2" not in done.stderr + done.stdout


@pytest.mark.parametrize("command", [["local", "up"], ["dev"]])
def test_a_command_of_the_local_environment_where_none_is_declared_is_one_failed_line(
    tmp_path: Path, command: list[str]
) -> None:
    environments_file = tmp_path / "ameide.toml"
    environments_file.write_text('[environments.staging]\nwork_pool = "migrations"\n')
    state_dir = tmp_path / "state"
    env = _user_environment(state_dir, AMEIDE_ENVIRONMENTS_FILE=str(environments_file))

    done = ameide(*command, env=env, timeout=120)

    assert done.returncode == ExitCode.USAGE, done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    (last,) = done.stderr.strip().splitlines()
    assert last == (
        f"FAILED: {environments_file} declares no local environment (staging): "
        f"`ameide-migrate {' '.join(command)}` works on the embedded local one only; add "
        "[environments.local] with local = true"
    )
    assert not state_dir.exists()
    # The fix it prints is a file the tool reads: with it, a local environment is declared.
    environments_file.write_text(
        environments_file.read_text() + "[environments.local]\nlocal = true\n"
    )
    assert [e.name for e in environments.load(environments_file).values() if e.local] == ["local"]


@pytest.mark.parametrize("command", [["run", "--env", "local"], ["local", "up"], ["dev"]])
@pytest.mark.parametrize("how", ["under a file", "immutable"])
def test_a_state_folder_that_cannot_be_written_is_one_failed_line_naming_it(
    tmp_path: Path, command: list[str], how: str
) -> None:
    if how == "under a file":
        (tmp_path / "afile").write_text("")
        state_dir = tmp_path / "afile" / "state"
    else:
        state_dir = tmp_path / "state"
        state_dir.mkdir()
        subprocess.run(["chattr", "+i", str(state_dir)], check=True)
    # As a person at a fresh terminal: no Prefect server named, nothing of this suite's.
    env = {k: v for k, v in _user_environment(state_dir).items() if not k.startswith("PREFECT_")}
    env["HOME"] = str(tmp_path / "home")
    try:
        done = ameide(*command, env=env, timeout=120)
    finally:
        if how == "immutable":
            subprocess.run(["chattr", "-i", str(state_dir)], check=True)

    assert done.returncode == ExitCode.USAGE, done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    (last,) = done.stderr.strip().splitlines()
    assert last.startswith(f"FAILED: cannot write the state folder {state_dir}: ")
    assert "AMEIDE_STATE_DIR" in last
    if how == "under a file":
        assert f"{tmp_path / 'afile'} is a file" in last
    else:
        assert list(state_dir.iterdir()) == []


@pytest.mark.parametrize("store", [("{not json", 0o600), (_VALID_STORE, 0o644)])
def test_run_refuses_a_bad_local_store_before_migrating(
    tmp_path: Path, pg_admin: Credentials, db_prefix: str, store: tuple[str, int]
) -> None:
    state_dir = tmp_path / "state"
    _store(state_dir, *store)
    env = _user_environment(
        state_dir,
        AMEIDE_LOCAL_ADMIN_URL=admin_url_of(pg_admin).get_secret_value(),
        AMEIDE_LOCAL_DATABASE_PREFIX=db_prefix,
    )
    done = ameide("run", "--env", "local", "--db", "threads", env=env)

    assert done.returncode == ExitCode.USAGE, done.stderr
    assert "FAILED:" in done.stderr
    assert str(state_dir / secret_sources.STORE_NAME) in done.stderr
    assert "Traceback" not in done.stderr + done.stdout


def test_seeding_never_puts_back_a_removed_key_and_the_gate_reports_it(
    platform: Platform,
) -> None:
    store = platform.state_dir / secret_sources.STORE_NAME
    stored = json.loads(store.read_text())
    del stored["servers"][platform.admin.server]["threads"]["THREADS_DATABASE_PASSWORD"]
    store.write_text(json.dumps(stored))

    seeded = ameide("secrets", "seed-local")
    verified = ameide("secrets", "verify", "--env", "local", "--db", "threads")

    assert seeded.returncode == 0, seeded.stderr
    assert "THREADS_DATABASE_PASSWORD" not in platform.entries()["threads"]
    assert verified.returncode == ExitCode.FAILED
    assert "THREADS_DATABASE_PASSWORD" in verified.stderr
    assert "missing or empty" in verified.stderr
    assert "Traceback" not in verified.stderr


# --- Faults mid-run ----------------------------------------------------------------------------


def _sleeping_migration(platform: Platform, seconds: int) -> None:
    (platform.sql_dir / "threads" / SLEEPING_MIGRATION).write_text(
        f"SELECT pg_sleep({seconds});\nCREATE TABLE threads_drill_done (id int);\n"
    )


def _start_run(*args: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "ameide_migrate.cli.main", "run", "--env", "local", *args],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def _latest_migrate_run() -> tuple[UUID, str]:
    """The migrate run started last; the session's server also holds other tests' runs, and
    runs its deployments' schedules create (Scheduled, never started)."""
    from prefect import get_client
    from prefect.client.schemas.filters import (
        FlowFilter,
        FlowFilterName,
        FlowRunFilter,
        FlowRunFilterStartTime,
    )
    from prefect.client.schemas.sorting import FlowRunSort

    with get_client(sync_client=True) as client:
        (run,) = client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=["migrate"])),
            flow_run_filter=FlowRunFilter(start_time=FlowRunFilterStartTime(is_null_=False)),
            sort=FlowRunSort.START_TIME_DESC,
            limit=1,
        )
        return run.id, run.state.type.value if run.state else ""


def _states_of(flow_run_id: UUID) -> list[str]:
    """The names of every state the run has been in, in order."""
    from prefect import get_client

    with get_client(sync_client=True) as client:
        states = client.read_flow_run_states(flow_run_id)
    return [str(state.name) for state in sorted(states, key=lambda state: state.timestamp)]


def _applied_once(platform: Platform, database: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for row in platform.history(database) or []:
        if row.version and row.success:
            counts[row.version] = counts.get(row.version, 0) + 1
    return counts


@pytest.mark.slow
def test_a_run_killed_while_another_starts_leaves_no_jvm_ends_crashed_and_a_rerun_applies_once(
    platform: Platform, tmp_path: Path
) -> None:
    """The rerun starts within the crash window and registers the heartbeat guard again: the
    killed run's countdown survives that, and following it (as `trigger --wait` does) exits 1."""
    _sleeping_migration(platform, 20)
    cli = _start_run("--db", "threads", env=dict(os.environ), log=tmp_path / "run.log")
    wait_for(
        "the sleeping migration to start", lambda: sleeping(platform.admin, platform.prefix), 240
    )
    jvms = children(cli.pid)
    flow_run_id, state = _latest_migrate_run()
    assert jvms, "the run's Flyway JVM"
    assert state == "RUNNING"

    cli.send_signal(signal.SIGKILL)
    cli.wait()

    wait_for("the orphaned JVM to end", lambda: all(gone(pid) for pid in jvms), 10)
    assert not platform.table_exists("threads", "threads_drill_done")

    rerun = ameide("run", "--env", "local", "--db", "threads")

    assert rerun.returncode == 0, rerun.stderr
    assert _applied_once(platform, "threads") == {v: 1 for v in ("1", "2", "3", "4", "5")}
    assert platform.table_exists("threads", "threads_drill_done")
    followed = follow(flow_run_id, automations.CRASHED_WITHIN_SECONDS + 15, on_line=lambda _: None)
    assert followed.state == "Crashed", followed.summary
    assert followed.exit_code == ExitCode.FAILED


@pytest.mark.slow
@pytest.mark.parametrize(
    "form",
    [
        pytest.param(["uv", "run", "--frozen"], id="uv run"),
        pytest.param(["timeout", "400", "uv", "run", "--frozen"], id="timeout uv run"),
    ],
)
def test_sigterm_to_the_command_as_the_readme_runs_it_stops_the_run_within_seconds(
    platform: Platform, tmp_path: Path, form: list[str]
) -> None:
    """What a CI timeout or a process manager sends, to the outermost process of the README's
    form: the run ends, its JVM with it, PostgreSQL rolls the migration back, the Prefect run
    is ended, and the exit code says it was a signal."""
    _sleeping_migration(platform, 120)
    env = dict(os.environ)
    env["PATH"] = f"{Path.home() / '.local' / 'bin'}{os.pathsep}{env['PATH']}"
    with (tmp_path / "run.log").open("wb") as out:
        cli = subprocess.Popen(
            [*form, "ameide-migrate", "run", "--env", "local", "--db", "threads"],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    wait_for(
        "the sleeping migration to start", lambda: sleeping(platform.admin, platform.prefix), 240
    )
    processes = descendants(cli.pid)
    assert any("FlywayEngine" in command_line(pid) for pid in processes), processes

    cli.send_signal(signal.SIGTERM)

    assert cli.wait(timeout=10) == 128 + signal.SIGTERM
    wait_for("the run's processes to end", lambda: all(gone(pid) for pid in processes), 10)
    wait_for(
        "the migration's session to end", lambda: not sleeping(platform.admin, platform.prefix), 10
    )
    assert not platform.table_exists("threads", "threads_drill_done")
    run_id, state = _latest_migrate_run()
    said = (tmp_path / "run.log").read_text()
    assert "Traceback" not in said
    # The last line's claim about the run is the state the server holds: cancelled by the
    # handler, or already crashed by Prefect's engine (then no run was left open to cancel).
    from prefect import get_client

    with get_client(sync_client=True) as client:
        name = client.read_flow_run(run_id).name
    runs = {
        "CANCELLED": f"migrate run {name} cancelled",
        "CRASHED": "no run was left open",
    }
    assert state in runs, state
    assert said.strip().splitlines()[-1] == (
        f"FAILED: stopped by SIGTERM: {runs[state]}; a Flyway JVM it started ends with this process"
    )


@pytest.mark.slow
def test_sigterm_to_trigger_as_the_ci_workflow_runs_it_cancels_the_deployments_run(
    process_worker: Platform, tmp_path: Path
) -> None:
    """The CI workflow's form, `ameide-migrate trigger --wait`, stopped as a job's timeout or
    cancel stops it: the run on the worker is cancelled through Prefect and stops, its JVM and
    its migration's session with it, before trigger's last line says so."""
    platform = process_worker
    _sleeping_migration(platform, 120)
    with (tmp_path / "trigger.log").open("wb") as out:
        trigger = subprocess.Popen(
            ["ameide-migrate", "trigger", "--env", "local", "--db", "threads", "--wait"],
            cwd=REPO,
            env={
                **os.environ,
                "PATH": f"{Path(sys.executable).parent}{os.pathsep}" + os.environ["PATH"],
            },
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    wait_for(
        "the sleeping migration to start", lambda: sleeping(platform.admin, platform.prefix), 240
    )
    run_id, state = _latest_migrate_run()
    assert state == "RUNNING"
    engines = [p for p in all_processes() if "FlywayEngine" in command_line(p)]
    assert engines, "the worker's run has a Flyway JVM"

    trigger.send_signal(signal.SIGTERM)

    assert trigger.wait(timeout=30) == 128 + signal.SIGTERM
    last = (tmp_path / "trigger.log").read_text().strip().splitlines()[-1]
    said = f"FAILED: stopped by SIGTERM: flow run {run_id} "
    assert last in (said + "Cancelled", said + "Cancelling: its worker has not stopped it yet"), (
        last
    )
    # What trigger says of the run is a state the server gave it (the worker may have finished
    # cancelling since, so its history, not its state now).
    named = last.removeprefix(said).split(":")[0]
    assert named in _states_of(run_id), (named, _states_of(run_id))
    wait_for("the run's JVM to end", lambda: all(gone(pid) for pid in engines), 60)
    wait_for(
        "the migration's session to end", lambda: not sleeping(platform.admin, platform.prefix), 10
    )
    wait_for("the run Cancelled", lambda: _latest_migrate_run() == (run_id, "CANCELLED"), 30)
    assert not platform.table_exists("threads", "threads_drill_done")


@pytest.mark.slow
def test_a_postgresql_restart_mid_migration_is_ridden_through_with_the_default_budget(
    platform: Platform, spare_cluster: Cluster, tmp_path: Path
) -> None:
    platform.move_to("threads", spare_cluster)
    _sleeping_migration(platform, 5)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AMEIDE_RETR")}
    log = tmp_path / "run.log"
    cli = _start_run("--db", "threads", env=env, log=log)
    wait_for(
        "the sleeping migration to start",
        lambda: sleeping(spare_cluster.admin, platform.prefix),
        240,
    )

    spare_cluster.stop("fast")
    time.sleep(15)
    spare_cluster.start()

    assert cli.wait(timeout=300) == 0, log.read_text()
    assert _applied_once(platform, "threads") == {v: 1 for v in ("1", "2", "3", "4", "5")}
    # The figures span the run, the retried migrate included.
    assert re.search(r"│ threads\s+│ empty\s+│ 5\s+│\s+5 │", log.read_text()), log.read_text()


@pytest.mark.slow
def test_an_outage_longer_than_the_budget_is_named_against_its_database_and_step_with_the_table(
    platform: Platform, spare_cluster: Cluster, tmp_path: Path
) -> None:
    platform.move_to("threads", spare_cluster)
    platform.move_to("agents", spare_cluster)
    _sleeping_migration(platform, 5)
    env = {**os.environ, "AMEIDE_RETRIES": "3", "AMEIDE_RETRY_DELAY_SECONDS": "1"}
    log = tmp_path / "run.log"
    cli = _start_run("--db", "agents", "--db", "threads", env=env, log=log)
    wait_for(
        "the sleeping migration to start",
        lambda: sleeping(spare_cluster.admin, platform.prefix),
        240,
    )

    spare_cluster.stop("fast")
    try:
        code = cli.wait(timeout=300)
    finally:
        spare_cluster.start()
    output = log.read_text()

    assert code == ExitCode.FAILED, output
    assert "Migrations: local" in output
    assert "Traceback" not in output
    table = output[output.index("Migrations: local") :]
    (threads_row,) = [line for line in table.splitlines() if "│ threads" in line]
    assert "failed" in threads_row
    failed = output[output.index("FAILED:") :].splitlines()
    assert any(line.startswith("- threads:") for line in failed), failed
    assert "kept trying for" in output


def test_a_server_restart_while_a_connection_is_in_use_is_a_transient_fault(
    pg_admin: Credentials,
) -> None:
    """PostgreSQL ends its sessions when it restarts (57P01, AdminShutdown): a step that was
    using its connection then (recording the schema's fingerprint after a migrate) is retried
    like one that could not connect, not failed as unexpected."""
    with (
        pytest.raises(DatabaseUnreachable, match="went away while in use"),
        connect(pg_admin) as conn,
    ):
        conn.execute("SELECT pg_terminate_backend(pg_backend_pid())")


def _command_of(pid: int) -> str:
    return (Path("/proc") / str(pid) / "comm").read_text().strip()


def _environ_of(pid: int) -> dict[str, str]:
    raw = (Path("/proc") / str(pid) / "environ").read_bytes()
    return dict(entry.decode().split("=", 1) for entry in raw.split(b"\0") if b"=" in entry)


@pytest.mark.slow
def test_the_flyway_jvm_sees_its_own_credentials_and_not_the_rest_of_the_callers_environment(
    platform: Platform, tmp_path: Path
) -> None:
    _sleeping_migration(platform, 10)
    agents_password = "decoy-agents-password-in-the-callers-environment"
    env = {
        **os.environ,
        "VAULT_TOKEN": "decoy-vault-token",
        "AGENTS_DATABASE_PASSWORD": agents_password,
        "SSL_CERT_DIR": "/etc/ssl/certs",
    }
    log = tmp_path / "run.log"
    cli = _start_run("--db", "threads", env=env, log=log)
    try:
        wait_for(
            "the sleeping migration to start",
            lambda: sleeping(platform.admin, platform.prefix),
            240,
        )
        (jvm,) = [pid for pid in children(cli.pid) if _command_of(pid) == "java"]
        seen = _environ_of(jvm)
    finally:
        assert cli.wait(timeout=300) == 0, log.read_text()

    admin_password = platform.admin.password.get_secret_value()
    assert seen["AMEIDE_TARGET_THREADS_PASSWORD"] == (
        platform.owners["threads"].password.get_secret_value()
    )
    assert seen["SSL_CERT_DIR"] == "/etc/ssl/certs"
    assert seen["PATH"] == os.environ["PATH"]
    leaked = {
        name
        for name, value in seen.items()
        if name in ("VAULT_TOKEN", "PREFECT_API_URL", "AMEIDE_LOCAL_ADMIN_URL")
        or admin_password in value
        or agents_password in value
        or name.startswith("AMEIDE_TARGET_AGENTS")
    }
    assert not leaked


def test_a_dropped_history_gets_the_fix_drift_gives_a_baseline_not_a_fix_forward(
    platform: Platform,
) -> None:
    platform.run(["threads"])
    with connect(platform.owners["threads"]) as conn:
        conn.execute("DROP TABLE flyway_schema_history")

    run = ameide("run", "--env", "local", "--db", "threads")
    drift = ameide("drift", "--env", "local", "--db", "threads")

    run_output, drift_output = run.stdout + run.stderr, drift.stdout + drift.stderr
    baseline = "`ameide-migrate baseline --env local --db threads --version VERSION`"
    assert run.returncode == ExitCode.FAILED, run_output
    assert baseline in " ".join(run_output.split()), run_output
    assert "fix the migration forward" not in run_output.lower()
    assert "Traceback" not in run_output
    assert drift.returncode == ExitCode.DRIFT, drift_output
    assert baseline in " ".join(drift_output.split()), drift_output
    # The table says what the database holds: objects and no history, never "empty".
    (row,) = [line for line in run.stdout.splitlines() if line.startswith("│ threads")]
    assert re.search(r"no history, \d+ objects", " ".join(run.stdout.split())), run.stdout
    assert "empty" not in row, row


CONNECTION_IN_FLYWAY_TOML = [
    ('[flyway]\nurl = "jdbc:postgresql://elsewhere:5432/threads"\n', "url", "[flyway]"),
    ('[environments.local]\nuser = "someone_else"\n', "user", "[environments.local]"),
    (
        '[environments.local.flyway]\npassword = "hunter2"\n',
        "password",
        "[environments.local.flyway]",
    ),
]


@pytest.mark.parametrize(
    ("text", "key", "where"),
    CONNECTION_IN_FLYWAY_TOML,
    ids=[c[1] for c in CONNECTION_IN_FLYWAY_TOML],
)
def test_a_connection_set_in_flyway_toml_is_refused_with_the_reason(
    tmp_path: Path, text: str, key: str, where: str
) -> None:
    sql_dir = tmp_path / "sql"
    shutil.copytree(REPO / "db" / "flyway" / "sql" / "threads", sql_dir / "threads")
    (sql_dir / "threads" / "flyway.toml").write_text(text)
    env = _user_environment(tmp_path / "state", AMEIDE_SQL_DIR=str(sql_dir))

    done = ameide("catalog", env=env, timeout=120)

    output = done.stdout + done.stderr
    assert done.returncode == ExitCode.USAGE, output
    assert "FAILED:" in done.stderr
    assert f"{key} is set in {where}" in " ".join(done.stderr.split())
    assert "secret gate" in done.stderr
    assert "hunter2" not in output
    assert "Traceback" not in output


def test_an_unknown_database_names_the_sql_tree_in_use(tmp_path: Path) -> None:
    sql_dir = tmp_path / "sql"
    shutil.copytree(REPO / "db" / "flyway" / "sql" / "threads", sql_dir / "threads")
    env = _user_environment(tmp_path / "state", AMEIDE_SQL_DIR=str(sql_dir))

    done = ameide("run", "--env", "local", "--db", "nosuch", env=env, timeout=120)

    assert done.returncode == ExitCode.USAGE, done.stderr
    assert "unknown database nosuch: choose from threads" in done.stderr
    assert f"the folders under {sql_dir}" in " ".join(done.stderr.split())


def test_the_dev_loop_offers_git_restore_only_for_a_file_git_tracks(tmp_path: Path) -> None:
    sql_dir = tmp_path / "sql"
    shutil.copytree(REPO / "db" / "flyway" / "sql", sql_dir)
    graph = load_catalog(sql_dir).databases["graph"]
    first = graph.versioned[0]
    edited = [HistoryRow(1, str(first.version), first.description, "SQL", first.script, 1, True)]

    (migration,) = dev_loop.edited_migrations(graph, edited)
    untracked = migration.message(cwd=tmp_path)
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    subprocess.run(["git", "-C", str(tmp_path), "add", "sql"], check=True)
    tracked = migration.message(cwd=tmp_path)

    assert "git restore" not in untracked
    assert f"copy it back over sql/graph/{first.script}" in untracked
    assert f"git restore sql/graph/{first.script}" in tracked


@pytest.mark.parametrize("folder", ["drop table x;--", "Threads", "9lives", "a" * 58])
def test_a_database_folder_whose_name_cannot_be_a_database_is_refused_by_name(
    tmp_path: Path, folder: str
) -> None:
    sql_dir = tmp_path / "sql"
    shutil.copytree(REPO / "db" / "flyway" / "sql" / "threads", sql_dir / folder)
    env = _user_environment(tmp_path / "state", AMEIDE_SQL_DIR=str(sql_dir))

    done = ameide("catalog", env=env, timeout=120)

    assert done.returncode == ExitCode.USAGE, done.stdout + done.stderr
    assert "FAILED:" in done.stderr
    assert f"database folder {sql_dir / folder}" in " ".join(done.stderr.split())
    assert "Traceback" not in done.stderr
