"""Real-world-shaped migration sets, each configured as a Flyway user configures it (a flyway.toml,
a flyway.conf), migrated by the product and by Flyway's own command line under the same
configuration: both must record the same history and leave the same schema, and a second product
run must be a no-op that starts no JVM."""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from ameide_migrate.adapters import flyway
from ameide_migrate.adapters.flyway import Installation
from ameide_migrate.adapters.postgres.connection import Credentials, connect
from ameide_migrate.adapters.postgres.fingerprint import live_fingerprint
from ameide_migrate.adapters.postgres.index_catalog import invalid_indexes
from ameide_migrate.adapters.postgres.provisioning import ensure_roles_and_databases
from ameide_migrate.adapters.postgres.schema_history import read_history
from ameide_migrate.config import environments
from ameide_migrate.config.settings import Settings
from ameide_migrate.core.outcomes import DatabaseOutcome, OutcomeState
from ameide_migrate.services import migrate
from ameide_migrate.services.context import RunContext
from ameide_migrate.services.migrate import Steps

from .evolving_set import write_evolving_set
from .fix_platform import REPO
from .fix_user import UserMachine, clean_environment
from .real_world_set import UAA_DATABASE_NAME, real_world_set

AMEIDE_TOML = """
[environments.staging]
work_pool = "k8s"

[environments.staging.placeholders]
region = "us"

[environments.prod]
work_pool = "k8s"

[environments.prod.placeholders]
region = "eu"
"""

# Flyway 10's TOML, at the tree's root: a non-public default schema, a placeholder that is empty
# everywhere but prod (where it comments a line out), and a placeholder only ameide.toml gives.
ROOT_FLYWAY_TOML = """
[flyway]
defaultSchema = "app"
validateMigrationNaming = true

[flyway.placeholders]
ignoreIfProd = ""
greeting = "hello"

# Flyway replaces [flyway.placeholders] with an environment's own table, whole (its command
# line's -placeholders.* included, so the table repeats what ameide.toml gives prod).
[environments.prod.flyway.placeholders]
ignoreIfProd = "--"
greeting = "hello"
environment = "prod"
region = "eu"
"""

CAFE_NFC = unicodedata.normalize("NFC", "caf\u00e9")
CAFE_NFD = unicodedata.normalize("NFD", "caf\u00e9")

TOML_SET = {
    "V1__init.sql": "CREATE TABLE account (id bigint PRIMARY KEY, name text NOT NULL);\n",
    "V1.1__dotted.sql": "ALTER TABLE account ADD COLUMN email text;\n",
    "V1_2__underscore.sql": "ALTER TABLE account ADD COLUMN region text;\n",
    "V3__after_a_gap.sql": "CREATE TABLE audit (id bigserial PRIMARY KEY, at timestamptz);\n",
    f"V4__{CAFE_NFC}_nfc.sql": f"CREATE TABLE {CAFE_NFC}_nfc (id int);\n",
    f"V5__{CAFE_NFD}_nfd.sql": "CREATE TABLE cafe_nfd (id int);\n",
    "V6__extension_by_the_owner.sql": (
        "CREATE EXTENSION IF NOT EXISTS pgcrypto;\n"
        "ALTER TABLE account ADD COLUMN token text DEFAULT encode(gen_random_bytes(8), 'hex');\n"
    ),
    "V10__ten_after_six.sql": "CREATE INDEX account_name ON account (name);\n",
    "V55__seed_outside_prod.sql": (
        "${ignoreIfProd} INSERT INTO account (id, name, region) VALUES (1, 'test', '${region}');\n"
        "SELECT 1;\n"
    ),
    "R__account_view.sql": (
        "CREATE OR REPLACE VIEW account_view AS\n"
        "SELECT id, name, '${greeting}'::text AS greeting, '${environment}'::text AS env,\n"
        "       '${flyway:defaultSchema}'::text AS schema FROM account;\n"
    ),
}

# The older flyway.conf, in the database's folder: its own prefixes, separator, placeholder
# syntax, history table and file encoding.
DATABASE_FLYWAY_CONF = """\
# Flyway 9 style
flyway.sqlMigrationPrefix=M
flyway.sqlMigrationSeparator=--
flyway.sqlMigrationSuffixes=.sql,.pgsql
flyway.repeatableSqlMigrationPrefix=RP
flyway.placeholderPrefix=#[
flyway.placeholderSuffix=]
flyway.placeholders.tenant=acme
flyway.table=schema_version
flyway.encoding=ISO-8859-1
flyway.outOfOrder=true
"""

CONF_SET: dict[str, bytes] = {
    "M1--init.sql": b"CREATE TABLE tenant (name text);\n",
    "M1_1--latin1.pgsql": "COMMENT ON TABLE tenant IS 'na\u00efve';\n".encode("latin-1"),
    "M2--seed.sql": b"INSERT INTO tenant VALUES ('#[tenant]');\n",
    "RP--tenant_view.sql": b"CREATE OR REPLACE VIEW tenant_view AS SELECT '#[tenant]' AS t;\n",
}


