"""The command line as a user meets it: help on every verb, exit codes, the table, and the
embedded local default."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import psycopg
import pytest
import typer
from psycopg import sql
from typer.testing import CliRunner

from ameide_migrate.adapters.postgres.connection import Credentials
from ameide_migrate.adapters.prefect.local_server import Server
from ameide_migrate.cli.main import app

from .fix_platform import Platform, admin_url_of, ameide


def _paths(command: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    paths = [prefix]
    if hasattr(command, "commands"):
        for name, sub in command.commands.items():
            paths += _paths(sub, (*prefix, name))
    return paths


def test_every_verb_has_help() -> None:
    paths = _paths(typer.main.get_command(app))
    assert ("run",) in paths
    assert ("flyway", "install") in paths
    assert ("local", "down") in paths
    for path in paths:
        result = CliRunner().invoke(app, [*path, "--help"])
        assert result.exit_code == 0, (path, result.output)
        assert "Usage:" in result.output


def test_unknown_database_is_a_usage_error_listing_the_valid_ones() -> None:
    done = ameide("run", "--env", "local", "--db", "thread")

    assert done.returncode == 2
    assert "FAILED: unknown database thread: choose from" in done.stderr
    assert "threads" in done.stderr
    assert "agents_runtime" in done.stderr
    assert "Traceback" not in done.stderr


def test_unknown_environment_is_a_usage_error() -> None:
    done = ameide("run", "--env", "qa")

    assert done.returncode == 2
    assert "unknown environment 'qa': choose from local, prod, staging" in done.stderr


def test_failed_database_exits_1_with_the_table_and_the_rerun_command(platform: Platform) -> None:
    (platform.sql_dir / "agents" / "V9__agents_broken.sql").write_text(
        "ALTER TABLE nope ADD x int;\n"
    )

    done = ameide("run", "--env", "local", "--db", "agents", "--db", "threads")

    assert done.returncode == 1, done.stdout + done.stderr
    assert "Migrations: local" in done.stdout
    assert "threads" in done.stdout
    assert "migrated" in done.stdout
    assert 'relation "nope" does not exist' in done.stdout
    assert "ameide-migrate run --env local --db agents" in done.stdout
    assert "FAILED:" in done.stderr
    assert "Traceback" not in done.stdout + done.stderr


def test_a_targeted_run_creates_and_touches_only_its_database(
    tmp_path: Path, pg_admin: Credentials, db_prefix: str, prefect_server: Server
) -> None:
    env = {
        **os.environ,
        "AMEIDE_STATE_DIR": str(tmp_path / "state"),
        "AMEIDE_LOCAL_ADMIN_URL": admin_url_of(pg_admin).get_secret_value(),
        "AMEIDE_LOCAL_DATABASE_PREFIX": db_prefix,
    }

    done = ameide("run", "--env", "local", "--db", "threads", env=env)

    assert done.returncode == 0, done.stdout + done.stderr
    with psycopg.connect(**pg_admin.conninfo(5), autocommit=True) as conn:  # type: ignore[arg-type]
        created = conn.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE %s ORDER BY 1", (db_prefix + "%",)
        ).fetchall()
        roles = conn.execute(
            "SELECT rolname FROM pg_roles WHERE rolname LIKE %s ORDER BY 1", (db_prefix + "%",)
        ).fetchall()
        conn.execute(
            sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(f"{db_prefix}threads"))
        )
        conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(f"{db_prefix}threads_owner")))
    assert created == [(f"{db_prefix}threads",)]
    assert [r[0] for r in roles] == [f"{db_prefix}threads_owner"]


@pytest.mark.parametrize("shape", ["no database folder", "a folder without migrations"])
def test_a_sql_tree_with_nothing_to_migrate_is_a_usage_error_naming_the_path(
    tmp_path: Path, shape: str
) -> None:
    tree = tmp_path / "sql"
    tree.mkdir()
    named = tree
    if shape == "a folder without migrations":
        named = tree / "threads"
        named.mkdir()
        (named / "README.md").write_text("notes, not migrations\n")

    done = ameide("run", "--env", "local", env={**os.environ, "AMEIDE_SQL_DIR": str(tree)})

    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.startswith(f"FAILED: {named} holds no ") or done.stderr.startswith(
        f"FAILED: SQL tree {named} holds no database folder"
    ), done.stderr
    assert "Traceback" not in done.stderr
