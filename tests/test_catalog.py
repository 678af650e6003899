"""The catalog reads the SQL tree as Flyway does, checksums included."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from ameide_migrate.adapters import flyway
from ameide_migrate.adapters.flyway import FlywayEngine, Installation, Request, Target
from ameide_migrate.adapters.postgres.connection import Credentials
from ameide_migrate.adapters.postgres.provisioning import ensure_roles_and_databases
from ameide_migrate.adapters.postgres.schema_history import read_history
from ameide_migrate.config.settings import Settings
from ameide_migrate.core.catalog import PLATFORM_DATABASES, Kind, Version, load_catalog
from ameide_migrate.core.errors import CatalogError, UnknownDatabase

from .fix_platform import REPO

# Files that trip naive checksums: CRLF and lone CR line ends, a byte-order mark, non-ASCII text,
# no final newline, blank lines, and a repeatable whose checksum depends on a placeholder's value.
TRICKY_FILES = {
    "V1__crlf.sql": b"CREATE TABLE crlf (id int);\r\n\r\nCOMMENT ON TABLE crlf IS 'windows';\r\n",
    "V2__bom.sql": b"\xef\xbb\xbfCREATE TABLE bom (id int);\n",
    "V3__non_ascii.sql": (
        "CREATE TABLE caf\u00e9 (\u540d\u524d text);\n-- \u00fcml\u00e4ut \U0001f680\n".encode()
    ),
    "V4__no_final_newline_and_cr.sql": b"CREATE TABLE cr (id int);\r-- old mac line end\rSELECT 1;",
    "V5_1__dotted_version.sql": b"SELECT 1;\n",
    "R__placeholder_view.sql": (
        b"CREATE OR REPLACE VIEW env AS\n"
        b"SELECT '${environment}'::text AS e, '${flyway:filename}'::text AS f;\n"
    ),
    "R__plain_view.sql": b"CREATE OR REPLACE VIEW plain AS SELECT 1 AS one;\n\n",
}


def test_platform_tree_has_the_eight_databases_in_order() -> None:
    catalog = load_catalog(REPO / "db/flyway/sql", placeholders={"environment": "local"})

    assert list(catalog.databases) == list(PLATFORM_DATABASES)
    threads = catalog.databases["threads"]
    assert any(m.script == "V3__threads_add_tenant_metadata_columns.sql" for m in threads.versioned)
    assert sum(len(d.repeatables) for d in catalog.databases.values()) >= 1
    assert all(m.checksum is not None for d in catalog.databases.values() for m in d.migrations)


def test_versions_compare_numerically_like_flyway() -> None:
    assert Version.parse("10") > Version.parse("9")
    assert Version.parse("1.10") > Version.parse("1.9")
    assert Version.parse("1_1") == Version.parse("1.1")
    assert Version.parse("2.0") == Version.parse("2")
    assert str(Version.parse("5_1")) == "5.1"


def test_unknown_database_names_the_valid_ones() -> None:
    catalog = load_catalog(REPO / "db/flyway/sql")
    with pytest.raises(UnknownDatabase) as caught:
        catalog.select(["thread"])
    assert "unknown database thread" in str(caught.value)
    assert "threads" in str(caught.value)
    assert "platform" in str(caught.value)


def test_a_file_that_is_not_a_migration_is_named_with_the_fix(tmp_path: Path) -> None:
    (tmp_path / "db1").mkdir()
    (tmp_path / "db1" / "V1_initial.sql").write_text("SELECT 1;\n")
    with pytest.raises(
        CatalogError, match=r"V1_initial.sql is not a Flyway migration name; use V<version>__"
    ):
        load_catalog(tmp_path)


def test_a_duplicate_version_is_refused(tmp_path: Path) -> None:
    (tmp_path / "db1").mkdir()
    (tmp_path / "db1" / "V1__a.sql").write_text("SELECT 1;\n")
    (tmp_path / "db1" / "V1_0__b.sql").write_text("SELECT 1;\n")
    with pytest.raises(CatalogError, match="version 1 appears twice"):
        load_catalog(tmp_path)


def test_missing_tree_says_how_to_point_at_one(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="AMEIDE_SQL_DIR"):
        load_catalog(tmp_path / "nowhere")


@pytest.mark.parametrize(
    "release",
    ["pinned", pytest.param("newer", marks=pytest.mark.slow)],
)
def test_checksums_equal_what_real_flyway_records(
    tmp_path: Path,
    pg_admin: Credentials,
    db_prefix: str,
    release: str,
    request: pytest.FixtureRequest,
) -> None:
    fixture = "flyway_installation" if release == "pinned" else "newer_flyway"
    flyway_installation: Installation = request.getfixturevalue(fixture)
    tree = tmp_path / "sql" / "tricky"
    tree.mkdir(parents=True)
    for name, data in TRICKY_FILES.items():
        (tree / name).write_bytes(data)
    owner = Credentials(
        pg_admin.host,
        pg_admin.port,
        f"{db_prefix}tricky",
        f"{db_prefix}tricky_owner",
        pg_admin.password,
    )
    ensure_roles_and_databases(pg_admin, [owner])
    placeholders = {"environment": "staging"}
    engine = FlywayEngine(
        flyway_installation, {"tricky": Target(owner.jdbc_url, owner.user, owner.password)}
    )
    try:
        result = engine.run(
            Request(
                "migrate", "tricky", (f"filesystem:{tree}",), placeholders, "flyway_schema_history"
            )
        )
    finally:
        engine.close()
    assert result["migrationsExecuted"] == len(TRICKY_FILES)

    recorded = {r.script: r.checksum for r in read_history(owner, "flyway_schema_history") or []}
    catalog = load_catalog(
        tmp_path / "sql", placeholders=placeholders, table="flyway_schema_history"
    )
    computed = {m.script: m.checksum for m in catalog.databases["tricky"].migrations}

    assert computed == recorded
    # The placeholder's value is part of a repeatable's checksum, as Flyway reapplies on a change.
    other = load_catalog(tmp_path / "sql", placeholders={"environment": "prod"})
    changed = {
        m.script: m.checksum
        for m in other.databases["tricky"].migrations
        if m.kind is Kind.REPEATABLE
    }
    assert changed["R__placeholder_view.sql"] != computed["R__placeholder_view.sql"]
    assert changed["R__plain_view.sql"] == computed["R__plain_view.sql"]


def test_unknown_placeholder_leaves_the_checksum_to_flyway(tmp_path: Path) -> None:
    (tmp_path / "db1").mkdir()
    (tmp_path / "db1" / "R__v.sql").write_text("SELECT '${not_configured}';\n")
    (tmp_path / "db1" / "R__w.sql").write_text("SELECT '${flyway:database}';\n")
    repeatables = load_catalog(tmp_path).databases["db1"].migrations
    assert [m.checksum for m in repeatables] == [None, None]


def test_flyway_command_line_is_the_real_one(flyway_installation: Installation) -> None:
    done = subprocess.run(
        [*flyway.command_line(flyway_installation), "--version"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert re.search(rf"Flyway \w+ Edition {re.escape(flyway_installation.version)}", done.stdout)


def test_flyway_install_brings_a_stale_launcher_up_to_date(
    flyway_installation: Installation, tmp_path: Path
) -> None:
    home = tmp_path / flyway_installation.version
    shutil.copytree(flyway_installation.home, home, symlinks=True)
    launcher = home / "bin" / "flyway"
    # What an install from before a change to JVM_OPTIONS left behind.
    launcher.write_text(launcher.read_text().replace(" -Xms16m", ""))
    settings = Settings()

    _, changed = flyway.install(
        home,
        flyway_installation.version,
        driver_version=settings.postgresql_driver_version,
        java=flyway_installation.java,
        maven=settings.maven,
    )

    assert changed
    assert " ".join(flyway.JVM_OPTIONS) in launcher.read_text()
    done = subprocess.run([launcher, "--version"], capture_output=True, text=True, check=True)
    assert flyway_installation.version in done.stdout
