"""Flyway's configuration as Flyway users write it, read without a JVM: what each database's
Flyway will see, and a clear refusal of what Flyway would not understand."""

from __future__ import annotations

from pathlib import Path

import pytest

from ameide_migrate.core.catalog import load_catalog
from ameide_migrate.core.errors import FlywayConfigInvalid


def tree(tmp_path: Path, root_toml: str = "", folder_file: tuple[str, str] | None = None) -> Path:
    root = tmp_path / "sql"
    (root / "db1").mkdir(parents=True)
    (root / "db1" / "V1__init.sql").write_text("SELECT 1;\n")
    (root / "db1" / "R__view.sql").write_text("SELECT '${ignoreIfProd}', '${Tenant}';\n")
    if root_toml:
        (root / "flyway.toml").write_text(root_toml)
    if folder_file:
        (root / "db1" / folder_file[0]).write_text(folder_file[1])
    return root


def test_an_unknown_toml_key_names_the_key_the_file_and_the_likely_spelling(
    tmp_path: Path,
) -> None:
    root = tree(tmp_path, "[flyway]\nbaselineOnMigrat = true\n")
    with pytest.raises(FlywayConfigInvalid) as caught:
        load_catalog(root)
    message = str(caught.value)
    assert str(root / "flyway.toml") in message
    assert "'baselineOnMigrat'" in message
    assert "did you mean baselineOnMigrate?" in message


def test_an_unknown_conf_key_names_the_key_and_the_file(tmp_path: Path) -> None:
    root = tree(tmp_path, folder_file=("flyway.conf", "flyway.tabel=history\n"))
    with pytest.raises(FlywayConfigInvalid, match=r"db1/flyway.conf: unknown .*'flyway.tabel'"):
        load_catalog(root)


def test_settings_follow_flyways_precedence(tmp_path: Path) -> None:
    root = tree(
        tmp_path,
        '[flyway]\ntable = "root_table"\nencoding = "UTF-8"\n'
        '[flyway.placeholders]\nignoreIfProd = ""\ntenant = "root"\n'
        "[environments.prod.flyway]\noutOfOrder = true\n",
        folder_file=("flyway.toml", '[flyway]\ntable = "folder_table"\n'),
    )
    variables = {"FLYWAY_PLACEHOLDERS_TENANT": "from-variable", "FLYWAY_MIXED": "true"}
    db = load_catalog(root, environment="prod", variables=variables).databases["db1"]

    assert db.flyway.table == "folder_table"  # the folder's file over the root's
    assert db.flyway.settings["outOfOrder"] == "true"  # the environment's table
    assert db.flyway.placeholders == {"ignoreifprod": "", "tenant": "from-variable"}
    assert db.flyway.engine_settings() == {
        "flyway.encoding": "UTF-8",
        "flyway.outOfOrder": "true",
        "flyway.mixed": "true",
    }


def test_a_placeholder_empty_everywhere_but_prod_changes_only_prods_checksum(
    tmp_path: Path,
) -> None:
    root = tree(
        tmp_path,
        '[flyway.placeholders]\nignoreIfProd = ""\n'
        '[environments.prod.flyway.placeholders]\nignoreIfProd = "--"\n',
    )
    ameide = {"tenant": "acme"}  # what ameide.toml gives the environment

    def view(environment: str) -> int | None:
        catalog = load_catalog(root, environment=environment, placeholders=ameide)
        return catalog.databases["db1"].repeatables[0].checksum

    assert view("staging") is not None
    assert view("prod") is not None
    assert view("staging") == view("qa")
    assert view("prod") != view("staging")


def test_toml_and_conf_together_are_refused_as_flyway_refuses_them(tmp_path: Path) -> None:
    root = tree(tmp_path, "[flyway]\n", folder_file=("flyway.conf", "flyway.mixed=true\n"))
    with pytest.raises(FlywayConfigInvalid, match="TOML and CONF configuration together"):
        load_catalog(root)


def test_locations_are_refused_with_where_the_migrations_go(tmp_path: Path) -> None:
    root = tree(tmp_path, '[flyway]\nlocations = ["filesystem:sql"]\n')
    with pytest.raises(FlywayConfigInvalid, match="each database's migrations are its own folder"):
        load_catalog(root)
