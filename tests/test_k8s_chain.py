"""The whole chain on a real Kubernetes node: the staging deployment runs as a Job that pulls the
pushed digest, logs in to Vault with its service account, and migrates the eight databases.

Everything is real and on this machine: the suite's Prefect server, PostgreSQL, OpenBao, Docker
engine and registry, and a one-node cluster built from source (tests/k8s_cluster.py). Pods use
the host's network, so they reach all of them on loopback; the staging values below say so.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

import psycopg
import pytest
from psycopg import sql

from ameide_migrate.adapters import secret_sources, vault
from ameide_migrate.adapters import vault as vault_api
from ameide_migrate.adapters.postgres.connection import Credentials
from ameide_migrate.adapters.postgres.schema_history import read_history
from ameide_migrate.adapters.prefect.artifacts import latest_table
from ameide_migrate.adapters.prefect.local_server import Server
from ameide_migrate.config.settings import get_settings
from ameide_migrate.core.catalog import PLATFORM_DATABASES, load_catalog
from ameide_migrate.services import image, local
from ameide_migrate.services.image import BuiltImage, ImageRequest

from .fix_platform import REPO, admin_url_of, ameide, drop_owners
from .fix_processes import gone, processes_of_run
from .fix_vault import READ_POLICY, Vault
from .k8s_cluster import Cluster

pytestmark = [pytest.mark.k8s, pytest.mark.docker, pytest.mark.slow]

NAMESPACE = "ameide-staging"
MOUNT = "kubernetes-node"
ROLE = "db-migrations"
PREFIX = "k8s_"


@dataclass
class Staging:
    cluster: Cluster
    built: BuiltImage
    owners: dict[str, Credentials]
    admin: Credentials
    work: Path
    helm: str

    def ameide(
        self, *args: str, timeout: float = 900, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return ameide(*args, env={**os.environ, **(env or {})}, timeout=timeout)

    def helm_install(self, release: str, chart: str, values: dict[str, Any]) -> None:
        """`helm upgrade --install --wait` of one of the project's charts into ameide-staging."""
        values_file = self.work / f"{release}-values.json"
        values_file.write_text(json.dumps(values))
        done = subprocess.run(
            [
                self.helm,
                "--kubeconfig",
                str(self.cluster.kubeconfig),
                "upgrade",
                "--install",
                release,
                str(REPO / "charts" / chart),
                "--namespace",
                NAMESPACE,
                "--values",
                str(values_file),
                "--wait",
                "--timeout",
                "5m",
            ],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr + _pod_report(self)

    def objects(self, kinds: str, namespace: str | None = NAMESPACE) -> list[dict[str, Any]]:
        scope = ["-n", namespace] if namespace else ["-A"]
        done = self.cluster.kubectl("get", kinds, *scope, "-o", "json")
        return list(json.loads(done.stdout)["items"])

    def versions(self, database: str) -> list[str]:
        history = read_history(self.owners[database], "flyway_schema_history") or []
        return [r.version for r in history if r.version and r.success]


def _host_network_values(cluster: Cluster) -> dict[str, Any]:
    """Pods on this node have no pod network: they use the host's, and reach the apiserver on
    loopback instead of through the `kubernetes` Service."""
    port = cluster.server.rsplit(":", 1)[1]
    return {
        "hostNetwork": True,
        "extraEnv": [
            {"name": "KUBERNETES_SERVICE_HOST", "value": "127.0.0.1"},
            {"name": "KUBERNETES_SERVICE_PORT", "value": port},
        ],
    }


def _configure_vault_kubernetes_auth(vault_server: Vault, cluster: Cluster) -> None:
    """Vault's Kubernetes auth method against this cluster's apiserver: TokenReview by a
    reviewer bound to system:auth-delegator; the role binds db-migrations in ameide-staging."""
    cluster.kubectl("create", "serviceaccount", "vault-reviewer", "-n", "kube-system")
    cluster.kubectl(
        "create",
        "clusterrolebinding",
        "vault-reviewer",
        "--clusterrole=system:auth-delegator",
        "--serviceaccount=kube-system:vault-reviewer",
    )
    reviewer = cluster.kubectl(
        "create", "token", "vault-reviewer", "-n", "kube-system", "--duration=24h"
    ).stdout.strip()
    client = vault_server.client()
    if f"{MOUNT}/" not in client.sys.list_auth_methods()["data"]:
        client.sys.enable_auth_method("kubernetes", path=MOUNT)
    client.auth.kubernetes.configure(
        kubernetes_host=cluster.server,
        kubernetes_ca_cert=cluster.ca_cert.read_text(),
        token_reviewer_jwt=reviewer,
        mount_point=MOUNT,
    )
    _bind_role(vault_server, "db-migrations")


def _bind_role(vault_server: Vault, service_account: str) -> None:
    """The Vault role `db-migrations` lets `service_account` of ameide-staging read secrets."""
    vault_server.client().auth.kubernetes.create_role(
        ROLE,
        bound_service_account_names=[service_account],
        bound_service_account_namespaces=[NAMESPACE],
        policies=[READ_POLICY],
        ttl="15m",
        mount_point=MOUNT,
    )


def _seed_staging_databases(
    vault_server: Vault, pg_admin: Credentials, state: Path
) -> dict[str, Credentials]:
    env = local.up(
        state, PLATFORM_DATABASES, admin_url=admin_url_of(pg_admin), database_prefix=PREFIX
    )
    conn = vault_server.connection()
    with vault.session(conn) as client:
        for database, creds in env.owners.items():
            vault.write_secret(
                client,
                conn,
                conn.path("staging", database),
                secret_sources.secret_of(database, creds),
            )
    return dict(env.owners)


def _push_image(sql_dir: Path, registry: str, flyway_base: str) -> BuiltImage:
    """The migrations image of `sql_dir`, built (or found) and pushed to the suite's registry."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("AMEIDE_PROJECT_DIR", str(REPO))
        env.setenv("AMEIDE_SQL_DIR", str(sql_dir))
        env.setenv("AMEIDE_CACHE_DIR", str(REPO / ".cache"))
        get_settings.cache_clear()
        try:
            settings = get_settings()
            request = ImageRequest.from_settings(
                settings, registry=registry, push=True, flyway_base=flyway_base
            )
            return image.build_image(request, settings)
        finally:
            get_settings.cache_clear()


@pytest.fixture(scope="module")
def staging(
    k8s_cluster: Cluster,
    registry: str,
    flyway_base: str,
    vault: Vault,
    prefect_server: Server,
    pg_admin: Credentials,
    helm: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Staging]:
    from ameide_migrate.blocks import VaultDatabaseSecrets

    work = tmp_path_factory.mktemp("staging")
    built = _push_image(REPO / "db" / "flyway" / "sql", registry, flyway_base)

    owners = _seed_staging_databases(vault, pg_admin, work / "state")
    _configure_vault_kubernetes_auth(vault, k8s_cluster)
    k8s_cluster.kubectl("create", "namespace", NAMESPACE)
    k8s_cluster.kubectl("create", "serviceaccount", "db-migrations", "-n", NAMESPACE)
    VaultDatabaseSecrets(
        address=vault.address,
        auth_method="kubernetes",
        kubernetes_mount=MOUNT,
        kubernetes_role=ROLE,
    ).save("vault-staging", overwrite=True)

    stage = Staging(k8s_cluster, built, owners, pg_admin, work, helm)
    try:
        yield stage
    finally:
        _delete_block("vault-staging")
        drop_owners(pg_admin, owners)


def _delete_block(name: str) -> None:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        document = client.read_block_document_by_name(name, "vault-database-secrets")
        client.delete_block_document(document.id)


@pytest.fixture(scope="module")
def deployed(staging: Staging, prefect_server: Server) -> Staging:
    """`deploy --env staging` with this site's values, then the worker chart into the cluster,
    running the migrations image itself (it holds prefect-kubernetes)."""
    job_variables = staging.work / "staging-job-variables.json"
    job_variables.write_text(
        json.dumps(
            {
                "host_network": True,
                "dns_policy": "ClusterFirstWithHostNet",
                # the whole run, bounded: a stuck pull fails the Job instead of waiting forever
                "active_deadline_seconds": 600,
                "pod_watch_timeout_seconds": 120,
            }
        )
    )
    done = staging.ameide(
        "deploy",
        "--env",
        "staging",
        "--image",
        staging.built.reference,
        "--job-variables",
        str(job_variables),
    )
    assert done.returncode == 0, done.stdout + done.stderr

    staging.helm_install(
        "worker",
        "prefect-worker",
        {
            "image": {
                "repository": staging.built.repository,
                "digest": staging.built.digest,
                "pullPolicy": "IfNotPresent",
            },
            "prefectApiUrl": prefect_server.api_url,
            **_host_network_values(staging.cluster),
        },
    )
    return staging


def _pod_report(staging: Staging) -> str:
    pods = staging.cluster.kubectl("get", "pods", "-A", "-o", "wide", check=False).stdout
    events = staging.cluster.kubectl("get", "events", "-A", check=False).stdout
    return f"\n{pods}\n{events[-4000:]}"


@pytest.fixture(scope="module")
def first_run(deployed: Staging) -> subprocess.CompletedProcess[str]:
    started = time.monotonic()
    done = deployed.ameide("trigger", "--env", "staging", "--wait", "--timeout", "600")
    if results := os.environ.get("AMEIDE_BENCH_RESULTS"):  # bench/cluster_bench.py
        figures = {
            "staging_trigger_to_done": time.monotonic() - started,
            "local_run": _time_local_default(deployed),
        }
        Path(results).write_text(json.dumps(figures))
    return done


def _time_local_default(staging: Staging) -> float:
    """The local default on eight fresh databases of the same server, for the benchmark."""
    env = {
        **os.environ,
        "AMEIDE_LOCAL_ADMIN_URL": admin_url_of(staging.admin).get_secret_value(),
        "AMEIDE_LOCAL_DATABASE_PREFIX": "k8sbench_",
        "AMEIDE_STATE_DIR": str(staging.work / "bench-state"),
    }
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "ameide_migrate.cli.main", "run", "--env", "local", "--skip-build"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=900,
        check=False,
    )
    elapsed = time.monotonic() - started
    assert done.returncode == 0, done.stderr[-3000:]
    owners = local.up(
        staging.work / "bench-state",
        PLATFORM_DATABASES,
        admin_url=admin_url_of(staging.admin),
        database_prefix="k8sbench_",
    ).owners
    drop_owners(staging.admin, owners)
    return elapsed


def _flow_run_pods(staging: Staging, flow_run_id: str | None = None) -> list[dict[str, Any]]:
    """The pods of flow runs (of `flow_run_id` alone, when given), oldest first: another test's
    runs (a fleet's shards) may have left newer pods in the cluster."""
    pods = [
        p
        for p in staging.objects("pods")
        if (label := p["metadata"].get("labels", {}).get("prefect.io/flow-run-id")) is not None
        and flow_run_id in (None, label)
    ]
    return sorted(pods, key=lambda p: str(p["metadata"]["creationTimestamp"]))


def _flow_run_id(output: str) -> str:
    """`trigger` prints `flow run <id>: <UI address>` first."""
    first = output.splitlines()[0]
    assert first.startswith("flow run "), output[:500]
    return first.split()[2].rstrip(":")


def test_trigger_runs_the_staging_deployment_as_a_job_on_the_pushed_digest(
    deployed: Staging, first_run: subprocess.CompletedProcess[str]
) -> None:
    report = first_run.stdout[-6000:] + first_run.stderr[-3000:] + _pod_report(deployed)
    assert first_run.returncode == 0, report

    catalog = load_catalog(REPO / "db" / "flyway" / "sql")
    for database in PLATFORM_DATABASES:
        assert deployed.versions(database)[-1] == str(catalog.databases[database].latest_version)

    pods = _flow_run_pods(deployed, _flow_run_id(first_run.stdout))
    assert pods, "the worker submitted no Job pod for this run"
    (status,) = pods[-1]["status"]["containerStatuses"]
    assert deployed.built.digest
    assert status["imageID"].endswith(deployed.built.digest)
    assert pods[-1]["spec"]["containers"][0]["image"] == deployed.built.reference
    assert pods[-1]["spec"]["serviceAccountName"] == "db-migrations"

    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        run = client.read_flow_run(UUID(_flow_run_id(first_run.stdout)))
        artifacts = client.read_artifacts()
    assert run.state is not None
    assert run.state.is_completed()
    mine = [a for a in artifacts if a.flow_run_id == run.id and a.key == "migrate-staging"]
    assert mine, "the run shows no results artifact"


def test_the_job_runs_hardened_and_no_password_is_anywhere_in_the_cluster(
    deployed: Staging, first_run: subprocess.CompletedProcess[str]
) -> None:
    assert first_run.returncode == 0
    (job,) = [
        j
        for j in deployed.objects("jobs")
        if j["metadata"].get("labels", {}).get("prefect.io/flow-run-id")
        == _flow_run_id(first_run.stdout)
    ]
    pod = _flow_run_pods(deployed, _flow_run_id(first_run.stdout))[-1]
    for spec in (job["spec"]["template"]["spec"], pod["spec"]):
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["runAsUser"] == 10001
        container = spec["containers"][0]["securityContext"]
        assert container["readOnlyRootFilesystem"] is True
        assert container["allowPrivilegeEscalation"] is False
        assert container["capabilities"]["drop"] == ["ALL"]
    assert job["spec"]["backoffLimit"] == 0

    passwords = [c.password.get_secret_value() for c in deployed.owners.values()]
    for kinds in ("jobs", "pods", "configmaps", "events", "secrets"):
        dump = json.dumps(deployed.objects(kinds, namespace=None))
        leaked = [p for p in passwords if p in dump]
        assert not leaked, f"a database password is in the cluster's {kinds}"
    from .fix_prefect import SERVER_HOME

    for database_file in (f for f in SERVER_HOME.rglob("*") if f.is_file()):
        data = database_file.read_bytes()
        assert not [p for p in passwords if p.encode() in data], database_file


def test_the_seeds_hook_job_runs_the_same_digest_to_completion(
    deployed: Staging, vault: Vault, prefect_server: Server
) -> None:
    deployed.helm_install(
        "platform",
        "db-migrations",
        {
            "environment": "staging",
            "image": {
                "repository": deployed.built.repository,
                "digest": deployed.built.digest,
            },
            "prefectApiUrl": prefect_server.api_url,
            "serviceAccountName": "db-migrations",
            "vault": {"address": vault.address, "kubernetesRole": ROLE},
            **_host_network_values(deployed.cluster),
            "extraEnv": [{"name": "AMEIDE_VAULT_KUBERNETES_MOUNT", "value": MOUNT}],
        },
    )

    (job,) = [
        j
        for j in deployed.objects("jobs")
        if j["metadata"].get("labels", {}).get("app.kubernetes.io/name") == "db-migrations"
    ]
    assert job["status"].get("succeeded") == 1
    hook_pods = [
        p
        for p in deployed.objects("pods")
        if p["metadata"].get("labels", {}).get("app.kubernetes.io/name") == "db-migrations"
    ]
    assert deployed.built.digest
    assert hook_pods[-1]["status"]["containerStatuses"][0]["imageID"].endswith(
        deployed.built.digest
    )


def test_a_service_account_the_role_does_not_bind_is_named_in_the_error(
    deployed: Staging, vault: Vault, first_run: subprocess.CompletedProcess[str]
) -> None:
    _bind_role(vault, "someone-else")
    try:
        done = deployed.ameide("trigger", "--env", "staging", "--wait", "--timeout", "600")
    finally:
        _bind_role(vault, "db-migrations")
    assert done.returncode == 1, done.stdout[-4000:]
    assert ROLE in done.stdout
    assert f"{NAMESPACE}/db-migrations" in done.stdout or (
        "db-migrations" in done.stdout and NAMESPACE in done.stdout
    )


def test_an_image_the_registry_lacks_crashes_the_run_with_the_pull_reason(
    deployed: Staging,
) -> None:
    missing = f"{deployed.built.repository}@sha256:{'0' * 64}"
    done = deployed.ameide(
        "trigger", "--env", "staging", "--image", missing, "--wait", "--timeout", "300"
    )
    assert done.returncode == 1, done.stdout[-4000:] + _pod_report(deployed)
    assert "Crashed" in done.stdout
    assert "ErrImagePull" in done.stdout or "ImagePullBackOff" in done.stdout


def test_release_builds_the_refs_image_and_migrates_staging_on_exactly_that_digest(
    deployed: Staging, registry: str, flyway_base: str
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterDeploymentId

    env = {"AMEIDE_FLYWAY_BASE": flyway_base, "AMEIDE_PROJECT_DIR": str(REPO)}
    done = deployed.ameide(
        "release", "--env", "staging", "--ref", "HEAD", "--registry", registry, env=env
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    reference = done.stdout.strip().splitlines()[-1].split()[-1]
    assert "@sha256:" in reference
    assert reference != deployed.built.reference  # the release flavor is another image

    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name("migrate/staging")
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                deployment_id=FlowRunFilterDeploymentId(any_=[deployment.id])
            )
        )
    latest = max(runs, key=lambda r: str(r.created))
    assert latest.job_variables == {"image": reference}
    assert latest.state is not None
    assert latest.state.is_completed()
    pod = _flow_run_pods(deployed, str(latest.id))[-1]
    assert pod["status"]["containerStatuses"][0]["imageID"].endswith(reference.split("@")[1])


def test_a_worker_restarted_mid_run_leaves_a_definite_state_and_a_rerun_applies_once(
    deployed: Staging,
) -> None:
    from prefect.client.orchestration import get_client

    started = deployed.ameide("trigger", "--env", "staging")
    assert started.returncode == 0, started.stdout + started.stderr
    run_id = UUID(_flow_run_id(started.stdout))
    with get_client(sync_client=True) as client:
        deadline = time.monotonic() + 300
        while (state := client.read_flow_run(run_id).state) is None or not (
            state.is_running() or state.is_final()
        ):
            assert time.monotonic() < deadline, f"the run never started: {state}"
            time.sleep(0.5)
        deployed.cluster.kubectl(
            "delete", "pod", "-n", NAMESPACE, "-l", "app.kubernetes.io/name=prefect-worker"
        )
        while (state := client.read_flow_run(run_id).state) is None or not state.is_final():
            assert time.monotonic() < deadline + 300, f"the run never ended: {state}"
            time.sleep(1)
    assert state.is_completed() or state.is_crashed() or state.is_failed(), state

    deployed.cluster.kubectl(
        "rollout", "status", "deployment/worker-prefect-worker", "-n", NAMESPACE, "--timeout=300s"
    )
    rerun = deployed.ameide("trigger", "--env", "staging", "--wait", "--timeout", "600")
    assert rerun.returncode == 0, rerun.stdout[-4000:] + _pod_report(deployed)
    for database in PLATFORM_DATABASES:
        versions = deployed.versions(database)
        assert len(versions) == len(set(versions)), f"{database}: {versions}"


def test_a_broken_migration_fails_the_run_and_the_other_databases_migrate(
    deployed: Staging, registry: str, flyway_base: str, tmp_path: Path
) -> None:
    sql_dir = tmp_path / "sql"
    shutil.copytree(REPO / "db" / "flyway" / "sql", sql_dir)
    (sql_dir / "agents" / "V99__agents_broken.sql").write_text("ALTER TABLE nope ADD x int;\n")
    (sql_dir / "threads" / "V99__threads_note.sql").write_text(
        "CREATE TABLE release_note (id int PRIMARY KEY);\n"
    )
    broken = _push_image(sql_dir, registry, flyway_base)

    done = deployed.ameide(
        "trigger", "--env", "staging", "--image", broken.reference, "--wait", "--timeout", "600"
    )
    assert done.returncode == 1, done.stdout[-4000:] + _pod_report(deployed)
    assert "agents" in done.stdout
    assert "99" in deployed.versions("threads")
    assert "99" not in deployed.versions("agents")


FLEET = """
[fleets.tenants]
template = "tenant"
targets = ["t1", "t2", "t3", "t4", "t5", "t6", "t7"]

[fleets.tenants.waves]
canary = 1
growth = 6
shards = 3
parallel = 2

[fleets.overdue]
template = "tenant"
targets = ["t8", "t9"]

[fleets.overdue.waves]
canary = 2
shards = 1
parallel = 1
shard_timeout_minutes = 2
"""
SETTLE = "ameide.settle_seconds"
TENANT = {
    "V1__accounts.sql": "CREATE TABLE accounts (id bigint PRIMARY KEY, name text NOT NULL);\n",
    "V2__accounts_email.sql": "ALTER TABLE accounts ADD COLUMN email text;\n",
    "V3__accounts_email_index.sql": (
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS accounts_email_idx ON accounts (email);\n"
    ),
    # A few seconds a target: the shards' Jobs overlap however slowly their pods start. A
    # database can be told to take longer (ALTER DATABASE ... SET), to outlive a shard timeout.
    "V4__settle.sql": (
        f"SELECT pg_sleep(coalesce(nullif(current_setting('{SETTLE}', true), ''), '6')::float);\n"
    ),
}
ALL = ["1", "2", "3", "4"]


@dataclass
class FleetTree:
    """staging deployed from a tree that declares the fleets, and the image it was built into."""

    built: BuiltImage
    env: dict[str, str]


@pytest.fixture(scope="module")
def fleet_deployed(
    deployed: Staging, registry: str, flyway_base: str, tmp_path_factory: pytest.TempPathFactory
) -> FleetTree:
    """staging deployed again, from a tree that declares two fleets of a tenant template: the
    tests that use it come last in the module."""
    sql_dir = tmp_path_factory.mktemp("fleet-tree") / "sql"
    shutil.copytree(REPO / "db" / "flyway" / "sql", sql_dir)
    (sql_dir / "tenant").mkdir()
    for name, text in TENANT.items():
        (sql_dir / "tenant" / name).write_text(text)
    toml = sql_dir / "ameide.toml"
    toml.write_text(toml.read_text() + FLEET)
    built = _push_image(sql_dir, registry, flyway_base)
    tree = {"AMEIDE_SQL_DIR": str(sql_dir)}
    done = deployed.ameide(
        "deploy",
        "--env",
        "staging",
        "--image",
        built.reference,
        "--job-variables",
        str(deployed.work / "staging-job-variables.json"),
        env=tree,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "fleet-shard/staging" in done.stdout
    return FleetTree(built, tree)


def _tenants(staging: Staging, vault_server: Vault, targets: list[str]) -> dict[str, Credentials]:
    """The targets' databases and owners, their secrets in Vault where staging reads them."""
    owners = local.up(
        staging.work / "fleet-state",
        [f"tenant_{t}" for t in targets],
        admin_url=admin_url_of(staging.admin),
        database_prefix=PREFIX,
    ).owners
    conn = vault_server.connection()
    with vault_api.session(conn) as client:
        for database, creds in owners.items():
            path = conn.path("staging", database)
            vault_api.write_secret(client, conn, path, secret_sources.secret_of(database, creds))
    return dict(owners)


def _histories(tenants: dict[str, Credentials]) -> dict[str, list[str]]:
    return {
        database: [
            r.version
            for r in read_history(creds, "flyway_schema_history") or []
            if r.version and r.success
        ]
        for database, creds in tenants.items()
    }


def test_a_fleet_fans_its_wave_out_over_three_jobs_running_at_once(
    deployed: Staging, fleet_deployed: FleetTree, vault: Vault
) -> None:
    """The fleet's run is a Job; its second wave's six targets are three shard runs of
    fleet-shard/staging, three more Jobs on the same image, running at once."""
    from prefect.client.orchestration import get_client

    built = fleet_deployed.built
    tenants = _tenants(deployed, vault, [f"t{n}" for n in range(1, 8)])
    try:
        ran = deployed.ameide(
            "trigger",
            *("--env", "staging", "--flow", "fleet", "--fleet", "tenants"),
            *("--wait", "--timeout", "900"),
            env=fleet_deployed.env,
        )

        report = ran.stdout[-6000:] + ran.stderr[-3000:] + _pod_report(deployed)
        assert ran.returncode == 0, report
        assert ran.stdout.strip().splitlines()[-1].startswith("Completed"), report
        assert "wave 2 of 2: 6 target(s) in 3 shard(s), 0 failed" in ran.stdout, report
        for database, versions in _histories(tenants).items():
            assert versions == ALL, database

        with get_client(sync_client=True) as client:
            shard = client.read_deployment_by_name("fleet-shard/staging")
            started = client.read_flow_run(UUID(_flow_run_id(ran.stdout))).created
            assert started is not None
            runs = [
                r
                for r in client.read_flow_runs()
                if r.deployment_id == shard.id and r.created and r.created > started
            ]
        wave_two = {str(r.id) for r in runs if r.name.startswith("tenants wave 2 ")}
        assert len(wave_two) == 3, [r.name for r in runs]
        pods = [
            p
            for p in _flow_run_pods(deployed)
            if p["metadata"]["labels"]["prefect.io/flow-run-id"] in wave_two
        ]
        assert len(pods) == 3, report
        ran_for = [p["status"]["containerStatuses"][0]["state"]["terminated"] for p in pods]
        assert all(t["reason"] == "Completed" for t in ran_for), ran_for
        assert max(t["startedAt"] for t in ran_for) < min(t["finishedAt"] for t in ran_for), (
            f"the three shard Jobs did not run at once: {ran_for}"
        )
        assert all(
            p["status"]["containerStatuses"][0]["imageID"].endswith(built.digest or "?")
            for p in pods
        )
    finally:
        drop_owners(deployed.admin, tenants)


def _settle(admin: Credentials, database: str, seconds: int | None) -> None:
    """New sessions on `database` sleep `seconds` in V4 (None: the tree's few seconds)."""
    with psycopg.connect(**admin.conninfo(5), autocommit=True) as conn:  # type: ignore[arg-type]
        name = sql.Identifier(database)
        if seconds is None:
            conn.execute(sql.SQL("ALTER DATABASE {} RESET {}").format(name, sql.SQL(SETTLE)))
        else:
            conn.execute(
                sql.SQL("ALTER DATABASE {} SET {} = {}").format(
                    name, sql.SQL(SETTLE), sql.Literal(str(seconds))
                )
            )


def _sessions(admin: Credentials, databases: list[str]) -> list[tuple[str, str, str]]:
    """Every session on `databases`: (database, application_name, query); the checker's own is
    on another database."""
    with psycopg.connect(**admin.conninfo(5), autocommit=True) as conn:  # type: ignore[arg-type]
        rows = conn.execute(
            "SELECT datname, coalesce(application_name, ''), coalesce(query, '') "
            "FROM pg_stat_activity WHERE datname = ANY(%s)",
            (databases,),
        ).fetchall()
    return [(str(d), str(a), str(q)) for d, a, q in rows]


class SleepWatch:
    """Beside the fleet run: once a session sleeps in V4 on `database`, the shard run that is
    running it, that run's pods and its processes (on this node: the pod's process, the Flyway
    JVM it started) as they are at that moment."""

    def __init__(self, staging: Staging, database: str) -> None:
        self.run_id: str | None = None
        self.pods: list[dict[str, Any]] = []
        self.processes: dict[int, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, args=(staging, database))

    def __enter__(self) -> SleepWatch:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=60)

    def _watch(self, staging: Staging, database: str) -> None:
        from prefect.client.orchestration import get_client

        while not self._stop.wait(1):
            sessions = _sessions(staging.admin, [database])
            if not any("pg_sleep" in query for _, _, query in sessions):
                continue
            with get_client(sync_client=True) as client:
                shard = client.read_deployment_by_name("fleet-shard/staging")
                running = [
                    r
                    for r in client.read_flow_runs()
                    if r.deployment_id == shard.id and r.state and r.state.is_running()
                ]
            if len(running) != 1:
                continue
            self.run_id = str(running[0].id)
            self.pods = _flow_run_pods(staging, self.run_id)
            self.processes = processes_of_run(running[0].id)
            return


def _still_running(staging: Staging, flow_run_id: str) -> list[str]:
    """The run's Jobs with a pod active and its pods not ended, by name: none once its Job is
    deleted, or has ended with every container of its pod terminated."""
    jobs = [
        f"job/{j['metadata']['name']}: {j['status'].get('active')} active"
        for j in staging.objects("jobs")
        if j["metadata"].get("labels", {}).get("prefect.io/flow-run-id") == flow_run_id
        and j["status"].get("active")
    ]
    pods = [
        f"pod/{p['metadata']['name']}: {p['status']['phase']}"
        for p in _flow_run_pods(staging, flow_run_id)
        if p["status"]["phase"] not in ("Succeeded", "Failed")
        or any("terminated" not in c["state"] for c in p["status"].get("containerStatuses", []))
    ]
    return jobs + pods


@pytest.mark.timeout(1800)  # two fleet runs of two Jobs each, one of them waiting out a timeout
def test_a_shard_job_past_its_timeout_is_stopped_before_it_is_counted_and_a_rerun_finishes_it(
    deployed: Staging, fleet_deployed: FleetTree, vault: Vault
) -> None:
    """The overdue fleet's one shard migrates t8 to V4, then sleeps in t9's V4 past
    shard_timeout_minutes: the fleet run cancels the shard run through Prefect, waits until it
    has stopped (its pod's processes gone, the JVM with them, no session left on t9) and reports
    t8 migrated and t9 at V3, as they are; the rerun takes t9 to V4."""
    from prefect.client.orchestration import get_client

    tenants = _tenants(deployed, vault, ["t8", "t9"])
    slow = tenants["tenant_t9"].database
    try:
        _settle(deployed.admin, slow, 900)
        with SleepWatch(deployed, slow) as watch:
            ran = deployed.ameide(
                "trigger",
                *("--env", "staging", "--flow", "fleet", "--fleet", "overdue"),
                *("--wait", "--timeout", "900"),
                env=fleet_deployed.env,
            )
        report = ran.stdout[-8000:] + ran.stderr[-3000:] + _pod_report(deployed)
        assert ran.returncode == 1, report
        last = ran.stdout.strip().splitlines()[-1]
        assert last == "Failed: fleet overdue in staging: 1 migrated, 1 failed in 1 wave(s)", report
        assert "halt_failures = 0: 1 of 2 target(s) failed: tenant_t9" in ran.stdout, report
        assert (
            "tenant_t9 message: its shard run overdue wave 1 shard 1 of 1 outlived "
            "shard_timeout_minutes = 2: cancelled, it stopped Cancelled; its history shows it at "
            "3 of 4: 3 migration(s) applied, the rest not" in ran.stdout
        ), report
        # The check holds only if the timeout caught the shard's pod mid-migration, JVM and all.
        assert watch.run_id is not None, "the shard never reached t9's V4: " + report
        assert [p["status"]["phase"] for p in watch.pods] == ["Running"], watch.pods
        assert "java" in watch.processes.values(), watch.processes
        with get_client(sync_client=True) as client:
            shard = client.read_flow_run(UUID(watch.run_id))
        assert shard.state is not None
        assert shard.state.is_cancelled(), shard.state
        # Stopped: no process of the shard left on the node, its pod ended (Prefect 3's
        # `flow-run execute` in the pod ends the flow's process when the run is Cancelling; the
        # worker deletes the Job only of a run that has not started), nothing of its Job running.
        alive = {pid: name for pid, name in watch.processes.items() if not gone(pid)}
        assert alive == {}, alive
        deadline = time.monotonic() + 60
        while left := _still_running(deployed, watch.run_id):
            assert time.monotonic() < deadline, f"{left}{_pod_report(deployed)}"
            time.sleep(1)
        # Nothing left that could commit later: no session on either target.
        assert _sessions(deployed.admin, [c.database for c in tenants.values()]) == []
        assert _histories(tenants) == {"tenant_t8": ALL, "tenant_t9": ALL[:3]}

        ledger = {row["target"]: row for row in latest_table("fleet-staging-overdue")}
        done = ledger["tenant_t8"]
        assert (done["state"], done["after"], done["applied"]) == ("migrated", "4", "4"), ledger
        assert (
            "outlived shard_timeout_minutes = 2: cancelled, it stopped Cancelled"
            in (done["message"])
        )
        failed = ledger["tenant_t9"]
        assert (failed["state"], failed["before"], failed["after"], failed["applied"]) == (
            "failed", "empty", "3", "3"
        ), failed  # fmt: skip
        assert "shows it at 3 of 4: 3 migration(s) applied, the rest not" in failed["message"]

        _settle(deployed.admin, slow, None)
        rerun = deployed.ameide(
            "trigger",
            *("--env", "staging", "--flow", "fleet", "--fleet", "overdue"),
            *("--wait", "--timeout", "900"),
            env=fleet_deployed.env,
        )

        assert rerun.returncode == 0, rerun.stdout[-6000:] + _pod_report(deployed)
        assert rerun.stdout.strip().splitlines()[-1].startswith("Completed"), rerun.stdout
        assert _histories(tenants) == {"tenant_t8": ALL, "tenant_t9": ALL}
        ledger = {row["target"]: row for row in latest_table("fleet-staging-overdue")}
        assert ledger["tenant_t8"]["state"] == "up to date", ledger
        assert (ledger["tenant_t9"]["state"], ledger["tenant_t9"]["before"]) == ("migrated", "3")
    finally:
        drop_owners(deployed.admin, tenants)
