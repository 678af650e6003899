"""`ameide-migrate dev`, the dev loop: which databases a change touches, how changes are grouped,
the edited applied migration it names; then the loop as a developer runs it, a process on a copy
of the SQL tree from a clean environment, stopped with Ctrl-C.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
import watchfiles

from ameide_migrate.core.catalog import load_catalog
from ameide_migrate.core.errors import CatalogError, ExitCode
from ameide_migrate.core.history import HistoryRow
from ameide_migrate.services import dev_loop, local

from .fix_user import REPO, clean_environment

SAMPLE = REPO / "db" / "flyway" / "sql"
GRAPH_V2 = "V2__graph_edge_indexes_and_constraints.sql"


# --- Which databases a change touches (no server) ----------------------------------------------


def _changes(root: Path, *names: str, kind: watchfiles.Change = watchfiles.Change.modified) -> Any:
    return {(kind, str(root / name)) for name in names}


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "sql"
    shutil.copytree(SAMPLE, root)
    return root


def test_a_migration_saved_in_a_database_folder_targets_that_database_alone(tree: Path) -> None:
    plan = dev_loop.plan_of(_changes(tree, "threads/V5__more.sql"), tree)

    assert plan.databases == ("threads",)
    assert not plan.everything
    assert plan.cause(tree) == "changed: threads/V5__more.sql"


def test_changes_in_several_folders_target_each_of_those_databases_once(tree: Path) -> None:
    changes = _changes(tree, "graph/V4__a.sql", "threads/V5__b.sql", "graph/flyway.toml")

    assert dev_loop.plan_of(changes, tree).databases == ("graph", "threads")


@pytest.mark.parametrize("name", ["flyway.toml", "flyway.conf", "ameide.toml"])
def test_a_configuration_file_at_the_root_targets_every_database(tree: Path, name: str) -> None:
    plan = dev_loop.plan_of(_changes(tree, name), tree)

    assert plan.everything
    assert plan


def test_a_configuration_file_outside_the_tree_targets_every_database(
    tree: Path, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "shared" / "flyway.toml"

    plan = dev_loop.plan_of({(watchfiles.Change.modified, str(elsewhere))}, tree, [elsewhere])

    assert plan.everything


@pytest.mark.parametrize("name", ["README.md", "threads/.V5__more.sql.swp", "notes/.hidden/x"])
def test_files_that_are_no_migration_or_configuration_start_no_run(tree: Path, name: str) -> None:
    assert not dev_loop.plan_of(_changes(tree, name), tree)


def test_a_deleted_migration_targets_its_database_but_is_not_linted(tree: Path) -> None:
    plan = dev_loop.plan_of(
        _changes(tree, "agents/V9__gone.sql", kind=watchfiles.Change.deleted), tree
    )

    assert plan.databases == ("agents",)
    assert plan.saved == ()


# --- The loop, with its actions doubled (no server) --------------------------------------------


@dataclass
class _Report:
    failed: list[Any] = field(default_factory=list)
    outcomes: list[Any] = field(default_factory=list)
    smoke_failures: list[Any] = field(default_factory=list)


@dataclass
class _Result:
    report: _Report
    failure: Exception | None = None
    flow_run_url: str = "http://ui/runs/flow-run/1"


@dataclass
class _Recorder:
    """The loop's actions, recorded; `fail` names databases whose run fails."""

    root: Path
    fail: set[str] = field(default_factory=set)
    migrated: list[list[str] | None] = field(default_factory=list)
    asked_edited: list[list[str]] = field(default_factory=list)
    builds: int = 0
    linted: list[list[Path]] = field(default_factory=list)
    events: list[dev_loop.Event] = field(default_factory=list)
    ran: threading.Event = field(default_factory=threading.Event)

    def migrate(self, databases: list[str] | None) -> Any:
        self.migrated.append(databases)
        failed = [_Outcome(d) for d in (databases or []) if d in self.fail]
        self.ran.set()
        return _Result(_Report(failed=failed), RuntimeError("failed") if failed else None)

    def edited(self, databases: list[str]) -> list[dev_loop.EditedMigration]:
        self.asked_edited.append(databases)
        return []

    def build(self) -> Any:
        self.builds += 1
        return "image"

    def lint(self, files: list[Path]) -> list[tuple[str | None, Any]]:
        self.linted.append(files)
        return []

    def loop(self, *, image: bool = False, lint: bool = False) -> dev_loop.DevLoop:
        actions = dev_loop.Actions(
            catalog=lambda: load_catalog(self.root),
            migrate=self.migrate,
            edited=self.edited,
            build_image=self.build if image else None,
            lint=self.lint if lint else None,
        )
        return dev_loop.DevLoop(self.root, actions, self.events.append)


