"""Every fix a user reads, in one place: after a failed database, for a drifted one, for an
applied migration edited in the dev loop. Each names the exact command to run next, built here
alone, so that a fix never disagrees with another for the same condition.

The callers decide which condition holds; this module only words its fix. A fix names its
database as the command that reaches it does: a database of the tree by `--db`, a fleet's target
by `--fleet NAME --target T` (its database is no folder of the tree, so `--db` would not find it).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

from ameide_migrate.core.errors import (
    ChecksumMismatch,
    DatabaseRefusedConnection,
    DatabaseUnreachable,
    HistoryMissing,
    LintErrorsFound,
    LockTimedOut,
    MigrateError,
    MigrationFailed,
    TablesBusy,
    ValidationFailed,
)
from ameide_migrate.core.findings import Finding
from ameide_migrate.core.indexes import InvalidIndex
from ameide_migrate.core.interruption import Interrupted

# --- The commands ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Subject:
    """The database a fix is about, as the commands name it."""

    environment: str
    database: str
    fleet: str | None = None
    """The fleet whose target the database is; None for a database of the tree."""
    target: str | None = None

    @property
    def options(self) -> str:
        if self.fleet is None:
            return f"--env {self.environment} --db {self.database}"
        return f"--env {self.environment} --fleet {self.fleet} --target {self.target}"


def rerun_command(subject: Subject) -> str:
    """A fleet's target is migrated again by its fleet's run: the fleet's approval and ledger
    cover it."""
    verb = "run" if subject.fleet is None else "fleet run"
    return f"ameide-migrate {verb} {subject.options}"


def repair_command(subject: Subject) -> str:
    return f"ameide-migrate repair {subject.options}"


def baseline_command(subject: Subject, version: str = "VERSION") -> str:
    return f"ameide-migrate baseline {subject.options} --version {version}"


def lint_command(subject: Subject) -> str:
    return f"ameide-migrate lint {subject.options}"


def terminate_command(pids: Sequence[int]) -> str:
    """The statement that ends these sessions."""
    return "SELECT " + ", ".join(f"pg_terminate_backend({pid})" for pid in pids) + ";"


def drop_command(indexes: Sequence[InvalidIndex]) -> str:
    return " ".join(index.drop() for index in indexes)


def restore_or_repair(subject: Subject, files: str) -> str:
    """An applied migration edited since: put the file back, or record the edit as applied."""
    return (
        f"restore {files} to what was applied (git history), or if the edit is intended and "
        f"changes no schema, `{repair_command(subject)}` to realign checksums"
    )


# --- After a failed database -------------------------------------------------------------------


def after_error(subject: Subject, error: MigrateError, before: str | None) -> str:
    """What to do next after `error`, ending with the command that reruns only this database."""
    rerun = rerun_command(subject)
    if isinstance(error, ChecksumMismatch):
        return (
            "An applied migration was edited after it ran: "
            f"{restore_or_repair(subject, 'the file')}; then rerun `{rerun}`."
        )
    if isinstance(error, HistoryMissing):
        return f"{baseline_first(subject)}."
    if isinstance(error, ValidationFailed):
        return f"Fix what Flyway reports above, then rerun `{rerun}`."
    if isinstance(error, MigrationFailed):
        return (
            "PostgreSQL rolled the failed migration back (Flyway ran it in a transaction), "
            f"so the database stays at version {before or 'none'}. Fix the migration forward and "
            f"rerun `{rerun}`."
        )
    if isinstance(error, TablesBusy):
        how = (
            "PostgreSQL rolled the migration back when its lock_timeout ran out"
            if isinstance(error, LockTimedOut)
            else "Flyway was not started while those sessions held their locks"
        )
        if not error.pids:
            return (
                f"Nothing was applied: {how}, and no session held a lock in its way when "
                f"pg_locks was read again: rerun `{rerun}`."
            )
        return (
            f"Nothing was applied: {how}. Wait until they finish, or end them (their "
            f"application, or `{terminate_command(error.pids)}` as a superuser or a member of "
            f"their role), then rerun `{rerun}`."
        )
    if error.transient:
        return (
            "It kept failing after every retry: check the server and the network, "
            f"then rerun `{rerun}`."
        )
    return f"Rerun `{rerun}` once the cause is fixed."


def after_unexpected(subject: Subject) -> str:
    """A failure that is no MigrateError: a bug of ours, or of something under us."""
    return f"Report this with the run's logs; rerun `{rerun_command(subject)}`."


def after_lint(subject: Subject, error: LintErrorsFound) -> str:
    """A lint error stopped the database before Flyway: change the file, or accept the rule."""
    rules = sorted({f.rule for f in error.findings if isinstance(f, Finding)})
    example = rules[0] if rules else "RULE"
    return (
        "Change the pending migration as each fix says (it was not applied, so it may still be "
        f"edited), check it with `{lint_command(subject)}`, and "
        f"rerun `{rerun_command(subject)}`. To accept a rule in {subject.environment} "
        f"instead, lower its level in ameide.toml: [environments.{subject.environment}.lint.rules] "
        f'"{example}" = "warning" (or "off").'
    )


def after_leftovers(
    subject: Subject,
    *,
    leftovers: Sequence[InvalidIndex],
    applied_in: str | None,
    failed_row: bool,
) -> str:
    """A non-transactional migration failed or left something behind: drop what it left, undo
    what it applied (`applied_in` names its file when statements before the failure stay),
    remove the failed row Flyway recorded, rerun."""
    steps = []
    if leftovers:
        steps.append(f"run `{drop_command(leftovers)}` as the database's owner")
    if applied_in is not None:
        steps.append(f"undo those statements, or make them idempotent in {applied_in}")
    if failed_row:
        steps.append(f"remove the failed row Flyway recorded with `{repair_command(subject)}`")
    steps.append(f"rerun `{rerun_command(subject)}`")
    return "Recover: " + "; then ".join(steps) + "."


def after_leftovers_unread(subject: Subject, reason: MigrateError) -> str:
    """As `after_leftovers`, when the database could not be read to name what was left."""
    return (
        f"It ran outside a transaction, so what it did stays; the database could not be "
        f"read to name it ({reason}). Once reachable, rerun "
        f"`{rerun_command(subject)}`, which names it."
    )


def after_interrupted(found: Interrupted, subject: Subject) -> str:
    """A non-transactional migration cut short (`found`): undo what it built, then the rerun
    applies it whole; Flyway records a migration only by running it, so finishing its
    statements by hand would leave it pending."""
    rerun = rerun_command(subject)
    # A fleet run undoes it itself when asked; `run` leaves a database of the tree to its owner.
    both = f"; or let `{rerun} --undo-interrupted` do both" if subject.fleet else ""
    return (
        f"undo what {found.migration.script} built with `{' '.join(found.undo())}` as the "
        f"database's owner, then rerun `{rerun}`, which applies all of it again and records it "
        "(Flyway records a migration only by running it: finishing its statements by hand would "
        f"leave it pending){both}"
    )


# --- For a fleet's target the gate could not log in to ----------------------------------------


def for_unreachable_target(
    subject: Subject, error: DatabaseUnreachable | DatabaseRefusedConnection
) -> str:
    """A target quarantined at the gate: let its login in (its credentials are not the
    cause), then migrate it alone."""
    rerun = rerun_command(subject)
    if isinstance(error, DatabaseRefusedConnection):
        return f"{error.fix}, then `{rerun}`"
    return f"bring its server up, then `{rerun}`"


# --- For a database the drift check found out of sync ------------------------------------------


def apply_pending(subject: Subject) -> str:
    return f"apply what is pending: `{rerun_command(subject)}`"


def check_connection(subject: Subject) -> str:
    return (
        f"check the server and the credentials (`ameide-migrate secrets verify {subject.options}`)"
    )


def baseline_first(subject: Subject) -> str:
    """A non-empty schema with no history: Flyway must be told which version it already is.
    A fleet's target is seldom alone in that: the whole fleet is adopted at once."""
    fix = (
        "Flyway refuses to migrate a non-empty schema without history: find the version the "
        f"schema matches, then `{baseline_command(subject)}` and "
        f"`{rerun_command(subject)}` to apply what is above it"
    )
    if subject.fleet is None:
        return fix
    return (
        f"{fix} (every target of the fleet in that state at once: `ameide-migrate fleet "
        f"baseline --env {subject.environment} --fleet {subject.fleet} --version VERSION`)"
    )


