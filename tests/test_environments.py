"""Environments are declared in one file the user edits (`ameide.toml` at the SQL tree's root):
the command line, the deployments, the placeholders and the secret source read it, and a site
adds an environment by adding a table. No server is needed here."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from ameide_migrate.config import environments
from ameide_migrate.config.settings import Settings
from ameide_migrate.core.errors import EnvironmentsFileInvalid, UnknownEnvironment
from ameide_migrate.core.findings import Level

from .fix_platform import REPO, ameide

SITE = """
[environments.dev]
local = true
work_pool = "laptops"
pool_type = "process"

[environments.qa]
work_pool = "k8s-qa"
namespace = "migrations-qa"
service_account = "flyway"
drift_cron = "15 4 * * 1-5"
timezone = "America/New_York"
databases = ["threads", "graph"]
concurrency = 2

[environments.qa.placeholders]
ignoreIfProd = ""

[environments.prod-eu]
work_pool = "k8s-eu"
namespace = "migrations"
job_variables = { image_pull_policy = "Always" }

[environments.prod-eu.placeholders]
ignoreIfProd = "--"

[environments.prod-eu.vault]
kv_mount = "kv-eu"
path_template = "platform/{environment}/{database}"
"""


@pytest.fixture
def site_tree(tmp_path: Path) -> Path:
    """The sample SQL tree with a site's own environments file instead of the shipped one."""
    tree = tmp_path / "sql"
    shutil.copytree(REPO / "db" / "flyway" / "sql", tree)
    (tree / environments.FILE_NAME).write_text(SITE)
    return tree


def test_the_shipped_file_declares_local_staging_and_prod() -> None:
    shipped = environments.load(REPO / "db" / "flyway" / "sql" / environments.FILE_NAME)

    assert list(shipped) == ["local", "staging", "prod"]
    assert shipped["local"].local
    assert shipped["local"].pool_type == "process"
    assert shipped["prod"].deployment_job_variables() == {
        "namespace": "ameide-prod",
        "service_account_name": "db-migrations",
    }
    assert shipped["staging"].vault.kubernetes_role == "db-migrations"


def test_a_site_declares_its_own_environments_and_the_deployments_follow(site_tree: Path) -> None:
    from ameide_migrate.deployments.definitions import deployments_for

    settings = Settings(sql_dir=site_tree)
    qa = environments.get("qa", settings)
    migrate, drift = deployments_for(settings, "qa", environments.catalog("qa", settings))

    assert migrate.work_pool_name == "k8s-qa"
    assert migrate.job_variables == {
        "namespace": "migrations-qa",
        "service_account_name": "flyway",
    }
    assert migrate.parameters == {"environment": "qa"}
    (schedule,) = drift.schedules or []
    assert schedule.schedule.cron == "15 4 * * 1-5"  # type: ignore[union-attr]
    assert schedule.schedule.timezone == "America/New_York"  # type: ignore[union-attr]
    assert qa.concurrency == 2
    # qa has two of the tree's eight databases: its form offers exactly those.
    form = migrate._parameter_openapi_schema.model_dump()
    assert form["properties"]["databases"]["items"]["enum"] == ["graph", "threads"]


def test_placeholders_and_the_vault_layout_are_per_environment(site_tree: Path) -> None:
    settings = Settings(sql_dir=site_tree, vault={"address": "http://127.0.0.1:8200"})

    assert environments.get("qa", settings).flyway_placeholders() == {
        "environment": "qa",
        "ignoreIfProd": "",
    }
    assert environments.get("prod-eu", settings).flyway_placeholders()["ignoreIfProd"] == "--"
    conn = settings.vault_connection(environments.get("prod-eu", settings).vault)
    assert conn is not None
    assert conn.display_path("prod-eu", "threads") == "kv-eu/platform/prod-eu/threads"
    # An AMEIDE_VAULT_* setting still wins over the file.
    explicit = Settings(
        sql_dir=site_tree, vault={"address": "http://127.0.0.1:8200", "kv_mount": "x"}
    )
    conn = explicit.vault_connection(environments.get("prod-eu", settings).vault)
    assert conn is not None
    assert conn.kv_mount == "x"


