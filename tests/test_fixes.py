"""Every fix the tool can print is a command it accepts: each fix `recovery` words, for each of
its cases, about a database of the tree and about a fleet's target, parsed by the tool's own
command line and its names resolved (tests/fixes.py). The commands the drills and the fleet
tests print are checked the same way as they run (`ameide(...)` of fix_platform)."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from ameide_migrate.config import environments
from ameide_migrate.config.settings import Settings
from ameide_migrate.core import recovery
from ameide_migrate.core.catalog import Kind, Migration, Version
from ameide_migrate.core.errors import (
    ChecksumMismatch,
    DatabaseRefusedConnection,
    DatabaseUnreachable,
    FlywayCommandFailed,
    HistoryMissing,
    LintErrorsFound,
    LockTimedOut,
    MigrateError,
    MigrationFailed,
    TablesBusy,
    UnknownDatabase,
    ValidationFailed,
)
from ameide_migrate.core.findings import Finding, Level
from ameide_migrate.core.indexes import InvalidIndex, NamedIndex
from ameide_migrate.core.interruption import IndexBuild, Interrupted
from ameide_migrate.core.recovery import Subject
from ameide_migrate.core.statements import Statement

from .fixes import commands_in, parsed, refusal

TREE_DATABASE = Subject("local", "threads")
FLEET_TARGET = Subject("local", "tenant_t010", "tenants", "t010")


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """A tree with a database `threads` and a fleet `tenants` of template `tenant`."""
    (tmp_path / "threads").mkdir()
    (tmp_path / "threads" / "V1__threads.sql").write_text("CREATE TABLE threads (id bigint);\n")
    (tmp_path / "tenant").mkdir()
    (tmp_path / "tenant" / "V1__accounts.sql").write_text("CREATE TABLE accounts (id bigint);\n")
    (tmp_path / "ameide.toml").write_text(
        '[environments.local]\nlocal = true\n\n[fleets.tenants]\ntemplate = "tenant"\n'
        'targets = ["t009", "t010"]\n'
    )
    return Settings(sql_dir=tmp_path)


def _flyway_error(kind: type[FlywayCommandFailed]) -> MigrateError:
    return kind("failed", database="x", command="migrate", flyway_message="failed")


def _cut_short() -> Interrupted:
    """A two-index migration a crash cut after its first index."""
    statement = "CREATE INDEX CONCURRENTLY accounts_name_idx ON accounts (name)"
    migration = Migration(
        Kind.VERSIONED,
        Version.parse("2"),
        "two indexes",
        "V2__two_indexes.sql",
        Path("V2__two_indexes.sql"),
        None,
        "0" * 64,
    )
    built = NamedIndex("public", "accounts_name_idx", "accounts", True)
    build = IndexBuild(Statement(statement, statement, 1), "accounts_name_idx", "accounts", False)
    return Interrupted("x", migration, ((build, built),))


def every_fix(subject: Subject) -> dict[str, list[str]]:
    """Each public function of `recovery`, with the texts it words for `subject` over its cases."""
    index = InvalidIndex("public", "accounts_email_idx", "accounts", "CREATE INDEX ...")
    finding = Finding("V2__x.sql", 1, "require-concurrent-index-creation", Level.ERROR, "m", None)
    errors: list[MigrateError] = [
        _flyway_error(ChecksumMismatch),
        _flyway_error(HistoryMissing),
        _flyway_error(ValidationFailed),
        _flyway_error(MigrationFailed),
        TablesBusy("busy", ("pid 1",), (1,)),
        LockTimedOut("55P03", ("pid 1", "pid 2"), (1, 2)),
        LockTimedOut("55P03", (), ()),
        DatabaseUnreachable("refused"),
        MigrateError("else"),
    ]
    states = ["Failed", "Missing", "Ignored", "Future", "Out of Order", "Pending"]
    return {
        "rerun_command": [recovery.rerun_command(subject)],
        "repair_command": [recovery.repair_command(subject)],
        "baseline_command": [recovery.baseline_command(subject, "2")],
        "lint_command": [recovery.lint_command(subject)],
        "drop_command": [recovery.drop_command([index])],
        "terminate_command": [recovery.terminate_command([1, 2])],
        "restore_or_repair": [recovery.restore_or_repair(subject, "V1__x.sql")],
        "after_error": [recovery.after_error(subject, e, "1") for e in errors],
        "after_unexpected": [recovery.after_unexpected(subject)],
        "after_lint": [recovery.after_lint(subject, LintErrorsFound("lint", [finding]))],
        "after_leftovers": [
            recovery.after_leftovers(
                subject, leftovers=leftovers, applied_in=applied_in, failed_row=failed_row
            )
            for leftovers in ([], [index])
            for applied_in in (None, "V3__x.sql")
            for failed_row in (False, True)
        ],
        "after_interrupted": [recovery.after_interrupted(_cut_short(), subject)],
        "after_leftovers_unread": [
            recovery.after_leftovers_unread(subject, DatabaseUnreachable("refused"))
        ],
        "for_unreachable_target": [
            recovery.for_unreachable_target(subject, DatabaseUnreachable("down")),
            recovery.for_unreachable_target(
                subject, DatabaseRefusedConnection("refused", fix="run `GRANT ...` as its owner")
            ),
        ],
        "apply_pending": [recovery.apply_pending(subject)],
        "check_connection": [recovery.check_connection(subject)],
        "baseline_first": [recovery.baseline_first(subject)],
        "for_drifted": [
            recovery.for_drifted(
                subject,
                states=[state],
                invalid_indexes=[index],
                schema_changes=["table accounts altered"],
                edited=["V1__x.sql"],
            )
            for state in states
        ]
        + [
            recovery.for_drifted(
                subject, states=[], invalid_indexes=[], schema_changes=[], edited=[]
            )
        ],
        "reset_command": [recovery.reset_command("threads")],
        "edited_in_dev": [
            recovery.edited_in_dev("threads", "sql/threads/V1__x.sql", tracked=tracked)
            for tracked in (True, False)
        ],
    }


def _public_functions() -> set[str]:
    return {
        name
        for name, f in inspect.getmembers(recovery, inspect.isfunction)
        if f.__module__ == recovery.__name__ and not name.startswith("_")
    }


@pytest.mark.parametrize("subject", [TREE_DATABASE, FLEET_TARGET], ids=["database", "fleet target"])
def test_every_fix_recovery_words_is_a_command_the_tool_accepts(
    settings: Settings, subject: Subject
) -> None:
    fixes = every_fix(subject)
    # A fix added to recovery.py without its cases here would go unchecked.
    assert set(fixes) == _public_functions()
    quoted: list[str] = []
    for name, texts in fixes.items():
        for text in texts:
            if name.endswith("_command") and text.startswith("ameide-migrate "):
                quoted.append(text)
            quoted += commands_in(text)
    # Every fix but the SQL of drop_command names a command; the dev loop's names it unquoted.
    assert {c.split()[1] for c in quoted} >= {
        "run" if subject.fleet is None else "fleet",
        "repair",
        "baseline",
        "lint",
        "secrets",
        "dev",
    }
    refused = {c: refusal(c, settings) for c in quoted}
    assert {c: why for c, why in refused.items() if why} == {}
    if subject.fleet is not None:
        assert all("--db tenant_t010" not in c for c in quoted)


def test_a_fleet_targets_fixes_name_it_by_its_fleet_and_target() -> None:
    assert recovery.rerun_command(FLEET_TARGET) == (
        "ameide-migrate fleet run --env local --fleet tenants --target t010"
    )
    assert recovery.repair_command(FLEET_TARGET) == (
        "ameide-migrate repair --env local --fleet tenants --target t010"
    )
    assert recovery.baseline_command(FLEET_TARGET) == (
        "ameide-migrate baseline --env local --fleet tenants --target t010 --version VERSION"
    )
    assert "`ameide-migrate fleet baseline --env local --fleet tenants --version VERSION`" in (
        recovery.baseline_first(FLEET_TARGET)
    )


@pytest.mark.parametrize(
    ("command", "why"),
    [
        # What every failed fleet target used to be told.
        ("ameide-migrate run --env local --db tenant_t010", "UnknownDatabase: unknown database"),
        ("ameide-migrate secrets verify", "usage error: Missing option '--env'"),
        ("ameide-migrate repair --env local --fleet tenants --target t011", "FleetInvalid: fleet"),
        ("ameide-migrate fleet baseline --env local --fleet nosuch", "FleetInvalid: unknown fleet"),
        ("ameide-migrate fleet run --env nosuch --fleet tenants", "UnknownEnvironment"),
        ("ameide-migrate run --env local --db threads --nosuch", "usage error: No such option"),
        ("ameide-migrate run --env local extra", "usage error: Got unexpected extra argument"),
        ("ameide-migrate flyway nosuch", "usage error: No such command"),
    ],
)
def test_a_command_the_tool_would_refuse_is_found_out(
    settings: Settings, command: str, why: str
) -> None:
    found = refusal(command, settings)
    assert found is not None
    assert found.startswith(why), found


def test_placeholders_are_left_for_the_reader_and_options_parse_as_the_tool_parses_them(
    settings: Settings,
) -> None:
    assert refusal("ameide-migrate trigger --env local --flow fleet --fleet NAME", settings) is None
    assert (
        refusal("ameide-migrate baseline --env local --db threads --version VERSION", settings)
        is None
    )
    assert refusal("ameide-migrate approve RUN_ID [--reject --reason TEXT]", settings) is None
    assert refusal("ameide-migrate approve RUN_ID [--refuse]", settings) == (
        "usage error: No such option: --refuse (Possible options: --reason, --reject)"
    )
    assert refusal("ameide-migrate baseline --env local --db threads --version v2", settings) == (
        "usage error: Invalid value for '--version': 'v2' is not a Flyway version: digits "
        "separated by dots or underscores, as in the V<version>__ of a file name (1, 2.1, "
        "20240501_1)"
    )
    path, params = parsed("ameide-migrate fleet baseline -e local --fleet tenants -t t009 -t t010")
    assert path == "ameide-migrate fleet baseline"
    assert params["target"] == ["t009", "t010"]
    assert params["env"] == "local"


def test_commands_are_found_where_a_text_quotes_them() -> None:
    text = (
        "Recover: run `DROP INDEX CONCURRENTLY x;`; then rerun `ameide-migrate run --env local "
        "--db a`.\n  or: ameide-migrate approve RUN [--reject] (`ameide-migrate run --env local "
        "--db a`)"
    )
    assert commands_in(text) == ["ameide-migrate run --env local --db a"]


def test_a_fleet_targets_database_given_as_db_is_refused_with_the_form_that_names_it(
    settings: Settings,
) -> None:
    with pytest.raises(UnknownDatabase) as refused:
        environments.catalog("local", settings).select(["threads", "tenant_t010", "nosuch"])

    assert str(refused.value) == (
        f"unknown database nosuch, tenant_t010: choose from threads (the folders under "
        f"{settings.sql_dir}); tenant_t010 is target t010 of fleet tenants, which --db cannot "
        "name: `ameide-migrate fleet run --env ENV --fleet tenants --target t010` (repair, "
        "baseline, lint and secrets verify take --fleet and --target too)"
    )
    (command,) = commands_in(str(refused.value))
    assert refusal(command, settings) is None
