"""`secrets verify`: the secret gate from the command line."""

from __future__ import annotations

from ameide_migrate.adapters.postgres.connection import Credentials
from ameide_migrate.commands.fleet import fleet_databases
from ameide_migrate.commands.shared import verified, verify_databases
from ameide_migrate.config.settings import Settings


def verify_secrets(
    settings: Settings,
    env: str,
    databases: list[str] | None = None,
    *,
    fleet_name: str | None = None,
    targets: list[str] | None = None,
) -> dict[str, Credentials]:
    """The secret gate from the command line: Vault from VAULT_ADDR and friends (flows also read
    the Prefect block `vault-<env>`); for the local environment without Vault, the local store.
    The databases of the tree, or a fleet's `targets` (all when none is named)."""
    if fleet_name is None:
        return verify_databases(settings, env, databases)
    return verified(settings, env, list(fleet_databases(settings, env, fleet_name, targets)[1]))
