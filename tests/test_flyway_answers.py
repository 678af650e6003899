"""The native history check, checksums and error handling against what real Flyway answered.

tests/data/flyway_answers.json holds Flyway's own answers, recorded once from the pinned release
on a real PostgreSQL by tests/record_flyway_answers.py (its docstring says how to rerun it): per
scenario the SQL files, the history rows and Flyway's `info` and `validate` results; the
checksums Flyway recorded for files that trip naive checksums; and the error objects the engine
sent for Flyway's exceptions. Each test rebuilds the files and needs no server.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ameide_migrate.adapters import flyway
from ameide_migrate.adapters.flyway import Request
from ameide_migrate.core import recovery
from ameide_migrate.core.catalog import DatabaseCatalog, Kind, Version, load_catalog
from ameide_migrate.core.errors import (
    ChecksumMismatch,
    FlywayCommandFailed,
    MigrationFailed,
    NonTransactionalMigrationFailed,
    TransientFlywayFault,
    ValidationFailed,
)
from ameide_migrate.core.history import HistoryRow
from ameide_migrate.services import drift, migrate
from ameide_migrate.services.drift import Verdict

ANSWERS: dict[str, Any] = json.loads(
    (Path(__file__).parent / "data" / "flyway_answers.json").read_text(encoding="utf-8")
)
SCENARIOS: dict[str, Any] = ANSWERS["scenarios"]
PLACEHOLDERS: dict[str, str] = ANSWERS["recorded"]["placeholders"]
ENV = "staging"
SHOP = recovery.Subject(ENV, "shop")


def catalog_of(tmp_path: Path, files: dict[str, str], name: str = "shop") -> DatabaseCatalog:
    folder = tmp_path / "sql" / name
    folder.mkdir(parents=True)
    encoding = "iso-8859-1" if "flyway.conf" in files else "utf-8"
    for file, text in files.items():
        (folder / file).write_bytes(text.encode(encoding))
    return load_catalog(tmp_path / "sql", placeholders=PLACEHOLDERS).databases[name]


def history_of(scenario: dict[str, Any]) -> list[HistoryRow] | None:
    rows = scenario["history"]
    return None if rows is None else [HistoryRow(**row) for row in rows]


def flyway_report(db: DatabaseCatalog, scenario: dict[str, Any]) -> drift.DatabaseDrift:
    return drift.from_flyway(SHOP, db, scenario["info"], scenario["validate"])


def request(command: str) -> Request:
    return Request(
        command, "shop", ("filesystem:/sql/shop",), PLACEHOLDERS, "flyway_schema_history"
    )


# What a user sees per scenario: Flyway's verdict (also asserted below to come from Flyway).
EXPECTED_VERDICT = {
    "never migrated": Verdict.BEHIND,
    "up to date": Verdict.IN_SYNC,
    "new migrations": Verdict.BEHIND,
    "edited applied file": Verdict.DRIFTED,
    "renamed description": Verdict.DRIFTED,
    "deleted history row": Verdict.DRIFTED,
    "failed row above the latest": Verdict.DRIFTED,
    "versions the repository lacks": Verdict.DRIFTED,
    "out of order": Verdict.DRIFTED,
    "changed repeatable": Verdict.BEHIND,
    "file removed": Verdict.DRIFTED,
    "repeatable removed": Verdict.DRIFTED,
    "repeatable applied twice": Verdict.IN_SYNC,
    "baselined at 2": Verdict.IN_SYNC,
}


def test_every_recorded_scenario_has_its_expected_verdict() -> None:
    assert set(SCENARIOS) == set(EXPECTED_VERDICT)


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_native_info_and_validate_agree_with_flyway(tmp_path: Path, scenario: str) -> None:
    recorded = SCENARIOS[scenario]
    db = catalog_of(tmp_path, recorded["files"])
    native = drift.check(SHOP, db, history_of(recorded))
    real = flyway_report(db, recorded)

    assert sorted(m.key for m in native.migrations) == sorted(m.key for m in real.migrations)
    assert set(native.problems) == set(real.problems), (native.problems, real.problems)
    assert native.verdict is real.verdict is EXPECTED_VERDICT[scenario]
    assert native.version == real.version
    assert native.fix == real.fix


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_a_run_skips_flyway_only_where_flyway_has_nothing_to_do(
    tmp_path: Path, scenario: str
) -> None:
    """`compare` lets a run skip the JVM: only when Flyway's info is all settled and its validate
    passes; anything else goes to Flyway."""
    recorded = SCENARIOS[scenario]
    db = catalog_of(tmp_path, recorded["files"])
    inspection = migrate.compare(db, history_of(recorded))
    flyway_has_nothing_to_do = flyway_report(db, recorded).verdict is Verdict.IN_SYNC

    assert inspection.up_to_date is flyway_has_nothing_to_do, inspection.reason
    shown = recorded["info"].get("schemaVersion")
    if scenario != "failed row above the latest":  # Flyway counts the failed row's version
        assert inspection.version == (shown and str(Version.parse(shown)))


def test_a_database_never_migrated_says_so_and_lists_everything_pending(tmp_path: Path) -> None:
    recorded = SCENARIOS["never migrated"]
    db = catalog_of(tmp_path, recorded["files"])
    inspection = migrate.compare(db, history_of(recorded))
    report = drift.check(SHOP, db, history_of(recorded))

    assert inspection.reason == "no schema history yet"
    assert report.pending == len(recorded["files"]) == 5
    assert report.fix == "apply what is pending: `ameide-migrate run --env staging --db shop`"


def test_an_edited_file_is_named_with_the_restore_and_the_repair(tmp_path: Path) -> None:
    recorded = SCENARIOS["edited applied file"]
    db = catalog_of(tmp_path, recorded["files"])
    report = drift.check(SHOP, db, history_of(recorded))

    assert report.problems["2"].startswith(
        "checksum mismatch for version 2: V2__add_customer.sql was edited after it was applied"
    )
    assert "restore V2__add_customer.sql to what was applied" in report.fix
    assert "`ameide-migrate repair --env staging --db shop`" in report.fix
    assert "V2__add_customer.sql" in migrate.compare(db, history_of(recorded)).reason


def test_a_removed_file_and_a_deleted_row_each_name_their_fix(tmp_path: Path) -> None:
    removed = SCENARIOS["file removed"]
    removed_report = drift.check(
        SHOP, catalog_of(tmp_path / "a", removed["files"]), history_of(removed)
    )
    deleted = SCENARIOS["deleted history row"]
    deleted_report = drift.check(
        SHOP, catalog_of(tmp_path / "b", deleted["files"]), history_of(deleted)
    )

    assert "restore the missing file, or `ameide-migrate repair" in removed_report.fix
    assert removed_report.problems["2"] == (
        "applied migration 2 is not in the repository (V2__add_customer.sql)"
    )
    assert deleted_report.problems["2"] == (
        "migration 2 is not applied but a later one is (V2__add_customer.sql)"
    )
    assert "restore its history row" in deleted_report.fix


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_flyways_validate_result_becomes_the_right_error(scenario: str) -> None:
    validation = SCENARIOS[scenario]["validate"]
    error = flyway.validation_error(request("validate"), validation)
    codes = {
        (m.get("errorDetails") or {}).get("errorCode")
        for m in validation.get("invalidMigrations") or ()
    }

    if validation["validationSuccessful"]:
        assert error is None
        return
    assert isinstance(error, ValidationFailed)
    assert isinstance(error, ChecksumMismatch) is ("CHECKSUM_MISMATCH" in codes)
    assert not error.transient
    # Every invalid migration's own message reaches the user, as Flyway's CLI prints them.
    for migration in validation["invalidMigrations"]:
        assert migration["errorDetails"]["errorMessage"] in error.flyway_message


@pytest.mark.parametrize(
    ("recorded", "kind", "transient", "sqlstate"),
    [
        ("syntax error", MigrationFailed, False, "42601"),
        ("duplicate key", MigrationFailed, False, "23505"),
        (
            "unique index concurrently over duplicates",
            NonTransactionalMigrationFailed,
            False,
            "23505",
        ),
        ("lock timeout", TransientFlywayFault, True, "55P03"),
        ("connection refused", TransientFlywayFault, True, "08001"),
        ("wrong password", FlywayCommandFailed, False, "28P01"),
        ("database does not exist", FlywayCommandFailed, False, "3D000"),
    ],
)
def test_flyways_errors_are_classified_retried_only_when_transient(
    recorded: str, kind: type[FlywayCommandFailed], transient: bool, sqlstate: str
) -> None:
    answer = ANSWERS["errors"][recorded]
    error = flyway.classify(request(answer["command"]), answer["error"])

    assert type(error) is kind
    assert error.transient is transient
    assert error.sql_states == (sqlstate,)
    assert str(error).startswith(f"flyway {answer['command']} failed for database shop: ")
    assert error.flyway_message == answer["error"]["message"].strip()


def test_a_failed_migration_names_its_script_and_the_statement_flyway_hides(
    tmp_path: Path,
) -> None:
    answer = ANSWERS["errors"]["syntax error"]
    files = {**SCENARIOS["up to date"]["files"], "V4__next.sql": "CREATE TABLE broken (;\n"}
    db = catalog_of(tmp_path, files)
    error = flyway.classify(request("migrate"), answer["error"])

    assert error.script == "V4__next.sql"
    message = migrate.failure_message(error, db)
    assert "SQL State  : 42601" in message
    assert "The statement that failed (line 1 of V4__next.sql): CREATE TABLE broken (" in message


def test_recovery_after_a_failed_migration_says_where_the_database_stays(tmp_path: Path) -> None:
    answer = ANSWERS["errors"]["duplicate key"]
    error = flyway.classify(request("migrate"), answer["error"])
    text = recovery.after_error(recovery.Subject(ENV, "shop"), error, "3.1")

    assert "rolled the failed migration back" in text
    assert "stays at version 3.1" in text
    assert text.endswith("rerun `ameide-migrate run --env staging --db shop`.")


def test_recovery_after_an_edited_file_offers_restore_then_repair() -> None:
    validation = SCENARIOS["edited applied file"]["validate"]
    error = flyway.validation_error(request("validate"), validation)
    assert error is not None
    text = recovery.after_error(recovery.Subject(ENV, "shop"), error, "3.1")

    assert "restore the file to what was applied" in text
    assert "changes no schema" in text
    assert "`ameide-migrate run --env staging --db shop`" in text
    assert "`ameide-migrate repair --env staging --db shop`" in text


def test_recovery_after_retries_ran_out_points_at_the_server() -> None:
    answer = ANSWERS["errors"]["connection refused"]
    error = flyway.classify(request("migrate"), answer["error"])
    text = recovery.after_error(recovery.Subject(ENV, "shop"), error, None)

    assert text.startswith("It kept failing after every retry: check the server and the network")
    assert "repair" not in text


@pytest.mark.parametrize("tree", sorted(ANSWERS["checksums"]))
def test_checksums_equal_what_flyway_recorded(tmp_path: Path, tree: str) -> None:
    recorded = ANSWERS["checksums"][tree]
    db = catalog_of(tmp_path, recorded["files"], name=tree)

    assert {m.script: m.checksum for m in db.migrations} == recorded["recorded"]


def test_a_placeholders_value_changes_only_the_repeatable_that_uses_it(tmp_path: Path) -> None:
    files = ANSWERS["checksums"]["tricky"]["files"]
    recorded = ANSWERS["checksums"]["tricky"]["recorded"]
    (tmp_path / "sql" / "tricky").mkdir(parents=True)
    for file, text in files.items():
        (tmp_path / "sql" / "tricky" / file).write_bytes(text.encode())
    prod = load_catalog(tmp_path / "sql", placeholders={"environment": "prod"})
    changed = {
        m.script for m in prod.databases["tricky"].migrations if m.checksum != recorded[m.script]
    }

    assert changed == {"R__placeholder_view.sql"}
    assert all(
        m.kind is Kind.REPEATABLE
        for m in prod.databases["tricky"].migrations
        if m.script in changed
    )
