"""The whole chain on a real Kubernetes node: the staging deployment runs as a Job that pulls the
pushed digest, logs in to Vault with its service account, and migrates the eight databases.

Everything is real and on this machine: the suite's Prefect server, PostgreSQL, OpenBao, Docker
engine and registry, and a one-node cluster built from source (tests/k8s_cluster.py). Pods use
the host's network, so they reach all of them on loopback; the staging values below say so.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from ameide_migrate import credentials, image, local, postgres, vault
from ameide_migrate.catalog import PLATFORM_DATABASES, load_catalog
from ameide_migrate.image import BuiltImage, ImageRequest
from ameide_migrate.postgres import Credentials
from ameide_migrate.prefect_api import Server
from ameide_migrate.settings import get_settings

from .fix_platform import REPO, admin_url_of
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

    def ameide(self, *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "ameide_migrate.cli", *args],
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=timeout,
            check=False,
        )

    def helm_run(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.helm, "--kubeconfig", str(self.cluster.kubeconfig), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def objects(self, kinds: str, namespace: str | None = NAMESPACE) -> list[dict[str, Any]]:
        scope = ["-n", namespace] if namespace else ["-A"]
        done = self.cluster.kubectl("get", kinds, *scope, "-o", "json")
        return list(json.loads(done.stdout)["items"])

    def versions(self, database: str) -> list[str]:
        history = postgres.read_history(self.owners[database], "flyway_schema_history") or []
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
    client.auth.kubernetes.create_role(
        ROLE,
        bound_service_account_names=["db-migrations"],
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
                credentials.secret_of(database, creds),
            )
    return dict(env.owners)


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
    from blocks.vault import VaultDatabaseSecrets

    work = tmp_path_factory.mktemp("staging")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("AMEIDE_PROJECT_DIR", str(REPO))
        env.setenv("AMEIDE_SQL_DIR", str(REPO / "db" / "flyway" / "sql"))
        env.setenv("AMEIDE_CACHE_DIR", str(REPO / ".cache"))
        get_settings.cache_clear()
        settings = get_settings()
        request = ImageRequest.from_settings(
            settings, registry=registry, push=True, flyway_base=flyway_base
        )
        built = image.build_image(request, settings)
        get_settings.cache_clear()

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
        with psycopg.connect(**pg_admin.conninfo(5), autocommit=True) as conn:  # type: ignore[arg-type]
            for owner in owners.values():
                conn.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                        sql.Identifier(owner.database)
                    )
                )
                conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(owner.user)))


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

    values = staging.work / "worker-values.json"
    values.write_text(
        json.dumps(
            {
                "image": {
                    "repository": staging.built.repository,
                    "digest": staging.built.digest,
                    "pullPolicy": "IfNotPresent",
                },
                "prefectApiUrl": prefect_server.api_url,
                **_host_network_values(staging.cluster),
            }
        )
    )
    installed = staging.helm_run(
        "upgrade",
        "--install",
        "worker",
        str(REPO / "charts" / "prefect-worker"),
        "--namespace",
        NAMESPACE,
        "--values",
        str(values),
        "--wait",
        "--timeout",
        "5m",
    )
    assert installed.returncode == 0, installed.stdout + installed.stderr + _pod_report(staging)
    return staging


def _pod_report(staging: Staging) -> str:
    pods = staging.cluster.kubectl("get", "pods", "-A", "-o", "wide", check=False).stdout
    events = staging.cluster.kubectl("get", "events", "-A", check=False).stdout
    return f"\n{pods}\n{events[-4000:]}"


def test_trigger_runs_the_staging_deployment_as_a_job_on_the_pushed_digest(
    deployed: Staging,
) -> None:
    done = deployed.ameide("trigger", "--env", "staging", "--wait", "--timeout", "600")
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:] + _pod_report(deployed)

    catalog = load_catalog(REPO / "db" / "flyway" / "sql")
    for database in PLATFORM_DATABASES:
        assert deployed.versions(database)[-1] == str(catalog.databases[database].latest_version)

    flow_run_pods = [
        p
        for p in deployed.objects("pods")
        if "prefect.io/flow-run-id" in p["metadata"].get("labels", {})
    ]
    assert flow_run_pods, "the worker submitted no Job pod"
    (status,) = flow_run_pods[-1]["status"]["containerStatuses"]
    assert status["imageID"].endswith(deployed.built.digest or "no digest")
    assert deployed.built.reference in flow_run_pods[-1]["spec"]["containers"][0]["image"]
