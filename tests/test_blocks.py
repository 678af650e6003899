"""The Vault block meets Prefect's block standards, registers, and is what the flow reads."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import cast
from uuid import UUID

import pytest
from prefect.blocks.core import Block
from prefect.client.orchestration import get_client
from prefect.testing.standard_test_suites.blocks import BlockStandardTestSuite
from pydantic import SecretStr

from ameide_migrate.adapters.prefect.local_server import Server
from ameide_migrate.blocks import VaultDatabaseSecrets
from ameide_migrate.flows.secrets import vault_block_connection

from .fix_platform import REPO


class TestVaultBlockMeetsPrefectsBlockStandards(BlockStandardTestSuite):
    """Prefect's own standard suite for blocks: a description, a documentation address, a
    described field each, a code example that imports and loads the block."""

    @pytest.fixture
    def block(self) -> type[Block]:
        return VaultDatabaseSecrets

    def test_has_a_valid_image(self, block: type[Block]) -> None:
        # Prefect's version downloads the logo; this machine has no network. The UI shows it
        # from this address.
        assert str(block._logo_url).startswith("https://avatars.githubusercontent.com/")


def test_block_has_description_logo_and_code_example() -> None:
    assert VaultDatabaseSecrets._description
    assert str(VaultDatabaseSecrets._logo_url).startswith("https://")
    assert "VaultDatabaseSecrets(" in str(VaultDatabaseSecrets._code_example)
    fields = VaultDatabaseSecrets.model_fields
    assert fields["token"].annotation == SecretStr | None
    assert fields["secret_id"].annotation == SecretStr | None


def test_block_type_registers_with_prefect(prefect_server: Server) -> None:
    done = subprocess.run(
        [
            str(Path(sys.executable).parent / "prefect"),
            "block",
            "register",
            "-m",
            "ameide_migrate.blocks",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    with get_client(sync_client=True) as client:
        block_type = client.read_block_type_by_slug("vault-database-secrets")
    assert block_type.name == "Vault Database Secrets"


def test_the_flow_reads_the_saved_block_and_the_token_stays_secret(prefect_server: Server) -> None:
    # An environment of this test's own: a saved vault-prod would steer every later prod run of
    # the session's server to this address.
    environment = "blocktest"
    saved = VaultDatabaseSecrets(
        address="https://vault.example:8200",
        auth_method="token",
        token=SecretStr("s.block-token-value"),
        kv_mount="kv",
    ).save(f"vault-{environment}", overwrite=True)
    try:
        conn = vault_block_connection(environment)

        assert conn is not None
        assert conn.address == "https://vault.example:8200"
        assert conn.kv_mount == "kv"
        assert conn.token is not None
        assert conn.token.get_secret_value() == "s.block-token-value"
        assert "block-token-value" not in repr(conn)
        with get_client(sync_client=True) as client:
            stored = client.read_block_document_by_name(
                f"vault-{environment}", "vault-database-secrets", include_secrets=False
            )
        assert "block-token-value" not in str(stored.data)
        assert vault_block_connection("blocktest-unsaved") is None
    finally:
        with get_client(sync_client=True) as client:
            client.delete_block_document(cast(UUID, saved))
