"""A real one-node Kubernetes cluster on loopback, for tests: the control plane and kubelet built
from source (`k8s.io/kubernetes`) and kine (etcd's API over SQLite), a private containerd, no pod
network (pods use `hostNetwork: true`), local images only.

`build()` compiles the binaries once into the git-ignored cache; `Cluster` runs one cluster in a
temp dir and removes every trace of it on `stop()`. Plain Python, no pytest: a benchmark or a
shell can drive it. Everything listens on 127.0.0.1 only; nothing is pulled from outside.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import io
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from ameide_migrate.adapters.ports import free_port

KUBERNETES_VERSION = "v1.34.4"
KINE_MODULE = "github.com/k3s-io/kine"
KINE_VERSION = "v0.17.5"
COMMANDS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kubectl")
REPO = Path(__file__).resolve().parent.parent
DEFAULT_CACHE = REPO / ".cache" / "k8s"
# Bumped by hand when the way the binaries are built changes without a version changing.
RECIPE_REVISION = 1


class ClusterError(RuntimeError):
    """Base of the harness' failures."""


class ToolMissing(ClusterError):
    """A host program the cluster needs is not installed."""


class BuildFailed(ClusterError):
    """Compiling Kubernetes or kine failed."""


class ClusterNotReady(ClusterError):
    """A daemon died or the node did not become Ready in time."""


class KubectlFailed(ClusterError):
    """kubectl exited non-zero."""


def say(message: str) -> None:
    print(f"[k8s] {message}", file=sys.stderr, flush=True)


def go_binary() -> str:
    found = shutil.which("go") or "/usr/local/go/bin/go"
    if not Path(found).exists():
        raise ToolMissing("Go is needed to build Kubernetes: install Go 1.24+ and put it on PATH")
    return found


# --- Build ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Binaries:
    directory: Path
    # Wall-clock seconds `build()` took, and whether it compiled anything (False: cache hit).
    seconds: float
    compiled: bool

    def path(self, name: str) -> Path:
        return self.directory / name

    @property
    def kubectl(self) -> Path:
        return self.path("kubectl")


def _version_parts(version: str) -> tuple[str, str, str]:
    major, minor, patch = version.lstrip("v").split(".")
    return major, minor, patch


def _ldflags(version: str) -> str:
    package = "k8s.io/component-base/version"
    major, minor, _ = _version_parts(version)
    # Without the version set at link time kubectl refuses the server's version string.
    return " ".join(
        [
            "-s",
            "-w",
            f"-X {package}.gitVersion={version}",
            f"-X {package}.gitMajor={major}",
            f"-X {package}.gitMinor={minor}",
            f"-X {package}.gitTreeState=clean",
            f"-X {package}.buildDate=1970-01-01T00:00:00Z",
        ]
    )


def _recipe(go: str, version: str) -> str:
    """Everything the binaries depend on; a change rebuilds them."""
    go_version = subprocess.run(
        [go, "env", "GOVERSION"], capture_output=True, text=True, check=True
    ).stdout.strip()
    facts = {
        "revision": RECIPE_REVISION,
        "kubernetes": version,
        "kine": KINE_VERSION,
        "commands": COMMANDS,
        "ldflags": _ldflags(version),
        "go": go_version,
    }
    return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()


def _run_go(go: str, args: Sequence[str], cwd: Path, env: dict[str, str], log: Path) -> None:
    with log.open("a") as out:
        out.write(f"$ go {' '.join(args)}\n")
        out.flush()
        done = subprocess.run(
            [go, *args], cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, check=False
        )
    if done.returncode != 0:
        tail = "\n".join(log.read_text().splitlines()[-40:])
        raise BuildFailed(f"go {' '.join(args)} failed in {cwd} (log {log}):\n{tail}")


