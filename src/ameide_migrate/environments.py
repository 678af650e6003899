"""The environments a platform migrates, and where each one's database credentials come from."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from ameide_migrate import vault
from ameide_migrate.catalog import Catalog, load_catalog
from ameide_migrate.credential_gate import LocalStoreSource, SecretSource, VaultSource
from ameide_migrate.errors import CredentialsMissing, UnknownEnvironment
from ameide_migrate.settings import Settings

ENVIRONMENTS = ("local", "staging", "prod")


def check(name: str) -> str:
    if name not in ENVIRONMENTS:
        raise UnknownEnvironment(name, ENVIRONMENTS)
    return name


def placeholders(environment: str) -> dict[str, str]:
    """Flyway placeholders every database of `environment` sees."""
    return {"environment": environment}


def catalog(environment: str, settings: Settings) -> Catalog:
    """The SQL tree as this environment's Flyway sees it (its placeholders, its history table)."""
    return load_catalog(
        settings.sql_dir,
        placeholders=placeholders(check(environment)),
        table=settings.flyway_table,
    )


@contextmanager
def secret_source(
    environment: str, settings: Settings, conn: vault.VaultConnection | None = None
) -> Iterator[SecretSource]:
    """Vault when a connection is given or configured; for local only, else the local store.

    Staging and prod accept Vault only.
    """
    conn = conn or settings.vault_connection()
    if conn is None:
        if check(environment) == "local":
            yield LocalStoreSource(settings.state_dir)
            return
        raise CredentialsMissing(
            f"environment {environment} reads its database credentials from Vault only, and no "
            f"Vault is configured: save the Prefect block vault-{environment} "
            "(blocks/vault.py), or set VAULT_ADDR with VAULT_TOKEN (or AMEIDE_VAULT_AUTH_METHOD)"
        )
    with vault.session(conn) as client:
        yield VaultSource(environment, conn, client)
