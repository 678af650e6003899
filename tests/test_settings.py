"""The one settings object as a person meets it: AMEIDE_* variables, Vault's own variables, the
defaults, and which Vault layout wins when the environments file declares one."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from ameide_migrate.blocks import VaultDatabaseSecrets
from ameide_migrate.config.settings import Settings, get_settings
from ameide_migrate.config.vault_settings import VaultLayout, VaultSettings
from ameide_migrate.core.errors import SettingInvalid


@pytest.fixture(autouse=True)
def nothing_set(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(("AMEIDE_", "VAULT_", "FLYWAY_")):
            monkeypatch.delenv(name)


def test_only_ameide_variables_steer_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAX_CONCURRENCY", "2")
    assert Settings().max_concurrency == 8
    monkeypatch.setenv("AMEIDE_MAX_CONCURRENCY", "3")
    monkeypatch.setenv("AMEIDE_FLYWAY_VERSION", "12.5.0")
    settings = Settings()
    assert settings.max_concurrency == 3
    assert settings.flyway_version == "12.5.0"
    assert settings.flyway_home.parts[-2:] == ("flyway", "12.5.0")


def test_flyways_own_variables_are_handed_to_flyway(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLYWAY_DEFAULT_SCHEMA", "app")
    assert Settings().flyway_variables == {"FLYWAY_DEFAULT_SCHEMA": "app"}


def test_transient_faults_are_retried_for_about_75_seconds_by_default() -> None:
    settings = Settings()
    assert settings.retry_delays == [1, 2, 4, 8, 15, 15, 15, 15]
    assert settings.retry_budget_seconds == 75


def test_no_vault_address_means_no_vault() -> None:
    assert Settings().vault_connection(VaultLayout()) is None


@pytest.mark.parametrize("variable", ["VAULT_ADDR", "AMEIDE_VAULT_ADDR"])
def test_vaults_own_variables_or_ameides_name_the_vault(
    monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    monkeypatch.setenv(variable, "https://vault.example.com:8200")
    monkeypatch.setenv("VAULT_TOKEN", "s.token")
    connection = Settings().vault_connection()
    assert connection is not None
    assert connection.address == "https://vault.example.com:8200"
    assert connection.token is not None
    assert connection.token.get_secret_value() == "s.token"
    assert "s.token" not in repr(connection)


def test_the_environments_layout_wins_unless_a_variable_says_otherwise(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("VAULT_ADDR", "https://vault.example.com:8200")
    layout = VaultLayout(
        kv_mount="kv-qa",
        path_template="qa/{database}",
        auth_method="kubernetes",
        kubernetes_role="db-migrations",
    )
    from_file = Settings().vault_connection(layout)
    assert from_file is not None
    assert (from_file.kv_mount, from_file.path_template) == ("kv-qa", "qa/{database}")
    assert (from_file.auth_method, from_file.kubernetes_role) == ("kubernetes", "db-migrations")

    monkeypatch.setenv("AMEIDE_VAULT_KV_MOUNT", "secret-override")
    monkeypatch.setenv("AMEIDE_VAULT_AUTH_METHOD", "token")
    overridden = Settings().vault_connection(layout)
    assert overridden is not None
    assert overridden.kv_mount == "secret-override"
    assert overridden.auth_method == "token"
    assert overridden.path_template == "qa/{database}"


def test_a_mistyped_vault_variable_is_named_even_with_no_vault_address(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AMEIDE_VAULT_AUTH_METHOD", "ldap")
    with pytest.raises(SettingInvalid, match=r"AMEIDE_VAULT_AUTH_METHOD='ldap'.*approle"):
        get_settings.__wrapped__()


def test_every_vault_field_has_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    """The settings, the block and the variables share one definition: a field the block saves
    is one a variable sets."""
    monkeypatch.setenv("VAULT_ADDR", "https://vault.example.com:8200")
    monkeypatch.setenv("AMEIDE_VAULT_APPROLE_MOUNT", "ci-approle")
    monkeypatch.setenv("AMEIDE_VAULT_VERIFY_TLS", "false")
    monkeypatch.setenv("AMEIDE_VAULT_TIMEOUT_SECONDS", "12.5")
    vault = Settings().vault
    assert vault is not None
    assert (vault.approle_mount, vault.verify_tls, vault.timeout_seconds) == (
        "ci-approle",
        False,
        12.5,
    )
    assert set(VaultDatabaseSecrets.model_fields) >= set(VaultSettings.model_fields)
    block = VaultDatabaseSecrets(**vault.model_dump())
    assert block.get_connection() == vault


def imported_by(statement: str) -> set[str]:
    """The top-level packages a fresh interpreter holds after `statement`."""
    loaded = subprocess.run(
        [
            sys.executable,
            "-c",
            f"import json, sys; {statement}; "
            "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))",
        ],
        capture_output=True,
        text=True,
        check=True,
        env={k: v for k, v in os.environ.items() if not k.startswith(("AMEIDE_", "VAULT_"))},
    ).stdout
    return set(json.loads(loaded))


def test_reading_the_settings_imports_no_client_of_an_external_system() -> None:
    """`--help`, a worker and every command read the settings first: a Vault client (hvac and
    requests, about a second here), a database driver or Prefect come in only when used."""
    loaded = imported_by("from ameide_migrate.config.settings import get_settings; get_settings()")
    clients = {"hvac", "requests", "psycopg", "prefect", "docker", "rich", "typer"}
    assert clients.isdisjoint(loaded), sorted(loaded & clients)


def test_a_flow_worker_imports_no_command_line_and_no_file_watcher() -> None:
    """What a deployment's run process loads for its flows: the flows, not the command line
    (typer) nor the dev loop's file watcher."""
    flows = ("migrate", "drift", "fleet", "release", "image")
    loaded = imported_by("; ".join(f"import ameide_migrate.flows.{flow}" for flow in flows))
    assert "prefect" in loaded  # the flows themselves were imported
    assert {"typer", "watchfiles"}.isdisjoint(loaded), sorted(loaded & {"typer", "watchfiles"})
