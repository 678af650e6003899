"""The secret gate as a Prefect task: the first step of a run, before any Flyway command."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import cast

import psycopg
from prefect import get_run_logger, task

from ameide_migrate.adapters.postgres.connection import Credentials
from ameide_migrate.adapters.postgres.schema_history import history_on
from ameide_migrate.adapters.secret_sources import SecretSource
from ameide_migrate.blocks import VaultDatabaseSecrets
from ameide_migrate.config.settings import get_settings
from ameide_migrate.config.vault_settings import VaultSettings
from ameide_migrate.core.history import HistoryRow
from ameide_migrate.flows.retrying import step_options
from ameide_migrate.services import credential_gate
from ameide_migrate.services.credential_gate import GateResult


def vault_block_connection(environment: str) -> VaultSettings | None:
    """The connection saved as the block `vault-<environment>`, when there is one."""
    try:
        block = VaultDatabaseSecrets.load(f"vault-{environment}")
    except ValueError:
        return None
    return cast(VaultDatabaseSecrets, block).get_connection()


@task(**step_options("verify credentials"), task_run_name="verify credentials")
def verify_credentials(
    environment: str, databases: list[str], login: bool = True, shown_as: str = "<db>"
) -> dict[str, Credentials]:
    """Every database's `<DB>_DATABASE_URL/_USER/_PASSWORD`: present, well-formed, and (with
    `login`) working. `shown_as` stands for every database where the log names where their
    secrets live."""
    settings = get_settings()
    with _source(environment, len(databases), shown_as) as source:
        return credential_gate.verify_secrets(
            source, databases, connect_timeout=settings.connect_timeout_seconds, login=login
        )


@task(**step_options("verify credentials"), task_run_name="verify credentials")
def verify_credentials_reading_histories(
    environment: str, databases: list[str], history_table: str, shown_as: str = "<db>"
) -> tuple[GateResult, dict[str, list[HistoryRow] | None]]:
    """The gate, as `verify_credentials`, and each database's history (`history_table`) read on
    its login's connection: a fleet's targets cost one connection each before its waves. A
    history that could not be read is left out, for the target's own inspection to report.
    The databases turned away (server down, CONNECT refused) are handed back with why, not
    raised: the fleet decides whether it goes on without them. `shown_as` stands for every
    database where the log names where their secrets live (a fleet's `tenant_<target>`)."""
    histories: dict[str, list[HistoryRow] | None] = {}

    def read(database: str, creds: Credentials, conn: psycopg.Connection) -> None:
        histories[database] = history_on(conn, creds, history_table)

    settings = get_settings()
    with _source(environment, len(databases), shown_as) as source:
        gate = credential_gate.verify_reachable(
            source, databases, connect_timeout=settings.connect_timeout_seconds, on_login=read
        )
    return gate, histories


@contextmanager
def _source(environment: str, count: int, shown_as: str) -> Iterator[SecretSource]:
    conn = vault_block_connection(environment)
    with credential_gate.secret_source(environment, get_settings(), conn) as source:
        get_run_logger().info(
            "verifying %d databases' credentials in %s", count, source.location(shown_as)
        )
        yield source