def for_drifted(
    subject: Subject,
    *,
    states: Collection[str],
    invalid_indexes: Sequence[InvalidIndex],
    schema_changes: Collection[str],
    edited: Sequence[str],
) -> str:
    """The steps that bring a drifted database back: by the INVALID indexes, the objects changed
    outside Flyway, the applied files edited since, and the states of its migrations."""
    rerun = rerun_command(subject)
    repair = repair_command(subject)
    steps = []
    if invalid_indexes:
        steps.append(
            f"drop the INVALID index(es) with `{drop_command(invalid_indexes)}`, then `{rerun}` "
            "to build them"
        )
    if schema_changes:
        steps.append(
            f"undo {', '.join(schema_changes)} by hand, or capture the change in a new "
            f"migration and `{rerun}` (which records the schema again)"
        )
    if edited:
        steps.append(restore_or_repair(subject, ", ".join(edited)))
    if set(states) & {"Failed", "Failed (Missing)", "Failed (Future)"}:
        steps.append(f"undo the failed migration's partial changes, then `{repair}` and `{rerun}`")
    if "Missing" in states:
        steps.append(f"restore the missing file, or `{repair}` to mark it deleted")
    if "Ignored" in states:
        steps.append(
            "a migration below the applied version is not recorded: if its changes are in the "
            f"database, restore its history row; if not, renumber it above the applied ones and "
            f"`{rerun}`"
        )
    if "Future" in states or "Out of Order" in states:
        steps.append("deploy the SQL tree this database was migrated from")
    return "; ".join(steps) or f"inspect with `flyway info`, then `{rerun}`"


# --- In the dev loop ---------------------------------------------------------------------------


def reset_command(database: str) -> str:
    return f"ameide-migrate dev --reset {database}"


def edited_in_dev(database: str, path: str, *, tracked: bool) -> str:
    """An applied migration edited in the dev loop: local can afford a rebuild from empty, so
    the two fixes are that and putting the file back; neither is done unasked. `git restore`
    only for a file git `tracked`: on any other it fails."""
    put_back = (
        f"git restore {path}" if tracked else f"copy it back over {path} (git does not track it)"
    )
    return (
        "Two fixes, when you choose:\n"
        f"  rebuild {database} from empty with the edit:  {reset_command(database)}\n"
        f"  or put back the file that was applied:  {put_back}"
    )
