"""One exception base for the project; each subclass is named after the condition it reports.

Every message says what happened, where (environment, database, path) and what to do next.
`transient` marks the faults worth retrying: the same call may succeed a few seconds later.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from enum import IntEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path


class ExitCode(IntEnum):
    """Every command's exit codes, in one place (the README's table lists them)."""

    OK = 0
    FAILED = 1
    """A database, a step or a run failed, crashed or was cancelled."""
    USAGE = 2
    """A mistake in the command, a setting or a file: nothing was started."""
    DRIFT = 3
    """A drift check found databases not in sync."""
    TIMEOUT = 4
    """`trigger --wait` stopped waiting; the run keeps going."""
    REJECTED = 5
    """A protected environment's plan was rejected, or not approved in time: nothing migrated."""
    INTERRUPTED = 130
    """Stopped by Ctrl-C (128 + SIGINT, as a shell reports it): `dev` ends this way."""


REJECTED_STATE = "Rejected"
"""The name of a Cancelled run whose plan was rejected or timed out."""


class MigrateError(Exception):
    """Base of every error this project raises on purpose."""

    transient: bool = False
    exit_code: int = ExitCode.FAILED


class UsageError(MigrateError):
    """The command was asked for something that does not exist or cannot be combined, or a
    setting or file it reads is wrong: nothing was started."""

    exit_code = ExitCode.USAGE


class SettingInvalid(UsageError):
    """An `AMEIDE_*` variable (or another setting) holds a value the product cannot use."""


class DatabaseUrlInvalid(UsageError, ValueError):
    """A PostgreSQL URL cannot be parsed; the message never repeats the URL (it may hold a
    password). Still a ValueError: the secret gate reports a bad stored URL as its problem."""


class LocalStoreInvalid(UsageError):
    """The local secret store is not the JSON `secrets seed-local` writes."""


class LocalServerMismatch(UsageError):
    """The local credentials already in Vault name another server than the one the command
    uses: read, they would answer for a server nobody named."""


class LocalStoreExposed(UsageError):
    """The local secret store is readable or writable by others: refused, as ssh refuses a
    private key of mode 0644."""


class StateDirUnwritable(UsageError):
    """The local state folder cannot be made or written."""


class UnknownDatabase(UsageError):
    def __init__(
        self,
        names: Iterable[str],
        valid: Iterable[str],
        sql_tree: Path,
        fleet_targets: Mapping[str, tuple[str, str]] | None = None,
    ) -> None:
        """`fleet_targets`: of the names, those that are a fleet's target's database, with
        (fleet, target): `--db` cannot name them, `--fleet F --target T` does."""
        self.names = sorted(names)
        self.valid = sorted(valid)
        targets = "".join(
            f"; {name} is target {target} of fleet {fleet}, which --db cannot name: "
            f"`ameide-migrate fleet run --env ENV --fleet {fleet} --target {target}` (repair, "
            "baseline, lint and secrets verify take --fleet and --target too)"
            for name, (fleet, target) in sorted((fleet_targets or {}).items())
        )
        super().__init__(
            f"unknown database {', '.join(self.names)}: "
            f"choose from {', '.join(self.valid)} (the folders under {sql_tree}){targets}"
        )


class UnknownEnvironment(UsageError):
    def __init__(self, name: str, valid: Iterable[str], declared_in: object = None) -> None:
        where = ""
        if declared_in:
            where = f" (declared in {declared_in}; add [environments.{name}] there)"
        super().__init__(
            f"unknown environment {name!r}: choose from {', '.join(sorted(valid))}{where}"
        )


class EnvironmentsFileInvalid(UsageError):
    """The environments file cannot be read as the environments it should declare."""


class FleetInvalid(UsageError):
    """A fleet of ameide.toml cannot be run as declared (its targets, its template, its waves)."""


class CatalogError(UsageError):
    """The SQL tree cannot be read as Flyway migrations: nothing was started."""


class FlywayConfigInvalid(UsageError):
    """A flyway.toml, flyway.conf or FLYWAY_* variable cannot be read as Flyway's settings."""


class FlywayNotInstalled(MigrateError):
    pass


class FlywayInstallFailed(MigrateError):
    pass


class FlywayEngineCrashed(MigrateError):
    """The engine JVM died; a retry starts a fresh one."""

    transient = True


class FlywayCommandFailed(MigrateError):
    """Flyway reported an error; `flyway_message` is Flyway's own text."""

    def __init__(
        self,
        message: str,
        *,
        database: str,
        command: str,
        flyway_message: str,
        error_code: str | None = None,
        sql_states: tuple[str, ...] = (),
        script: str | None = None,
    ) -> None:
        super().__init__(message)
        self.database = database
        self.command = command
        self.flyway_message = flyway_message
        self.error_code = error_code
        self.sql_states = sql_states
        self.script = script
        """The migration that failed, when Flyway named one."""


class TransientFlywayFault(FlywayCommandFailed):
    """Connection refused or reset, a lock wait: retried with backoff."""

    transient = True


class ValidationFailed(FlywayCommandFailed):
    pass


class ChecksumMismatch(ValidationFailed):
    pass


class MigrationFailed(FlywayCommandFailed):
    pass


class HistoryMissing(FlywayCommandFailed):
    """The schema holds objects but no Flyway history table (dropped, or the schema built by
    another tool): Flyway refuses to migrate it until a baseline says which version it is. The
    drift check's `schema present, no history`."""


