"""The Vault connection of one environment, as a Prefect block (saved as `vault-<env>`).

Connection data only: `get_connection()` hands it to `ameide_migrate.adapters.vault`, which logs in.
Register the block type with `prefect block register -m ameide_migrate.blocks`.
"""

from __future__ import annotations

from prefect.blocks.core import Block

from ameide_migrate.config.vault_settings import VaultSettings


class VaultDatabaseSecrets(Block, VaultSettings):
    """Where an environment's database credentials live in Vault, and how to log in to read them.

    Its fields are `VaultSettings`, the one definition the AMEIDE_VAULT_* variables fill too.
    One KV v2 secret per database at `<kv_mount>/<path_template>`, holding `<DB>_DATABASE_URL`,
    `<DB>_DATABASE_USER` and `<DB>_DATABASE_PASSWORD`.
    """

    _block_type_name = "Vault Database Secrets"
    _block_type_slug = "vault-database-secrets"
    _logo_url = "https://avatars.githubusercontent.com/u/761456?s=200&v=4"  # type: ignore[assignment]
    _description = (
        "Vault (or OpenBao) address, KV v2 mount and path layout, and the auth method "
        "(token, AppRole or Kubernetes) used to read the databases' credentials."
    )
    _documentation_url = "https://developer.hashicorp.com/vault/docs/secrets/kv/kv-v2"  # type: ignore[assignment]
    _code_example = """```python
from ameide_migrate.blocks import VaultDatabaseSecrets

VaultDatabaseSecrets(
    address="https://vault.internal:8200",
    auth_method="kubernetes",
    kubernetes_role="db-migrations",
).save("vault-staging")

# What a run of staging does with it:
vault_staging = VaultDatabaseSecrets.load("BLOCK_NAME")
connection = vault_staging.get_connection()
```"""

    def get_connection(self) -> VaultSettings:
        """The saved settings, as the module that logs in takes them."""
        return VaultSettings.model_validate(
            {field: getattr(self, field) for field in VaultSettings.model_fields}
        )
