"""The secret gate on a real Vault API (OpenBao) with real hvac: every database's credentials are
verified before Flyway runs, every problem reported at once, every Vault fault named."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterId,
    LogFilter,
    LogFilterFlowRunId,
)
from psycopg import sql
from pydantic import SecretStr

from ameide_migrate.adapters import secret_sources
from ameide_migrate.adapters.ports import free_port
from ameide_migrate.adapters.postgres.connection import Credentials, connect
from ameide_migrate.config.settings import Settings, get_settings
from ameide_migrate.config.vault_settings import VaultSettings
from ameide_migrate.core.catalog import PLATFORM_DATABASES
from ameide_migrate.core.errors import (
    CredentialsMissing,
    DatabaseRefusedConnection,
    DatabaseUnreachable,
    SecretsInvalid,
    VaultAuthFailed,
    VaultSealed,
    VaultUnreachable,
)
from ameide_migrate.services import credential_gate, local

from .fix_platform import REPO, Platform
from .fix_prefect import SERVER_HOME
from .fix_vault import READ_POLICY, LateListener, TokenReview, Vault, approle


@pytest.fixture
def vault_platform(
    platform: Platform, vault: Vault, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Platform]:
    """The platform with its credentials in Vault only (the local store is gone)."""
    template = f"{platform.prefix}{{environment}}/databases/{{database}}"
    vault.set_for_runs(monkeypatch, template)
    local.seed(platform.state_dir, platform.owners, get_settings().vault_connection())
    (platform.state_dir / secret_sources.STORE_NAME).unlink()
    yield platform
    get_settings.cache_clear()


def vault_path(platform: Platform, database: str, environment: str = "local") -> str:
    return f"{platform.prefix}{environment}/databases/{database}"


def flow_outcome(databases: list[str] | None = None) -> tuple[Any, Any]:
    from ameide_migrate.flows.migrate import migrate_flow

    state = migrate_flow(environment="local", databases=databases, return_state=True)
    return state, state.result(raise_on_failure=False)


def task_run_counts(flow_run_id: Any) -> dict[str, int]:
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
        )
    return {r.name: r.run_count for r in runs}


def test_the_flow_reads_every_credential_from_vault(vault_platform: Platform) -> None:
    state, _ = vault_platform.run(databases=["threads", "agents_runtime"])

    assert state.is_completed()
    assert not (vault_platform.state_dir / secret_sources.STORE_NAME).exists()
    assert vault_platform.versions("agents_runtime")


def test_every_problem_is_reported_at_once_and_nothing_is_migrated(
    vault_platform: Platform, vault: Vault
) -> None:
    client = vault.client()
    p = vault_platform

    def put(database: str, **changes: str) -> None:
        secret = secret_sources.secret_of(database, p.owners[database])
        secret.update(changes)
        client.secrets.kv.v2.create_or_update_secret(vault_path(p, database), secret=secret)

    put("threads", THREADS_DATABASE_PASSWORD="")
    put("graph", GRAPH_DATABASE_URL="mysql://127.0.0.1/graph")
    put("agents", AGENTS_DATABASE_PASSWORD="not-the-password")
    put("workflows", WORKFLOWS_DATABASE_URL=p.owners["agents"].url)
    client.secrets.kv.v2.delete_metadata_and_all_versions(vault_path(p, "platform"))

    state, error = flow_outcome()

    assert state.is_failed()
    assert isinstance(error, SecretsInvalid)
    text = str(error)
    assert "environment local: 5 credential problem(s), nothing was migrated" in text
    by_db = {line.split(":")[0].lstrip("- "): line for line in error.problems}
    assert set(by_db) == {"platform", "agents", "graph", "threads", "workflows"}
    assert f"secret/{vault_path(p, 'platform')}" in by_db["platform"]
    assert "no secret" in by_db["platform"]
    assert "key THREADS_DATABASE_PASSWORD" in by_db["threads"]
    assert "missing or empty" in by_db["threads"]
    assert "key GRAPH_DATABASE_URL" in by_db["graph"]
    assert "not a PostgreSQL URL" in by_db["graph"]
    assert "the credentials do not work" in by_db["agents"]
    assert "password authentication failed" in by_db["agents"]
    assert "names database" in by_db["workflows"]
    assert all("ameide-migrate secrets seed-local" in line for line in error.problems)
    assert all(p.history(db) is None for db in PLATFORM_DATABASES)
    # A wrong secret is not a transient fault: checked once, not retried.
    assert task_run_counts(state.state_details.flow_run_id)["verify credentials"] == 1

    done = subprocess.run(
        [sys.executable, "-m", "ameide_migrate.cli.main", "secrets", "verify", "--env", "local"],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
    )
    assert done.returncode == 1
    assert "5 credential problem(s)" in done.stderr
    assert "Traceback" not in done.stderr


def test_staging_accepts_vault_only(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("VAULT_ADDR", raising=False)
    settings = Settings(state_dir=tmp_path)
    with (
        pytest.raises(
            CredentialsMissing, match="staging reads its database credentials from Vault only"
        ),
        credential_gate.secret_source("staging", settings),
    ):
        pass


def test_approle_login_reads_the_secrets(vault_platform: Platform, vault: Vault) -> None:
    role_id, secret_id = approle(vault, "db-migrations", [READ_POLICY])
    conn = VaultSettings(
        address=vault.address,
        auth_method="approle",
        role_id=role_id,
        secret_id=secret_id,
        path_template=f"{vault_platform.prefix}{{environment}}/databases/{{database}}",
    )
    with credential_gate.secret_source("local", Settings(), conn) as source:
        found = credential_gate.verify_secrets(source, ["threads", "graph"])
    assert found["threads"].user == vault_platform.owners["threads"].user


def test_a_wrong_approle_secret_names_the_role(vault: Vault) -> None:
    role_id, _ = approle(vault, "db-migrations", [READ_POLICY])
    conn = VaultSettings(
        address=vault.address,
        auth_method="approle",
        role_id=role_id,
        secret_id=SecretStr("00000000-0000-0000-0000-000000000000"),
    )
    with (
        pytest.raises(VaultAuthFailed) as caught,
        credential_gate.secret_source("local", Settings(), conn),
    ):
        pass
    assert f"AppRole role_id {role_id}" in str(caught.value)
    assert "secret-id" in str(caught.value)


def test_permission_denied_names_the_path_and_is_not_retried(
    vault_platform: Platform, vault: Vault, monkeypatch: pytest.MonkeyPatch
) -> None:
    vault.client().sys.create_or_update_policy(
        "nothing", 'path "secret/data/none" { capabilities = ["read"] }'
    )
    role_id, secret_id = approle(vault, "no-access", ["nothing"])
    monkeypatch.setenv("AMEIDE_VAULT_AUTH_METHOD", "approle")
    monkeypatch.setenv("AMEIDE_VAULT_ROLE_ID", role_id)
    monkeypatch.setenv("AMEIDE_VAULT_SECRET_ID", secret_id.get_secret_value())
    get_settings.cache_clear()

    state, error = flow_outcome(["threads"])

    assert isinstance(error, SecretsInvalid)
    assert f"may not read secret/{vault_path(vault_platform, 'threads')}" in str(error)
    assert "grant" in str(error)
    assert task_run_counts(state.state_details.flow_run_id)["verify credentials"] == 1


def test_an_expired_token_says_to_log_in_again(vault: Vault) -> None:
    token = vault.client().auth.token.create(policies=[READ_POLICY], ttl="1s")["auth"][
        "client_token"
    ]
    time.sleep(2.5)
    conn = VaultSettings(address=vault.address, token=SecretStr(token))
    with (
        pytest.raises(VaultAuthFailed, match="expired or revoked"),
        credential_gate.secret_source("local", Settings(), conn),
    ):
        pass


def test_unreachable_vault_is_transient_and_retried(
    vault_platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    address = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("VAULT_ADDR", address)
    get_settings.cache_clear()

    state, error = flow_outcome(["threads"])

    assert isinstance(error, VaultUnreachable)
    assert error.transient
    assert f"Vault at {address} is unreachable" in str(error)
    assert (
        task_run_counts(state.state_details.flow_run_id)["verify credentials"]
        == get_settings().retries + 1
    )
    assert vault_platform.history("threads") is None


def test_vault_down_then_up_succeeds_through_retries(
    vault_platform: Platform, vault: Vault, monkeypatch: pytest.MonkeyPatch
) -> None:
    late = LateListener(vault.address)
    monkeypatch.setenv("VAULT_ADDR", late.address)
    get_settings.cache_clear()
    opener = threading.Timer(2.0, late.open)
    opener.start()
    try:
        state, _ = flow_outcome(["threads"])
    finally:
        opener.join()
        late.close()

    assert state.is_completed()
    assert task_run_counts(state.state_details.flow_run_id)["verify credentials"] > 1
    assert vault_platform.versions("threads")


def test_a_sealed_vault_says_to_unseal(own_vault: Vault) -> None:
    own_vault.client().sys.seal()
    with (
        pytest.raises(VaultSealed, match=r"is sealed .*unseal it"),
        credential_gate.secret_source("local", Settings(), own_vault.connection()) as source,
    ):
        source.fetch("threads")


def test_kubernetes_auth_logs_in_with_the_service_account_token(
    vault_platform: Platform, vault: Vault, token_review: TokenReview, tmp_path: Path
) -> None:
    client = vault.client()
    if "kubernetes/" not in client.sys.list_auth_methods()["data"]:
        client.sys.enable_auth_method("kubernetes")
    client.auth.kubernetes.configure(
        kubernetes_host=token_review.url,
        kubernetes_ca_cert=token_review.ca_pem,
        disable_local_ca_jwt=True,
    )
    client.auth.kubernetes.create_role(
        "db-migrations",
        bound_service_account_names=["migrator"],
        bound_service_account_namespaces=["ameide"],
        policies=[READ_POLICY],
        ttl="10m",
    )
    template = f"{vault_platform.prefix}{{environment}}/databases/{{database}}"

    def connect_as(namespace: str, name: str) -> VaultSettings:
        token_file = tmp_path / f"{namespace}-{name}.jwt"
        token_file.write_text(token_review.issue(namespace, name).jwt)
        return VaultSettings(
            address=vault.address,
            auth_method="kubernetes",
            kubernetes_role="db-migrations",
            service_account_token_path=token_file,
            path_template=template,
        )

    with credential_gate.secret_source(
        "local", Settings(), connect_as("ameide", "migrator")
    ) as source:
        found = credential_gate.verify_secrets(source, ["threads"])
    assert found["threads"].user == vault_platform.owners["threads"].user

    intruder = connect_as("ameide", "intruder")
    with (
        pytest.raises(VaultAuthFailed) as caught,
        credential_gate.secret_source("local", Settings(), intruder),
    ):
        pass
    message = str(caught.value)
    assert "role db-migrations" in message
    assert "service account intruder in namespace ameide" in message
    assert "bound_service_account_names" in message


def test_seed_local_writes_the_same_values_to_vault_every_time(
    vault_platform: Platform, vault: Vault
) -> None:
    command = [sys.executable, "-m", "ameide_migrate.cli.main", "secrets", "seed-local"]

    def stored() -> dict[str, str]:
        response = vault.client().secrets.kv.v2.read_secret_version(
            vault_path(vault_platform, "threads"), raise_on_deleted_version=True
        )
        return dict(response["data"]["data"])

    first = subprocess.run(command, capture_output=True, text=True, cwd=REPO, check=False)
    assert first.returncode == 0, first.stderr
    assert f"Vault {vault.address}" in first.stdout
    values = stored()
    again = subprocess.run(command, capture_output=True, text=True, cwd=REPO, check=False)
    assert again.returncode == 0, again.stderr
    assert stored() == values
    assert values["THREADS_DATABASE_USER"] == vault_platform.owners["threads"].user
    assert not (vault_platform.state_dir / secret_sources.STORE_NAME).exists()


def test_seed_local_without_vault_writes_a_0600_file(
    platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = platform.state_dir / secret_sources.STORE_NAME
    store.unlink()
    env = {k: v for k, v in os.environ.items() if not k.startswith("VAULT_")}
    done = subprocess.run(
        [sys.executable, "-m", "ameide_migrate.cli.main", "secrets", "seed-local"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert stat.S_IMODE(store.stat().st_mode) == 0o600
    assert platform.entries()["threads"]["THREADS_DATABASE_USER"] == platform.owners["threads"].user


def test_no_password_reaches_logs_artifacts_parameters_or_the_prefect_database(
    vault_platform: Platform, vault: Vault
) -> None:
    p = vault_platform
    known = "Kn0wn-Pa55word-" + p.prefix
    for database in ("threads", "graph"):
        owner = p.owners[database]
        with connect(p.admin) as conn:
            conn.execute(
                sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                    sql.Identifier(owner.user), sql.Literal(known)
                )
            )
        p.owners[database] = Credentials(
            owner.host, owner.port, owner.database, owner.user, SecretStr(known)
        )
        vault.client().secrets.kv.v2.create_or_update_secret(
            vault_path(p, database), secret=secret_sources.secret_of(database, p.owners[database])
        )
    (p.sql_dir / "graph" / "V9__graph_broken.sql").write_text("SELECT * FROM no_such_table;\n")

    ok_state, _ = flow_outcome(["threads"])
    failed_state, failure = flow_outcome(["threads", "graph"])
    cli = subprocess.run(
        [sys.executable, "-m", "ameide_migrate.cli.main", "run", "--env", "local", "--db", "graph"],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
    )
    assert ok_state.is_completed()
    assert failed_state.is_failed()
    assert cli.returncode == 1

    seen: list[str] = [str(failure), cli.stdout, cli.stderr]
    with get_client(sync_client=True) as client:
        for state in (ok_state, failed_state):
            run_id = state.state_details.flow_run_id
            logs = client.read_logs(
                log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id]))
            )
            assert logs, "the run's logs reached the Prefect API"
            seen += [log.message for log in logs]
            flow_run = client.read_flow_run(run_id)
            seen.append(json.dumps(flow_run.parameters))
            seen.append(str(flow_run.state.message if flow_run.state else ""))
            seen += [str(a.data) + str(a.description) for a in client.read_artifacts()]
    assert any("no_such_table" in text for text in seen), "the scan sees the failure it should"
    assert not [text for text in seen if known in text]

    time.sleep(1)  # let the server write what the runs sent
    database_files = [f for f in SERVER_HOME.rglob("*") if f.is_file() and ".db" in f.name]
    assert database_files, f"no Prefect database under {SERVER_HOME}"
    for path in database_files:
        assert known.encode() not in path.read_bytes(), f"the password is in {path}"


def test_a_database_turned_away_is_named_with_its_own_fix_not_the_credentials(
    platform: Platform,
) -> None:
    """A database closed to connections, one whose CONNECT was revoked and one whose server is
    down are no credential problem: the gate hands them back (a fleet quarantines them), and a
    run stops on them with the statement that lets the login in, not `seed-local`."""
    store = platform.state_dir / secret_sources.STORE_NAME
    stored = json.loads(store.read_text())
    down, nowhere = platform.owners["graph"], free_port()
    entry = stored["servers"][platform.admin.server]["graph"]
    entry["GRAPH_DATABASE_URL"] = down.url.replace(f":{down.port}/", f":{nowhere}/")
    store.write_text(json.dumps(stored))
    closed, revoked = platform.owners["threads"], platform.owners["agents"]
    with connect(platform.admin) as conn:
        conn.execute(
            sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS false").format(
                sql.Identifier(closed.database)
            )
        )
        conn.execute(
            sql.SQL("REVOKE CONNECT ON DATABASE {} FROM PUBLIC, {}").format(
                sql.Identifier(revoked.database), sql.Identifier(revoked.user)
            )
        )
    source = secret_sources.LocalStoreSource(platform.state_dir, platform.admin.server)
    gate = credential_gate.verify_reachable(source, ["platform", "graph", "threads", "agents"])

    assert list(gate.credentials) == ["platform"]
    assert list(gate.unreachable) == ["graph", "threads", "agents"]
    assert gate.servers["graph"] == f"{down.host}:{nowhere}"
    assert gate.servers["threads"] == platform.admin.server
    graph, threads, agents = gate.unreachable.values()
    assert isinstance(graph, DatabaseUnreachable)
    assert "is unreachable" in str(graph)
    assert isinstance(threads, DatabaseRefusedConnection)
    assert "is not currently accepting connections" in threads.what
    assert threads.fix == (
        f'once whatever closed it is over, run `ALTER DATABASE "{closed.database}" '
        "ALLOW_CONNECTIONS true;` as an administrator"
    )
    assert isinstance(agents, DatabaseRefusedConnection)
    assert "lacks the CONNECT privilege" in agents.what
    assert agents.fix == (
        f'run `GRANT CONNECT ON DATABASE "{revoked.database}" TO "{revoked.user}";` '
        "as its owner or an administrator"
    )
    with pytest.raises(DatabaseRefusedConnection) as refused:
        credential_gate.verify_secrets(source, ["platform", "agents"])
    assert "seed-local" not in str(refused.value)
    assert "GRANT CONNECT ON DATABASE" in str(refused.value)

    # The fixes as printed, run as an administrator, let the logins in: the gate hands the
    # databases back among the credentials.
    with connect(platform.admin) as conn:
        for fix in (threads.fix, agents.fix):
            (statement,) = re.findall(r"`([^`]*;)`", fix)
            conn.execute(statement.encode())
    reopened = credential_gate.verify_reachable(source, ["threads", "agents"])
    assert list(reopened.credentials) == ["threads", "agents"]
    assert reopened.unreachable == {}
