"""Flyway: provisioning the real Flyway, and running its commands.

Two ways to run it, both the real Flyway:
- `FlywayEngine`: one JVM that serves validate/migrate/info for many databases at once through
  Flyway's Java API (`java/FlywayEngine.java`), answering with Flyway's own result objects as JSON.
  A JVM start is most of the cost of a Flyway command; the engine pays it once per run.
- `command_line()`: Flyway's own command line (`org.flywaydb.commandline.Main`), for comparisons
  and for people who want to type `flyway` themselves.

Why Maven and not the command-line tarball: the tarball is about 180 MB with a bundled JRE and
drivers for every database; the jars Flyway needs for PostgreSQL are under 5 MB, and Maven (on
these machines already) resolves them from Maven Central with checksums.
"""

from __future__ import annotations

import ctypes
import hashlib
import itertools
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

from pydantic import SecretStr

from ameide_migrate.core.catalog import key_prefix
from ameide_migrate.core.errors import (
    ChecksumMismatch,
    FlywayCommandFailed,
    FlywayEngineCrashed,
    FlywayInstallFailed,
    FlywayNotInstalled,
    HistoryMissing,
    MigrationFailed,
    NonTransactionalMigrationFailed,
    TransientFlywayFault,
    ValidationFailed,
)

ENGINE_CLASS = "ameide.FlywayEngine"
CLI_CLASS = "org.flywaydb.commandline.Main"
_INSTALL_LAYOUT = 4  # bump when what `install` puts in the cache changes
GSON_VERSION = "2.11.0"  # the engine's JSON library; Flyway's own changed between releases
JVM_OPTIONS = ("-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC", "-Xms16m", "-Xmx256m", "-Xss1m")

# SQLSTATE classes and codes that say "try again": connection trouble, the server starting or
# shutting down, too many clients, a lock wait or a deadlock.
_TRANSIENT_SQLSTATE_PREFIXES = ("08", "57P")
_TRANSIENT_SQLSTATES = frozenset({"53300", "55P03", "40P01", "40001"})
_TRANSIENT_CAUSES = ("java.net.ConnectException", "Connection reset", "java.io.EOFException")
_LOCK_WAIT = "advisory lock"
_NO_HISTORY = "NON_EMPTY_SCHEMA_WITHOUT_SCHEMA_HISTORY_TABLE"  # Flyway's CoreErrorCode

LogSink = Callable[[str, str], None]
"""Receives (level, message) for every line Flyway logs while serving one request."""


@dataclass(frozen=True)
class Installation:
    home: Path
    version: str
    java: str

    @property
    def classpath(self) -> str:
        return f"{self.home / 'engine'}{os.pathsep}{self.home / 'lib'}/*"

    @property
    def postgresql_support(self) -> tuple[int, int] | None:
        """(oldest, newest) PostgreSQL major this Flyway supports, as read from Flyway itself."""
        support = json.loads((self.home / "installed.json").read_text()).get("postgresql")
        return (int(support[0]), int(support[1])) if support else None


def _engine_source() -> bytes:
    return resources.files("ameide_migrate").joinpath("java/FlywayEngine.java").read_bytes()


def _dependency(group: str, artifact: str, version: str, *, exclude_all: bool = False) -> str:
    exclusions = (
        "<exclusions><exclusion><groupId>*</groupId><artifactId>*</artifactId></exclusion>"
        "</exclusions>"
        if exclude_all
        else ""
    )
    return (
        f"<dependency><groupId>{group}</groupId><artifactId>{artifact}</artifactId>"
        f"<version>{version}</version>{exclusions}</dependency>"
    )


def _pom(version: str, driver_version: str, command_line_modules: Sequence[str] = ()) -> str:
    """Flyway for PostgreSQL: the command line's jar without the drivers for every other database
    it pulls in (most of its 180 MB), plus the Flyway modules it needs to start."""
    modules = dict.fromkeys(["flyway-core", "flyway-database-postgresql", *command_line_modules])
    dependencies = [
        _dependency("org.flywaydb", "flyway-commandline", version, exclude_all=True),
        *(_dependency("org.flywaydb", m, version) for m in modules),
        _dependency("org.postgresql", "postgresql", driver_version),
        _dependency("com.google.code.gson", "gson", GSON_VERSION),
    ]
    return (
        '<project xmlns="http://maven.apache.org/POM/4.0.0"><modelVersion>4.0.0</modelVersion>'
        "<groupId>dev.ameide</groupId><artifactId>flyway-runtime</artifactId><version>1</version>"
        f"<dependencies>{''.join(dependencies)}</dependencies></project>\n"
    )


