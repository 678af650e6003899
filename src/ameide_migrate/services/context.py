"""A run's context: everything one run needs, shared by its tasks (the migrate steps, the dry
run's plan, the drift check)."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from ameide_migrate.adapters import flyway
from ameide_migrate.adapters.flyway import FlywayEngine, Installation, Request
from ameide_migrate.adapters.postgres.connection import Credentials
from ameide_migrate.config import environments
from ameide_migrate.config.fleets import Fleet
from ameide_migrate.config.lint_rules import LintRules
from ameide_migrate.config.settings import Settings
from ameide_migrate.core import recovery
from ameide_migrate.core.catalog import DatabaseCatalog
from ameide_migrate.core.errors import FlywayCommandFailed, FlywayNotInstalled


class RunContext:
    """Everything one run needs, shared by its tasks: catalog, credentials and the Flyway engine.

    The engine JVM starts on first use, so a run where every database is already current starts
    none; a crashed engine is replaced on the next request.
    """

    def __init__(
        self,
        *,
        environment: str,
        databases: Mapping[str, DatabaseCatalog],
        credentials: Mapping[str, Credentials],
        installation: Installation | None,
        placeholders: Mapping[str, str],
        table: str,
        connect_timeout: int,
        lock_retry_count: int,
        lock_timeout_seconds: float,
        lint_rules: LintRules | None = None,
        long_transaction_seconds: float = 2.0,
        session_name: str | None = None,
        fleet: Fleet | None = None,
    ) -> None:
        self.environment = environment
        self.fleet = fleet
        """The fleet whose targets `databases` are, when they are."""
        self.databases = dict(databases)
        self.credentials = dict(credentials)
        self.installation = installation
        self.placeholders = dict(placeholders)
        self.table = table
        self.connect_timeout = connect_timeout
        self.lock_retry_count = lock_retry_count
        self.lock_timeout_seconds = lock_timeout_seconds
        self.lint_rules = lint_rules or LintRules()
        self.long_transaction_seconds = long_transaction_seconds
        self.session_name = session_name
        """The application_name of the engine's sessions, when they must be found again."""
        self.waited_for: dict[str, dict[int, str]] = {}
        """Per database, the sessions (by pid) whose locks it waited for: those its pre-flight
        check found, and those in the way of a migration lock_timeout cancelled."""
        self.waiting_since: dict[str, float] = {}
        """Per database, when (time.monotonic) it first met one of them."""
        self._engine: FlywayEngine | None = None
        self._engine_lock = threading.Lock()
        self.engine_starts = 0
        self.first_failures: dict[str, FlywayCommandFailed] = {}
        """Each database's first migrate failure of this run: a retry's error (an "already
        exists" the first attempt caused) never hides the original statement and SQLSTATE."""

    @classmethod
    def create(
        cls,
        environment: str,
        databases: list[DatabaseCatalog] | Mapping[str, DatabaseCatalog],
        credentials: Mapping[str, Credentials],
        settings: Settings,
        session_name: str | None = None,
        fleet: Fleet | None = None,
    ) -> RunContext:
        """`databases` by their own names, or as a mapping: a fleet's targets are each a
        database of the same template (`fleet`'s)."""
        try:
            inst: Installation | None = flyway.installation(
                settings.flyway_home, settings.flyway_version, settings.java
            )
        except FlywayNotInstalled:
            inst = None  # a run with nothing to apply needs no Flyway; engine() says how to fix
        env = environments.get(environment, settings)
        return cls(
            environment=environment,
            databases=databases
            if isinstance(databases, Mapping)
            else {db.name: db for db in databases},
            credentials=credentials,
            installation=inst,
            placeholders=env.flyway_placeholders(),
            table=settings.flyway_table,
            connect_timeout=settings.connect_timeout_seconds,
            lock_retry_count=settings.lock_retry_count,
            lock_timeout_seconds=env.lock_timeout_seconds or settings.lock_timeout_seconds,
            lint_rules=env.lint,
            long_transaction_seconds=settings.long_transaction_seconds,
            session_name=session_name,
            fleet=fleet,
        )

    def subject(self, database: str) -> recovery.Subject:
        """`database` as a fix names it: a fleet's target by its fleet and target."""
        if self.fleet is None:
            return recovery.Subject(self.environment, database)
        target = database.removeprefix(self.fleet.database_of(""))
        return recovery.Subject(self.environment, database, self.fleet.name, target)

    @property
    def engine_started(self) -> bool:
        return self.engine_starts > 0

    def engine(self) -> FlywayEngine:
        with self._engine_lock:
            if self._engine is not None and not self._engine.alive:
                self._engine.close()
                self._engine = None
            if self._engine is None:
                if self.installation is None:
                    raise FlywayNotInstalled(
                        "Flyway is not installed: run `ameide-migrate flyway install`"
                    )
                # A migration waiting on an application's lock fails after lock_timeout with
                # SQLSTATE 55P03, a transient fault the task retries, instead of waiting forever.
                timeout_ms = round(self.lock_timeout_seconds * 1000)
                options = f"?options=-c%20lock_timeout%3D{timeout_ms}ms"
                if self.session_name:
                    options += f"&ApplicationName={quote(self.session_name)}"
                targets = {
                    db: flyway.Target(c.jdbc_url + options, c.user, c.password)
                    for db, c in self.credentials.items()
                }
                self._engine = FlywayEngine(self.installation, targets)
                self.engine_starts += 1
            return self._engine

    def close(self) -> None:
        with self._engine_lock:
            if self._engine is not None:
                self._engine.close()
                self._engine = None

    def history_table(self, database: str) -> str:
        """Where Flyway keeps the database's history: its flyway.toml's table, qualified by its
        defaultSchema (or first of schemas) when one is set."""
        return history_table_of(self.databases[database], self.table)

    def request(self, command: str, database: str, **options: Any) -> Request:
        db = self.databases[database]
        return Request(
            command=command,
            database=database,
            locations=(f"filesystem:{db.directory}",),
            # The catalog's placeholders already hold the environment's; a catalog read without
            # an environment gets them here. Flyway matches names case-insensitively.
            placeholders={
                **{k.lower(): v for k, v in self.placeholders.items()},
                **db.flyway.placeholders,
            },
            table=db.flyway.settings.get("table", self.table),
            configuration=_noticing_a_gone_client(db.flyway.engine_settings()),
            **options,
        )


# A migration's session whose JVM died (the run stopped, killed) ends within a second on
# PostgreSQL 14+, its locks with it, instead of running its statement to the end first; older
# servers have no such setting and are left as they were.
_CHECK_THE_CLIENT = (
    "DO $$BEGIN IF current_setting('server_version_num')::int >= 140000 THEN "
    "PERFORM set_config('client_connection_check_interval', '1s', false); END IF; END$$"
)


def _noticing_a_gone_client(configuration: dict[str, str]) -> dict[str, str]:
    """Flyway's configuration with the client check first in its initSql (the set's own after)."""
    own = configuration.get("flyway.initSql")
    return {
        **configuration,
        "flyway.initSql": f"{_CHECK_THE_CLIENT};\n{own}" if own else _CHECK_THE_CLIENT,
    }


def history_table_of(db: DatabaseCatalog, default_table: str) -> str:
    """Where Flyway keeps the history of `db`: its flyway.toml's table (else `default_table`),
    qualified by its defaultSchema (or first of schemas) when one is set."""
    table = db.flyway.settings.get("table", default_table)
    return f"{db.flyway.schema}.{table}" if db.flyway.schema else table
