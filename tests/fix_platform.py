"""The sample platform on the test server: a copy of the SQL tree, seeded local credentials, and
a helper that runs the real migrate flow against them through the session's Prefect server."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import psycopg
import pytest
from psycopg import sql
from pydantic import SecretStr

from ameide_migrate.adapters import pg_cluster, secret_sources
from ameide_migrate.adapters.flyway import Installation
from ameide_migrate.adapters.postgres.connection import Credentials, connect
from ameide_migrate.adapters.postgres.schema_history import read_history
from ameide_migrate.adapters.prefect.local_server import Server
from ameide_migrate.config.settings import get_settings
from ameide_migrate.core.catalog import PLATFORM_DATABASES
from ameide_migrate.core.history import HistoryRow
from ameide_migrate.core.outcomes import RunReport
from ameide_migrate.services import local

from . import fixes

REPO = Path(__file__).resolve().parent.parent

T = TypeVar("T")


@dataclass
class Platform:
    sql_dir: Path
    state_dir: Path
    prefix: str
    owners: dict[str, Credentials]
    admin: Credentials

    def run(self, databases: list[str] | None = None, **params: Any) -> tuple[Any, RunReport]:
        """Run the migrate flow in this process; (final state, report of every database)."""
        from ameide_migrate.flows.migrate import migrate_flow

        state = migrate_flow(environment="local", databases=databases, return_state=True, **params)
        result = state.result(raise_on_failure=False)
        report = getattr(result, "report", result)
        assert isinstance(report, RunReport), f"the flow ended without a report: {result!r}"
        return state, report

    def history(self, database: str) -> list[HistoryRow] | None:
        return read_history(self.owners[database], "flyway_schema_history")

    def versions(self, database: str) -> list[str]:
        return [r.version for r in self.history(database) or [] if r.version and r.success]

    def query(self, database: str, statement: str) -> list[tuple[Any, ...]]:
        with connect(self.owners[database]) as conn:
            return conn.execute(statement).fetchall()

    def move_to(self, database: str, cluster: pg_cluster.Cluster) -> None:
        """Give `database` a home on another server: its entry among the local environment's
        server's entries names that server, as if edited by hand (seeding writes each server's
        own entries only)."""
        env = local.up(
            self.state_dir,
            [database],
            admin_url=admin_url_of(cluster.admin),
            database_prefix=self.prefix,
        )
        store = self.state_dir / secret_sources.STORE_NAME
        stored = json.loads(store.read_text())
        moved = secret_sources.secret_of(database, env.owners[database])
        stored["servers"][self.admin.server][database] = moved
        store.write_text(json.dumps(stored))
        self.owners[database] = env.owners[database]

    def entries(self) -> dict[str, dict[str, str]]:
        """The local store's entries of the platform's server, as the file holds them."""
        store = self.state_dir / secret_sources.STORE_NAME
        return dict(json.loads(store.read_text())["servers"][self.admin.server])

    def table_exists(self, database: str, table: str) -> bool:
        with connect(self.owners[database]) as conn:
            row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (table,)).fetchone()
        return bool(row and row[0])


@pytest.fixture
def platform(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    pg_admin: Credentials,
    db_prefix: str,
    prefect_server: Server,
    flyway_installation: Installation,
) -> Iterator[Platform]:
    sql_dir = tmp_path / "sql"
    shutil.copytree(REPO / "db" / "flyway" / "sql", sql_dir)
    state_dir = tmp_path / "state"
    monkeypatch.setenv("AMEIDE_SQL_DIR", str(sql_dir))
    monkeypatch.setenv("AMEIDE_STATE_DIR", str(state_dir))
    monkeypatch.setenv("AMEIDE_LOCAL_DATABASE_PREFIX", db_prefix)
    monkeypatch.setenv("AMEIDE_CACHE_DIR", str(REPO / ".cache"))
    admin_url = admin_url_of(pg_admin)
    monkeypatch.setenv("AMEIDE_LOCAL_ADMIN_URL", admin_url.get_secret_value())
    get_settings.cache_clear()
    env = local.up(
        state_dir,
        PLATFORM_DATABASES,
        admin_url=admin_url,
        database_prefix=db_prefix,
    )
    local.seed(state_dir, env.owners, None)
    yield Platform(sql_dir, state_dir, db_prefix, env.owners, pg_admin)
    get_settings.cache_clear()
    drop_owners(pg_admin, env.owners)


def drop_owners(admin: Credentials, owners: Mapping[str, Credentials]) -> None:
    """The databases and roles a test made, gone, connections and all."""
    with psycopg.connect(**admin.conninfo(5), autocommit=True) as conn:  # type: ignore[arg-type]
        for owner in owners.values():
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                    sql.Identifier(owner.database)
                )
            )
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(owner.user)))


def wait_for(what: str, check: Callable[[], T | None], timeout: float = 120) -> T:
    """What `check` found once it finds something, polled; a failed test after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:g}s")
        time.sleep(0.5)


def sleeping(server: Credentials, prefix: str) -> bool:
    """A migration sleeps (`SELECT pg_sleep(...)`) on `server` in one of the test's own
    databases, those named with its `prefix`: another test's leftover sleep is not this one's."""
    with psycopg.connect(**server.conninfo(5), autocommit=True) as conn:  # type: ignore[arg-type]
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE query LIKE 'SELECT pg_sleep(%%' AND starts_with(datname, %s)",
            (prefix,),
        ).fetchone()
    return bool(row and row[0])


def admin_url_of(creds: Credentials) -> SecretStr:
    return SecretStr(
        f"postgresql://{creds.user}:{creds.password.get_secret_value()}@{creds.host}:{creds.port}/postgres"
    )


def ameide(
    *args: str, env: dict[str, str] | None = None, timeout: float = 300, cwd: Path = REPO
) -> subprocess.CompletedProcess[str]:
    """The command line as a user runs it, in `cwd` (the repository), with `env` (this
    process's environment). Every fix it printed is a command the tool accepts, or the test
    fails (tests/fixes.py)."""
    done = subprocess.run(
        [sys.executable, "-m", "ameide_migrate.cli.main", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=timeout,
        check=False,
    )
    quoted = fixes.commands_in(done.stdout + done.stderr)
    if quoted:
        # In a process of the command's own environment and folder: its settings name the same
        # tree; the checker itself is imported from the repository.
        checker_env = dict(os.environ if env is None else env)
        checker_env["PYTHONPATH"] = os.pathsep.join(
            [str(REPO), *filter(None, [checker_env.get("PYTHONPATH")])]
        )
        checked = subprocess.run(
            [sys.executable, "-m", "tests.fixes"],
            input="\n".join(quoted),
            capture_output=True,
            text=True,
            cwd=cwd,
            env=checker_env,
            timeout=300,
            check=False,
        )
        assert checked.returncode == 0, (
            f"`ameide-migrate {' '.join(args)}` printed fixes the tool refuses: "
            f"{checked.stdout}{checked.stderr}"
        )
    return done