@dataclass
class _Outcome:
    database: str


def test_saves_close_together_are_one_run_of_the_databases_they_touched(tree: Path) -> None:
    recorder = _Recorder(tree)
    loop = recorder.loop()
    stop = threading.Event()
    watcher = threading.Thread(target=loop.watch, args=(stop,))
    watcher.start()
    try:
        time.sleep(0.5)  # the watcher is set up
        (tree / "graph" / "V4__graph_more.sql").write_text("SELECT 1;\n")
        time.sleep(0.05)
        (tree / "threads" / "V5__threads_more.sql").write_text("SELECT 1;\n")
        (tree / "README.md").write_text("not a migration\n")
        assert recorder.ran.wait(10), "no run within 10 s of the saves"
        time.sleep(dev_loop.DEBOUNCE_MS / 1000 + 1)  # any second group would have come by now
    finally:
        stop.set()
        watcher.join(10)

    assert recorder.migrated == [["graph", "threads"]]


def test_a_failed_run_is_searched_for_edited_migrations_and_keeps_the_image(tree: Path) -> None:
    recorder = _Recorder(tree, fail={"graph"})
    loop = recorder.loop(image=True)

    loop.changed(_changes(tree, "graph/V4__a.sql", "threads/V5__b.sql"))
    loop.changed(_changes(tree, "threads/V5__b.sql"))

    assert recorder.migrated == [["graph", "threads"], ["threads"]]
    assert recorder.asked_edited == [["graph"]]
    assert recorder.builds == 1  # after the run that succeeded only
    assert any(isinstance(e, dev_loop.ImageSkipped) for e in recorder.events)


def test_a_saved_migration_is_linted_before_its_run_and_a_saved_config_file_is_not(
    tree: Path,
) -> None:
    recorder = _Recorder(tree)
    loop = recorder.loop(lint=True)
    migration = tree / "threads" / "V5__threads_more.sql"
    migration.write_text("ALTER TABLE threads ADD COLUMN note text;\n")
    (tree / "threads" / "flyway.toml").write_text("[flyway]\n")

    loop.changed(_changes(tree, "threads/V5__threads_more.sql", "threads/flyway.toml"))

    assert recorder.linted == [[migration]]
    linted, started, *_ = recorder.events
    assert linted == dev_loop.Linted((migration,), ())
    assert isinstance(started, dev_loop.Started)
    assert started.databases == ("threads",)


def test_a_tree_that_cannot_be_read_is_said_and_the_loop_goes_on(tree: Path) -> None:
    recorder = _Recorder(tree)
    loop = recorder.loop()
    (tree / "threads" / "not a migration.sql").write_text("SELECT 1;\n")

    loop.changed(_changes(tree, "threads/not a migration.sql"))

    assert recorder.migrated == []
    (refused,) = recorder.events
    assert isinstance(refused, dev_loop.Refused)
    assert isinstance(refused.error, CatalogError)