def _staging_modules(go: str, version: str, env: dict[str, str], cwd: Path) -> list[str]:
    """The `k8s.io/X` modules kubernetes requires at v0.0.0 and replaces with its staging tree:
    published on their own as v0.MINOR.PATCH, which is what a module outside the tree must use."""
    download = subprocess.run(
        [go, "mod", "download", "-json", f"k8s.io/kubernetes@{version}"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if download.returncode != 0:
        raise BuildFailed(f"cannot fetch k8s.io/kubernetes@{version}:\n{download.stderr[-2000:]}")
    go_mod = Path(json.loads(download.stdout)["GoMod"]).read_text()
    return sorted(set(re.findall(r"^\s*(k8s\.io/[\w.-]+) v0\.0\.0\s*$", go_mod, re.M)))


def _scratch_module(go: str, version: str, source: Path, env: dict[str, str]) -> None:
    """`go install k8s.io/kubernetes/cmd/...@version` fails (its go.mod replaces the staging
    modules with local paths), so a module of ours requires kubernetes and replaces those."""
    _, minor, patch = _version_parts(version)
    staging_version = f"v0.{minor}.{patch}"
    source.mkdir(parents=True, exist_ok=True)
    modules = _staging_modules(go, version, env, source)
    replaces = "\n".join(f"\t{m} => {m} {staging_version}" for m in modules)
    (source / "go.mod").write_text(
        "module ameide.test/k8sbuild\n\ngo 1.24.0\n\ngodebug default=go1.24\n\n"
        f"require k8s.io/kubernetes {version}\n\nreplace (\n{replaces}\n)\n"
    )
    imports = "\n".join(f'\t_ "k8s.io/kubernetes/cmd/{c}"' for c in COMMANDS)
    # A tools file keeps the commands' packages in the module graph for `go mod tidy`.
    (source / "tools.go").write_text(
        f"//go:build tools\n\npackage tools\n\nimport (\n{imports}\n)\n"
    )


BUILT = (*COMMANDS, "kine")


def is_built(cache: Path = DEFAULT_CACHE, version: str = KUBERNETES_VERSION) -> bool:
    """Whether `build()` would return at once: every binary there, from the same recipe."""
    bin_dir = cache / "bin"
    stamp = bin_dir / ".recipe"
    return (
        stamp.exists()
        and stamp.read_text() == _recipe(go_binary(), version)
        and all((bin_dir / name).exists() for name in BUILT)
    )


def build(
    cache: Path = DEFAULT_CACHE, version: str = KUBERNETES_VERSION, force: bool = False
) -> Binaries:
    """The cluster's binaries in `cache/bin`, compiled when missing or built from another recipe
    (or always, with `force`: a benchmark's warm rebuild). Cold: about ten minutes on two cores;
    with warm Go caches it relinks in seconds."""
    started = time.monotonic()
    go = go_binary()
    bin_dir = cache / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    build_pause(bin_dir)
    if not force and is_built(cache, version):
        return Binaries(bin_dir, time.monotonic() - started, compiled=False)
    stamp = bin_dir / ".recipe"
    stamp.unlink(missing_ok=True)
    source = cache / "src"
    log = cache / "build.log"
    log.write_text("")
    goflags = f"{os.environ.get('GOFLAGS', '')} -mod=mod -buildvcs=false".strip()
    env = {**os.environ, "GOFLAGS": goflags, "GOTOOLCHAIN": "local"}
    say(f"building Kubernetes {version} from source into {bin_dir} (log: {log})")
    _scratch_module(go, version, source, env)
    say("resolving modules (go mod tidy)")
    _run_go(go, ["mod", "tidy"], source, env, log)
    say(f"compiling {', '.join(COMMANDS)} (go build -p 2; cold: about ten minutes)")
    packages = [f"k8s.io/kubernetes/cmd/{c}" for c in COMMANDS]
    compile_args = ["build", "-p", "2", "-trimpath", "-ldflags", _ldflags(version)]
    _run_go(
        go,
        [*compile_args, "-o", f"{bin_dir}/", *packages],
        source,
        {**env, "CGO_ENABLED": "0"},
        log,
    )
    say(f"compiling kine {KINE_VERSION} (cgo, SQLite)")
    kine_env = {**env, "CGO_ENABLED": "1", "GOBIN": str(bin_dir)}
    _run_go(go, ["install", "-p", "2", f"{KINE_MODULE}@{KINE_VERSION}"], source, kine_env, log)
    stamp.write_text(_recipe(go, version))
    seconds = time.monotonic() - started
    say(f"built in {seconds:.0f} s")
    return Binaries(bin_dir, seconds, compiled=True)


# --- Images --------------------------------------------------------------------------------------

PAUSE_IMAGE = "local/pause:1"
BUSYBOX_IMAGE = "local/busybox:1"

# The sandbox's process: sleeps, reaps children, exits on SIGINT/SIGTERM (as the upstream pause).
PAUSE_SOURCE = r"""
#include <signal.h>
#include <stddef.h>
#include <sys/wait.h>
#include <unistd.h>

static void quit(int sig) { (void)sig; _exit(0); }
static void reap(int sig) { (void)sig; while (waitpid(-1, NULL, WNOHANG) > 0) {} }

int main(void) {
  struct sigaction stop = {.sa_handler = quit};
  struct sigaction child = {.sa_handler = reap, .sa_flags = SA_NOCLDSTOP};
  sigaction(SIGINT, &stop, NULL);
  sigaction(SIGTERM, &stop, NULL);
  sigaction(SIGCHLD, &child, NULL);
  for (;;) pause();
}
"""


def build_pause(bin_dir: Path) -> Path:
    """A static pause binary (gcc -static), rebuilt when its source changes."""
    target = bin_dir / "pause"
    stamp = bin_dir / ".pause-source"
    digest = hashlib.sha256(PAUSE_SOURCE.encode()).hexdigest()
    if target.exists() and stamp.exists() and stamp.read_text() == digest:
        return target
    source = bin_dir / "pause.c"
    source.write_text(PAUSE_SOURCE)
    done = subprocess.run(
        ["gcc", "-static", "-Os", "-s", "-o", str(target), str(source)],
        capture_output=True,
        text=True,
        check=False,
    )
    source.unlink()
    if done.returncode != 0:
        raise BuildFailed(
            f"compiling the pause binary failed (needs gcc, libc6-dev):\n{done.stderr}"
        )
    stamp.write_text(digest)
    return target


def static_busybox() -> Path:
    found = Path(shutil.which("busybox") or "/bin/busybox")
    elf = found.read_bytes()[:4096] if found.exists() else b""
    # A dynamically linked ELF names its interpreter; a static one has none.
    if not elf.startswith(b"\x7fELF") or b"/lib64/ld-linux" in elf or b"/lib/ld-" in elf:
        raise ToolMissing(f"{found} is not a static busybox: apt-get install busybox-static")
    return found


def _tar_member(layer: tarfile.TarFile, name: str, kind: bytes, mode: int, **extra: Any) -> None:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    for key, value in extra.items():
        setattr(info, key, value)
    layer.addfile(info)


def image_tarball(
    target: Path,
    name: str,
    files: dict[str, Path],
    entrypoint: Sequence[str] = (),
    cmd: Sequence[str] = (),
    links: dict[str, str] | None = None,
) -> Path:
    """A one-layer image in `docker save` format, for `ctr images import`: `files` maps paths in
    the image to host files, `links` maps paths to symlink targets."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as layer:
        directories = {"bin", "dev", "etc", "proc", "sys", "tmp"} | {
            str(Path(p).parent).strip("/") for p in [*files, *(links or {})]
        }
        for directory in sorted(d for d in directories if d):
            _tar_member(
                layer, directory + "/", tarfile.DIRTYPE, 0o1777 if directory == "tmp" else 0o755
            )
        for path, source in sorted(files.items()):
            data = source.read_bytes()
            info = tarfile.TarInfo(path.strip("/"))
            info.size = len(data)
            info.mode = 0o755
            layer.addfile(info, io.BytesIO(data))
        for path, link_target in sorted((links or {}).items()):
            _tar_member(layer, path.strip("/"), tarfile.SYMTYPE, 0o777, linkname=link_target)
    layer_bytes = raw.getvalue()
    layer_digest = hashlib.sha256(layer_bytes).hexdigest()
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {
                "Env": ["PATH=/bin"],
                "Entrypoint": list(entrypoint) or None,
                "Cmd": list(cmd) or None,
            },
            "rootfs": {"type": "layers", "diff_ids": [f"sha256:{layer_digest}"]},
        },
        sort_keys=True,
    ).encode()
    config_name = f"{hashlib.sha256(config).hexdigest()}.json"
    manifest = json.dumps(
        [{"Config": config_name, "RepoTags": [name], "Layers": [f"{layer_digest}/layer.tar"]}]
    ).encode()
    with tarfile.open(target, "w") as image:
        for member, data in (
            (f"{layer_digest}/layer.tar", layer_bytes),
            (config_name, config),
            ("manifest.json", manifest),
        ):
            info = tarfile.TarInfo(member)
            info.size = len(data)
            image.addfile(info, io.BytesIO(data))
    return target


def pause_image(directory: Path, pause: Path) -> Path:
    return image_tarball(directory / "pause.tar", PAUSE_IMAGE, {"pause": pause}, ["/pause"])


def busybox_image(directory: Path) -> Path:
    """`local/busybox:1`: a static busybox with a link per applet, `sh` by default."""
    busybox = static_busybox()
    applets = subprocess.run(
        [str(busybox), "--list"], capture_output=True, text=True, check=True
    ).stdout.split()
    links = {f"bin/{a}": "busybox" for a in applets if a != "busybox"}
    return image_tarball(
        directory / "busybox.tar", BUSYBOX_IMAGE, {"bin/busybox": busybox}, cmd=["sh"], links=links
    )


# --- Cluster -------------------------------------------------------------------------------------

NODE_NAME = "127.0.0.1"
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
HOST_TOOLS = {
    "containerd": "containerd",
    "runc": "runc",
    "ctr": "containerd",
    "openssl": "openssl",
}
CNI_BIN_DIR = Path("/usr/lib/cni")


def check_host_tools() -> None:
    if os.geteuid() != 0:
        raise ToolMissing("the cluster's kubelet and containerd must run as root")
    missing = sorted({package for tool, package in HOST_TOOLS.items() if not shutil.which(tool)})
    if not (CNI_BIN_DIR / "loopback").exists():
        missing.append("containernetworking-plugins")
    if missing:
        raise ToolMissing(f"the cluster needs: apt-get install {' '.join(missing)}")


def _tail(path: Path, lines: int = 25) -> str:
    if not path.exists():
        return f"(no {path.name})"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def _openssl(*args: str, cwd: Path) -> None:
    done = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise ClusterError(f"openssl {' '.join(args)} failed:\n{done.stderr}")


def _kubeconfig(server: str, ca: Path, token: str, user: str) -> str:
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {"name": "local", "cluster": {"server": server, "certificate-authority": str(ca)}}
            ],
            "users": [{"name": user, "user": {"token": token}}],
            "contexts": [{"name": "local", "context": {"cluster": "local", "user": user}}],
            "current-context": "local",
        },
        indent=2,
    )


@dataclass
class Daemon:
    name: str
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid


_LIBC = ctypes.CDLL(None, use_errno=True)
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    # Runs in the forked child before exec: a killed test run must not leave a control plane
    # behind.
    _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


@dataclass
class Cluster:
    """One node on loopback in a temp dir of its own. `start()` (or `with`) brings it to a Ready
    node; `stop()` kills every daemon and container and removes every mount, cgroup and file."""

    binaries: Binaries
    ready_timeout: float = 120.0
    directory: Path = field(init=False)
    server: str = field(init=False, default="")
    kubeconfig: Path = field(init=False)
    ca_cert: Path = field(init=False)
    containerd_socket: Path = field(init=False)
    # Seconds per phase of start() ("certificates", "kine_and_containerd", "apiserver_ready",
    # "node_ready"), its total ("start_to_ready") and "stop", for a benchmark to print.
    timings: dict[str, float] = field(init=False, default_factory=dict)
    daemons: dict[str, Daemon] = field(init=False, default_factory=dict)
    _admin_token: str = field(init=False, default="")
    _tokens: dict[str, str] = field(init=False, default_factory=dict)
    _etcd: str = field(init=False, default="")
    _cgroup: str = field(init=False, default="")

    def __post_init__(self) -> None:
        check_host_tools()
        self.directory = Path(tempfile.mkdtemp(prefix="ameide-k8s-"))
        self.kubeconfig = self.directory / "admin.kubeconfig"
        self.ca_cert = self.directory / "pki" / "ca.crt"
        self.containerd_socket = self.directory / "containerd" / "containerd.sock"
        self._cgroup = f"/{self.directory.name}"

    def __enter__(self) -> Cluster:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def pids(self) -> dict[str, int]:
        return {name: daemon.pid for name, daemon in self.daemons.items()}

    # --- start ---------------------------------------------------------------------------------

    def start(self) -> Cluster:
        started = time.monotonic()
        try:
            with self._phase("certificates"):
                self._certificates()
            with self._phase("kine_and_containerd"):
                self._start_kine()
                self._start_containerd()
                self.import_image(pause_image(self.directory, self.binaries.path("pause")))
            with self._phase("apiserver_ready"):
                self._start_apiserver()
                self._wait_for(
                    "kube-apiserver", lambda: self._get("/readyz") is not None, self.ready_timeout
                )
            with self._phase("node_ready"):
                self._start_controllers()
                self._start_kubelet()
                self.wait_ready(self.ready_timeout)
        except BaseException as failure:
            try:
                self.stop()
            except ClusterError as cleanup:
                failure.add_note(str(cleanup))
            raise
        self.timings["start_to_ready"] = time.monotonic() - started
        return self

    @contextlib.contextmanager
    def _phase(self, name: str) -> Iterator[None]:
        started = time.monotonic()
        yield
        self.timings[name] = time.monotonic() - started

    def _dir(self, *parts: str) -> Path:
        path = self.directory.joinpath(*parts)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def _path(self, *parts: str) -> Path:
        path = self.directory.joinpath(*parts)
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def _certificates(self) -> None:
        pki = self._dir("pki")
        ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        _openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "7",
                 "-subj", "/CN=ameide-test-kubernetes-ca", cwd=pki)  # fmt: skip
        leaves = {
            "apiserver": (
                "/CN=kube-apiserver",
                "serverAuth",
                "IP:127.0.0.1,IP:10.0.0.1,DNS:localhost,DNS:kubernetes,"
                "DNS:kubernetes.default,DNS:kubernetes.default.svc,"
                "DNS:kubernetes.default.svc.cluster.local",
            ),
            "apiserver-kubelet-client": (
                "/O=system:masters/CN=kube-apiserver-kubelet-client",
                "clientAuth",
                "",
            ),
        }
        for name, (subject, usage, names) in leaves.items():
            extensions = [
                "basicConstraints=critical,CA:FALSE",
                "keyUsage=critical,digitalSignature,keyEncipherment",
                f"extendedKeyUsage={usage}",
            ]
            if names:
                extensions.append(f"subjectAltName={names}")
            (pki / f"{name}.ext").write_text("\n".join(extensions) + "\n")
            _openssl("req", "-new", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr",
                     "-subj", subject, cwd=pki)  # fmt: skip
            _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                     "-set_serial", f"0x{os.urandom(8).hex()}", "-days", "7",
                     "-extfile", f"{name}.ext", "-out", f"{name}.crt", cwd=pki)  # fmt: skip
        _openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048",
                 "-out", "sa.key", cwd=pki)  # fmt: skip
        _openssl("pkey", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=pki)
        tokens = {
            "admin": ("admin", "system:masters"),
            "controller-manager": ("system:kube-controller-manager", ""),
            "scheduler": ("system:kube-scheduler", ""),
            "kubelet": (f"system:node:{NODE_NAME}", "system:nodes"),
        }
        self._tokens = {who: os.urandom(16).hex() for who in tokens}
        self._admin_token = self._tokens["admin"]
        (pki / "tokens.csv").write_text(
            "".join(
                f'{self._tokens[who]},{user},{user},"{groups}"\n'
                for who, (user, groups) in tokens.items()
            )
        )

    def _spawn(self, name: str, argv: Sequence[str], env: dict[str, str] | None = None) -> Daemon:
        log = self._path("logs", f"{name}.log")
        with log.open("ab") as out:
            process = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.directory,
                env=env if env is not None else dict(os.environ),
                preexec_fn=_die_with_parent,
            )
        daemon = Daemon(name, process, log)
        self.daemons[name] = daemon
        return daemon

    def _wait_for(self, what: str, condition: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            self._check_alive()
            if time.monotonic() > deadline:
                raise ClusterNotReady(f"{what} not up after {timeout:.0f} s\n{self.log_tails()}")
            time.sleep(0.1)

    def _check_alive(self) -> None:
        for daemon in self.daemons.values():
            code = daemon.process.poll()
            if code is not None:
                raise ClusterNotReady(
                    f"{daemon.name} exited with {code}; its log ({daemon.log}):\n"
                    f"{_tail(daemon.log, 40)}"
                )

    def log_tails(self, lines: int = 15) -> str:
        return "\n".join(
            f"--- {d.name} ({d.log}) ---\n{_tail(d.log, lines)}" for d in self.daemons.values()
        )

    def _start_kine(self) -> None:
        port = free_port()
        database = self._path("kine", "state.db")
        self._spawn(
            "kine",
            [
                str(self.binaries.path("kine")),
                "--listen-address", f"127.0.0.1:{port}",
                "--metrics-bind-address", "0",
                "--endpoint", f"sqlite://{database}?_journal=WAL&cache=shared&_busy_timeout=30000",
            ],
        )  # fmt: skip
        self._etcd = f"http://127.0.0.1:{port}"
        self._wait_for("kine", lambda: _listening(port), 30)

    def _start_containerd(self) -> None:
        root = self._dir("containerd", "root")
        state = self._dir("containerd", "state")
        cni_conf = self._path("cni", "net.d", "10-loopback.conflist")
        cni_conf.write_text(
            json.dumps(
                {
                    "cniVersion": "1.0.0",
                    "name": "loopback",
                    "plugins": [{"type": "loopback"}],
                }
            )
        )
        cri = 'plugins."io.containerd.grpc.v1.cri"'
        config = self._path("containerd", "config.toml")
        config.write_text(
            f"""version = 2
root = "{root}"
state = "{state}"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs",
  "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = "{self.containerd_socket}"

[ttrpc]
  address = "{self.containerd_socket}.ttrpc"

[plugins."io.containerd.internal.v1.opt"]
  path = "{self._dir("containerd", "opt")}"

[{cri}]
  sandbox_image = "{PAUSE_IMAGE}"
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  disable_apparmor = true
  enable_selinux = false

[{cri}.containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"

[{cri}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[{cri}.containerd.runtimes.runc.options]
  SystemdCgroup = false
  Root = "{self._dir("containerd", "runc")}"

[{cri}.cni]
  bin_dir = "{CNI_BIN_DIR}"
  conf_dir = "{cni_conf.parent}"
"""
        )
        # Nothing can be pulled from outside: a proxy that refuses makes a missing image fail
        # at once (ErrImagePull) instead of waiting on a DNS lookup.
        env = {
            **os.environ,
            "HTTP_PROXY": "http://127.0.0.1:9",
            "HTTPS_PROXY": "http://127.0.0.1:9",
            "NO_PROXY": "127.0.0.1,localhost",
        }
        self._spawn("containerd", ["containerd", "--config", str(config)], env)
        self._wait_for("containerd", lambda: self._ctr("version").returncode == 0, 30)

    def _start_apiserver(self) -> None:
        port = free_port()
        pki = self.directory / "pki"
        self.server = f"https://127.0.0.1:{port}"
        self._spawn(
            "kube-apiserver",
            [
                str(self.binaries.path("kube-apiserver")),
                "--etcd-servers", self._etcd,
                "--bind-address", "127.0.0.1",
                "--advertise-address", "127.0.0.1",
                "--secure-port", str(port),
                "--cert-dir", str(self._dir("apiserver")),
                "--tls-cert-file", str(pki / "apiserver.crt"),
                "--tls-private-key-file", str(pki / "apiserver.key"),
                "--client-ca-file", str(pki / "ca.crt"),
                "--token-auth-file", str(pki / "tokens.csv"),
                "--authorization-mode", "Node,RBAC",
                "--enable-admission-plugins", "NodeRestriction",
                "--service-account-issuer", SERVICE_ACCOUNT_ISSUER,
                "--service-account-key-file", str(pki / "sa.pub"),
                "--service-account-signing-key-file", str(pki / "sa.key"),
                "--service-cluster-ip-range", "10.0.0.0/24",
                "--endpoint-reconciler-type", "none",
                "--kubelet-preferred-address-types", "InternalIP",
                "--kubelet-client-certificate", str(pki / "apiserver-kubelet-client.crt"),
                "--kubelet-client-key", str(pki / "apiserver-kubelet-client.key"),
                "--allow-privileged=true",
                "--profiling=false",
            ],
        )  # fmt: skip
        self.kubeconfig.write_text(
            _kubeconfig(self.server, self.ca_cert, self._admin_token, "admin")
        )

    def _component_kubeconfig(self, who: str) -> Path:
        path = self._path(who, "kubeconfig")
        path.write_text(_kubeconfig(self.server, self.ca_cert, self._tokens[who], who))
        return path

    def _start_controllers(self) -> None:
        pki = self.directory / "pki"
        self._spawn(
            "kube-controller-manager",
            [
                str(self.binaries.path("kube-controller-manager")),
                "--kubeconfig", str(self._component_kubeconfig("controller-manager")),
                "--bind-address", "127.0.0.1",
                "--secure-port", "0",
                "--leader-elect=false",
                "--use-service-account-credentials",
                "--service-account-private-key-file", str(pki / "sa.key"),
                "--root-ca-file", str(pki / "ca.crt"),
                "--cluster-signing-cert-file", str(pki / "ca.crt"),
                "--cluster-signing-key-file", str(pki / "ca.key"),
                # Each controller first fetches credentials of its own: at the default client
                # rate limit that alone delays the first synced controller by about 4 s.
                "--kube-api-qps", "200",
                "--kube-api-burst", "400",
                "--profiling=false",
            ],
        )  # fmt: skip
        self._spawn(
            "kube-scheduler",
            [
                str(self.binaries.path("kube-scheduler")),
                "--kubeconfig", str(self._component_kubeconfig("scheduler")),
                "--bind-address", "127.0.0.1",
                "--secure-port", "0",
                "--leader-elect=false",
                "--profiling=false",
            ],
        )  # fmt: skip

    def _make_cgroup_root(self) -> None:
        """Pods' cgroups go under a root of this cluster's own, so that stop() can remove them
        and two clusters never share one."""
        for hierarchy in Path("/sys/fs/cgroup").iterdir():
            if not (hierarchy / "cgroup.procs").exists():
                continue
            mine = hierarchy / self._cgroup.strip("/")
            mine.mkdir(exist_ok=True)
            for inherited in ("cpuset.cpus", "cpuset.mems"):
                if (hierarchy / inherited).exists():
                    (mine / inherited).write_text((hierarchy / inherited).read_text())

    def _start_kubelet(self) -> None:
        self._make_cgroup_root()
        port = free_port()
        root = self._dir("kubelet", "root")
        resolv = self._path("kubelet", "resolv.conf")
        resolv.write_text("nameserver 127.0.0.1\n")
        config = self._path("kubelet", "config.json")
        config.write_text(
            json.dumps(
                {
                    "apiVersion": "kubelet.config.k8s.io/v1beta1",
                    "kind": "KubeletConfiguration",
                    "address": "127.0.0.1",
                    "port": port,
                    "readOnlyPort": 0,
                    "healthzBindAddress": "127.0.0.1",
                    "healthzPort": 0,
                    "containerRuntimeEndpoint": f"unix://{self.containerd_socket}",
                    "cgroupDriver": "cgroupfs",
                    "cgroupRoot": self._cgroup,
                    "failCgroupV1": False,
                    "failSwapOn": False,
                    "makeIPTablesUtilChains": False,
                    "resolvConf": str(resolv),
                    "clusterDomain": "cluster.local",
                    "podLogsDir": str(self._dir("kubelet", "pod-logs")),
                    "volumePluginDir": str(self._dir("kubelet", "volume-plugins")),
                    "authentication": {
                        "anonymous": {"enabled": False},
                        "webhook": {"enabled": True},
                        "x509": {"clientCAFile": str(self.ca_cert)},
                    },
                    "authorization": {"mode": "Webhook"},
                    "evictionHard": {
                        "memory.available": "1Mi",
                        "nodefs.available": "1%",
                        "nodefs.inodesFree": "1%",
                        "imagefs.available": "1%",
                    },
                    "imageGCHighThresholdPercent": 100,
                    "imageGCLowThresholdPercent": 99,
                    "serializeImagePulls": False,
                },
                indent=2,
            )
        )
        self._spawn(
            "kubelet",
            [
                str(self.binaries.path("kubelet")),
                "--config", str(config),
                "--kubeconfig", str(self._component_kubeconfig("kubelet")),
                "--hostname-override", NODE_NAME,
                "--root-dir", str(root),
                "--cert-dir", str(self._dir("kubelet", "pki")),
                "--v", "1",
            ],
        )  # fmt: skip

    # --- use ----------------------------------------------------------------------------------

    def api(self, method: str, path: str, body: Any = None, token: str | None = None) -> Any:
        """One call of the Kubernetes API as the admin (or as `token`); the decoded JSON answer."""
        request = urllib.request.Request(  # noqa: S310 (the cluster's own https URL)
            f"{self.server}{path}",
            method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={
                "Authorization": f"Bearer {token or self._admin_token}",
                "Content-Type": "application/json",
                "Accept": "application/json",
            },
        )
        context = ssl.create_default_context(cafile=str(self.ca_cert))
        with urllib.request.urlopen(request, context=context, timeout=10) as answer:  # noqa: S310
            text = answer.read().decode()
        return json.loads(text) if text.startswith(("{", "[")) else text

    def _get(self, path: str) -> Any:
        """GET, or None while the apiserver cannot answer it."""
        try:
            return self.api("GET", path)
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return None

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [str(self.binaries.kubectl), "--kubeconfig", str(self.kubeconfig), *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and done.returncode != 0:
            raise KubectlFailed(
                f"kubectl {' '.join(args)} exited {done.returncode}:\n{done.stderr}"
            )
        return done

    def _ctr(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ctr", "--address", str(self.containerd_socket), "--namespace", "k8s.io", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def import_image(self, tarball: Path) -> None:
        """Load an image tarball (`docker save` or OCI layout) into the node's containerd."""
        done = self._ctr(
            "images", "import", "--snapshotter", "overlayfs", str(tarball), timeout=120
        )
        if done.returncode != 0:
            raise ClusterError(f"importing {tarball} into containerd failed:\n{done.stderr}")

    def node_ready(self) -> bool:
        node = self._get(f"/api/v1/nodes/{NODE_NAME}")
        if not isinstance(node, dict):
            return False
        conditions = node.get("status", {}).get("conditions", [])
        ready = any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)
        blocked = any(t.get("effect") == "NoSchedule" for t in node["spec"].get("taints", []))
        return ready and not blocked

    def wait_ready(self, timeout: float = 120.0) -> None:
        """Until the node is Ready and schedulable and `default` has its service account."""
        self._wait_for(
            f"node {NODE_NAME} Ready",
            lambda: (
                self.node_ready()
                and self._get("/api/v1/namespaces/default/serviceaccounts/default") is not None
            ),
            timeout,
        )

    # --- stop ---------------------------------------------------------------------------------

    def stop(self) -> None:
        """Kill every daemon and container of this cluster, unmount and remove all it made.
        Idempotent."""
        started = time.monotonic()
        if self._daemon_alive("kube-apiserver") and self._daemon_alive("kubelet"):
            self._drain()
        for name in (
            "kubelet",
            "kube-scheduler",
            "kube-controller-manager",
            "kube-apiserver",
            "kine",
        ):
            self._terminate(name)
        if self._daemon_alive("containerd"):
            self._delete_tasks()
        self._terminate("containerd")
        self._kill_strays()
        self._unmount_all()
        self._remove_cgroups()
        self._remove_container_log_links()
        left = {
            "processes": self.leftover_processes(),
            "mounts": self.leftover_mounts(),
            "cgroups": self.leftover_cgroups(),
        }
        if not left["mounts"]:
            shutil.rmtree(self.directory, ignore_errors=True)
        self.timings["stop"] = time.monotonic() - started
        if any(left.values()):
            raise ClusterError(f"stopping the cluster in {self.directory} left behind: {left}")

    def _daemon_alive(self, name: str) -> bool:
        daemon = self.daemons.get(name)
        return daemon is not None and daemon.process.poll() is None

    def _drain(self) -> None:
        """Pods deleted through the API, so that the kubelet tears their sandboxes down (network
        namespaces included) before it stops."""
        with contextlib.suppress(KubectlFailed, subprocess.TimeoutExpired):
            self.kubectl("delete", "pods", "--all", "--all-namespaces", "--force",
                         "--grace-period=0", "--wait=false", timeout=20)  # fmt: skip
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and self._tasks():
                time.sleep(0.2)

    def _tasks(self) -> list[str]:
        listed = self._ctr("tasks", "list", "--quiet")
        return listed.stdout.split() if listed.returncode == 0 else []

    def _delete_tasks(self) -> None:
        """Tasks killed and deleted through containerd, so that their shims exit cleanly."""
        for task in self._tasks():
            self._ctr("tasks", "kill", "--all", "--signal", "SIGKILL", task)
        for task in self._tasks():
            self._ctr("tasks", "delete", "--force", task)

    def _terminate(self, name: str) -> None:
        daemon = self.daemons.get(name)
        if daemon is None or daemon.process.poll() is not None:
            return
        daemon.process.terminate()
        try:
            daemon.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            daemon.process.kill()
            daemon.process.wait(timeout=15)

    def leftover_processes(self) -> list[int]:
        """Processes of this cluster still alive: any that names its directory on its command
        line (shims, daemons) or runs in a root under it (containers)."""
        marker = str(self.directory)
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                command = (
                    (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                )
                root = os.readlink(entry / "root")
            except OSError:
                continue
            if marker in command or root.startswith(marker):
                found.append(int(entry.name))
        return found

    def _kill_strays(self) -> None:
        for pid in self.leftover_processes():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while self.leftover_processes() and time.monotonic() < deadline:
            time.sleep(0.1)

    def leftover_mounts(self) -> list[str]:
        marker = str(self.directory)
        mounts = []
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            point = line.split()[4].replace("\\040", " ")
            if point == marker or point.startswith(marker + "/"):
                mounts.append(point)
        return mounts

    def _unmount_all(self) -> None:
        for _ in range(5):
            points = self.leftover_mounts()
            if not points:
                return
            for point in sorted(set(points), key=lambda p: p.count("/"), reverse=True):
                done = subprocess.run(["umount", point], capture_output=True, check=False)
                if done.returncode != 0:
                    subprocess.run(["umount", "--lazy", point], capture_output=True, check=False)

    def leftover_cgroups(self) -> list[Path]:
        name = self._cgroup.strip("/")
        return [h / name for h in Path("/sys/fs/cgroup").iterdir() if (h / name).exists()]

    def _remove_cgroups(self) -> None:
        for top in self.leftover_cgroups():
            for directory, _, _ in sorted(
                os.walk(top), key=lambda w: w[0].count("/"), reverse=True
            ):
                with contextlib.suppress(OSError):
                    os.rmdir(directory)

    def _remove_container_log_links(self) -> None:
        """The kubelet links every container's log from a fixed /var/log/containers."""
        links = Path("/var/log/containers")
        if not links.is_dir():
            return
        for link in links.iterdir():
            with contextlib.suppress(OSError):
                if link.is_symlink() and os.readlink(link).startswith(str(self.directory)):
                    link.unlink()


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0
