"""The migrations image: one build per content, pushed, pulled by digest, and migrating a real
database from inside the container, run as the pod runs it (non-root, read-only root)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from ameide_migrate.adapters.flyway import Installation
from ameide_migrate.adapters.prefect.local_server import Server
from ameide_migrate.config.settings import Settings, get_settings
from ameide_migrate.core.catalog import load_catalog
from ameide_migrate.core.errors import CatalogError, ImageBuildFailed, UsageError
from ameide_migrate.services import image
from ameide_migrate.services.image import BuiltImage, ImageRequest

from .fix_docker import DockerEngine
from .fix_platform import REPO, Platform, admin_url_of, ameide


@pytest.fixture
def sql_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    sql_dir = tmp_path / "image-sql"
    shutil.copytree(REPO / "db" / "flyway" / "sql", sql_dir)
    monkeypatch.setenv("AMEIDE_SQL_DIR", str(sql_dir))
    monkeypatch.setenv("AMEIDE_PROJECT_DIR", str(REPO))
    monkeypatch.setenv("AMEIDE_CACHE_DIR", str(REPO / ".cache"))
    get_settings.cache_clear()
    yield sql_dir
    get_settings.cache_clear()


def _tag(settings: Settings, tmp_path: Path, request: ImageRequest) -> str:
    into = Path(tmp_path / f"ctx-{len(list(tmp_path.glob('ctx-*')))}")
    into.mkdir()
    return image.prepare_context(request, settings, into).tag


def test_same_content_same_tag_and_any_change_a_new_one(
    sql_copy: Path, tmp_path: Path, flyway_installation: Installation
) -> None:
    settings = get_settings()
    request = ImageRequest.from_settings(settings)
    first = _tag(settings, tmp_path, request)

    assert _tag(settings, tmp_path, request) == first
    assert first.startswith(f"{settings.flyway_version}-")

    script = sql_copy / "agents" / "V1__agents_initial_schema.sql"
    script.write_text(script.read_text() + "\n-- reviewed\n")
    one_sql_file = _tag(settings, tmp_path, request)
    assert one_sql_file != first

    other_base = ImageRequest.from_settings(settings, flyway_base="flyway/flyway:10.17.1")
    assert _tag(settings, tmp_path, other_base) not in (first, one_sql_file)


def test_a_sql_tree_flyway_cannot_read_never_reaches_docker(
    sql_copy: Path, monkeypatch: pytest.MonkeyPatch, flyway_installation: Installation
) -> None:
    (sql_copy / "graph" / "V1__graph_again.sql").write_text("SELECT 1;\n")
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    request = ImageRequest.from_settings(get_settings())

    with pytest.raises(CatalogError, match="graph"):
        image.build_image(request, get_settings())


def test_push_without_a_registry_says_how_to_name_one(sql_copy: Path) -> None:
    with pytest.raises(UsageError, match="--registry"):
        ImageRequest.from_settings(get_settings(), push=True)


def test_release_image_takes_the_sql_committed_at_the_ref(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, flyway_installation: Installation
) -> None:
    monkeypatch.setenv("AMEIDE_PROJECT_DIR", str(REPO))
    monkeypatch.setenv("AMEIDE_SQL_DIR", str(REPO / "db" / "flyway" / "sql"))
    get_settings.cache_clear()
    settings = get_settings()
    request = ImageRequest.from_settings(settings, flavor="release", release_ref="HEAD")

    ctx = image.prepare_context(request, settings, tmp_path)

    head = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    committed = subprocess.run(
        ["git", "-C", str(REPO), "ls-tree", "-r", "--name-only", "HEAD", "db/flyway/sql/"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    with tarfile.open(tmp_path / "sql.tar") as archive:
        packed = sorted(m.name for m in archive.getmembers() if m.isfile())
    assert ctx.release_commit == head
    assert packed == sorted(p.removeprefix("db/flyway/sql/") for p in committed)

    unknown = ImageRequest.from_settings(settings, flavor="release", release_ref="no-such-ref")
    with pytest.raises(ImageBuildFailed, match="'no-such-ref' is not a commit"):
        image.prepare_context(unknown, settings, tmp_path / "again")
    get_settings.cache_clear()


# --- On the suite's Docker engine and registry -------------------------------------------------


def _build(registry: str, base: str, push: bool = True, flavor: image.Flavor = "dev") -> BuiltImage:
    """The build flow, as `ameide-migrate image build --push` runs it."""
    from ameide_migrate.flows.image import ImageBuild, build_image_flow

    return build_image_flow(
        ImageBuild(
            registry=registry,
            push=push,
            flyway_base=base,
            flavor=flavor,
            release_ref="HEAD" if flavor == "release" else None,
        )
    )


@pytest.fixture
def pushed(sql_copy: Path, registry: str, flyway_base: str, prefect_server: Server) -> BuiltImage:
    return _build(registry, flyway_base)


@pytest.mark.docker
@pytest.mark.slow
def test_built_pushed_pulled_by_digest_and_migrates_inside_the_container_as_the_pod_runs_it(
    pushed: BuiltImage, docker_engine: DockerEngine, platform: Platform
) -> None:
    assert pushed.built
    assert pushed.pushed
    assert pushed.digest
    assert pushed.digest.startswith("sha256:")
    assert pushed.reference == f"{pushed.repository}@{pushed.digest}"

    # Forget every local copy: what runs next comes from the registry, by digest.
    docker_engine.docker("image", "rm", "--force", f"{pushed.repository}:{pushed.tag}")
    assert not docker_engine.has_image(pushed.reference)
    docker_engine.docker("pull", pushed.reference)
    inspected = json.loads(docker_engine.docker("image", "inspect", pushed.reference))[0]
    assert pushed.reference in inspected["RepoDigests"]
    assert inspected["Config"]["User"] == "10001"
    assert inspected["Config"]["Labels"]["dev.ameide.content-hash"] == pushed.content_hash

    from prefect.settings import PREFECT_API_URL

    done = subprocess.run(
        [
            "docker",
            "run",
            "--rm",
            "--network=host",
            "--read-only",
            "--tmpfs=/tmp",
            "--cap-drop=ALL",
            "--security-opt=no-new-privileges",
            f"--env=PREFECT_API_URL={PREFECT_API_URL.value()}",
            f"--env=AMEIDE_LOCAL_ADMIN_URL={admin_url_of(platform.admin).get_secret_value()}",
            f"--env=AMEIDE_LOCAL_DATABASE_PREFIX={platform.prefix}",
            pushed.reference,
            "ameide-migrate",
            "run",
            "--env",
            "local",
            "--db",
            "platform",
            "--db",
            "workflows",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr

    catalog = load_catalog(platform.sql_dir)
    for database in ("platform", "workflows"):
        latest = catalog.databases[database].latest_version
        assert platform.versions(database)[-1] == str(latest)
    assert platform.history("agents") is None  # not targeted, not touched


@pytest.mark.docker
@pytest.mark.slow
def test_the_same_content_is_not_built_twice_and_one_changed_file_builds_anew(
    pushed: BuiltImage, sql_copy: Path, registry: str, flyway_base: str
) -> None:
    again = _build(registry, flyway_base)
    assert not again.built
    assert not again.pushed
    assert (again.tag, again.digest) == (pushed.tag, pushed.digest)

    script = sql_copy / "threads" / "V1__threads_initial_schema.sql"
    script.write_text(script.read_text() + "\n-- one more comment\n")
    changed = _build(registry, flyway_base)
    assert changed.built
    assert changed.pushed
    assert changed.tag != pushed.tag
    assert changed.digest != pushed.digest


@pytest.mark.docker
@pytest.mark.slow
def test_a_failed_build_stops_the_run_before_any_database_is_touched(
    platform: Platform, registry: str, docker_engine: DockerEngine
) -> None:
    from ameide_migrate.flows.image import ImageBuild
    from ameide_migrate.flows.migrate import migrate_flow

    build = ImageBuild(registry=registry, flyway_base=f"{registry}/no/such-base:1")
    state = migrate_flow(environment="local", build=build, return_state=True)
    error = state.result(raise_on_failure=False)

    assert state.is_failed()
    assert isinstance(error, ImageBuildFailed)
    assert "no/such-base:1" in str(error)
    assert "no database was touched" in str(error)
    for database in platform.owners:
        assert platform.history(database) is None


@pytest.mark.docker
@pytest.mark.slow
def test_image_build_prints_the_digest_to_run_and_builds_nothing_the_second_time(
    sql_copy: Path, registry: str, flyway_base: str, prefect_server: Server
) -> None:
    args = ("image", "build", "--push", "--registry", registry, "--base", flyway_base)
    wide = {**os.environ, "COLUMNS": "200"}  # the table's rows on one line each
    first = ameide(*args, env=wide, timeout=900)
    assert first.returncode == 0, first.stdout + first.stderr
    reference = first.stdout.strip().splitlines()[-1]
    assert reference.startswith(f"{registry}/ameide-migrations@sha256:")

    second = ameide(*args, env=wide, timeout=900)
    assert second.returncode == 0, second.stdout + second.stderr
    assert second.stdout.strip().splitlines()[-1] == reference
    assert "the same content exists already" in second.stderr

    refused = ameide("image", "build", "--push", env={**os.environ})
    assert refused.returncode == 2
    assert "pushing needs a registry" in refused.stderr