def _command_line_modules(pom: Path) -> list[str]:
    """The Flyway modules the command line needs at compile scope (13 adds flyway-core-utilities
    and flyway-command-mcp); its runtime-scope database drivers are left out."""
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    modules = []
    # Maven Central's POM, fetched by Maven over TLS with checksums: not untrusted input.
    root = ElementTree.parse(pom).getroot()  # noqa: S314
    for dep in root.iterfind("m:dependencies/m:dependency", ns):
        group = dep.findtext("m:groupId", "", ns)
        scope = dep.findtext("m:scope", "compile", ns)
        optional = dep.findtext("m:optional", "false", ns) == "true"
        version = dep.findtext("m:version", "${project.version}", ns)
        ours = group in ("org.flywaydb", "${project.groupId}") and "project.version" in version
        if ours and scope == "compile" and not optional:
            modules.append(dep.findtext("m:artifactId", "", ns))
    return modules


def _fingerprint(version: str, driver_version: str) -> str:
    pinned = f"{_INSTALL_LAYOUT} {version} {driver_version} {GSON_VERSION}".encode()
    digest = hashlib.sha256(pinned + _engine_source())
    return digest.hexdigest()


def installation(home: Path, version: str, java: str) -> Installation:
    """The installed Flyway at `home`, or a FlywayNotInstalled error saying how to install it."""
    if not (home / "installed.json").is_file():
        raise FlywayNotInstalled(
            f"Flyway {version} is not installed in {home}: run `ameide-migrate flyway install`"
        )
    return Installation(home=home, version=version, java=java)


def install(
    home: Path,
    version: str,
    *,
    driver_version: str,
    java: str = "java",
    maven: str = "mvn",
    progress: Callable[[str], None] = lambda _: None,
) -> tuple[Installation, bool]:
    """Resolve Flyway's jars with Maven into `home` and compile the engine; (installation, changed).

    Idempotent: when `home` already holds this version built from the same engine source, it
    returns at once, its launcher brought up to date.
    """
    marker = home / "installed.json"
    fingerprint = _fingerprint(version, driver_version)
    if marker.is_file() and json.loads(marker.read_text()).get("fingerprint") == fingerprint:
        # The launcher is derived from `java` and JVM_OPTIONS, neither in the fingerprint:
        # rewritten here, a flag change reaches an installed cache without resolving the jars.
        return Installation(home=home, version=version, java=java), _write_launcher(home, java)

    for tool in (maven, java):
        if shutil.which(tool) is None:
            raise FlywayInstallFailed(
                f"{tool!r} is not on PATH: install Maven and a Java 17+ JDK "
                "(Debian: apt-get install maven openjdk-17-jdk-headless)"
            )
    javac = shutil.which("javac", path=str(Path(shutil.which(java) or java).resolve().parent))
    javac = javac or shutil.which("javac")
    if javac is None:
        raise FlywayInstallFailed("javac is not on PATH: install a Java 17+ JDK, not only a JRE")

    home.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="flyway-install-", dir=home) as scratch:
        work = Path(scratch)
        lib = work / "lib"
        progress(f"resolving Flyway {version} from Maven Central")
        _run(
            [
                maven,
                "-q",
                "-B",
                "dependency:copy",
                f"-Dartifact=org.flywaydb:flyway-commandline:{version}:pom",
                f"-DoutputDirectory={work}",
            ],
            f"Maven could not find Flyway {version}; check that org.flywaydb:flyway-commandline "
            f"{version} exists on Maven Central and that Maven can reach its repository",
        )
        modules = _command_line_modules(work / f"flyway-commandline-{version}.pom")
        (work / "pom.xml").write_text(_pom(version, driver_version, modules))
        _run(
            [
                maven,
                "-q",
                "-B",
                "-f",
                str(work / "pom.xml"),
                "dependency:copy-dependencies",
                f"-DoutputDirectory={lib}",
                "-DincludeScope=runtime",
            ],
            f"Maven could not resolve Flyway {version}; check the version exists on Maven "
            "Central (org.flywaydb:flyway-commandline) and that Maven can reach its repository",
        )
        source = work / "src" / "FlywayEngine.java"
        source.parent.mkdir()
        source.write_bytes(_engine_source())
        progress("compiling the Flyway engine")
        _run(
            [javac, "-nowarn", "-d", str(work / "engine"), "-cp", f"{lib}/*", str(source)],
            f"the Flyway engine does not compile against Flyway {version}",
        )
        for name in ("lib", "engine"):
            target = home / name
            if target.exists():
                shutil.rmtree(target)
            (work / name).rename(target)
    _write_launcher(home, java)
    support = _postgresql_support(home / "lib", javac)
    marker.write_text(
        json.dumps({"version": version, "fingerprint": fingerprint, "postgresql": support})
    )
    return Installation(home=home, version=version, java=java), True


