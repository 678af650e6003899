"""The Helm charts lint and render, on every values file, into objects Kubernetes accepts."""

from __future__ import annotations

import subprocess
from typing import Any

import kubernetes_validate
import pytest
import yaml

from .fix_platform import REPO

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
    assert container["args"] == ["ameide-migrate", "run", "--env", "staging", "--db", "threads"]


def test_the_schema_refuses_a_tag_where_a_digest_belongs(helm: str) -> None:
    chart_dir = CHARTS / "db-migrations"
    done = helm_run(helm, "template", "ameide", str(chart_dir), "--set", "image.digest=latest")
    assert done.returncode != 0
    assert "digest" in done.stderr
