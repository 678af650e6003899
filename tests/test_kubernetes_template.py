"""The exact Job prefect-kubernetes's worker would submit for a staging run, rendered with its own
job-configuration code and validated against the Kubernetes API types."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any
from uuid import uuid4

import kubernetes_validate
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import FlowRun
from prefect_kubernetes.worker import KubernetesWorkerJobConfiguration

from ameide_migrate.adapters.prefect.local_server import Server
from ameide_migrate.config import environments
from ameide_migrate.deployments.kubernetes import RUN_AS_USER, job_template

from .fix_platform import ameide
from .k8s_cluster import build

KUBERNETES_VERSION = "1.34.0"
SHIPPED = environments.load(Path(__file__).resolve().parent.parent / "db/flyway/sql/ameide.toml")


def render(values: dict[str, Any]) -> dict[str, Any]:
    config = asyncio.run(
        KubernetesWorkerJobConfiguration.from_template_and_values(job_template(), values)
    )
    config.prepare_for_flow_run(FlowRun(id=uuid4(), flow_id=uuid4(), name="calm-otter"))
    manifest: dict[str, Any] = config.job_manifest
    return manifest


def test_staging_job_is_hardened_and_valid() -> None:
    staging = SHIPPED["staging"]
    image = "registry.internal/ameide-migrations@sha256:" + "ab" * 32
    job = render({**staging.deployment_job_variables(), "image": image})

    kubernetes_validate.validate(job, KUBERNETES_VERSION, strict=True)
    assert job["metadata"]["namespace"] == "ameide-staging"
    spec = job["spec"]
    assert spec["backoffLimit"] == 0
    assert spec["ttlSecondsAfterFinished"] == 3600
    assert spec["activeDeadlineSeconds"] == 3600
    pod = spec["template"]["spec"]
    assert pod["serviceAccountName"] == "db-migrations"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == RUN_AS_USER
    (container,) = pod["containers"]
    assert container["image"] == image
    assert container["securityContext"] == {
        "readOnlyRootFilesystem": True,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
    }
    assert container["resources"]["limits"]["memory"] == "1Gi"
    assert any(e["name"] == "PREFECT__FLOW_RUN_ID" for e in container["env"])


def test_a_job_keeps_the_pod_network_by_default() -> None:
    job = render({**SHIPPED["prod"].deployment_job_variables(), "image": "x@sha256:" + "ab" * 32})

    kubernetes_validate.validate(job, KUBERNETES_VERSION, strict=True)
    pod = job["spec"]["template"]["spec"]
    assert pod["hostNetwork"] is False
    assert pod["dnsPolicy"] == "ClusterFirst"


def test_a_job_on_a_cluster_without_pod_network_runs_on_the_host_network() -> None:
    apiserver = [
        {"name": "KUBERNETES_SERVICE_HOST", "value": "127.0.0.1"},
        {"name": "KUBERNETES_SERVICE_PORT", "value": "6443"},
    ]
    job = render(
        {
            **SHIPPED["staging"].deployment_job_variables(),
            "image": "x@sha256:" + "ab" * 32,
            "host_network": True,
            "dns_policy": "ClusterFirstWithHostNet",
            "env": apiserver,
        }
    )

    kubernetes_validate.validate(job, KUBERNETES_VERSION, strict=True)
    pod = job["spec"]["template"]["spec"]
    assert pod["hostNetwork"] is True
    assert pod["dnsPolicy"] == "ClusterFirstWithHostNet"
    (container,) = pod["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["KUBERNETES_SERVICE_HOST"] == "127.0.0.1"
    assert env["KUBERNETES_SERVICE_PORT"] == "6443"
    assert "PREFECT__FLOW_RUN_ID" in env


def test_an_invalid_override_is_caught_by_the_validation() -> None:
    job = render({"image": "x@sha256:" + "cd" * 32, "backoff_limit": "zero"})
    with pytest.raises(kubernetes_validate.ValidationError, match="zero"):
        kubernetes_validate.validate(job, KUBERNETES_VERSION, strict=True)


def test_deploy_creates_the_kubernetes_pool_with_the_hardened_template(
    prefect_server: Server,
) -> None:
    done = ameide(
        "deploy",
        "--env",
        "staging",
        "--image",
        "registry.internal/ameide-migrations@sha256:" + "ef" * 32,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    with get_client(sync_client=True) as client:
        pool = client.read_work_pool("ameide-kubernetes")
        deployment = client.read_deployment_by_name("migrate/staging")
    assert pool.type == "kubernetes"
    assert pool.base_job_template == job_template()
    assert deployment.job_variables is not None
    assert deployment.job_variables["namespace"] == "ameide-staging"
    assert deployment.job_variables["image"].endswith("ef" * 32)


def test_a_kubernetes_environment_is_deployed_only_with_an_image_pinned_by_digest() -> None:
    done = ameide(
        "deploy", "--env", "prod", "--image", "registry.internal/ameide-migrations:latest"
    )
    assert done.returncode == 2
    assert "pinned by digest" in done.stderr


@pytest.mark.k8s
@pytest.mark.slow
@pytest.mark.timeout(1800)  # the first use of the suite's cluster may build it
def test_the_rendered_job_is_accepted_by_a_real_apiserver(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """Server-side validation of the exact Job: KUBECONFIG's cluster when set, else the suite's
    own one-node cluster. Strict field validation refuses any field the API does not know."""
    kubeconfig = os.environ.get("KUBECONFIG")
    if not kubeconfig:
        kubeconfig = str(request.getfixturevalue("k8s_cluster").kubeconfig)
    staging = SHIPPED["staging"]
    job = render(
        {
            **staging.deployment_job_variables(),
            "namespace": "default",
            "image": "registry.internal/ameide-migrations@sha256:" + "ab" * 32,
        }
    )
    job["metadata"]["name"] = "ameide-render-check"
    manifest = tmp_path / "job.json"
    manifest.write_text(json.dumps(job))

    done = subprocess.run(
        [
            shutil.which("kubectl") or str(build().kubectl),
            "--kubeconfig",
            kubeconfig,
            "create",
            "--dry-run=server",
            "--validate=strict",
            "-o",
            "json",
            "-f",
            str(manifest),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    stored = json.loads(done.stdout)
    assert stored["spec"]["backoffLimit"] == 0
    assert stored["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True