def _write_launcher(home: Path, java: str) -> bool:
    """`home/bin/flyway`, Flyway's own command line; True when it was missing or out of date."""
    launcher = home / "bin" / "flyway"
    # Relative to itself: the migrations image carries this folder to another path.
    text = (
        "#!/bin/sh\n# Flyway's own command line, on the jars resolved by ameide-migrate.\n"
        f'exec "{java}" {" ".join(JVM_OPTIONS)} -cp "$(dirname "$0")/../lib/*" {CLI_CLASS} '
        '-skipCheckForUpdate "$@"\n'
    )
    if launcher.is_file() and launcher.read_text() == text:
        return False
    launcher.parent.mkdir(exist_ok=True)
    # Renamed into place: another process may be running the old launcher from a shared cache.
    fresh = launcher.with_name(f".flyway-{os.getpid()}")
    fresh.write_text(text)
    fresh.chmod(0o755)
    fresh.replace(launcher)
    return True


def _run(command: list[str], failure: str) -> None:
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
        raise FlywayInstallFailed(f"{failure}:\n{tail}")


def _postgresql_support(lib: Path, javac: str) -> list[str] | None:
    """Read the PostgreSQL range out of Flyway's own check (`PostgreSQLDatabase.ensureSupported`:
    the oldest major of its open-source edition, the newest it was tested with), so the drift
    check warns before a server upgrade leaves it. None when this Flyway's code reads otherwise."""
    javap = Path(javac).with_name("javap")
    done = subprocess.run(
        [
            str(javap),
            "-c",
            "-p",
            "-constants",
            "-cp",
            f"{lib}/*",
            "org.flywaydb.database.postgresql.PostgreSQLDatabase",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    body = done.stdout.split("ensureSupported", 1)[-1].split("public ", 1)[0]
    versions = re.findall(r"// String (\d+)(?:\.\d+)?\s*$", body, flags=re.MULTILINE)
    return versions[-2:] if done.returncode == 0 and len(versions) >= 3 else None


def command_line(inst: Installation) -> list[str]:
    """Flyway's own command line, with the update check off (pods and CI have no egress)."""
    return [
        inst.java,
        *JVM_OPTIONS,
        "-cp",
        f"{inst.home / 'lib'}/*",
        CLI_CLASS,
        "-skipCheckForUpdate",
    ]


@dataclass(frozen=True)
class Target:
    """Where one database lives and who connects to it; the password stays secret."""

    jdbc_url: str
    user: str
    password: SecretStr


@dataclass(frozen=True)
class Request:
    command: str
    database: str
    locations: tuple[str, ...]
    placeholders: Mapping[str, str]
    table: str
    ignore_migration_patterns: tuple[str, ...] | None = None
    lock_retry_count: int | None = None
    configuration: Mapping[str, str] = field(default_factory=dict)
    """The database's Flyway settings (`flyway.<key>` -> value, from flyway_config), given to
    Flyway's own `configure().configuration(Map)`."""


def utf8_locale(env: Mapping[str, str]) -> dict[str, str]:
    """LC_ALL=C.UTF-8 when the environment names no UTF-8 locale (a pod often names none): the
    JVM decodes file names with the locale's charset, and under ASCII it skips a migration whose
    name is not ASCII (V4__café.sql) without a word."""
    chosen = env.get("LC_ALL") or env.get("LC_CTYPE") or env.get("LANG") or ""
    utf8 = chosen.lower().replace("-", "").endswith("utf8")
    return {} if utf8 else {"LC_ALL": "C.UTF-8"}


# What the engine JVM keeps of its caller's environment: the system's basics, the locale, Java's
# own settings, TLS trust and proxies, and Flyway's variables. The rest (VAULT_TOKEN, the admin
# URL, other databases' credentials, PREFECT_API_URL) is no business of Flyway's, and whatever
# it holds can be read in /proc/<pid>/environ for as long as the JVM runs.
_JVM_VARIABLES = frozenset(
    {
        "PATH",
        "HOME",
        "LANG",
        "TZ",
        "JAVA_HOME",
        "JAVA_TOOL_OPTIONS",
        "JDK_JAVA_OPTIONS",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
        "REQUESTS_CA_BUNDLE",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "NO_PROXY",
        "http_proxy",
        "https_proxy",
        "no_proxy",
    }
)
_JVM_VARIABLE_PREFIXES = ("LC_", "FLYWAY_")


def jvm_environment(caller: Mapping[str, str], targets: Mapping[str, Target]) -> dict[str, str]:
    """The engine JVM's whole environment: the allowed part of the caller's, a UTF-8 locale, and
    the connection of each database the engine serves (`AMEIDE_TARGET_<DB>_*`, which the engine
    reads; never its command line, which every user of the machine can read)."""
    env = {
        name: value
        for name, value in caller.items()
        if name in _JVM_VARIABLES or name.startswith(_JVM_VARIABLE_PREFIXES)
    }
    env.update(utf8_locale(env))
    for database, target in targets.items():
        prefix = f"AMEIDE_TARGET_{key_prefix(database)}_"
        env[prefix + "URL"] = target.jdbc_url
        env[prefix + "USER"] = target.user
        env[prefix + "PASSWORD"] = target.password.get_secret_value()
    return env


_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _killed_with(parent: int) -> Callable[[], None] | None:
    """What the child runs before exec on Linux: the kernel SIGKILLs it when its parent goes,
    whatever kills the parent (kill -9 included), so an in-flight migration's transaction dies
    with its connection and PostgreSQL rolls it back."""
    if sys.platform != "linux":
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved here: the child only calls it

    def arm() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # the parent died before the signal was armed
            os.kill(os.getpid(), signal.SIGKILL)

    return arm


class _Launcher:
    """Starts the engine JVMs from one thread that lives as long as this process.

    Linux sends the parent-death signal when the *thread* that forked the child ends, not the
    process: a JVM started from a task's worker thread would be killed when the task runner
    retires that thread, mid-run. This thread never ends before the process does.
    """

    _requests: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any]]] | None = None
    _lock = threading.Lock()

    @classmethod
    def start(cls, launch: Callable[[], subprocess.Popen[str]]) -> subprocess.Popen[str]:
        with cls._lock:
            if cls._requests is None:
                cls._requests = queue.SimpleQueue()
                threading.Thread(
                    target=cls._serve, args=(cls._requests,), daemon=True, name="jvm-launcher"
                ).start()
        started: Future[subprocess.Popen[str]] = Future()
        cls._requests.put((launch, started))
        return started.result()

    @staticmethod
    def _serve(requests: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any]]]) -> None:
        while True:
            launch, started = requests.get()
            try:
                started.set_result(launch())
            except BaseException as e:  # noqa: BLE001  (handed to the caller, raised there)
                started.set_exception(e)


