"""The user's side of the product: a fresh clone, a fresh HOME and a clean environment.

Tests of the `user` tier start every command as a person does on a new machine: no `PREFECT_*`,
no `AMEIDE_*`, no `VAULT_*`, a HOME of their own (so no Prefect profile, no local state), in a
copy of the repository as a clone of it has it. Two download caches are shared with the
developer's HOME, uv's and Maven's, so that the suite does not fetch 600 MB again; they hold
downloads only, nothing that changes what a command does.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ameide_migrate.services import local
from tests.fix_tiers import mark_if_uses, register

REPO = Path(__file__).resolve().parent.parent
_HIDDEN_PREFIXES = ("PREFECT_", "AMEIDE_", "VAULT_", "UV_", "XDG_", "VIRTUAL_ENV", "PYTEST_")


_FIXTURES = frozenset({"user_machine", "user_machine_venv"})


def pytest_configure(config: pytest.Config) -> None:
    register(
        config,
        "user",
        "runs the product as a person does: a fresh clone, a fresh HOME, nothing set",
    )


def pytest_itemcollected(item: pytest.Item) -> None:
    mark_if_uses(item, _FIXTURES, "user")


@dataclass
class UserMachine:
    """A clone and a HOME; `run` starts a command there with nothing set."""

    clone: Path
    home: Path
    env: dict[str, str] = field(default_factory=dict)

    def run(
        self, *argv: str, timeout: float = 300, extra_env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            list(argv),
            cwd=self.clone,
            env={**self.env, **(extra_env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def ameide(
        self, *args: str, timeout: float = 300, extra_env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """`ameide-migrate ARGS` from the clone's own virtualenv (made by `./dev`)."""
        command = str(self.clone / ".venv" / "bin" / "ameide-migrate")
        return self.run(command, *args, timeout=timeout, extra_env=extra_env)

    @property
    def state_dir(self) -> Path:
        return self.home / ".local" / "state" / "ameide-migrate"


def clean_environment(home: Path) -> dict[str, str]:
    """This process's environment without anything that steers the product, with `home`."""
    venv_bin = str(Path(sys.executable).parent)
    env = {k: v for k, v in os.environ.items() if not k.startswith(_HIDDEN_PREFIXES)}
    env["PATH"] = os.pathsep.join(
        p for p in env.get("PATH", "").split(os.pathsep) if p and p != venv_bin
    )
    uv = shutil.which("uv", path=env["PATH"])
    if uv is None:  # ./dev installs uv into ~/.local/bin; keep the developer's on PATH
        env["PATH"] = f"{Path.home() / '.local' / 'bin'}{os.pathsep}{env['PATH']}"
    env["HOME"] = str(home)
    env["UV_CACHE_DIR"] = _uv_cache_dir()
    return env


def _uv_cache_dir() -> str:
    uv = shutil.which("uv") or str(Path.home() / ".local" / "bin" / "uv")
    done = subprocess.run([uv, "cache", "dir"], capture_output=True, text=True, check=True)
    return done.stdout.strip()


def copy_as_cloned(destination: Path) -> Path:
    """The files a clone of this work tree has: tracked and not ignored, nothing of .venv or
    .cache."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, (n.decode() for n in listed)):
        source = REPO / name
        if not source.exists():  # deleted in the work tree, not yet in git
            continue
        target = destination / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target, follow_symlinks=False)
    return destination


@pytest.fixture(scope="session")
def user_machine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UserMachine]:
    """A fresh clone and HOME for the session; whatever the user started there (the local
    PostgreSQL, Prefect server and worker) is stopped at the end with `local down`."""
    root = tmp_path_factory.mktemp("user")
    home = root / "home"
    home.mkdir()
    m2 = Path.home() / ".m2"
    if m2.exists():
        (home / ".m2").symlink_to(m2)
    machine = UserMachine(copy_as_cloned(root / "clone"), home)
    machine.env = clean_environment(home)
    try:
        yield machine
    finally:
        if (machine.clone / ".venv" / "bin" / "ameide-migrate").exists():
            machine.ameide("local", "down", timeout=120)
        shutil.rmtree(local.cluster_dir(machine.state_dir).parent, ignore_errors=True)


@pytest.fixture(scope="session")
def user_machine_venv(user_machine: UserMachine) -> UserMachine:
    """The clone with its own virtualenv, as `./dev` makes it (without running anything)."""
    if not (user_machine.clone / ".venv" / "bin" / "ameide-migrate").exists():
        done = user_machine.run("uv", "sync", "--frozen", "--quiet", timeout=600)
        assert done.returncode == 0, done.stderr
    return user_machine
