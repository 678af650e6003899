"""The test cluster itself: a Ready node that runs Jobs from local images, mounts service-account
tokens its apiserver accepts, and leaves nothing behind when stopped."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import time
from typing import Any

import pytest

from tests.k8s_cluster import BUSYBOX_IMAGE, NODE_NAME, Cluster, busybox_image

pytestmark = [pytest.mark.k8s, pytest.mark.slow]

_names = itertools.count(1)


def unique(prefix: str) -> str:
    return f"{prefix}-{os.getpid()}-{next(_names)}"


def pod_spec(command: list[str], **extra: Any) -> dict[str, Any]:
    return {
        "hostNetwork": True,
        "restartPolicy": "Never",
        "containers": [{"name": "main", "image": BUSYBOX_IMAGE, "command": command}],
        **extra,
    }


def apply(cluster: Cluster, manifest: dict[str, Any]) -> None:
    cluster.kubectl("apply", "-f", "-", input=json.dumps(manifest))


def run_job(cluster: Cluster, name: str, command: list[str], timeout: float = 60) -> dict[str, Any]:
    """Create a Job that never retries and return its final condition (Complete or Failed)."""
    apply(
        cluster,
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"backoffLimit": 0, "template": {"spec": pod_spec(command)}},
        },
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = cluster.api("GET", f"/apis/batch/v1/namespaces/default/jobs/{name}")
        for condition in job.get("status", {}).get("conditions", []):
            if condition["type"] in ("Complete", "Failed") and condition["status"] == "True":
                return dict(condition)
        time.sleep(0.25)
    pods = cluster.kubectl("get", "pods", "-l", f"job-name={name}", "-o", "wide").stdout
    raise AssertionError(f"Job {name} did not finish in {timeout:.0f} s:\n{pods}")


def wait_for_pod_phase(cluster: Cluster, name: str, phases: set[str], timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    phase = ""
    while time.monotonic() < deadline:
        pod = cluster.api("GET", f"/api/v1/namespaces/default/pods/{name}")
        phase = pod.get("status", {}).get("phase", "")
        if phase in phases:
            return str(phase)
        time.sleep(0.25)
    raise AssertionError(f"pod {name} still {phase or 'unknown'} after {timeout:.0f} s")


def token_review(cluster: Cluster, token: str) -> dict[str, Any]:
    review = cluster.api(
        "POST",
        "/apis/authentication.k8s.io/v1/tokenreviews",
        {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "spec": {"token": token},
        },
    )
    return dict(review["status"])


def test_node_is_ready_and_reports_the_built_version(k8s_cluster: Cluster) -> None:
    node = k8s_cluster.api("GET", f"/api/v1/nodes/{NODE_NAME}")
    ready = {c["type"]: c["status"] for c in node["status"]["conditions"]}["Ready"]
    assert ready == "True"
    assert {"type": "InternalIP", "address": "127.0.0.1"} in node["status"]["addresses"]
    version = json.loads(k8s_cluster.kubectl("version", "--output", "json").stdout)
    assert version["serverVersion"]["gitVersion"] == "v1.34.4"


def test_job_that_echoes_completes_and_its_log_shows_the_output(k8s_cluster: Cluster) -> None:
    name = unique("echo")
    condition = run_job(k8s_cluster, name, ["sh", "-c", "echo hello"])
    assert condition["type"] == "Complete"
    assert k8s_cluster.kubectl("logs", f"job/{name}").stdout == "hello\n"
    k8s_cluster.kubectl("delete", "job", name, "--cascade=foreground")


def test_job_that_exits_1_without_retries_fails(k8s_cluster: Cluster) -> None:
    name = unique("fail")
    condition = run_job(k8s_cluster, name, ["sh", "-c", "exit 1"])
    assert condition["type"] == "Failed"
    assert condition["reason"] == "BackoffLimitExceeded"
    k8s_cluster.kubectl("delete", "job", name, "--cascade=foreground")


def test_pod_token_and_created_token_pass_token_review_and_a_forged_one_does_not(
    k8s_cluster: Cluster,
) -> None:
    account = unique("reviewer")
    k8s_cluster.kubectl("create", "serviceaccount", account)
    pod = unique("token")
    token_file = "/var/run/secrets/kubernetes.io/serviceaccount/token"
    apply(
        k8s_cluster,
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": pod, "namespace": "default"},
            "spec": pod_spec(["cat", token_file], serviceAccountName=account),
        },
    )
    assert wait_for_pod_phase(k8s_cluster, pod, {"Succeeded", "Failed"}) == "Succeeded"
    volumes = k8s_cluster.api("GET", f"/api/v1/namespaces/default/pods/{pod}")["spec"]["volumes"]
    assert any("serviceAccountToken" in str(v.get("projected", {})) for v in volumes)
    mounted = k8s_cluster.kubectl("logs", pod).stdout.strip()
    created = k8s_cluster.kubectl("create", "token", account).stdout.strip()
    for token in (mounted, created):
        status = token_review(k8s_cluster, token)
        assert status["authenticated"] is True
        assert status["user"]["username"] == f"system:serviceaccount:default:{account}"
    header, payload, _ = created.split(".")
    forged = f"{header}.{payload}.{'A' * 342}"
    assert token_review(k8s_cluster, forged).get("authenticated") is not True
    k8s_cluster.kubectl("delete", f"pod/{pod}", f"serviceaccount/{account}")


def test_stop_leaves_no_process_no_mount_and_no_cgroup(k8s_cluster: Cluster) -> None:
    """A second cluster of its own, stopped while a pod runs in it."""
    cluster = Cluster(k8s_cluster.binaries).start()
    directory = cluster.directory
    try:
        cluster.import_image(busybox_image(directory))
        apply(
            cluster,
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": "sleeper", "namespace": "default"},
                "spec": pod_spec(["sleep", "3600"]),
            },
        )
        assert wait_for_pod_phase(cluster, "sleeper", {"Running"}) == "Running"
        daemons = cluster.pids
        assert cluster.leftover_mounts(), "a running pod has mounts under the cluster's directory"
        assert len(cluster.leftover_processes()) > len(daemons), "containers and shims run"
    finally:
        cluster.stop()
    for pid in daemons.values():
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert cluster.leftover_processes() == []
    assert (
        str(directory)
        not in subprocess.run(["mount"], capture_output=True, text=True, check=True).stdout
    )
    assert cluster.leftover_cgroups() == []
    assert not directory.exists()
    assert k8s_cluster.node_ready(), "the session's cluster is untouched"