class FlywayEngine:
    """A running engine JVM; thread-safe: many requests may be in flight at once.

    The JVM dies with the process that started it (`_killed_with`), whatever the signal."""

    def __init__(self, inst: Installation, targets: Mapping[str, Target]) -> None:
        env = jvm_environment(os.environ, targets)
        self._process = _Launcher.start(
            lambda: subprocess.Popen(
                [inst.java, *JVM_OPTIONS, "-cp", inst.classpath, ENGINE_CLASS],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=env,
                text=True,
                encoding="utf-8",
                preexec_fn=_killed_with(os.getpid()),
            )
        )
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._pending: dict[int, tuple[Future[dict[str, Any]], LogSink]] = {}
        self._stderr: deque[str] = deque(maxlen=20)
        self._readers = [
            threading.Thread(target=self._read_stdout, daemon=True, name="flyway-engine"),
            threading.Thread(target=self._read_stderr, daemon=True, name="flyway-stderr"),
        ]
        for reader in self._readers:
            reader.start()

    @property
    def alive(self) -> bool:
        return self._process.poll() is None

    def run(self, request: Request, on_log: LogSink = lambda _l, _m: None) -> dict[str, Any]:
        """Run one Flyway command; Flyway's result object, or a FlywayCommandFailed subclass."""
        message: dict[str, Any] = {
            "command": request.command,
            "target": key_prefix(request.database),
            "locations": list(request.locations),
            "placeholders": dict(request.placeholders),
            "table": request.table,
            "configuration": dict(request.configuration),
        }
        if request.ignore_migration_patterns is not None:
            message["ignoreMigrationPatterns"] = list(request.ignore_migration_patterns)
        if request.lock_retry_count is not None:
            message["lockRetryCount"] = request.lock_retry_count
        future: Future[dict[str, Any]] = Future()
        with self._lock:
            if not self.alive or self._process.stdin is None:
                raise self._crashed()
            request_id = next(self._ids)
            message["id"] = request_id
            self._pending[request_id] = (future, on_log)
            try:
                self._process.stdin.write(json.dumps(message) + "\n")
                self._process.stdin.flush()
            except OSError:
                del self._pending[request_id]
                raise self._crashed() from None
        answer = future.result()
        if answer.get("ok"):
            result: dict[str, Any] = answer["result"]
            return result
        raise classify(request, answer.get("error") or {})

    def close(self) -> None:
        if self._process.stdin is not None and not self._process.stdin.closed:
            self._process.stdin.close()
        try:
            self._process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        for reader in self._readers:
            reader.join(timeout=5)
        for stream in (self._process.stdout, self._process.stderr):
            if stream is not None:
                stream.close()

    def _crashed(self) -> FlywayEngineCrashed:
        return FlywayEngineCrashed(
            f"the Flyway engine JVM exited (code {self._process.poll()}); "
            f"its last output: {' | '.join(self._stderr) or 'none'}. A retry starts a new one; "
            "if it keeps failing, check that `java -version` is 17 or newer"
        )

    def _read_stdout(self) -> None:
        assert self._process.stdout is not None
        try:
            for line in self._process.stdout:
                self._dispatch(json.loads(line))
        finally:
            # The engine ended (or spoke garbage): every request still waiting fails now
            # instead of waiting forever.
            if self._process.poll() is None:
                self._process.kill()
            self._process.wait()
            with self._lock:
                orphans = list(self._pending.values())
                self._pending.clear()
            for future, _ in orphans:
                future.set_exception(self._crashed())

    def _dispatch(self, event: dict[str, Any]) -> None:
        if event.get("event") == "ready":
            return
        if event.get("event") == "log":
            with self._lock:
                entry = self._pending.get(event.get("id", -1))
            if entry is not None:
                entry[1](event.get("level", "info"), event.get("message", ""))
            return
        with self._lock:
            entry = self._pending.pop(event["id"], None)
        if entry is not None:
            entry[0].set_result(event)

    def _read_stderr(self) -> None:
        assert self._process.stderr is not None
        for line in self._process.stderr:
            self._stderr.append(line.rstrip())


