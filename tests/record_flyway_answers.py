"""Record what real Flyway answers, once, for the fast tier (tests/data/flyway_answers.json).

    uv run python -m tests.record_flyway_answers

starts a throwaway PostgreSQL cluster and the pinned Flyway's engine (`ameide-migrate flyway
install` first), and for each scenario builds a small SQL tree, migrates a database of its own
with real Flyway, tampers it as a person or a branch would, and saves what the fast tests need:
the files, the history rows as psycopg reads them, and Flyway's own `info` and `validate` results.
It also saves the checksums Flyway records for files that trip naive checksums, and the error
objects the engine sends for Flyway's exceptions (before `flyway.classify` reads them). The fast
tests rebuild each tree from the saved files and check the native code against these answers:
rerun this after a Flyway upgrade and the fast tier compares against the new release.
"""

from __future__ import annotations

import json
import os
import secrets
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any, LiteralString

from pydantic import SecretStr

from ameide_migrate.adapters import flyway, ports
from ameide_migrate.adapters.flyway import FlywayEngine, Request, Target
from ameide_migrate.adapters.pg_cluster import Cluster
from ameide_migrate.adapters.postgres.connection import Credentials, connect, server_major
from ameide_migrate.adapters.postgres.provisioning import ensure_roles_and_databases
from ameide_migrate.adapters.postgres.schema_history import read_history
from ameide_migrate.config.settings import Settings
from ameide_migrate.core.catalog import load_catalog
from ameide_migrate.core.errors import FlywayCommandFailed
from tests.fix_flyway import install

OUT = Path(__file__).resolve().parent / "data" / "flyway_answers.json"
TABLE = "flyway_schema_history"
PLACEHOLDERS = {"environment": "staging"}
IGNORE_PENDING = ("*:pending", "*:future")

# A small shop database: tables, a dotted version, an index and a repeatable view.
SHOP = {
    "V1__create_orders.sql": "CREATE TABLE orders (id int PRIMARY KEY, note text);\n",
    "V2__add_customer.sql": "ALTER TABLE orders ADD COLUMN customer text;\n",
    "V3__orders_customer_index.sql": "CREATE INDEX orders_customer_idx ON orders (customer);\n",
    "V3_1__seed_orders.sql": (
        "INSERT INTO orders VALUES (1, 'first', 'ann'), (2, 'second', 'ann');\n"
    ),
    "R__recent_orders.sql": "CREATE OR REPLACE VIEW recent_orders AS SELECT id FROM orders;\n",
}

# The repeatable edited: a column added, which CREATE OR REPLACE VIEW allows.
CHANGED_VIEW = "CREATE OR REPLACE VIEW recent_orders AS SELECT id, note FROM orders;\n"

# Files that trip naive checksums: CRLF and lone CR line ends, a byte-order mark, non-ASCII text,
# no final newline, blank lines, and a repeatable whose checksum depends on a placeholder's value.
TRICKY = {
    "V1__crlf.sql": "CREATE TABLE crlf (id int);\r\n\r\nCOMMENT ON TABLE crlf IS 'windows';\r\n",
    "V2__bom.sql": "\ufeffCREATE TABLE bom (id int);\n",
    "V3__non_ascii.sql": (
        "CREATE TABLE caf\u00e9 (\u540d\u524d text);\n-- \u00fcml\u00e4ut \U0001f680\n"
    ),
    "V4__no_final_newline_and_cr.sql": "CREATE TABLE cr (id int);\r-- old mac line end\rSELECT 1;",
    "V5_1__dotted_version.sql": "SELECT 1;\n",
    "R__placeholder_view.sql": (
        "CREATE OR REPLACE VIEW env AS\n"
        "SELECT '${environment}'::text AS e, '${flyway:filename}'::text AS f;\n"
    ),
    "R__plain_view.sql": "CREATE OR REPLACE VIEW plain AS SELECT 1 AS one;\n\n",
}

# A set read in ISO-8859-1, as its flyway.conf says.
LATIN1 = {
    "flyway.conf": "flyway.encoding=ISO-8859-1\n",
    "V1__caf\u00e9.sql": (
        "CREATE TABLE menu (plat text);\nINSERT INTO menu VALUES ('cr\u00e8me br\u00fbl\u00e9e');\n"
    ),
}


