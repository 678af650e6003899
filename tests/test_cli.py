"""The command line as a user meets it: help on every verb, exit codes, the table, and the
embedded local default."""

from __future__ import annotations

from typing import Any

import typer
from typer.testing import CliRunner

from ameide_migrate.cli import app

from .fix_platform import Platform, ameide


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
