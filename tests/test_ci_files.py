"""The CI files, run as CI runs them.

- The GitHub Actions workflow: actionlint (with shellcheck on every `run:` script) passes, and the
  workflow's own steps, taken from the YAML and run by bash as a runner runs them, build and push
  the commit's image to the suite's registry and run `migrate` on exactly that digest.
- The curl recipe (`deployments/ci/trigger.sh`) against the suite's Prefect server: it fails fast
  on what CI gets wrong and waits for a real run to its end.
- The Tekton pipeline: every reference resolves, the digest flows from the build task's result to
  the trigger task, the containers are valid Kubernetes containers, the scripts pass shellcheck.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast
from uuid import UUID

import kubernetes_validate
import pytest
import requests
import yaml

from ameide_migrate.adapters import ports, secret_sources
from ameide_migrate.adapters import vault as vault_api
from ameide_migrate.adapters.postgres.connection import Credentials
from ameide_migrate.adapters.postgres.schema_history import read_history
from ameide_migrate.adapters.prefect import approvals, local_server, registration
from ameide_migrate.adapters.prefect.local_server import Server
from ameide_migrate.config import environments
from ameide_migrate.config.settings import Settings
from ameide_migrate.core.catalog import load_catalog
from ameide_migrate.services import local

from .fix_actionlint import run_actionlint
from .fix_docker import DockerEngine
from .fix_platform import REPO, Platform, admin_url_of, drop_owners
from .fix_vault import READ_POLICY, Vault
from .fix_worker import start_worker, stop_worker

WORKFLOW = REPO / ".github" / "workflows" / "migrate.yml"
CURL_RECIPE = REPO / "deployments" / "ci" / "trigger.sh"
TEKTON = REPO / "deployments" / "tekton"
BIN = Path(sys.executable).parent
KUBERNETES_VERSION = "1.34.0"


def load_workflow() -> dict[str, Any]:
    workflow: dict[Any, Any] = yaml.safe_load(WORKFLOW.read_text())
    # YAML 1.1 reads the key `on` as true.
    workflow["on"] = workflow.pop(True)
    return workflow


# --- The GitHub Actions workflow, read and linted -----------------------------------------------


def test_actionlint_and_shellcheck_pass_on_the_workflow(actionlint: str, tmp_path: Path) -> None:
    done = run_actionlint(actionlint, WORKFLOW)
    assert done.returncode == 0, done.stdout + done.stderr

    # The same run finds an unquoted variable in a script: shellcheck is really checking them.
    broken = tmp_path / ".github" / "workflows" / "migrate.yml"
    broken.parent.mkdir(parents=True)
    broken.write_text(WORKFLOW.read_text().replace('trigger "${args[@]}"', "trigger ${args[@]}"))
    found = subprocess.run(
        [actionlint, "-no-color", str(broken)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=tmp_path,
    )
    assert found.returncode == 1
    assert "shellcheck reported issue in this script: SC2068" in found.stdout


def test_the_workflow_offers_only_ci_environments_and_keeps_inputs_out_of_its_scripts() -> None:
    workflow = load_workflow()
    dispatch = workflow["on"]["workflow_dispatch"]["inputs"]
    assert dispatch["environment"]["type"] == "choice"
    assert dispatch["environment"]["options"] == ["staging", "prod"]
    assert workflow["permissions"] == {"contents": "read"}

    (job,) = workflow["jobs"].values()
    scripts = [step["run"] for step in job["steps"] if "run" in step]
    # Inputs and secrets reach the shell through `env:`; an expression in a script is pasted
    # into it before bash reads it.
    assert all("${{" not in script for script in scripts)
    assert any("uv sync --frozen --no-dev" in script for script in scripts)

    # The exit codes, per flow: migrate's list up to drift's.
    header = " ".join(line.lstrip("# ") for line in WORKFLOW.read_text().splitlines()[:20])
    migrate_codes = header[header.index("migrate  0 completed") : header.index("drift  ")]
    for code in ("0 completed", "1 failed", "2 usage or configuration", "4 timed out"):
        assert code in migrate_codes
    assert " 3 " not in migrate_codes, "a migrate run never exits 3"
    assert "3 drift found" in header


# --- The workflow's steps, run as a runner runs them --------------------------------------------

_EXPRESSION = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")
_PROPERTY = re.compile(r"[A-Za-z_][\w-]*(?:\.[\w-]+)+")
_LITERAL = re.compile(r"'((?:[^']|'')*)'")

STAND_INS = {
    "actions/checkout": "the test clones the commit into the workspace",
    "astral-sh/setup-uv": "uv is on this machine's PATH",
    "actions/setup-java": "a Java 17 JDK and Maven are on this machine's PATH",
    "actions/cache": "the suite's Flyway and wheels are linked into the workspace's .cache",
}


def evaluate(text: str, contexts: dict[str, Any]) -> str:
    """Resolve `${{ }}` as Actions does, for the forms the workflow uses: context properties (a
    missing one is null, shown as ''), string literals, and `a || b` (the first truthy one)."""

    def operand(expression: str) -> Any:
        if literal := _LITERAL.fullmatch(expression):
            return literal.group(1).replace("''", "'")
        assert _PROPERTY.fullmatch(expression), f"the test cannot evaluate ${{{{ {expression} }}}}"
        context, *names = expression.split(".")
        assert context in contexts, f"the test does not provide the context {context!r}"
        value: Any = contexts[context]
        for name in names:
            value = value.get(name) if isinstance(value, dict) else None
        return value

    def one(match: re.Match[str]) -> str:
        value: Any = None
        for expression in match.group(1).split("||"):
            value = operand(expression.strip())
            if value not in (None, "", False, 0):
                break
        if isinstance(value, bool):
            return "true" if value else "false"
        return "" if value is None else str(value)

    return _EXPRESSION.sub(one, text)


def _key_values(path: Path) -> dict[str, str]:
    """The `name=value` and `name<<DELIMITER` lines a step writes to GITHUB_OUTPUT or GITHUB_ENV."""
    found: dict[str, str] = {}
    lines = iter(path.read_text().splitlines())
    for line in lines:
        if "<<" in line and ("=" not in line or line.index("<<") < line.index("=")):
            name, delimiter = line.split("<<", 1)
            found[name] = "\n".join(iter(lines.__next__, delimiter))
        elif "=" in line:
            name, value = line.split("=", 1)
            found[name] = value
    return found


@dataclass
class StepRun:
    name: str
    returncode: int
    output: str


@dataclass
class JobRun:
    steps: list[StepRun] = field(default_factory=list)
    outputs: dict[str, dict[str, str]] = field(default_factory=dict)

    @property
    def returncode(self) -> int:
        return self.steps[-1].returncode if self.steps else 0

    def log(self) -> str:
        return "\n".join(f"--- {s.name} (exit {s.returncode})\n{s.output}" for s in self.steps)


def run_job(
    workflow: dict[str, Any],
    job_name: str,
    *,
    workspace: Path,
    runner_temp: Path,
    machine_env: dict[str, str],
    contexts: dict[str, Any],
) -> JobRun:
    """The job's `run:` steps in order, each by `bash --noprofile --norc -eo pipefail` (the
    workflow's `defaults.run.shell: bash`), with the environment the workflow, the job and the
    step give it, and GITHUB_OUTPUT, GITHUB_ENV and GITHUB_PATH carried to the next steps.
    `uses:` steps are stood in for by this machine (STAND_INS); an unknown one fails the test."""
    assert workflow["defaults"]["run"]["shell"] == "bash"
    job = workflow["jobs"][job_name]
    contexts = {**contexts, "runner": {"temp": str(runner_temp), "os": "Linux"}, "steps": {}}
    carried_env: dict[str, str] = {}
    carried_path: list[str] = []
    result = JobRun()
    for index, step in enumerate(job["steps"]):
        if "uses" in step:
            action = step["uses"].split("@")[0]
            assert action in STAND_INS, f"the test has no stand-in for the action {action}"
            continue
        files = {name: runner_temp / f"step-{index}-{name}" for name in ("output", "env", "path")}
        for path in files.values():
            path.write_text("")
        env = {
            **machine_env,
            "CI": "true",
            "GITHUB_ACTIONS": "true",
            "GITHUB_EVENT_NAME": contexts["github"]["event_name"],
            "GITHUB_SHA": contexts["github"]["sha"],
            "GITHUB_WORKSPACE": str(workspace),
            "RUNNER_TEMP": str(runner_temp),
            "RUNNER_OS": "Linux",
            "GITHUB_OUTPUT": str(files["output"]),
            "GITHUB_ENV": str(files["env"]),
            "GITHUB_PATH": str(files["path"]),
            **carried_env,
        }
        for scope in (workflow.get("env", {}), job.get("env", {}), step.get("env", {})):
            env.update({name: evaluate(str(value), contexts) for name, value in scope.items()})
        env["PATH"] = os.pathsep.join([*reversed(carried_path), machine_env["PATH"]])
        script = runner_temp / f"step-{index}.sh"
        script.write_text(evaluate(step["run"], contexts))
        done = subprocess.run(
            ["bash", "--noprofile", "--norc", "-eo", "pipefail", str(script)],
            cwd=workspace,
            env=env,
            capture_output=True,
            text=True,
            timeout=1800,
            check=False,
        )
        name = step.get("name", f"step {index}")
        result.steps.append(StepRun(name, done.returncode, done.stdout + done.stderr))
        if done.returncode != 0:
            break
        if "id" in step:
            contexts["steps"][step["id"]] = {"outputs": _key_values(files["output"])}
            result.outputs[step["id"]] = _key_values(files["output"])
        carried_env.update(_key_values(files["env"]))
        carried_path += [line for line in files["path"].read_text().splitlines() if line]
    return result


def _runner_machine_env(home: Path) -> dict[str, str]:
    """This machine's environment as a runner's, without the suite's own settings."""
    uv = shutil.which("uv") or str(Path.home() / ".local" / "bin" / "uv")
    assert Path(uv).exists(), "uv is not on PATH: `./dev test` installs it"
    kept = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("PREFECT_", "AMEIDE_", "VAULT_", "DOCKER_", "PYTEST_"))
        and name != "VIRTUAL_ENV"
    }
    path = os.pathsep.join(
        p for p in [str(Path(uv).parent), *kept["PATH"].split(os.pathsep)] if p != str(BIN)
    )
    return {**kept, "PATH": path, "PREFECT_HOME": str(home / "prefect")}


