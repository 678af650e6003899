"""A PostgreSQL cluster of our own: initdb and pg_ctl in a folder, on a loopback port.

The embedded local environment runs one (`local.py`), and the test suite starts throwaway ones.
As root the server runs as an unprivileged user, since PostgreSQL refuses to run as root.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from pathlib import Path

from pydantic import SecretStr

from ameide_migrate.adapters.ports import free_port
from ameide_migrate.adapters.postgres.connection import Credentials
from ameide_migrate.core.errors import LocalClusterFailed

_SERVER_DIRS = ("/usr/lib/postgresql",)


def server_binaries() -> Path:
    """The folder holding initdb and pg_ctl: PATH first, then Debian's versioned folders."""
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    for base in _SERVER_DIRS:
        versions = sorted(Path(base).glob("*/bin/pg_ctl"), key=lambda p: int(p.parent.parent.name))
        if versions:
            return versions[-1].parent
    raise LocalClusterFailed(
        "PostgreSQL server binaries (initdb, pg_ctl) are not installed: install them "
        "(Debian: apt-get install postgresql) or pass --admin-url to use an existing server"
    )


class Cluster:
    """A PostgreSQL cluster in a folder of ours, on loopback, password-protected.

    As root the server runs as an unprivileged user (PostgreSQL refuses to run as root); the folder
    must then be reachable by that user.
    """

    SUPERUSER = "postgres"

    def __init__(self, directory: Path, password: SecretStr) -> None:
        self.directory = directory
        self.data = directory / "data"
        self.password = password
        self.bin = server_binaries()
        self._user = _server_user()

    @property
    def port(self) -> int:
        return int((self.directory / "port").read_text())

    @property
    def admin(self) -> Credentials:
        return Credentials("127.0.0.1", self.port, "postgres", self.SUPERUSER, self.password)

    def initialised(self) -> bool:
        return (self.data / "PG_VERSION").is_file()

    def init(self) -> None:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        owner = self.directory.stat().st_uid
        if owner not in (os.geteuid(), self._user.pw_uid if self._user else os.geteuid()):
            raise LocalClusterFailed(
                f"{self.directory} belongs to another user (uid {owner}): remove it or point "
                "AMEIDE_STATE_DIR elsewhere"
            )
        pwfile = self.directory / "pwfile"
        fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(self.password.get_secret_value())
        (self.directory / "port").write_text(str(free_port()))
        self._chown()
        try:
            self._as_server_user(
                [
                    str(self.bin / "initdb"),
                    "-D",
                    str(self.data),
                    "-U",
                    self.SUPERUSER,
                    "-E",
                    "UTF8",
                    "--locale=C",
                    "--auth-local=scram-sha-256",
                    "--auth-host=scram-sha-256",
                    f"--pwfile={pwfile}",
                ],
                "initdb",
            )
        finally:
            pwfile.unlink()

    def running(self) -> bool:
        done = self._as_server_user(
            [str(self.bin / "pg_ctl"), "-D", str(self.data), "status"], None
        )
        return done.returncode == 0

    def start(self) -> None:
        if self.running():
            return
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories='' "
            "-c max_connections=200 -c fsync=off -c synchronous_commit=off"
        )
        self._as_server_user(
            [
                str(self.bin / "pg_ctl"),
                "-D",
                str(self.data),
                "-o",
                options,
                "-l",
                str(self.directory / "server.log"),
                "-w",
                "-t",
                "60",
                "start",
            ],
            "pg_ctl start",
        )

    def stop(self, mode: str = "fast") -> None:
        if self.initialised() and self.running():
            self._as_server_user(
                [str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop"],
                "pg_ctl stop",
            )

    def _chown(self) -> None:
        if self._user is not None:
            for path in (self.directory, *self.directory.rglob("*")):
                shutil.chown(path, self._user.pw_uid, self._user.pw_gid)

    def _as_server_user(
        self, command: list[str], action: str | None
    ) -> subprocess.CompletedProcess[str]:
        preexec = None
        if self._user is not None:
            uid, gid = self._user.pw_uid, self._user.pw_gid

            def preexec() -> None:
                os.setgid(gid)
                os.setuid(uid)

        env = {"PATH": os.environ.get("PATH", ""), "LC_ALL": "C", "HOME": str(self.directory)}
        done = subprocess.run(
            command,
            capture_output=True,
            text=True,
            check=False,
            preexec_fn=preexec,
            env=env,
            cwd=self.directory,
            start_new_session=True,
        )
        if action is not None and done.returncode != 0:
            log = self.directory / "server.log"
            tail = log.read_text(errors="replace").splitlines()[-10:] if log.exists() else []
            raise LocalClusterFailed(
                f"{action} failed for the PostgreSQL cluster in {self.directory}: "
                f"{(done.stderr or done.stdout).strip()} {' '.join(tail)}".strip()
            )
        return done


def _server_user() -> pwd.struct_passwd | None:
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise LocalClusterFailed("running as root and no unprivileged user (postgres, nobody) exists")