class Recorder:
    def __init__(self, admin: Credentials, inst: flyway.Installation, scratch: Path) -> None:
        self.admin = admin
        self.inst = inst
        self.scratch = scratch
        self.errors: dict[str, Any] = {}

    def database(self, name: str) -> Credentials:
        owner = Credentials(
            self.admin.host, self.admin.port, name, f"{name}_owner", self.admin.password
        )
        ensure_roles_and_databases(self.admin, [owner])
        return owner

    def tree(self, name: str, files: Mapping[str, str]) -> Path:
        """The files as a SQL tree of one database `name`; the folder's files are replaced."""
        folder = self.scratch / name / "sql" / name
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.iterdir():
            old.unlink()
        encoding = "iso-8859-1" if "flyway.conf" in files else "utf-8"
        for file, text in files.items():
            (folder / file).write_bytes(text.encode(encoding))
        return folder

    @contextmanager
    def engine(self, owner: Credentials, jdbc_options: str = "") -> Iterator[FlywayEngine]:
        engine = FlywayEngine(
            self.inst,
            {owner.database: Target(owner.jdbc_url + jdbc_options, owner.user, owner.password)},
        )
        try:
            yield engine
        finally:
            engine.close()

    def request(self, command: str, folder: Path, **options: Any) -> Request:
        db = load_catalog(folder.parent, placeholders=PLACEHOLDERS).databases[folder.name]
        return Request(
            command,
            folder.name,
            (f"filesystem:{folder}",),
            PLACEHOLDERS,
            TABLE,
            configuration=db.flyway.engine_settings(),
            **options,
        )

    def answers(self, engine: FlywayEngine, owner: Credentials, folder: Path) -> dict[str, Any]:
        history = read_history(owner, TABLE)
        info = engine.run(self.request("info", folder))
        validation = engine.run(
            self.request("validate", folder, ignore_migration_patterns=IGNORE_PENDING)
        )
        return {
            "history": None if history is None else [asdict(r) for r in history],
            "info": info,
            "validate": validation,
        }

    def error(self, name: str, engine: FlywayEngine, refused: Request) -> None:
        """Run a request Flyway refuses and keep the error object the engine sent for it."""
        seen: list[Mapping[str, Any]] = []
        real = flyway.classify

        def keep(request: Request, error: Mapping[str, Any]) -> FlywayCommandFailed:
            seen.append(error)
            return real(request, error)

        flyway.classify = keep
        try:
            engine.run(refused)
        except FlywayCommandFailed:
            pass
        finally:
            flyway.classify = real
        assert seen, f"{name}: Flyway did not refuse it"
        self.errors[name] = {"command": refused.command, "error": seen[0]}


def _sql(owner: Credentials, statement: LiteralString) -> None:
    with connect(owner) as conn:
        conn.execute(statement)


def _insert_row(owner: Credentials, version: str, script: str, *, success: bool) -> None:
    with connect(owner) as conn:
        conn.execute(
            "INSERT INTO flyway_schema_history (installed_rank, version, description, type, "
            "script, checksum, installed_by, execution_time, success) "
            "SELECT max(installed_rank) + 1, %s, 'by hand', 'SQL', %s, 7, 'me', 1, %s "
            "FROM flyway_schema_history",
            (version, script, success),
        )


def _insert_rows(owner: Credentials, rows: list[tuple[str, str]]) -> None:
    for version, script in rows:
        _insert_row(owner, version, script, success=True)


def _edited(files: Mapping[str, str], name: str, text: str) -> dict[str, str]:
    return {**files, name: text}


def _without(files: Mapping[str, str], name: str) -> dict[str, str]:
    return {k: v for k, v in files.items() if k != name}


# name -> (files to migrate, what is done to the database after, the files Flyway then reads)
Tamper = Callable[[Credentials], None]
SCENARIOS: dict[str, tuple[dict[str, str] | None, Tamper | None, dict[str, str]]] = {
    "never migrated": (None, None, SHOP),
    "up to date": (SHOP, None, SHOP),
    "new migrations": (
        _without(_without(SHOP, "V3__orders_customer_index.sql"), "V3_1__seed_orders.sql"),
        None,
        SHOP,
    ),
    "edited applied file": (
        SHOP,
        None,
        _edited(SHOP, "V2__add_customer.sql", SHOP["V2__add_customer.sql"] + "-- edited by hand\n"),
    ),
    "renamed description": (
        SHOP,
        None,
        {
            **_without(SHOP, "V2__add_customer.sql"),
            "V2__add_the_customer.sql": SHOP["V2__add_customer.sql"],
        },
    ),
    "deleted history row": (
        SHOP,
        lambda o: _sql(o, "DELETE FROM flyway_schema_history WHERE version = '2'"),
        SHOP,
    ),
    "failed row above the latest": (
        SHOP,
        lambda o: _insert_row(o, "9", "V9__broken.sql", success=False),
        SHOP,
    ),
    "versions the repository lacks": (
        SHOP,
        lambda o: _insert_rows(o, [("2.5", "V2_5__by_hand.sql"), ("12", "V12__from_a_branch.sql")]),
        SHOP,
    ),
    "out of order": (
        SHOP,
        lambda o: _sql(
            o,
            "UPDATE flyway_schema_history SET installed_rank = "
            "(SELECT max(installed_rank) + 1 FROM flyway_schema_history) WHERE version = '2'",
        ),
        SHOP,
    ),
    "changed repeatable": (
        SHOP,
        None,
        _edited(
            SHOP,
            "R__recent_orders.sql",
            CHANGED_VIEW,
        ),
    ),
    "file removed": (SHOP, None, _without(SHOP, "V2__add_customer.sql")),
    "repeatable removed": (SHOP, None, _without(SHOP, "R__recent_orders.sql")),
}