PROD = "prod"
MANIFEST_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)
CI_POOL = "ameide-ci-docker"
CI_PREFIX = "ci_"
CI_DATABASES = ("threads", "graph")


class Reviewer(threading.Thread):
    """Approves every run of a deployment that waits for a decision on its plan."""

    def __init__(self, deployment_id: UUID) -> None:
        super().__init__(daemon=True)
        self.deployment_id = deployment_id
        self.approved: list[UUID] = []
        self._done = threading.Event()

    def run(self) -> None:
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.filters import (
            DeploymentFilter,
            DeploymentFilterId,
            FlowRunFilter,
            FlowRunFilterState,
            FlowRunFilterStateType,
        )
        from prefect.client.schemas.objects import StateType

        waiting = FlowRunFilter(
            state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED]))
        )
        mine = DeploymentFilter(id=DeploymentFilterId(any_=[self.deployment_id]))
        while not self._done.wait(1):
            with get_client(sync_client=True) as client:
                runs = client.read_flow_runs(flow_run_filter=waiting, deployment_filter=mine)
            for run in runs:
                approvals.decide(str(run.id), approved=True, reason="the test's reviewer")
                self.approved.append(run.id)

    def stop(self) -> None:
        self._done.set()
        self.join(timeout=10)


@dataclass
class DockerTarget:
    """migrate/prod registered on a Docker work pool, its databases' secrets in Vault."""

    owners: dict[str, Credentials]
    deployment_id: UUID
    reviewer: Reviewer

    def versions(self, database: str) -> list[str]:
        history = read_history(self.owners[database], "flyway_schema_history") or []
        return [r.version for r in history if r.version and r.success]


