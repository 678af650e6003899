"""A Docker engine and an image registry of the suite's own, on this machine only.

- The engine: Debian's `dockerd --iptables=false --bridge=none` (overlay2, else vfs) on a private
  socket. Its data root is in the git-ignored cache, so the base image survives between runs.
- The registry: Debian's `docker-registry` on a free loopback port, storage in the session's temp
  folder, so every session starts from an empty registry.
- The Flyway base: no registry outside can be reached, so the suite makes its own, laid out as
  flyway/flyway: a Debian root filesystem from `debootstrap` with a Java runtime and Python
  (`docker import`), plus the project's Flyway (migrations/Dockerfile.flyway-base). It is pushed to
  the registry so builds pull it like any base.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from ameide_migrate.adapters import flyway
from ameide_migrate.adapters.ports import free_port
from tests.fix_tiers import mark_if_uses, register

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".cache"
SUITE = "bookworm"
ROOTFS_PACKAGES = "openjdk-17-jre-headless,python3,python3-venv,ca-certificates"
ROOTFS_IMAGE = f"ameide/debian-java:{SUITE}"

_FIXTURES = frozenset({"docker_engine", "registry", "flyway_base"})


def pytest_configure(config: pytest.Config) -> None:
    register(
        config,
        "docker",
        "builds images on the suite's own Docker engine and registry (base cached in .cache)",
    )


def pytest_itemcollected(item: pytest.Item) -> None:
    mark_if_uses(item, _FIXTURES, "docker")


@dataclass(frozen=True)
class DockerEngine:
    host: str
    data_root: Path

    def docker(self, *args: str, check: bool = True, timeout: float = 900) -> str:
        done = subprocess.run(
            ["docker", *args],
            env={**os.environ, "DOCKER_HOST": self.host},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and done.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
        return done.stdout + (done.stderr if not check else "")

    def has_image(self, ref: str) -> bool:
        done = subprocess.run(
            ["docker", "image", "inspect", ref],
            env={**os.environ, "DOCKER_HOST": self.host},
            capture_output=True,
            check=False,
        )
        return done.returncode == 0


def _wait_for(what: str, ready: object, log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(ready) and ready():
            return
        time.sleep(0.2)
    raise AssertionError(f"{what} did not start; its log:\n{log.read_text()[-3000:]}")


# overlay2 where the kernel allows it (a cold image build: about 1 minute, against about 6 on vfs,
# which copies the whole filesystem for every step), vfs where it does not.
STORAGE_DRIVERS = ("overlay2", "vfs")


@dataclass
class _Daemon:
    process: subprocess.Popen[bytes]
    run: Path
    host: str
    data_root: Path

    def answers(self) -> bool:
        return (
            subprocess.run(
                ["docker", "version"],
                env={**os.environ, "DOCKER_HOST": self.host},
                capture_output=True,
                check=False,
            ).returncode
            == 0
        )

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        _unmount_under(self.run)
        shutil.rmtree(self.run)


def _start_dockerd(driver: str) -> _Daemon | None:
    """dockerd with `driver`, or None when it cannot run with it here."""
    data_root = CACHE / f"dockerd-{driver}"
    data_root.mkdir(parents=True, exist_ok=True)
    # A socket path must stay under 108 bytes: the run folder lives in /tmp.
    run = Path(tempfile.mkdtemp(prefix="ameide-dockerd-"))
    host = f"unix://{run / 'docker.sock'}"
    log = run / "dockerd.log"
    with log.open("w") as output:
        process = subprocess.Popen(
            [
                "dockerd",
                f"--storage-driver={driver}",
                "--iptables=false",
                "--ip-masq=false",
                "--ip-forward=false",
                "--bridge=none",
                f"--data-root={data_root}",
                f"--exec-root={run / 'exec'}",
                f"--pidfile={run / 'dockerd.pid'}",
                f"--host={host}",
            ],
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    daemon = _Daemon(process, run, host, data_root)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            _unmount_under(run)
            shutil.rmtree(run)
            return None
        if daemon.answers():
            return daemon
        time.sleep(0.2)
    daemon.stop()
    raise AssertionError(f"dockerd did not start; its log:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="session")
def docker_engine() -> Iterator[DockerEngine]:
    if shutil.which("dockerd") is None:
        pytest.fail("dockerd is missing: `./dev test` installs Debian's docker.io")
    daemon = next(filter(None, map(_start_dockerd, STORAGE_DRIVERS)), None)
    if daemon is None:
        pytest.fail(f"dockerd starts with none of the storage drivers {STORAGE_DRIVERS}")
    previous = os.environ.get("DOCKER_HOST")
    os.environ["DOCKER_HOST"] = daemon.host
    try:
        yield DockerEngine(daemon.host, daemon.data_root)
    finally:
        if previous is None:
            os.environ.pop("DOCKER_HOST", None)
        else:
            os.environ["DOCKER_HOST"] = previous
        daemon.stop()


def _unmount_under(directory: Path) -> None:
    """dockerd leaves its network namespace (exec/netns/default) mounted when it stops."""
    mounts = Path("/proc/self/mounts").read_text().splitlines()
    points = [line.split()[1] for line in mounts if line.split()[1].startswith(f"{directory}/")]
    for point in sorted(points, key=len, reverse=True):
        subprocess.run(["umount", point], check=True)


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A plain-HTTP registry on loopback, which Docker and containerd trust without settings."""
    home = tmp_path_factory.mktemp("registry")
    port = free_port()
    config = home / "config.yml"
    config.write_text(
        "version: 0.1\n"
        "log: {level: warn}\n"
        f"storage: {{filesystem: {{rootdirectory: {home / 'data'}}}, delete: {{enabled: true}}}}\n"
        f"http: {{addr: '127.0.0.1:{port}'}}\n"
    )
    log = home / "registry.log"
    with log.open("w") as output:
        process = subprocess.Popen(
            ["docker-registry", "serve", str(config)], stdout=output, stderr=subprocess.STDOUT
        )
    import requests

    def answers() -> bool:
        try:
            return requests.get(f"http://127.0.0.1:{port}/v2/", timeout=1).status_code == 200
        except requests.ConnectionError:
            return False

    _wait_for("docker-registry", answers, log)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)


