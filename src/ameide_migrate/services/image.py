"""The migrations image: built once per content, pushed, and known by the digest it was pushed as.

The tag is a hash of everything the image carries: the Dockerfile, the Flyway base and version,
the locked dependencies, the project's own code and the SQL tree. So the same content never builds
twice (when the registry has the tag, the build is skipped) and a changed file always gets a new
tag. Deployments then run the image by digest, never by a tag someone could move: the seed's stale
SQL cannot happen.

Docker is driven through prefect-docker's build and push steps; the registry is asked through the
Docker engine, which holds the registry's credentials (`docker login`).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from ameide_migrate.adapters import docker_engine, flyway, git
from ameide_migrate.config.settings import DEFAULT_FLYWAY_BASE, Settings
from ameide_migrate.core.catalog import load_catalog
from ameide_migrate.core.errors import ImageBuildFailed, ImagePushFailed, UsageError

Flavor = Literal["dev", "release"]
FLAVORS: tuple[Flavor, ...] = ("dev", "release")
_CONTEXT_LAYOUT = 1  # bump when what goes into the build context changes

Progress = Callable[[str], None]


@dataclass(frozen=True)
class ImageRequest:
    """What to build: which SQL (the workspace, or a release ref) on which base, and where to."""

    repository: str
    flavor: Flavor = "dev"
    release_ref: str | None = None
    flyway_base: str = DEFAULT_FLYWAY_BASE
    push: bool = False
    pull_base: bool = True

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        flavor: Flavor = "dev",
        release_ref: str | None = None,
        registry: str | None = None,
        push: bool = False,
        flyway_base: str | None = None,
    ) -> ImageRequest:
        if flavor not in FLAVORS:
            raise UsageError(f"unknown image flavor {flavor!r}: choose from {', '.join(FLAVORS)}")
        registry = registry or settings.image_registry
        if push and not registry:
            raise UsageError(
                "pushing needs a registry: pass --registry HOST:PORT (or HOST/PATH) or set "
                "AMEIDE_IMAGE_REGISTRY"
            )
        repository = settings.image_repository
        return cls(
            repository=f"{registry.rstrip('/')}/{repository}" if registry else repository,
            flavor=flavor,
            release_ref=release_ref,
            flyway_base=flyway_base or settings.flyway_base,
            push=push,
            pull_base=settings.image_pull_base,
        )


@dataclass(frozen=True)
class BuiltImage:
    """The image as built (or found) and, when pushed, the digest the registry holds it under."""

    repository: str
    tag: str
    content_hash: str
    flavor: str
    flyway_version: str
    built: bool
    pushed: bool
    image_id: str | None = None
    digest: str | None = None
    release_commit: str | None = None

    @property
    def reference(self) -> str:
        """What to run: pinned by digest when pushed, by the content tag otherwise."""
        if self.digest:
            return f"{self.repository}@{self.digest}"
        return f"{self.repository}:{self.tag}"


@dataclass(frozen=True)
class BuildContext:
    path: Path
    content_hash: str
    flyway_version: str
    python_version: str
    release_commit: str | None

    @property
    def tag(self) -> str:
        return f"{self.flyway_version}-{self.content_hash[:20]}"


def build_image(
    request: ImageRequest, settings: Settings, progress: Progress = lambda _: None
) -> BuiltImage:
    """Build the migrations image unless the registry (or, without push, the engine) already has
    its content tag; push it when asked; return where it is and its digest."""
    with tempfile.TemporaryDirectory(prefix="ameide-image-") as scratch:
        ctx = prepare_context(request, settings, Path(scratch), progress)
        with docker_engine.client() as client:
            return _build_and_push(client, request, ctx, progress)


def _build_and_push(
    client: Any, request: ImageRequest, ctx: BuildContext, progress: Progress
) -> BuiltImage:
    ref = f"{request.repository}:{ctx.tag}"
    found = (
        docker_engine.registry_digest(client, ref)
        if request.push
        else docker_engine.local_image_id(client, ref)
    )
    result = BuiltImage(
        repository=request.repository,
        tag=ctx.tag,
        content_hash=ctx.content_hash,
        flavor=request.flavor,
        flyway_version=ctx.flyway_version,
        built=False,
        pushed=False,
        release_commit=ctx.release_commit,
    )
    if found:
        progress(f"{ref} exists already: same content, nothing to build")
        if request.push:
            return replace(result, digest=found)
        return replace(result, image_id=found)
    progress(f"building {ref} from {request.flyway_base}")
    image_id = _build(request, ctx, ref, progress)
    result = replace(result, built=True, image_id=image_id)
    if not request.push:
        return result
    progress(f"pushing {ref}")
    docker_engine.push(request.repository, ctx.tag, progress)
    digest = docker_engine.registry_digest(client, ref)
    if digest is None:
        raise ImagePushFailed(
            f"the registry does not list {ref} after pushing it: check that "
            f"{request.repository.split('/')[0]} is the registry you meant"
        )
    progress(f"pushed {request.repository}@{digest}")
    return replace(result, pushed=True, digest=digest)


def prepare_context(
    request: ImageRequest, settings: Settings, into: Path, progress: Progress = lambda _: None
) -> BuildContext:
    """Lay out the build context in `into` and hash it; fails before Docker on bad SQL."""
    project = settings.project_dir.resolve()
    dockerfile = project / "migrations" / f"Dockerfile.{request.flavor}"
    if not dockerfile.is_file():
        raise ImageBuildFailed(
            f"{dockerfile} does not exist: run from the project's root, or set "
            "AMEIDE_PROJECT_DIR to it"
        )
    into.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(dockerfile, into / "Dockerfile")

    release_commit = None
    if request.flavor == "release":
        if not request.release_ref:
            raise UsageError("a release image needs the ref its SQL comes from: --release REF")
        release_commit, sql_identity = _release_sql(project, settings, request.release_ref, into)
    else:
        shutil.copytree(settings.sql_dir, into / "sql")
        sql_identity = _tree_digest(into / "sql")
    # The same check a run makes first: a tree Flyway cannot read never becomes an image.
    load_catalog(into / "sql" if request.flavor == "dev" else _unpacked(into / "sql.tar", into))

    progress("exporting the locked dependencies")
    requirements = _uv(
        project,
        "export",
        "--frozen",
        "--no-dev",
        "--no-emit-project",
        "--no-header",
        "--format",
        "requirements-txt",
    )
    (into / "requirements.txt").write_text(requirements)
    shutil.copytree(
        _wheelhouse(requirements, settings.image_python, settings.cache_dir, progress),
        into / "wheels",
    )
    progress("building the ameide-migrate wheel")
    _uv(project, "build", "--wheel", "--quiet", "--out-dir", str(into / "dist"))
    code_identity = _wheel_record(into / "dist")

    progress(f"installing Flyway {settings.flyway_version}")
    installation, _ = flyway.install(
        settings.flyway_home,
        settings.flyway_version,
        driver_version=settings.postgresql_driver_version,
        java=settings.java,
        maven=settings.maven,
        progress=progress,
    )
    for name in ("lib", "engine", "bin", "installed.json"):
        source = installation.home / name
        target = into / "flyway" / name
        if source.is_dir():
            shutil.copytree(source, target)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
    flyway_identity = json.loads((installation.home / "installed.json").read_text())["fingerprint"]

    content = {
        "layout": _CONTEXT_LAYOUT,
        "dockerfile": _digest((into / "Dockerfile").read_bytes()),
        "flyway_base": request.flyway_base,
        "flyway_version": settings.flyway_version,
        "flyway": flyway_identity,
        "dependencies": _digest(requirements.encode()),
        "python": settings.image_python,
        "code": code_identity,
        "sql": sql_identity,
    }
    content_hash = _digest(json.dumps(content, sort_keys=True).encode())
    return BuildContext(
        into, content_hash, settings.flyway_version, settings.image_python, release_commit
    )


# Every manylinux glibc level a current x86_64 Debian or Ubuntu base runs, newest first.
_MANYLINUX = (
    "manylinux_2_39",
    "manylinux_2_36",
    "manylinux_2_35",
    "manylinux_2_34",
    "manylinux_2_31",
    "manylinux_2_28",
    "manylinux_2_27",
    "manylinux_2_24",
    "manylinux_2_17",
    "manylinux2014",
    "manylinux_2_12",
    "manylinux2010",
    "manylinux_2_5",
    "manylinux1",
    "linux",
)


def _for_linux(requirements: str, python: str) -> str:
    """The exported requirements that Linux x86_64 CPython `python` may install, their markers
    dropped: pip would judge markers by the Python running it, not the image's. A marker that
    holds for any patch release counts (redis needs async-timeout before 3.11.3)."""
    from packaging.markers import Marker

    kept = []
    for entry in requirements.replace("\\\n", " ").splitlines():
        entry = entry.strip()
        if not entry or entry.startswith("#"):
            continue
        requirement, _, rest = entry.partition(" --hash")
        pin, _, marker = requirement.partition(";")
        environments = [
            {
                "python_version": python,
                "python_full_version": f"{python}.{patch}",
                "sys_platform": "linux",
                "platform_system": "Linux",
                "platform_machine": "x86_64",
                "os_name": "posix",
                "implementation_name": "cpython",
                "platform_python_implementation": "CPython",
            }
            for patch in (0, 99)
        ]
        if not marker.strip() or any(Marker(marker).evaluate(e) for e in environments):
            kept.append(f"{pin.strip()} --hash{rest}")
    return "\n".join(kept) + "\n"


def _wheelhouse(requirements: str, python: str, cache: Path, progress: Progress) -> Path:
    """The locked dependencies' wheels for the image's Python, fetched here with pip (which has
    this host's index and certificates) and kept in the cache: the image build needs no network.
    """
    key = _digest(f"{_CONTEXT_LAYOUT}\n{python}\n{requirements}".encode())[:16]
    house = (cache / "wheels" / f"cp{python.replace('.', '')}-{key}").resolve()
    if (house / ".complete").is_file():
        return house
    progress(f"fetching the dependencies' wheels for Python {python}")
    house.mkdir(parents=True, exist_ok=True)
    listed = house / "requirements.txt"
    listed.write_text(_for_linux(requirements, python))
    platforms = [arg for tag in _MANYLINUX for arg in ("--platform", f"{tag}_x86_64")]
    abi = f"cp{python.replace('.', '')}"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--disable-pip-version-check",
            "--only-binary=:all:",
            "--python-version",
            python,
            "--implementation",
            "cp",
            "--abi",
            abi,
            *platforms,
            "--no-deps",
            "--require-hashes",
            "-r",
            str(listed),
            "-d",
            str(house),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise ImageBuildFailed(
            f"fetching the wheels for Python {python} failed:\n{done.stderr.strip()[-2000:]}\n"
            "Check that the package index is reachable and that every locked dependency has a "
            f"wheel for CPython {python} on manylinux x86_64"
        )
    listed.unlink()
    (house / ".complete").write_text("")
    return house


def _release_sql(project: Path, settings: Settings, ref: str, into: Path) -> tuple[str, str]:
    """The SQL tree as committed at `ref`, as a tar; (commit, the tree's git object id)."""
    sql = settings.sql_dir.resolve()
    try:
        relative = sql.relative_to(project).as_posix()
    except ValueError:
        raise ImageBuildFailed(
            f"the SQL tree {sql} is outside the project {project}: a release image takes its SQL "
            "from the project's git history"
        ) from None
    commit = git.output(project, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}").strip()
    if not commit:
        raise ImageBuildFailed(f"release ref {ref!r} is not a commit of {project}'s repository")
    tree = git.output(project, "rev-parse", "--verify", "--quiet", f"{commit}:{relative}").strip()
    if not tree:
        raise ImageBuildFailed(f"{relative} does not exist at {ref} ({commit[:12]})")
    archive = subprocess.run(
        ["git", "-C", str(project), "archive", "--format=tar", tree],
        capture_output=True,
        check=False,
    )
    if archive.returncode != 0:
        raise ImageBuildFailed(f"git archive {ref}:{relative} failed: {archive.stderr.decode()}")
    (into / "sql.tar").write_bytes(archive.stdout)
    return commit, tree


def _unpacked(tar: Path, scratch: Path) -> Path:
    target = scratch / "sql-check"
    with tarfile.open(tar) as archive:
        archive.extractall(target, filter="data")
    return target


def _tree_digest(root: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(path.relative_to(root).as_posix().encode() + b"\0")
        h.update(_digest(path.read_bytes()).encode() + b"\0")
    return h.hexdigest()


def _wheel_record(dist: Path) -> str:
    """The wheel's RECORD lists every file with its SHA-256: the code's identity, free of the
    timestamps that make the wheel's own bytes differ from build to build."""
    (wheel,) = dist.glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        (record,) = (n for n in archive.namelist() if n.endswith(".dist-info/RECORD"))
        return _digest(archive.read(record))


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _uv(project: Path, *args: str) -> str:
    uv = shutil.which("uv")
    if uv is None:
        raise ImageBuildFailed("uv is not on PATH: the image's dependencies come from uv.lock")
    done = subprocess.run([uv, *args], cwd=project, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise ImageBuildFailed(f"uv {args[0]} failed in {project}:\n{done.stderr.strip()}")
    return done.stdout


def _build(request: ImageRequest, ctx: BuildContext, ref: str, progress: Progress) -> str:
    """The image of this context, labelled with what it carries; its id."""
    labels = {
        "org.opencontainers.image.title": "ameide migrations",
        "dev.ameide.content-hash": ctx.content_hash,
        "dev.ameide.flavor": request.flavor,
        "dev.ameide.flyway-version": ctx.flyway_version,
        "dev.ameide.flyway-base": request.flyway_base,
    }
    if ctx.release_commit:
        labels["org.opencontainers.image.revision"] = ctx.release_commit
        labels["dev.ameide.release-ref"] = request.release_ref or ""
    return docker_engine.build(
        ctx.path,
        ref,
        pull=request.pull_base,
        buildargs={
            "FLYWAY_BASE": request.flyway_base,
            "FLYWAY_VERSION": ctx.flyway_version,
            "PYTHON_VERSION": ctx.python_version,
        },
        labels=labels,
        progress=progress,
        fix=f"Fix migrations/Dockerfile.{request.flavor} or the base image (--base, "
        "AMEIDE_FLYWAY_BASE)",
    )