@dataclass
class Tree:
    root: Path
    settings: Settings


def write_tree(root: Path, database: str) -> Tree:
    """A SQL tree of one set: `shop` configured at the root by flyway.toml, `legacy` in its
    folder by flyway.conf (Flyway refuses the two kinds together)."""
    root.mkdir()
    (root / "ameide.toml").write_text(AMEIDE_TOML)
    folder = root / database
    folder.mkdir()
    if database == "shop":
        (root / "flyway.toml").write_text(ROOT_FLYWAY_TOML)
        for name, text in TOML_SET.items():
            (folder / name).write_text(text, encoding="utf-8")
    else:
        (folder / "flyway.conf").write_text(DATABASE_FLYWAY_CONF)
        for name, data in CONF_SET.items():
            (folder / name).write_bytes(data)
    settings = Settings(sql_dir=root, cache_dir=REPO / ".cache", flyway_variables={})
    return Tree(root, settings)


@pytest.fixture
def owner(pg_admin: Credentials, db_prefix: str) -> Iterator[Callable[[str], Credentials]]:
    """A fresh database and its owner, an ordinary role (no superuser), per name asked for."""
    made: list[Credentials] = []

    def make(name: str) -> Credentials:
        creds = Credentials(
            pg_admin.host,
            pg_admin.port,
            f"{db_prefix}{name}",
            f"{db_prefix}{name}_owner",
            pg_admin.password,
        )
        ensure_roles_and_databases(pg_admin, [creds])
        made.append(creds)
        return creds

    yield make
    with psycopg.connect(**pg_admin.conninfo(5), autocommit=True) as conn:  # type: ignore[arg-type]
        for creds in made:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                    sql.Identifier(creds.database)
                )
            )
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(creds.user)))


def run_product(
    tree: Tree, environment: str, credentials: dict[str, Credentials]
) -> tuple[dict[str, DatabaseOutcome], int]:
    """The product's migrate verbs, as the flow runs them (without Prefect)."""
    catalog = environments.catalog(environment, tree.settings)
    ctx = RunContext.create(
        environment, list(catalog.databases.values()), credentials, tree.settings
    )
    log = logging.getLogger("real-world-sets")
    steps = Steps(
        inspect=migrate.inspect,
        validate=lambda c, d: migrate.validate(c, d, migrate.flyway_log_sink(log, d)),
        migrate=lambda c, d: migrate.migrate(c, d, migrate.flyway_log_sink(log, d)),
    )
    try:
        outcomes = {db: migrate.migrate_database(ctx, db, steps, log) for db in credentials}
    finally:
        ctx.close()
    return outcomes, ctx.engine_starts


def run_command_line(
    inst: Installation, tree: Tree, database: str, environment: str, creds: Credentials
) -> None:
    """Flyway's own command line on the same files: the root's flyway.toml, the folder's own."""
    folder = tree.root / database
    files = [f for f in (tree.root / "flyway.toml", folder / "flyway.conf") if f.exists()]
    placeholders = environments.get(environment, tree.settings).flyway_placeholders()
    done = subprocess.run(
        [
            *flyway.command_line(inst),
            f"-configFiles={','.join(map(str, files))}",
            # Flyway's [environments.<env>] tables; a .conf file has none.
            *([f"-environment={environment}"] if database == "shop" else []),
            f"-url={creds.jdbc_url}",
            f"-user={creds.user}",
            f"-password={creds.password.get_secret_value()}",
            f"-locations=filesystem:{folder}",
            *(f"-placeholders.{k}={v}" for k, v in placeholders.items()),
            "migrate",
        ],
        capture_output=True,
        text=True,
        check=False,
        cwd=tree.root,
        env={**os.environ, "LC_ALL": "C.UTF-8"},  # a Flyway user's shell
    )
    assert done.returncode == 0, done.stdout + done.stderr


def history(creds: Credentials, table: str) -> list[tuple[object, ...]]:
    rows = read_history(creds, table) or []
    return [(r.version, r.description, r.script, r.checksum, r.success) for r in rows]


def fingerprint(creds: Credentials, table: str) -> dict[str, str]:
    with connect(creds) as conn:
        return live_fingerprint(conn, table)


TABLES = {"shop": "app.flyway_schema_history", "legacy": "schema_version"}