def test_an_edited_applied_migration_is_named_with_its_version_date_and_both_fixes(
    tree: Path,
) -> None:
    catalog = load_catalog(tree)
    graph = catalog.databases["graph"]
    v2 = next(m for m in graph.versioned if m.script == GRAPH_V2)
    applied = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)
    rows = [
        HistoryRow(1, "1", "graph initial schema", "SQL", "V1__graph_initial_schema.sql",
                   graph.versioned[0].checksum, True, applied),
        HistoryRow(2, "2", v2.description, "SQL", v2.script, 12345, True, applied),
    ]  # fmt: skip

    subprocess.run(["git", "init", "-q", str(tree.parent)], check=True)
    subprocess.run(["git", "-C", str(tree.parent), "add", tree.name], check=True)
    (edited,) = dev_loop.edited_migrations(graph, rows)
    message = edited.message(cwd=tree.parent)

    assert edited.version == "2"
    assert edited.applied_on == applied
    assert message.startswith(f"graph: {GRAPH_V2} (version 2) was edited after it was applied on ")
    assert applied.astimezone().strftime("%Y-%m-%d %H:%M:%S") in message
    assert "ameide-migrate dev --reset graph" in message
    assert f"git restore sql/graph/{GRAPH_V2}" in message


def test_an_applied_migration_left_as_it_was_is_not_named(tree: Path) -> None:
    graph = load_catalog(tree).databases["graph"]
    rows = [
        HistoryRow(rank, str(m.version), m.description, "SQL", m.script, m.checksum, True)
        for rank, m in enumerate(graph.versioned, start=1)
    ]

    assert dev_loop.edited_migrations(graph, rows) == []


# --- The loop as a developer runs it -----------------------------------------------------------


@dataclass
class DevMachine:
    """A copy of the SQL tree, a fresh HOME and state folder, and a clean environment."""

    sql: Path
    home: Path
    env: dict[str, str]

    @property
    def state_dir(self) -> Path:
        return self.home / "state"

    def history(self, database: str) -> list[tuple[Any, ...]]:
        """Its Flyway history, read with the owner's credentials from the local store."""
        store = json.loads((self.state_dir / "local-secrets.json").read_text())
        key = database.upper()
        (secret,) = [entries[database] for entries in store["servers"].values()]
        with psycopg.connect(
            secret[f"{key}_DATABASE_URL"],
            user=secret[f"{key}_DATABASE_USER"],
            password=secret[f"{key}_DATABASE_PASSWORD"],
        ) as conn:
            return conn.execute(
                "SELECT version, checksum, installed_on FROM flyway_schema_history "
                "WHERE version IS NOT NULL ORDER BY installed_rank"
            ).fetchall()

    def start(self, *args: str) -> DevProcess:
        return DevProcess.start(self, *args)


@dataclass
class DevProcess:
    """`ameide-migrate dev` in a session of its own, as a terminal runs it; its output read as
    it comes."""

    process: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)
    changed: threading.Condition = field(default_factory=threading.Condition)
    ended: bool = False
    """Its output is closed: it exited."""

    @classmethod
    def start(cls, machine: DevMachine, *args: str) -> DevProcess:
        process = subprocess.Popen(
            [str(REPO / ".venv" / "bin" / "ameide-migrate"), "dev", *args],
            cwd=machine.sql.parent,
            env=machine.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
            # A shell's background job ignores SIGINT, and a child keeps that: the terminal's
            # foreground process a person presses Ctrl-C in does not.
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        dev = cls(process)
        threading.Thread(target=dev._read, daemon=True).start()
        return dev

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with self.changed:
                self.lines.append(line.rstrip("\n"))
                self.changed.notify_all()
        with self.changed:
            self.ended = True
            self.changed.notify_all()

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, pattern: str, after: int = 0, *, timeout: float = 120) -> re.Match[str]:
        """The first line from `after` on that matches; fails with the output after `timeout`."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while True:
                for line in self.lines[after:]:
                    found = re.search(pattern, line)
                    if found:
                        return found
                left = deadline - time.monotonic()
                if left <= 0 or self.ended:
                    pytest.fail(f"{pattern!r} not printed within {timeout}s:\n{self.output}")
                self.changed.wait(min(left, 1.0))

    def run_after(self, mark: int, timeout: float = 120) -> tuple[str, list[str]]:
        """The flow-run link of the next run printed after line `mark`, and its table's lines."""
        link = self.wait_for(r"^Flow run: (\S+)", after=mark, timeout=timeout)[1]
        end = next(i for i in range(mark, len(self.lines)) if self.lines[i].startswith("Flow run:"))
        return link, self.lines[mark:end]

    def interrupt(self, timeout: float = 30) -> int:
        """Ctrl-C, as a terminal sends it: SIGINT to the whole foreground process group."""
        os.killpg(self.process.pid, signal.SIGINT)
        return self.process.wait(timeout)

    def terminate(self, timeout: float = 30) -> int:
        """`kill PID`, as a process manager or a closing session sends it: SIGTERM."""
        self.process.terminate()
        return self.process.wait(timeout)

    def kill(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
        if self.process.stdout is not None:
            self.process.stdout.close()


@pytest.fixture(scope="module")
def dev_machine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevMachine]:
    """The sample tree copied, a fresh HOME; the local PostgreSQL and Prefect server `dev`
    starts there are stopped at the end. Only the Flyway cache is shared (downloads)."""
    root = tmp_path_factory.mktemp("dev")
    home = root / "home"
    home.mkdir()
    sql = root / "sql"
    shutil.copytree(SAMPLE, sql)
    # A developer's tree is a clone: `git restore` is offered for its files.
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    subprocess.run(["git", "-C", str(root), "add", "sql"], check=True)
    env = clean_environment(home)
    env |= {
        "AMEIDE_SQL_DIR": str(sql),
        "AMEIDE_STATE_DIR": str(home / "state"),
        "AMEIDE_CACHE_DIR": str(REPO / ".cache"),
        "AMEIDE_PROJECT_DIR": str(REPO),
    }
    m2 = Path.home() / ".m2"
    if m2.exists():
        (home / ".m2").symlink_to(m2)
    machine = DevMachine(sql, home, env)
    try:
        yield machine
    finally:
        subprocess.run(
            [str(REPO / ".venv" / "bin" / "ameide-migrate"), "local", "down"],
            env=env,
            capture_output=True,
            timeout=120,
            check=False,
        )
        shutil.rmtree(local.cluster_dir(machine.state_dir).parent, ignore_errors=True)