class NonTransactionalMigrationFailed(MigrationFailed):
    """A migration Flyway ran outside a transaction failed: what it did before the failure stays
    (a CREATE INDEX CONCURRENTLY leaves an INVALID index), so it is never retried, whatever its
    SQLSTATE; a retry would build on the leftovers."""


class LeftoversFound(MigrateError):
    """The database holds what a failed non-transactional migration left behind (an INVALID
    index): migrating over it could record the migration as a success, so nothing is applied
    until it is cleaned up."""


class DatabaseUnreachable(MigrateError):
    transient = True


class TablesBusy(MigrateError):
    """Sessions in long transactions hold locks on tables a pending migration locks: Flyway is
    not started, so its statements do not queue behind them and block everyone after them; the
    check is retried with backoff, as they may end."""

    transient = True

    def __init__(self, message: str, holders: tuple[str, ...], pids: tuple[int, ...]) -> None:
        super().__init__(message)
        self.holders = holders
        """Each session, described (pid, user, age, the lock it holds)."""
        self.pids = pids
        """Their process ids, what `pg_terminate_backend` takes."""


class LockTimedOut(TablesBusy):
    """A migration waited its lock_timeout for a table lock and PostgreSQL cancelled it
    (SQLSTATE 55P03): Flyway rolled it back, and it is retried. `holders` are the sessions in
    its way as pg_locks showed them right after, whatever their role or age."""


class DatabaseError(MigrateError):
    pass


class DatabaseRefusedConnection(DatabaseError):
    """The server answered and refused this database to the login for the database's own sake:
    its CONNECT privilege revoked, or connections to it disallowed (ALLOW_CONNECTIONS false).
    Neither is the credentials' fault nor passes by waiting: `fix` lets the login in again."""

    def __init__(self, what: str, *, fix: str) -> None:
        super().__init__(f"{what}: {fix}")
        self.what = what
        self.fix = fix


class CredentialsMissing(UsageError):
    """The environment has nowhere to read its databases' credentials from (no Vault
    configured): a configuration to fix, nothing was started."""


class LocalClusterFailed(MigrateError):
    pass


class PrefectServerFailed(MigrateError):
    pass


class PrefectApiNotConfigured(UsageError):
    """PREFECT_API_URL is needed and missing or empty."""


class PrefectApiUnreachable(UsageError):
    """PREFECT_API_URL names a server that does not answer (or is not a URL)."""


class DeploymentNotRegistered(UsageError):
    """The Prefect API has no deployment of that name."""


class ApprovedFilesChanged(MigrateError):
    """A fleet's shard run found its template's files other than those the fleet's plan was
    approved on: it migrated nothing."""


class FleetBusy(UsageError):
    """Another run of the fleet in the environment has not ended: one at a time, or two canaries
    would each prove half of what they claim. Nothing of this run was started."""

    def __init__(
        self, environment: str, fleet: str, holder: str, url: str, how_to_wait: str
    ) -> None:
        super().__init__(
            f"fleet {fleet} in {environment} is being migrated by another run, {holder}: {url} "
            f"— wait for it to end, or {how_to_wait} to start once it has (a run whose process "
            "died holds the fleet until the heartbeat guard marks it Crashed, within two "
            "minutes of its last heartbeat)"
        )


class FleetTargetsFailed(MigrateError):
    """A baseline or repair over a fleet's targets failed on some of them; the others were
    done (each target is its own database: one failure undoes nothing elsewhere)."""


class VaultError(MigrateError):
    """Vault could not give what was asked; subclasses name the condition."""


class VaultUnreachable(VaultError):
    """Connection refused, a timeout or a 5xx: worth retrying."""

    transient = True


class VaultSealed(VaultError):
    pass


class VaultAuthFailed(VaultError):
    """The login was refused: a wrong or expired token, AppRole secret or Kubernetes binding."""


class VaultPermissionDenied(VaultError):
    pass


class SecretMissing(MigrateError):
    """No secret at the path (Vault) or entry (the local store)."""


class SecretsInvalid(MigrateError):
    """One or more databases' credentials are missing or do not work; `problems` lists each."""

    def __init__(self, environment: str, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(
            f"environment {environment}: {len(problems)} credential problem(s), "
            "nothing was migrated:\n" + "\n".join(f"- {p}" for p in problems)
        )


class ImageError(MigrateError):
    """The migrations image could not be built, found or pushed."""


class DockerUnavailable(ImageError):
    """No Docker engine answers where DOCKER_HOST points."""


class ImageBuildFailed(ImageError):
    """`docker build` failed; nothing was pushed and no database was touched."""


class RegistryUnreachable(ImageError):
    """The registry did not answer; the same push may work a few seconds later."""

    transient = True


class ImagePushFailed(ImageError):
    """The registry refused the push (authentication, permissions, a name it does not accept)."""


class DeploymentRunFailed(MigrateError):
    """A deployment's run did not complete (failed, crashed, cancelled, or still running)."""


class LinterNotInstalled(MigrateError):
    """squawk, the migration linter, is not where the squawk-cli package puts it nor on PATH."""


class LintFailed(MigrateError):
    """squawk could not lint a script (it crashed, or the script cannot be read)."""


class LintErrorsFound(MigrateError):
    """A pending migration has a finding at level error: its database was not migrated."""

    def __init__(self, message: str, findings: Sequence[object]) -> None:
        super().__init__(message)
        self.findings = list(findings)


class ApprovalRejected(MigrateError):
    """A protected environment's plan was rejected, or nobody decided in time."""

    exit_code = ExitCode.REJECTED


class RunNotAwaitingApproval(UsageError):
    """`approve` named a run that is not waiting for a decision."""
