"""Where Vault is, how to log in, and where an environment's secrets live in it: settings only,
read and validated without hvac (which `ameide_migrate.adapters.vault`, the client, imports)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

AuthMethod = Literal["token", "approle", "kubernetes"]


class VaultLayout(BaseModel):
    """Where an environment's database secrets live in Vault and how its runs log in. Vault's
    address and credentials come from the `vault-<env>` block or VAULT_ADDR, never this file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kv_mount: str = Field(default="secret", description="Mount of the KV v2 engine.")
    path_template: str = Field(
        default="{environment}/databases/{database}",
        description="Secret path under the mount; {environment} and {database} are filled in.",
    )
    auth_method: Literal["token", "approle", "kubernetes"] | None = Field(
        default=None, description="How runs log in; AMEIDE_VAULT_AUTH_METHOD when unset."
    )
    kubernetes_role: str | None = None
    kubernetes_mount: str | None = None


class VaultSettings(BaseModel):
    """Where Vault is and how to log in: the one definition, read from VAULT_*/AMEIDE_VAULT_*
    variables (`Settings.vault`) and saved as the `vault-<env>` block's schema (blocks.py).
    Secrets stay `SecretStr` until the HTTP call."""

    model_config = ConfigDict(frozen=True)

    address: str = Field(description="Vault address, e.g. https://vault.internal:8200.")
    namespace: str | None = Field(default=None, description="Vault Enterprise namespace.")
    kv_mount: str = Field(default="secret", description="Mount of the KV v2 engine.")
    path_template: str = Field(
        default="{environment}/databases/{database}",
        description="Secret path under the mount; {environment} and {database} are filled in.",
    )
    auth_method: AuthMethod = Field(
        default="token", description="How runs log in: token, approle or kubernetes."
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
    timeout_seconds: float = Field(
        default=5.0, gt=0, description="How long one request to Vault may take."
    )

    def path(self, environment: str, database: str) -> str:
        return self.path_template.format(environment=environment, database=database)

    def display_path(self, environment: str, database: str) -> str:
        return f"{self.kv_mount}/{self.path(environment, database)}"

    @property
    def who(self) -> str:
        """The identity used to log in, for messages."""
        if self.auth_method == "approle":
            return f"AppRole role_id {self.role_id} (mount {self.approle_mount})"
        if self.auth_method == "kubernetes":
            return f"Kubernetes role {self.kubernetes_role} (mount {self.kubernetes_mount})"
        return "the configured token"