def record_scenarios(rec: Recorder) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for i, (name, (applied, tamper, files)) in enumerate(SCENARIOS.items()):
        owner = rec.database(f"scenario{i}")
        with rec.engine(owner) as engine:
            if applied is not None:
                engine.run(rec.request("migrate", rec.tree(owner.database, applied)))
            if tamper is not None:
                tamper(owner)
            folder = rec.tree(owner.database, files)
            out[name] = {"files": files, **rec.answers(engine, owner, folder)}
    # A repeatable applied twice: its first run is superseded by the second.
    owner = rec.database("superseded")
    changed = _edited(SHOP, "R__recent_orders.sql", CHANGED_VIEW)
    with rec.engine(owner) as engine:
        engine.run(rec.request("migrate", rec.tree(owner.database, SHOP)))
        folder = rec.tree(owner.database, changed)
        engine.run(rec.request("migrate", folder))
        out["repeatable applied twice"] = {"files": changed, **rec.answers(engine, owner, folder)}
    # A database made by hand up to version 2, baselined there by `flyway baseline`, then migrated.
    owner = rec.database("baselined")
    _sql(owner, "CREATE TABLE orders (id int PRIMARY KEY, note text, customer text)")
    with rec.engine(owner) as engine:
        folder = rec.tree(owner.database, SHOP)
        engine.run(
            Request(
                "baseline",
                owner.database,
                (f"filesystem:{folder}",),
                PLACEHOLDERS,
                TABLE,
                configuration={"flyway.baselineVersion": "2"},
            )
        )
        engine.run(rec.request("migrate", folder))
        out["baselined at 2"] = {"files": SHOP, **rec.answers(engine, owner, folder)}
    return out


def record_checksums(rec: Recorder) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, files in (("tricky", TRICKY), ("latin1", LATIN1)):
        owner = rec.database(name)
        folder = rec.tree(name, files)
        with rec.engine(owner) as engine:
            engine.run(rec.request("migrate", folder))
        history = read_history(owner, TABLE) or []
        out[name] = {
            "files": files,
            "placeholders": PLACEHOLDERS,
            "recorded": {r.script: r.checksum for r in history},
        }
    return out


def record_errors(rec: Recorder) -> None:
    owner = rec.database("errors")
    broken = {
        "syntax error": "CREATE TABLE broken (;\n",
        "duplicate key": "INSERT INTO orders VALUES (1, 'again', 'bob');\n",
        "unique index concurrently over duplicates": (
            "CREATE UNIQUE INDEX CONCURRENTLY orders_customer_key ON orders (customer);\n"
        ),
    }
    with rec.engine(owner) as engine:
        engine.run(rec.request("migrate", rec.tree(owner.database, SHOP)))
        for name, text in broken.items():
            request = rec.request(
                "migrate", rec.tree(owner.database, {**SHOP, "V4__next.sql": text})
            )
            rec.error(name, engine, request)
            _sql(owner, "DROP INDEX IF EXISTS orders_customer_key")
            _sql(owner, "DELETE FROM flyway_schema_history WHERE version = '4'")
    # A lock held by an application: the migration waits lock_timeout, then 55P03.
    folder = rec.tree(
        owner.database, {**SHOP, "V4__next.sql": "ALTER TABLE orders ADD COLUMN x int;\n"}
    )
    with (
        rec.engine(owner, "?options=-c%20lock_timeout%3D1s") as engine,
        connect(owner) as holder,
        holder.transaction(),
    ):
        holder.execute("LOCK TABLE orders IN ACCESS EXCLUSIVE MODE")
        rec.error("lock timeout", engine, rec.request("migrate", folder))
    wrong = Credentials(owner.host, owner.port, owner.database, owner.user, SecretStr("wrong"))
    with rec.engine(wrong) as engine:
        rec.error("wrong password", engine, rec.request("info", folder))
    closed = Credentials(owner.host, ports.free_port(), owner.database, owner.user, owner.password)
    with rec.engine(closed) as engine:
        rec.error("connection refused", engine, rec.request("migrate", folder))
    missing = rec.tree("nosuchdb", SHOP)
    absent = Credentials(owner.host, owner.port, "nosuchdb", owner.user, owner.password)
    with rec.engine(absent) as engine:
        rec.error("database does not exist", engine, rec.request("info", missing))


def main() -> None:
    settings = Settings()
    inst = install(settings.flyway_version)
    with tempfile.TemporaryDirectory(prefix="ameide-record-") as scratch:
        os.chmod(scratch, 0o755)
        cluster = Cluster(Path(scratch) / "cluster", SecretStr(secrets.token_urlsafe(16)))
        cluster.init()
        cluster.start()
        try:
            rec = Recorder(cluster.admin, inst, Path(scratch) / "trees")
            server = server_major(cluster.admin)
            answers = {
                "recorded": {
                    "how": "uv run python -m tests.record_flyway_answers",
                    "flyway": inst.version,
                    "postgresql_major": server,
                    "placeholders": PLACEHOLDERS,
                    "validate_ignores": list(IGNORE_PENDING),
                },
                "checksums": record_checksums(rec),
                "scenarios": record_scenarios(rec),
            }
            record_errors(rec)
            answers["errors"] = rec.errors
        finally:
            cluster.stop("immediate")
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(json.dumps(answers, indent=1, ensure_ascii=False, sort_keys=True) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
