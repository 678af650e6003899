"""The Vault connection of one environment, as a Prefect block (saved as `vault-<env>`).

Connection data only: `get_connection()` hands it to `ameide_migrate.vault`, which logs in.
Register the block type with `prefect block register -m ameide_migrate.blocks`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from prefect.blocks.core import Block
from pydantic import Field, SecretStr

from ameide_migrate.vault import VaultConnection


class VaultDatabaseSecrets(Block):
    """Where an environment's database credentials live in Vault, and how to log in to read them.

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

    address: str = Field(description="Vault address, e.g. https://vault.internal:8200.")
    namespace: str | None = Field(default=None, description="Vault Enterprise namespace.")
    kv_mount: str = Field(default="secret", description="Mount of the KV v2 engine.")
    path_template: str = Field(
        default="{environment}/databases/{database}",
        description="Secret path under the mount; {environment} and {database} are filled in.",
    )
    auth_method: Literal["token", "approle", "kubernetes"] = Field(
        default="kubernetes", description="How runs log in: token, approle or kubernetes."
    )
    token: SecretStr | None = Field(default=None, description="Token auth: the token.")
    approle_mount: str = Field(default="approle", description="AppRole auth: its mount.")
    role_id: str | None = Field(default=None, description="AppRole auth: the role_id.")
    secret_id: SecretStr | None = Field(default=None, description="AppRole auth: the secret_id.")
    kubernetes_mount: str = Field(default="kubernetes", description="Kubernetes auth: its mount.")
    kubernetes_role: str | None = Field(default=None, description="Kubernetes auth: the role.")
    service_account_token_path: Path = Field(
        default=Path("/var/run/secrets/kubernetes.io/serviceaccount/token"),
        description="Kubernetes auth: the projected service-account token.",
    )
    verify_tls: bool = Field(default=True, description="Check Vault's TLS certificate.")
    ca_cert_path: Path | None = Field(default=None, description="CA bundle for Vault's TLS.")

    def get_connection(self) -> VaultConnection:
        return VaultConnection(
            address=self.address,
            namespace=self.namespace,
            kv_mount=self.kv_mount,
            path_template=self.path_template,
            auth_method=self.auth_method,
            token=self.token,
            approle_mount=self.approle_mount,
            role_id=self.role_id,
            secret_id=self.secret_id,
            kubernetes_mount=self.kubernetes_mount,
            kubernetes_role=self.kubernetes_role,
            service_account_token_path=self.service_account_token_path,
            verify_tls=self.verify_tls,
            ca_cert_path=self.ca_cert_path,
        )