def test_an_unknown_environment_lists_the_declared_ones_and_the_file(site_tree: Path) -> None:
    settings = Settings(sql_dir=site_tree)

    with pytest.raises(UnknownEnvironment) as raised:
        environments.get("staging", settings)

    message = str(raised.value)
    assert "choose from dev, prod-eu, qa" in message
    assert str(site_tree / "ameide.toml") in message


def test_an_unknown_key_names_the_key_and_the_file(site_tree: Path) -> None:
    path = site_tree / environments.FILE_NAME
    path.write_text(SITE.replace('namespace = "migrations-qa"', 'namepsace = "migrations-qa"'))

    with pytest.raises(EnvironmentsFileInvalid) as raised:
        environments.load(path)

    assert str(raised.value) == f"{path}: environments.qa: unknown key namepsace"


def test_an_unknown_database_of_an_environment_names_the_file_and_the_folders(
    site_tree: Path,
) -> None:
    path = site_tree / environments.FILE_NAME
    path.write_text(SITE.replace('databases = ["threads", "graph"]', 'databases = ["threds"]'))

    with pytest.raises(EnvironmentsFileInvalid) as raised:
        environments.catalog("qa", Settings(sql_dir=site_tree))

    message = str(raised.value)
    assert message.startswith(f"{path}: [environments.qa] databases names threds, ")
    assert "choose from " in message
    assert "threads" in message.split("choose from ")[1]


def test_a_tree_without_the_file_has_the_local_default_only(tmp_path: Path) -> None:
    (tmp_path / "threads").mkdir()

    assert list(environments.all_of(Settings(sql_dir=tmp_path))) == ["local"]
    assert environments.get("local", Settings(sql_dir=tmp_path)).local


def test_a_local_environment_keeps_lint_findings_at_warning_with_or_without_the_file(
    tmp_path: Path,
) -> None:
    (tmp_path / "threads").mkdir()
    without = environments.get("local", Settings(sql_dir=tmp_path))
    assert without.lint.level("require-concurrent-index-creation") is Level.WARNING

    (tmp_path / "ameide.toml").write_text(
        '[environments.dev]\nlocal = true\n\n[environments.prod]\nwork_pool = "k8s"\n'
    )
    declared = environments.all_of(Settings(sql_dir=tmp_path))
    # A local environment needs no work pool: this machine's process pool.
    assert (declared["dev"].work_pool, declared["dev"].pool_type) == ("ameide-local", "process")
    assert declared["dev"].lint.level("require-concurrent-index-creation") is Level.WARNING
    assert declared["prod"].lint.level("require-concurrent-index-creation") is Level.ERROR
    # Saying so keeps the errors locally too.
    (tmp_path / "ameide.toml").write_text(
        '[environments.dev]\nlocal = true\n[environments.dev.lint]\nmax_level = "error"\n'
    )
    strict = environments.all_of(Settings(sql_dir=tmp_path))["dev"]
    assert strict.lint.level("require-concurrent-index-creation") is Level.ERROR


def test_an_environment_that_is_not_local_still_names_its_work_pool(tmp_path: Path) -> None:
    path = tmp_path / "ameide.toml"
    path.write_text('[environments.qa]\npool_type = "kubernetes"\n')

    with pytest.raises(EnvironmentsFileInvalid) as raised:
        environments.load(path)

    assert "environments.qa: work_pool" in str(raised.value)


def test_the_command_line_takes_the_sites_environments(site_tree: Path) -> None:
    import os

    env = {**os.environ, "AMEIDE_SQL_DIR": str(site_tree)}
    listed = ameide("catalog", "--env", "qa", env=env)
    unknown = ameide("catalog", "--env", "prod", env=env)

    assert listed.returncode == 0, listed.stderr
    assert "threads" in listed.stdout
    assert "platform" not in listed.stdout
    assert unknown.returncode == 2
    assert unknown.stderr.startswith("FAILED: unknown environment 'prod': choose from dev,")
    assert "Traceback" not in unknown.stderr