def classify(request: Request, error: Mapping[str, Any]) -> FlywayCommandFailed:
    """Turn the engine's description of a Flyway exception into the project's error."""
    flyway_message = str(error.get("message", "")).strip()
    states = tuple(str(s) for s in error.get("sqlStates", ()))
    causes = " ".join(str(c) for c in error.get("causes", ()))
    transient = (
        any(s.startswith(_TRANSIENT_SQLSTATE_PREFIXES) or s in _TRANSIENT_SQLSTATES for s in states)
        or any(c in causes for c in _TRANSIENT_CAUSES)
        or _LOCK_WAIT in flyway_message
    )
    script = error.get("script")
    cls: type[FlywayCommandFailed]
    if request.command == "migrate" and error.get("executableInTransaction") is False:
        # Not rolled back: a retry would meet what it left (an INVALID index), whatever the
        # SQLSTATE (a lock_timeout's 55P03 included).
        cls = NonTransactionalMigrationFailed
    elif transient:
        cls = TransientFlywayFault
    elif error.get("errorCode") == _NO_HISTORY:
        cls = HistoryMissing
    elif request.command == "validate":
        cls = (
            ChecksumMismatch if "checksum mismatch" in flyway_message.lower() else ValidationFailed
        )
    elif request.command == "migrate":
        cls = MigrationFailed
    else:
        cls = FlywayCommandFailed
    first_line = flyway_message.splitlines()[0] if flyway_message else "no message"
    return cls(
        f"flyway {request.command} failed for database {request.database}: {first_line}",
        database=request.database,
        command=request.command,
        flyway_message=flyway_message,
        error_code=error.get("errorCode"),
        sql_states=states,
        script=str(script) if script else None,
    )


def validation_error(request: Request, result: Mapping[str, Any]) -> ValidationFailed | None:
    """Flyway's validate reports problems in its result rather than by raising; None when valid."""
    if result.get("validationSuccessful", False):
        return None
    details = result.get("errorDetails") or {}
    invalid = [m.get("errorDetails") or {} for m in result.get("invalidMigrations") or ()]
    # Flyway's summary line, then each invalid migration's own message (as its CLI prints them).
    flyway_message = "\n".join(
        [str(details.get("errorMessage") or "validation failed")]
        + [str(d["errorMessage"]) for d in invalid if d.get("errorMessage")]
    )
    codes = {str(d.get("errorCode")) for d in invalid}
    cls = ChecksumMismatch if "CHECKSUM_MISMATCH" in codes else ValidationFailed
    return cls(
        f"flyway validate failed for database {request.database}: {flyway_message}",
        database=request.database,
        command="validate",
        flyway_message=flyway_message,
        error_code=details.get("errorCode"),
    )