@pytest.fixture(scope="module")
def prod_on_a_docker_worker(
    pg_admin: Credentials,
    vault: Vault,
    prefect_server: Server,
    docker_engine: DockerEngine,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[DockerTarget]:
    """`migrate/prod`, as the project defines it, but on a Docker work pool with a real Docker
    worker (prefect-docker) on the suite's engine; its runs reach PostgreSQL, Vault and Prefect
    on loopback (host network). Two databases of prod with their secrets in Vault, readable with
    a token of the read policy only."""
    from prefect.client.orchestration import get_client
    from prefect_docker.worker import DockerWorker

    from ameide_migrate.deployments.definitions import deployments_for

    work = tmp_path_factory.mktemp("prod-on-docker")
    env = local.up(
        work / "state",
        list(CI_DATABASES),
        admin_url=admin_url_of(pg_admin),
        database_prefix=CI_PREFIX,
    )
    conn = vault.connection()
    with vault_api.session(conn) as client:
        for database, creds in env.owners.items():
            vault_api.write_secret(
                client, conn, conn.path(PROD, database), secret_sources.secret_of(database, creds)
            )
    token = vault.client().auth.token.create(policies=[READ_POLICY], ttl="30m")["auth"][
        "client_token"
    ]

    registration.ensure_work_pool(CI_POOL, "docker", DockerWorker.get_default_base_job_template())
    settings = Settings(sql_dir=REPO / "db" / "flyway" / "sql")
    catalog = environments.catalog(PROD, settings)
    migrate, _ = deployments_for(
        settings,
        PROD,
        catalog,
        job_variables={
            "network_mode": "host",
            "env": {"VAULT_ADDR": vault.address, "VAULT_TOKEN": token},
        },
    )
    # No image of its own: a run that is not given the pushed digest cannot start.
    migrate.work_pool_name = CI_POOL
    deployment_id = cast(UUID, migrate.apply())

    log = (work / "docker-worker.log").open("w")
    worker = start_worker(CI_POOL, "docker", log, work)
    # prod is protected: each run waits for a person's approval of its plan. The reviewer here
    # approves every run of this deployment that waits, as a person would in the UI.
    reviewer = Reviewer(deployment_id)
    reviewer.start()
    try:
        yield DockerTarget(dict(env.owners), deployment_id, reviewer)
    finally:
        reviewer.stop()
        stop_worker(worker)
        log.close()
        with get_client(sync_client=True) as prefect:
            prefect.delete_deployment(deployment_id)
        containers = docker_engine.docker(
            "ps", "--all", "--quiet", "--filter", "label=io.prefect.flow-run-id"
        ).split()
        if containers:
            docker_engine.docker("rm", "--force", *containers)
        with vault_api.session(conn) as client:
            for database in CI_DATABASES:
                client.secrets.kv.v2.delete_metadata_and_all_versions(
                    conn.path(PROD, database), mount_point=conn.kv_mount
                )
        drop_owners(pg_admin, env.owners)


@dataclass
class Dispatch:
    """A workflow_dispatch of the workflow, as run here, and the flow run it started."""

    job: JobRun
    sha: str
    flow_run_id: UUID


@pytest.fixture(scope="module")
def dispatched(
    prod_on_a_docker_worker: DockerTarget,
    registry: str,
    flyway_base: str,
    docker_engine: DockerEngine,
    prefect_server: Server,
    tmp_path_factory: pytest.TempPathFactory,
) -> Dispatch:
    """The workflow dispatched for prod and two databases, its steps run by bash as a runner
    runs them, against the suite's registry and Prefect server.

    The `uses:` steps are stood in for by this machine (STAND_INS): the checkout is a clone of
    this commit, the cache's restore links the suite's Flyway and wheels. The machine's
    environment adds its Docker engine and, as Docker Hub cannot be reached here, the suite's
    Flyway base in place of flyway/flyway.
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    work = tmp_path_factory.mktemp("runner")
    sha = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    workspace = work / "workspace"
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(workspace)], check=True)
    subprocess.run(["git", "-C", str(workspace), "checkout", "--quiet", sha], check=True)
    (workspace / ".cache").mkdir()
    for kept in ("flyway", "wheels"):
        (REPO / ".cache" / kept).mkdir(parents=True, exist_ok=True)
        (workspace / ".cache" / kept).symlink_to(REPO / ".cache" / kept)
    runner_temp = work / "runner-temp"
    runner_temp.mkdir()
    job = run_job(
        load_workflow(),
        "migrate",
        workspace=workspace,
        runner_temp=runner_temp,
        machine_env={
            **_runner_machine_env(work),
            "DOCKER_HOST": docker_engine.host,
            "AMEIDE_FLYWAY_BASE": flyway_base,
        },
        contexts={
            "github": {"sha": sha, "event_name": "workflow_dispatch"},
            "inputs": {"environment": PROD, "databases": "threads, graph", "dry_run": False},
            "secrets": {
                "PREFECT_API_URL": prefect_server.api_url,
                "PREFECT_API_KEY": "",
                "REGISTRY_USERNAME": "ci",
                "REGISTRY_PASSWORD": "unused by an open registry",
            },
            "vars": {"AMEIDE_IMAGE_REGISTRY": registry},
        },
    )
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            deployment_filter=DeploymentFilter(
                id=DeploymentFilterId(any_=[prod_on_a_docker_worker.deployment_id])
            )
        )
    assert len(runs) == 1, job.log()
    return Dispatch(job, sha, runs[0].id)


@pytest.mark.docker
@pytest.mark.slow
def test_the_workflows_steps_build_push_and_migrate_on_exactly_the_pushed_digest(
    dispatched: Dispatch,
    prod_on_a_docker_worker: DockerTarget,
    registry: str,
    docker_engine: DockerEngine,
) -> None:
    """What runs the triggered deployment: in production, a Kubernetes worker (the k8s tier
    proves that chain); here, a real Docker worker. It is the one worker on this machine that
    starts a run in the image its `image` job variable names, so the run completing proves the
    workflow passed exactly the digest it pushed (the deployment has no image of its own), and
    that the image of this commit migrates."""
    from prefect.client.orchestration import get_client

    job = dispatched.job
    assert job.returncode == 0, job.log()
    assert [s.name for s in job.steps][-1] == "Trigger and wait", job.log()
    pushed = job.outputs["image"]["ref"]
    assert pushed.startswith(f"{registry}/ameide-migrations@sha256:")
    name, digest = pushed.removeprefix(f"{registry}/").split("@")
    manifest = requests.head(
        f"http://{registry}/v2/{name}/manifests/{digest}",
        headers={"Accept": ", ".join(MANIFEST_TYPES)},
        timeout=10,
    )
    assert manifest.status_code == 200
    assert manifest.headers["Docker-Content-Digest"] == digest
    inspected = json.loads(docker_engine.docker("image", "inspect", pushed))[0]
    assert inspected["Config"]["Labels"]["org.opencontainers.image.revision"] == dispatched.sha

    with get_client(sync_client=True) as client:
        run = client.read_flow_run(dispatched.flow_run_id)
    assert run.state is not None
    assert run.state.is_completed(), run.state
    # prod's run waited for the approval of its plan, and migrated once approved.
    assert run.id in prod_on_a_docker_worker.reviewer.approved
    assert run.job_variables == {"image": pushed}
    assert sorted(run.parameters["databases"]) == sorted(CI_DATABASES)
    # The worker's containers ran that image, named by that digest: two, since the run was
    # suspended (its container exited) while it waited for the approval, and started again.
    containers = docker_engine.docker(
        "ps", "--all", "--quiet", "--filter", f"label=io.prefect.flow-run-id={run.id}"
    ).split()
    assert len(containers) == 2, containers
    for container_id in containers:
        container = json.loads(docker_engine.docker("container", "inspect", container_id))[0]
        assert container["Config"]["Image"] == pushed
        assert container["Image"] == inspected["Id"]
    catalog = load_catalog(REPO / "db" / "flyway" / "sql")
    for database in CI_DATABASES:
        latest = catalog.databases[database].latest_version
        assert prod_on_a_docker_worker.versions(database)[-1] == str(latest)


def tekton_substitute(value: str, params: dict[str, str | list[str]]) -> list[str]:
    """A string of a Task as Tekton gives it to the container: `$(params.NAME)` replaced, an
    array's `$(params.NAME[*])` alone in its string becoming the array's items."""
    if whole := re.fullmatch(r"\$\(params\.([\w-]+)\[\*\]\)", value):
        items = params[whole.group(1)]
        assert isinstance(items, list)
        return items
    return [re.sub(r"\$\(params\.([\w-]+)\)", lambda m: str(params[m.group(1)]), value)]


@pytest.mark.docker
@pytest.mark.slow
def test_tektons_trigger_step_runs_in_the_pushed_image_and_migrate_runs_on_it(
    dispatched: Dispatch,
    prod_on_a_docker_worker: DockerTarget,
    prefect_server: Server,
    docker_engine: DockerEngine,
) -> None:
    """The trigger task's step as Tekton runs it: its script, with its args and env (the Secret's
    values given), in the image named by the build's result, on the host's network as the
    cluster's pods reach the Prefect API. Its run completes on the same digest."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    pushed = dispatched.job.outputs.get("image", {}).get("ref")
    assert pushed, f"the workflow pushed no image:\n{dispatched.job.log()}"
    task = load_tekton()[("Task", "ameide-migrate-trigger")]["spec"]
    params: dict[str, str | list[str]] = {
        p["name"]: p["default"] for p in task["params"] if "default" in p
    }
    params.update(image=pushed, environment=PROD, databases=list(CI_DATABASES), timeout="600")
    (step,) = task["steps"]
    secrets = {"url": prefect_server.api_url}
    env = [
        f"{e['name']}={tekton_substitute(e['value'], params)[0]}"
        if "value" in e
        else f"{e['name']}={secrets.get(e['valueFrom']['secretKeyRef']['key'], '')}"
        for e in step["env"]
    ]
    args = [item for arg in step["args"] for item in tekton_substitute(arg, params)]
    (image,) = tekton_substitute(step["image"], params)

    done = subprocess.run(
        [
            "docker",
            "run",
            "--rm",
            "--network=host",
            *[f"--env={e}" for e in env],
            "--entrypoint=/bin/sh",
            image,
            "-c",
            step["script"],
            step["name"],
            *args,
        ],
        env={**os.environ, "DOCKER_HOST": docker_engine.host},
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            deployment_filter=DeploymentFilter(
                id=DeploymentFilterId(any_=[prod_on_a_docker_worker.deployment_id])
            )
        )
    (run,) = [r for r in runs if r.id != dispatched.flow_run_id]
    assert run.state is not None
    assert run.state.is_completed(), run.state
    assert run.job_variables == {"image": pushed}
    assert sorted(run.parameters["databases"]) == sorted(CI_DATABASES)


