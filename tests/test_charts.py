"""The Helm charts lint and render, on every values file, into objects Kubernetes accepts."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from ameide_migrate.config import environments

from .fix_platform import REPO, ameide

CHARTS = REPO / "charts"
KUBERNETES_VERSION = "1.34.0"
CASES = [
    (chart.name, values.name)
    for chart in sorted(CHARTS.iterdir())
    if (chart / "Chart.yaml").exists()
    for values in sorted(chart.glob("values*.yaml"))
]


def helm_run(helm: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([helm, *args], capture_output=True, text=True, check=False)


def render(helm: str, chart: str, values: str, *extra: str) -> list[dict[str, Any]]:
    chart_dir = CHARTS / chart
    files = ["-f", str(chart_dir / "values.yaml")]
    if values != "values.yaml":
        files += ["-f", str(chart_dir / values)]
    done = helm_run(
        helm, "template", "ameide", str(chart_dir), "--namespace", "ameide-staging", *files, *extra
    )
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def test_every_chart_has_a_values_schema() -> None:
    assert {c for c, _ in CASES} == {"prefect-worker", "db-migrations"}
    for chart in {c for c, _ in CASES}:
        assert (CHARTS / chart / "values.schema.json").exists()


@pytest.mark.parametrize(("chart", "values"), CASES)
def test_chart_lints_and_renders_valid_objects(helm: str, chart: str, values: str) -> None:
    chart_dir = CHARTS / chart
    lint = helm_run(helm, "lint", "--strict", str(chart_dir), "-f", str(chart_dir / values))
    assert lint.returncode == 0, lint.stdout + lint.stderr

    objects = render(helm, chart, values)

    assert objects
    for obj in objects:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        pod = obj.get("spec", {}).get("template", {}).get("spec")
        if pod:
            assert pod["securityContext"]["runAsNonRoot"] is True
            for container in pod["containers"]:
                assert container["securityContext"]["readOnlyRootFilesystem"] is True
                assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]


def test_worker_rbac_is_limited_to_jobs_pods_and_logs_in_its_namespace(helm: str) -> None:
    objects = render(helm, "prefect-worker", "values-staging.yaml")
    kinds = {o["kind"] for o in objects}
    assert "ClusterRole" not in kinds
    assert "ClusterRoleBinding" not in kinds
    (role,) = [o for o in objects if o["kind"] == "Role"]
    assert role["metadata"]["namespace"] == "ameide-staging"
    resources = {r for rule in role["rules"] for r in rule["resources"]}
    assert resources == {"jobs", "pods", "pods/status", "pods/log", "events"}


def test_db_migrations_hook_job_runs_the_flow_from_an_image_pinned_by_digest(helm: str) -> None:
    digest = "sha256:" + "ab" * 32
    (job,) = render(
        helm,
        "db-migrations",
        "values.yaml",
        "--set",
        f"image.digest={digest}",
        "--set",
        "databases={threads}",
    )
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert job["spec"]["backoffLimit"] == 0
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["image"].endswith("@" + digest)
    assert container["args"] == [
        "ameide-migrate",
        "run",
        "--skip-build",
        "--env",
        "staging",
        "--db",
        "threads",
    ]


def test_the_schema_refuses_a_tag_where_a_digest_belongs(helm: str) -> None:
    chart_dir = CHARTS / "db-migrations"
    done = helm_run(helm, "template", "ameide", str(chart_dir), "--set", "image.digest=latest")
    assert done.returncode != 0
    assert "digest" in done.stderr


# What the tests' one-node cluster needs: no pod network, and no route to the `kubernetes`
# Service, so the in-cluster client is pointed at the apiserver on the node.
ONE_NODE_CLUSTER = {
    "hostNetwork": True,
    "extraEnv": [
        {"name": "KUBERNETES_SERVICE_HOST", "value": "127.0.0.1"},
        {"name": "KUBERNETES_SERVICE_PORT", "value": "6443"},
    ],
}
POD_OWNERS = {"prefect-worker": "Deployment", "db-migrations": "Job"}


def pod_spec(objects: list[dict[str, Any]], chart: str) -> dict[str, Any]:
    (owner,) = [o for o in objects if o["kind"] == POD_OWNERS[chart]]
    spec: dict[str, Any] = owner["spec"]["template"]["spec"]
    return spec


def values_file(directory: Path, values: dict[str, Any]) -> str:
    path = directory / "values-test.yaml"
    path.write_text(yaml.safe_dump(values))
    return str(path)


@pytest.mark.parametrize(("chart", "values"), CASES)
def test_the_environments_values_keep_the_pod_network(helm: str, chart: str, values: str) -> None:
    pod = pod_spec(render(helm, chart, values), chart)
    assert "hostNetwork" not in pod
    assert "dnsPolicy" not in pod


@pytest.mark.parametrize("chart", sorted(POD_OWNERS))
def test_a_cluster_without_pod_network_gets_host_network_and_the_apiserver_address(
    helm: str, chart: str, tmp_path: Path
) -> None:
    extra = values_file(tmp_path, ONE_NODE_CLUSTER)
    chart_dir = CHARTS / chart
    lint = helm_run(helm, "lint", "--strict", str(chart_dir), "-f", extra)
    assert lint.returncode == 0, lint.stdout + lint.stderr

    objects = render(helm, chart, "values.yaml", "-f", extra)

    for obj in objects:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    pod = pod_spec(objects, chart)
    assert pod["hostNetwork"] is True
    assert pod["dnsPolicy"] == "ClusterFirstWithHostNet"
    (container,) = pod["containers"]
    assert container["env"][-2:] == ONE_NODE_CLUSTER["extraEnv"]
    assert "PREFECT_API_URL" in {e["name"] for e in container["env"]}


def test_the_worker_takes_extra_arguments_after_its_own(helm: str, tmp_path: Path) -> None:
    extra = values_file(tmp_path, {"extraArgs": ["--limit", "2"]})
    pod = pod_spec(
        render(helm, "prefect-worker", "values-staging.yaml", "-f", extra), "prefect-worker"
    )
    (container,) = pod["containers"]
    assert container["args"] == [
        "prefect",
        "worker",
        "start",
        "--pool",
        "ameide-kubernetes",
        "--type",
        "kubernetes",
        "--limit",
        "2",
    ]


@pytest.mark.parametrize("chart", sorted(POD_OWNERS))
@pytest.mark.parametrize(
    ("entry", "complaint"),
    [
        ({"value": "127.0.0.1"}, "at '/extraEnv/0': missing property 'name'"),
        ({"name": "KUBERNETES_SERVICE_PORT", "value": 6443}, "at '/extraEnv/0/value': got number"),
        (
            {
                "name": "POD",
                "value": "x",
                "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}},
            },
            "at '/extraEnv/0': 'not' failed",
        ),
    ],
)
def test_the_schema_refuses_an_env_var_kubernetes_would_refuse(
    helm: str, chart: str, entry: dict[str, Any], complaint: str, tmp_path: Path
) -> None:
    extra = values_file(tmp_path, {"extraEnv": [entry]})
    done = helm_run(helm, "template", "ameide", str(CHARTS / chart), "-f", extra)
    assert done.returncode != 0
    assert complaint in done.stderr


def test_the_schema_refuses_worker_arguments_in_the_migrations_job(
    helm: str, tmp_path: Path
) -> None:
    extra = values_file(tmp_path, {"extraArgs": ["--limit", "2"]})
    done = helm_run(helm, "template", "ameide", str(CHARTS / "db-migrations"), "-f", extra)
    assert done.returncode != 0
    assert "extraArgs" in done.stderr


@pytest.mark.parametrize("environment", ["staging", "prod"])
def test_the_environment_record_feeds_the_charts_values(
    helm: str, environment: str, tmp_path: Path
) -> None:
    """`chart-values` prints what the environments file says; the per-environment values files
    hold only what is the site's (addresses, resources)."""
    rendered: dict[str, list[dict[str, Any]]] = {}
    for chart in ("prefect-worker", "db-migrations"):
        printed = ameide("chart-values", "--env", environment, "--chart", chart)
        assert printed.returncode == 0, printed.stderr
        values = tmp_path / f"{chart}.yaml"
        values.write_text(printed.stdout)
        own = f"values-{environment}.yaml"
        rendered[chart] = render(
            helm,
            chart,
            own if (CHARTS / chart / own).exists() else "values.yaml",
            "-f",
            str(values),
        )
    declared = environments.load(REPO / "db" / "flyway" / "sql" / "ameide.toml")[environment]

    (worker,) = [o for o in rendered["prefect-worker"] if o["kind"] == "Deployment"]
    args = worker["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--pool") + 1] == declared.work_pool
    (job,) = [o for o in rendered["db-migrations"] if o["kind"] == "Job"]
    pod = job["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == declared.service_account
    assert environment in pod["containers"][0]["args"]
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert declared.vault.kubernetes_role in env.values()
    for chart in ("prefect-worker", "db-migrations"):
        for values_file in (CHARTS / chart).glob("values-*.yaml"):
            assert not {"workPool", "environment", "serviceAccountName"} & set(
                yaml.safe_load(values_file.read_text()) or {}
            ), f"{values_file} repeats what ameide.toml declares"
