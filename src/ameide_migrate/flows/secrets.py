"""The secret gate as a Prefect task: the first step of a run, before any Flyway command."""

from __future__ import annotations

from typing import cast

from prefect import get_run_logger, task

from ameide_migrate import credential_gate, environments
from ameide_migrate.blocks import VaultDatabaseSecrets
from ameide_migrate.flows.retrying import step_options
from ameide_migrate.postgres import Credentials
from ameide_migrate.settings import get_settings
from ameide_migrate.vault import VaultSettings


def vault_block_connection(environment: str) -> VaultSettings | None:
    """The connection saved as the block `vault-<environment>`, when there is one."""
    try:
        block = VaultDatabaseSecrets.load(f"vault-{environment}")
    except ValueError:
        return None
    return cast(VaultDatabaseSecrets, block).get_connection()


@task(**step_options("verify credentials"), task_run_name="verify credentials")
def verify_credentials(
    environment: str, databases: list[str], login: bool = True
) -> dict[str, Credentials]:
    """Every database's `<DB>_DATABASE_URL/_USER/_PASSWORD`: present, well-formed, and (with
    `login`) working."""
    settings = get_settings()
    conn = vault_block_connection(environment)
    with environments.secret_source(environment, settings, conn) as source:
        get_run_logger().info(
            "verifying %d databases' credentials in %s", len(databases), source.location("<db>")
        )
        return credential_gate.verify_secrets(
            source, databases, connect_timeout=settings.connect_timeout_seconds, login=login
        )