# --- The curl recipe against the suite's Prefect server -----------------------------------------


def curl_recipe(
    *args: str, env: dict[str, str], timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CURL_RECIPE), *args],
        env={"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"), **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_curl_recipe_fails_fast_on_a_deployment_not_registered_or_no_api(
    prefect_server: Server,
) -> None:
    started = time.monotonic()
    missing = curl_recipe("migrate/nowhere", env={"PREFECT_API_URL": prefect_server.api_url})
    took = time.monotonic() - started

    assert missing.returncode == 2, missing.stdout + missing.stderr
    assert "FAILED: deployment migrate/nowhere is not registered" in missing.stderr
    assert prefect_server.api_url in missing.stderr
    assert took < 10

    empty = curl_recipe("migrate/staging", env={"PREFECT_API_URL": ""})
    assert empty.returncode == 2
    assert "PREFECT_API_URL is empty" in empty.stderr

    closed = f"http://127.0.0.1:{ports.free_port()}/api"
    unreachable = curl_recipe("migrate/staging", env={"PREFECT_API_URL": closed})
    assert unreachable.returncode == 2
    assert f"the Prefect API at {closed} cannot be reached" in unreachable.stderr


@pytest.mark.prefect  # a Prefect server of its own, with basic auth
def test_curl_recipe_sends_basic_auth_to_a_server_that_requires_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PREFECT_SERVER_API_AUTH_STRING", "ci:s3cret:with colon")
    server = local_server.ensure_server(tmp_path / "prefect-auth")
    try:
        refused = curl_recipe("migrate/staging", env={"PREFECT_API_URL": server.api_url})
        wrong = curl_recipe(
            "migrate/staging",
            env={"PREFECT_API_URL": server.api_url, "PREFECT_API_AUTH_STRING": "ci:wrong"},
        )
        let_in = curl_recipe(
            "migrate/staging",
            env={
                "PREFECT_API_URL": server.api_url,
                "PREFECT_API_AUTH_STRING": "ci:s3cret:with colon",
            },
        )
    finally:
        local_server.stop_server(tmp_path / "prefect-auth")

    for answer in (refused, wrong):
        assert answer.returncode == 2, answer.stdout + answer.stderr
        assert "refused the credentials (HTTP 401)" in answer.stderr
    # Let in, it gets as far as the deployment, which that server does not have.
    assert let_in.returncode == 2, let_in.stdout + let_in.stderr
    assert "deployment migrate/staging is not registered" in let_in.stderr