@pytest.fixture
def dev(dev_machine: DevMachine) -> Iterator[DevProcess]:
    """`ameide-migrate dev` started and past its first run (every database up to date)."""
    started = dev_machine.start()
    try:
        started.wait_for(r"start: migrating every database", timeout=300)
        started.run_after(0, timeout=300)
        yield started
    finally:
        started.kill()


def _api(ui: str, path: str, body: dict[str, Any] | None = None) -> Any:
    request = urllib.request.Request(  # noqa: S310  (the printed server's http address)
        f"{ui}/api{path}",
        data=json.dumps(body or {}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        return json.loads(response.read())


def _flow_runs(ui: str) -> list[dict[str, Any]]:
    return list(_api(ui, "/flow_runs/filter", {"sort": "EXPECTED_START_TIME_ASC"}))


def _rows(table: list[str]) -> dict[str, list[str]]:
    """The printed table's rows by database: version (`before -> after`), applied, state."""
    rows = {}
    for line in table:
        found = re.match(r"^(\w+)\s+(\S+ -> \S+)\s+(\d+)\s+(.+?)\s*$", line)
        if found:
            rows[found[1]] = [found[2], found[3], found[4]]
    return rows


@pytest.mark.slow
@pytest.mark.user
def test_a_new_migration_is_applied_to_its_database_alone_in_one_run_on_the_printed_server(
    dev_machine: DevMachine, dev: DevProcess
) -> None:
    ui = dev.wait_for(r"^Prefect UI: (http://127\.0\.0\.1:\d+)$")[1]
    before = {run["id"] for run in _flow_runs(ui)}
    others = {db: dev_machine.history(db) for db in ("platform", "graph", "agents")}
    mark = len(dev.lines)
    saved = time.monotonic()

    (dev_machine.sql / "threads" / "V5__threads_dev_loop_probe.sql").write_text(
        "CREATE TABLE dev_loop_probe (id bigint PRIMARY KEY);\n"
    )

    dev.wait_for(r"lint: V5__threads_dev_loop_probe\.sql", mark)
    dev.wait_for(
        r"changed: threads/V5__threads_dev_loop_probe\.sql: migrating threads$", after=mark
    )
    link, table = dev.run_after(mark, timeout=60)
    assert time.monotonic() - saved < 60
    assert _rows(table) == {"threads": ["4 -> 5", "1", "migrated"]}, dev.output
    store = json.loads((dev_machine.state_dir / "local-secrets.json").read_text())
    (server,) = store["servers"]
    assert f"on {server}" in [line.strip() for line in table], dev.output
    new = [run for run in _flow_runs(ui) if run["id"] not in before]
    assert len(new) == 1, new
    (run,) = new
    assert link == f"{ui}/runs/flow-run/{run['id']}"
    assert run["parameters"]["databases"] == ["threads"]
    assert run["state"]["type"] == "COMPLETED"
    assert [row[0] for row in dev_machine.history("threads")][-1] == "5"
    assert {db: dev_machine.history(db) for db in others} == others

    assert dev.interrupt() == ExitCode.INTERRUPTED
    assert dev.lines[-1].startswith("ameide-migrate dev stopped after 2 run(s)"), dev.output
    assert "Traceback" not in dev.output


@pytest.mark.slow
@pytest.mark.user
def test_an_edited_applied_migration_is_named_and_reset_rebuilds_that_database_alone(
    dev_machine: DevMachine, dev: DevProcess
) -> None:
    v2 = dev_machine.sql / "graph" / GRAPH_V2
    graph_before = dev_machine.history("graph")
    others = {db: dev_machine.history(db) for db in ("platform", "threads", "workflows")}
    applied_on = graph_before[1][2]
    mark = len(dev.lines)

    v2.write_text(v2.read_text() + "-- a comment added after it was applied\n")

    named = dev.wait_for(
        r"^graph: (\S+) \(version (\S+)\) was edited after it was applied on (.+?);", after=mark
    )
    assert named.groups()[:2] == (GRAPH_V2, "2")
    assert applied_on.astimezone().strftime("%Y-%m-%d %H:%M:%S") in named[3]
    dev.wait_for(r"ameide-migrate dev --reset graph$", after=mark)
    dev.wait_for(rf"git restore sql/graph/{re.escape(GRAPH_V2)}$", after=mark, timeout=10)
    _, table = dev.run_after(mark)
    assert _rows(table)["graph"][2] == "failed"
    # Neither fix is done unasked.
    assert dev_machine.history("graph") == graph_before
    assert dev.interrupt() == ExitCode.INTERRUPTED

    reset = dev_machine.start("--reset", "graph")
    try:
        reset.wait_for(r"graph: dropped and made again, empty", timeout=120)
        _, table = reset.run_after(0, timeout=180)
        rows = _rows(table)
        assert rows["graph"] == ["empty -> 3", "4", "migrated"], reset.output
        assert {db: row[2] for db, row in rows.items() if db != "graph"} == dict.fromkeys(
            ("platform", "agents", "transformation", "threads", "agents_runtime", "workflows",
             "langgraph"), "up to date"
        )  # fmt: skip
        graph_after = dev_machine.history("graph")
        assert graph_after[1][1] != graph_before[1][1]  # the edited file, applied from empty
        assert {db: dev_machine.history(db) for db in others} == others
        assert reset.interrupt() == ExitCode.INTERRUPTED
    finally:
        reset.kill()


def _jvms_of(machine: DevMachine) -> list[int]:
    """The Java processes started for this machine, by the HOME the JVM keeps of its caller's
    environment, whoever their parent is now (an orphan is adopted by init)."""
    marker = f"HOME={machine.home}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        try:
            command = (entry / "cmdline").read_bytes().split(b"\0")[0]
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if command.endswith(b"java") and marker in environ:
            found.append(int(entry.name))
    return found


@pytest.mark.slow
@pytest.mark.user
def test_ctrl_c_during_a_run_leaves_no_jvm_no_run_running_and_nothing_half_applied(
    dev_machine: DevMachine, dev: DevProcess
) -> None:
    ui = dev.wait_for(r"^Prefect UI: (http://127\.0\.0\.1:\d+)$")[1]
    slow = dev_machine.sql / "platform" / "V5__platform_slow.sql"
    platform_before = dev_machine.history("platform")
    mark = len(dev.lines)
    try:
        slow.write_text("CREATE TABLE slow_probe (id int);\nSELECT pg_sleep(60);\n")
        dev.wait_for(r"migrating platform$", after=mark, timeout=60)
        deadline = time.monotonic() + 60
        while not (jvms := _jvms_of(dev_machine)) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert jvms, f"no Flyway JVM started:\n{dev.output}"
        time.sleep(3)  # the migration is in flight: pg_sleep holds it

        stopped = time.monotonic()
        code = dev.interrupt(timeout=30)

        assert code == ExitCode.INTERRUPTED, dev.output
        assert time.monotonic() - stopped < 20
        assert re.match(r"ameide-migrate dev stopped after 2 run\(s\)", dev.lines[-1]), dev.output
        time.sleep(1)
        assert _jvms_of(dev_machine) == []
        unfinished = _api(
            ui,
            "/flow_runs/filter",
            {"flow_runs": {"state": {"type": {"any_": ["RUNNING", "PENDING", "SCHEDULED"]}}}},
        )
        assert unfinished == []
        last = _flow_runs(ui)[-1]
        assert last["parameters"]["databases"] == ["platform"]
        assert last["state"]["type"] in ("CANCELLED", "CRASHED")
        # PostgreSQL rolled the interrupted migration back.
        assert dev_machine.history("platform") == platform_before
    finally:
        slow.unlink(missing_ok=True)


def _tags(registry: str, repository: str) -> set[str]:
    url = f"http://{registry}/v2/{repository}/tags/list"
    with urllib.request.urlopen(url, timeout=10) as response:
        return set(json.loads(response.read())["tags"] or [])


@pytest.mark.slow
@pytest.mark.user
def test_the_image_is_kept_in_step_built_once_per_content_and_pushed(
    dev_machine: DevMachine, docker_engine: Any, registry: str, flyway_base: str
) -> None:
    """--image: the seed's Tilt docker_build, without Tilt. After each run that succeeded the
    migrations image of the tree is built and pushed, unless its content tag exists."""
    machine = DevMachine(
        dev_machine.sql,
        dev_machine.home,
        dev_machine.env
        | {"DOCKER_HOST": os.environ["DOCKER_HOST"], "AMEIDE_FLYWAY_BASE": flyway_base},
    )
    image = r"image (built and pushed|unchanged \(same content tag\)): (\S+)"
    dev = machine.start("--image", "--registry", registry)
    try:
        first = dev.wait_for(image, timeout=900)
        assert first[2].startswith(f"{registry}/ameide-migrations@sha256:"), dev.output
        tags = _tags(registry, "ameide-migrations")

        mark = len(dev.lines)
        migration = machine.sql / "agents" / "V5__agents_image_probe.sql"
        migration.write_text("CREATE TABLE image_probe (id bigint PRIMARY KEY);\n")
        second = dev.wait_for(image, after=mark, timeout=900)
        assert second[1] == "built and pushed", dev.output
        assert second[2] != first[2]
        assert len(_tags(registry, "ameide-migrations") - tags) == 1

        # The same content saved again: a run with nothing to apply, and no build.
        mark = len(dev.lines)
        migration.write_text(migration.read_text())
        third = dev.wait_for(image, after=mark, timeout=300)
        assert third[1] == "unchanged (same content tag)", dev.output
        assert third[2] == second[2]

        assert dev.interrupt() == ExitCode.INTERRUPTED
    finally:
        dev.kill()


@pytest.mark.slow
@pytest.mark.user
def test_kill_stops_the_loop_as_ctrl_c_does(dev_machine: DevMachine, dev: DevProcess) -> None:
    ui = dev.wait_for(r"^Prefect UI: (http://127\.0\.0\.1:\d+)$")[1]

    assert dev.terminate() == ExitCode.INTERRUPTED
    assert dev.lines[-1].startswith("ameide-migrate dev stopped after 1 run(s)"), dev.output
    assert "Traceback" not in dev.output
    unfinished = [
        run for run in _flow_runs(ui) if run["state"]["type"] in ("RUNNING", "PENDING", "SCHEDULED")
    ]
    assert unfinished == []