@pytest.mark.parametrize("database", ["shop", "legacy"])
@pytest.mark.parametrize("environment", ["staging", "prod"])
def test_each_set_migrates_as_flyways_command_line_does_and_reruns_without_a_jvm(
    tmp_path: Path,
    owner: Callable[[str], Credentials],
    flyway_installation: Installation,
    environment: str,
    database: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tree = write_tree(tmp_path / "sql", database)
    # Pods often run with no locale at all: non-ASCII file names must survive it.
    monkeypatch.delenv("LANG", raising=False)
    monkeypatch.delenv("LC_ALL", raising=False)
    product, command_line = owner(f"{database}_product"), owner(f"{database}_flyway")
    table = TABLES[database]

    outcomes, jvm_starts = run_product(tree, environment, {database: product})
    run_command_line(flyway_installation, tree, database, environment, command_line)

    assert outcomes[database].state is OutcomeState.MIGRATED
    assert jvm_starts == 1
    assert history(product, table) == history(command_line, table)
    assert fingerprint(product, table) == fingerprint(command_line, table)
    assert all(row[-1] for row in history(product, table))
    assert not invalid_indexes(product)
    if database == "shop":
        assert_shop(product, environment)
    else:
        assert_legacy(product)

    again, jvm_starts = run_product(tree, environment, {database: product})
    assert again[database].state is OutcomeState.UP_TO_DATE
    assert jvm_starts == 0


def assert_shop(product: Credentials, environment: str) -> None:
    versions = [r[0] for r in history(product, TABLES["shop"]) if r[0]]
    assert versions == ["1", "1.1", "1.2", "3", "4", "5", "6", "10", "55"]
    scripts = {r[2] for r in history(product, TABLES["shop"])}
    assert f"V4__{CAFE_NFC}_nfc.sql" in scripts
    assert f"V5__{CAFE_NFD}_nfd.sql" in scripts
    with connect(product) as conn:
        # ${ignoreIfProd}: the seed row is there everywhere but prod.
        seeded = conn.execute("SELECT name, region FROM app.account").fetchall()
        view = conn.execute("SELECT DISTINCT greeting, env, schema FROM app.account_view")
        shown = view.fetchall()
    assert seeded == ([] if environment == "prod" else [("test", "us")])
    assert shown == ([] if environment == "prod" else [("hello", "staging", "app")])


def assert_legacy(product: Credentials) -> None:
    with connect(product) as conn:
        assert conn.execute("SELECT name FROM tenant").fetchall() == [("acme",)]
        comment = conn.execute("SELECT obj_description('tenant'::regclass)").fetchone()
    assert comment == ("na\u00efve",)


# --- A team's own sets, as a new user points the product at them ------------------------------

PROTECTED_LOCAL = """[environments.local]
local = true

[environments.local.lint]
max_level = "error"        # every finding at its full level, as in prod

[environments.local.approval]
required = true
"""


@pytest.fixture
def team_sets(tmp_path: Path) -> Path:
    """A tree of two sets, neither written for this product: UAA's 69 real migrations (from its
    jar on Maven Central) and a 411-migration set of the shapes real sets hold, with the
    flyway.toml its placeholders need and no ameide.toml."""
    tree = tmp_path / "sets"
    shutil.copytree(real_world_set(REPO / ".cache") / UAA_DATABASE_NAME, tree / "uaa")
    write_evolving_set(tree / "shop")
    return tree


@pytest.fixture
def new_user(user_machine_venv: UserMachine, tmp_path: Path) -> Iterator[UserMachine]:
    """The clone with a HOME of its own: its own embedded PostgreSQL and Prefect server, which
    no other test's deployments share."""
    home = tmp_path / "home"
    home.mkdir()
    m2 = Path.home() / ".m2"
    if m2.exists():
        (home / ".m2").symlink_to(m2)
    machine = UserMachine(user_machine_venv.clone, home, clean_environment(home))
    try:
        yield machine
    finally:
        machine.ameide("local", "down", timeout=120)


@pytest.mark.slow
def test_a_teams_real_sets_plan_in_a_protected_environment_and_migrate_without_ameide_toml(
    new_user: UserMachine, team_sets: Path
) -> None:
    sets = {"AMEIDE_SQL_DIR": str(team_sets)}
    (team_sets / "ameide.toml").write_text(PROTECTED_LOCAL)

    plan = new_user.ameide("run", "--env", "local", "--dry-run", extra_env=sets, timeout=900)

    assert plan.returncode == 0, plan.stdout + plan.stderr
    assert "Traceback" not in plan.stdout + plan.stderr
    assert re.search(r"uaa\s.*would apply", plan.stdout), plan.stdout
    assert re.search(r"shop\s.*would apply", plan.stdout), plan.stdout
    assert "Flyway was not started" not in plan.stdout

    (team_sets / "ameide.toml").unlink()
    first = new_user.ameide("run", "--env", "local", extra_env=sets, timeout=900)

    assert first.returncode == 0, first.stdout + first.stderr
    assert re.search(r"uaa\s.*empty\s.*4\.9\.1\s.*69\s.*migrated\s.*ok", first.stdout), first.stdout
    assert re.search(r"shop\s.*empty\s.*48\.17\s.*411\s.*migrated\s.*ok", first.stdout), (
        first.stdout
    )
    again = new_user.ameide("run", "--env", "local", extra_env=sets, timeout=900)
    assert again.returncode == 0, again.stdout + again.stderr
    assert again.stdout.count("up to date") == 2, again.stdout