def test_curl_recipe_waits_for_a_real_run_to_complete_and_bounds_its_wait(
    process_worker: Platform, prefect_server: Server
) -> None:
    from prefect.client.orchestration import get_client

    image = "registry.example.com/ameide-migrations@sha256:" + "0" * 64
    done = curl_recipe(
        "migrate/local",
        "threads",
        env={"PREFECT_API_URL": prefect_server.api_url, "IMAGE": image, "POLL_SECONDS": "1"},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "state: Completed" in done.stdout.splitlines()
    run_id = UUID(done.stdout.split()[2].rstrip(":"))
    assert f"{prefect_server.ui_url}/runs/flow-run/{run_id}" in done.stdout
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(run_id)
    assert run.parameters["databases"] == ["threads"]
    assert run.job_variables == {"image": image}
    latest = load_catalog(process_worker.sql_dir).databases["threads"].latest_version
    assert process_worker.versions("threads")[-1] == str(latest)
    assert process_worker.history("graph") is None

    started = time.monotonic()
    bounded = curl_recipe(
        "migrate/local",
        "graph",
        env={"PREFECT_API_URL": prefect_server.api_url, "TIMEOUT": "0"},
    )
    assert bounded.returncode == 4, bounded.stdout + bounded.stderr
    assert "the run keeps going" in bounded.stdout
    assert time.monotonic() - started < 10
    # It does: the worker runs it after the recipe stopped waiting.
    graph_run = UUID(bounded.stdout.split()[2].rstrip(":"))
    deadline = time.monotonic() + 240
    with get_client(sync_client=True) as client:
        while not (state := client.read_flow_run(graph_run).state) or not state.is_final():
            assert time.monotonic() < deadline, state
            time.sleep(1)
    assert state.is_completed()


# --- The Tekton pipeline ------------------------------------------------------------------------

_TEKTON_REFERENCE = re.compile(
    r"\$\((params|workspaces|results|tasks)\.([\w-]+)(?:\.([\w-]+))?(?:\.([\w-]+))?(\[\*\])?\)"
)


def load_tekton() -> dict[tuple[str, str], dict[str, Any]]:
    documents: dict[tuple[str, str], dict[str, Any]] = {}
    for path in sorted(TEKTON.glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            assert document["apiVersion"] == "tekton.dev/v1", path
            documents[(document["kind"], document["metadata"]["name"])] = document
    return documents


def _references(node: Any) -> list[tuple[str, ...]]:
    text = json.dumps(node)
    return [tuple(part for part in m.groups() if part) for m in _TEKTON_REFERENCE.finditer(text)]


def test_tekton_pipeline_passes_the_pushed_digest_from_build_to_trigger() -> None:
    documents = load_tekton()
    (pipeline,) = [d for (kind, _), d in documents.items() if kind == "Pipeline"]
    tasks = {t["name"]: t for t in pipeline["spec"]["tasks"]}
    specs = {name: documents[("Task", t["taskRef"]["name"])]["spec"] for name, t in tasks.items()}

    trigger = next(n for n, t in tasks.items() if t["taskRef"]["name"] == "ameide-migrate-trigger")
    image = next(p["value"] for p in tasks[trigger]["params"] if p["name"] == "image")
    wired = re.fullmatch(r"\$\(tasks\.([\w-]+)\.results\.([\w-]+)\)", image)
    assert wired, f"the trigger task's image is {image!r}, not a build task's result"
    build, result = wired.groups()
    assert tasks[build]["taskRef"]["name"] == "ameide-migrate-build-image"
    assert result in [r["name"] for r in specs[build]["results"]]
    # The build writes that result, and the trigger step runs in that image and passes it on.
    assert f"$(results.{result}.path)" in json.dumps(specs[build]["steps"])
    (step,) = specs[trigger]["steps"]
    assert step["image"] == "$(params.image)"
    assert {"name": "IMAGE", "value": "$(params.image)"} in step["env"]
    assert '--image "$IMAGE"' in step["script"]

    # Every reference resolves, as Tekton's admission would check.
    declared_pipeline = {p["name"] for p in pipeline["spec"]["params"]}
    pipeline_workspaces = {w["name"] for w in pipeline["spec"]["workspaces"]}
    for name, task in tasks.items():
        spec = specs[name]
        task_params = {p["name"]: p for p in spec["params"]}
        given = {p["name"] for p in task["params"]}
        assert given <= set(task_params), f"{name} is given params its task does not declare"
        required = {p for p, d in task_params.items() if "default" not in d}
        assert required <= given, f"{name} is not given {required - given}"
        for reference in _references(task["params"]):
            if reference[0] == "params":
                assert reference[1] in declared_pipeline, reference
            else:
                assert reference[0] == "tasks", reference
                assert reference[1] in tasks, reference
                assert reference[3] in [r["name"] for r in specs[reference[1]]["results"]]
        task_workspaces = {w["name"]: w for w in spec.get("workspaces", [])}
        bound = {w["name"]: w["workspace"] for w in task.get("workspaces", [])}
        assert set(bound) <= set(task_workspaces)
        assert set(bound.values()) <= pipeline_workspaces
        assert {w for w, d in task_workspaces.items() if not d.get("optional")} <= set(bound)
        for reference in _references([spec.get("steps"), spec.get("sidecars")]):
            kind, target = reference[:2]
            known = {
                "params": set(task_params),
                "workspaces": set(task_workspaces),
                "results": {r["name"] for r in spec.get("results", [])},
            }
            assert target in known[kind], f"{name}: $({'.'.join(reference)}) is not declared"


def test_tekton_steps_are_valid_containers_and_their_scripts_pass_shellcheck(
    shellcheck: str, tmp_path: Path
) -> None:
    """The containers as Kubernetes would take them (strict, the Tekton-only `script` aside),
    and every script through shellcheck, the references Tekton substitutes given plain values."""
    for (kind, name), document in load_tekton().items():
        if kind != "Task":
            continue
        spec = document["spec"]
        containers = [
            {key: value for key, value in container.items() if key != "script"}
            for container in [*spec["steps"], *spec.get("sidecars", [])]
        ]
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name},
            "spec": {
                "containers": json.loads(
                    _TEKTON_REFERENCE.sub("tekton-value", json.dumps(containers))
                ),
                "volumes": spec.get("volumes", []),
            },
        }
        kubernetes_validate.validate(pod, KUBERNETES_VERSION, strict=True)
        for step in spec["steps"]:
            script = tmp_path / f"{name}-{step['name']}.sh"
            script.write_text(_TEKTON_REFERENCE.sub("tekton-value", step["script"]))
            checked = subprocess.run(
                [shellcheck, str(script)], capture_output=True, text=True, check=False
            )
            assert checked.returncode == 0, f"{name}/{step['name']}:\n{checked.stdout}"