def _rootfs_tarball() -> Path:
    """A Debian root filesystem with Java and Python, made once and kept in the cache."""
    tarball = CACHE / "images" / f"debian-{SUITE}-java.tar"
    if tarball.is_file():
        return tarball
    if shutil.which("debootstrap") is None:
        pytest.fail("debootstrap is missing: `./dev test` installs it")
    tarball.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=tarball.parent) as scratch:
        rootfs = Path(scratch) / "rootfs"
        done = subprocess.run(
            [
                "debootstrap",
                "--variant=minbase",
                f"--include={ROOTFS_PACKAGES}",
                SUITE,
                str(rootfs),
                "http://deb.debian.org/debian",
            ],
            capture_output=True,
            text=True,
            timeout=1800,
            check=False,
        )
        assert done.returncode == 0, f"debootstrap failed:\n{done.stdout[-3000:]}{done.stderr}"
        for leftover in ("var/cache/apt/archives", "var/lib/apt/lists", "usr/share/doc"):
            for path in (rootfs / leftover).glob("*"):
                if path.is_file():
                    path.unlink()
        partial = tarball.with_suffix(".partial")
        subprocess.run(["tar", "-C", str(rootfs), "-cf", str(partial), "."], check=True)
        partial.rename(tarball)
    return tarball


@pytest.fixture(scope="session")
def flyway_base(
    docker_engine: DockerEngine,
    registry: str,
    flyway_installation: flyway.Installation,
    tmp_path_factory: pytest.TempPathFactory,
) -> str:
    """A Flyway base image, pushed to the suite's registry; its reference."""
    version = flyway_installation.version
    local = f"ameide/flyway:{version}-{SUITE}"
    if not docker_engine.has_image(local):
        if not docker_engine.has_image(ROOTFS_IMAGE):
            docker_engine.docker(
                "import",
                "--change",
                "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                str(_rootfs_tarball()),
                ROOTFS_IMAGE,
            )
        context = tmp_path_factory.mktemp("flyway-base")
        shutil.copytree(flyway_installation.home, context / "flyway", ignore=_only_runtime)
        docker_engine.docker(
            "build",
            "--network=host",
            "--build-arg",
            f"ROOTFS={ROOTFS_IMAGE}",
            "--build-arg",
            f"FLYWAY_VERSION={version}",
            "-f",
            str(ROOT / "migrations" / "Dockerfile.flyway-base"),
            "-t",
            local,
            str(context),
        )
    pushed = f"{registry}/flyway/flyway:{version}-{SUITE}"
    docker_engine.docker("tag", local, pushed)
    docker_engine.docker("push", pushed)
    return pushed


def _only_runtime(directory: str, names: list[str]) -> list[str]:
    return [n for n in names if n.startswith("flyway-install-")]
