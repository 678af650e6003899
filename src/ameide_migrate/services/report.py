"""A run's results as people like to read them: a rich table, artifact rows, a markdown summary."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from ameide_migrate.core import locking
from ameide_migrate.core.history import SETTLED_STATES
from ameide_migrate.core.outcomes import DatabaseOutcome, OutcomeState, RunReport
from ameide_migrate.services.drift import DriftReport, Verdict
from ameide_migrate.services.image import BuiltImage
from ameide_migrate.services.lint import counts
from ameide_migrate.services.plan import DatabasePlan, Decision, FileChanges

if TYPE_CHECKING:
    from ameide_migrate.services.fleet import StateGroup


def artifact_key(environment: str, *, dry_run: bool) -> str:
    """A dry run's artifact has a key of its own, so that the latest `migrate-<env>` is always
    what a real run did."""
    return f"migrate-{environment}-dry-run" if dry_run else f"migrate-{environment}"


CELL_WIDTH = 48
"""Characters on one line of a table artifact's cell."""


def table_cell(text: str) -> str:
    """Text as a cell of a table artifact shows it whole. The UI renders a cell as markdown on
    lines that never wrap, cut off at the table's edge; a code span stays on one line too. So:
    plain words, each clause (`; `) on a line of its own, lines broken at CELL_WIDTH, and a
    command (a code span in `text`) never broken, so that it can be copied from the cell."""
    clauses = []
    for clause in text.split("; "):
        # Inside a command, spaces become NUL while the clause is split into words.
        spans = clause.split("`")
        words = "".join(p.replace(" ", "\0") if i % 2 else p for i, p in enumerate(spans))
        lines = [""]
        for word in words.split():
            if lines[-1] and len(lines[-1]) + 1 + len(word) > CELL_WIDTH:
                lines.append(word)
            else:
                lines[-1] = f"{lines[-1]} {word}".lstrip()
        clauses.append("\n".join(lines))
    return ";\n".join(c for c in clauses if c).replace("\0", " ")


def on_servers(servers: Sequence[str]) -> str:
    """Where the outcomes were read, for a heading: ` on HOST:PORT`, or the servers when they
    are a few, or how many (a column then names each outcome's)."""
    if not servers:
        return ""
    if len(servers) <= 3:
        return f" on {', '.join(servers)}"
    return f" on {len(servers)} servers"


def drift_rows(found: DriftReport) -> list[dict[str, str]]:
    """The table artifact's rows: what to do comes before what is wrong, each long value is
    laid out by `table_cell`, and no lone `-`, which a cell renders as a list's bullet."""
    return [
        {
            "database": d.database,
            "server": d.server,
            "verdict": d.verdict.value,
            "version": d.version or "empty",
            "latest": d.latest or "none",
            "pending": str(d.pending),
            "fix": table_cell(d.fix),
            "problems": table_cell("; ".join([*d.problems.values(), *d.schema_changes.values()])),
            "engine": d.engine,
        }
        for d in found.databases
    ]


def drift_markdown(found: DriftReport) -> str:
    """The drift check's markdown artifact: each database not in sync, what is wrong, its fix."""
    lines = [
        f"### Schema drift `{found.environment}`{on_servers(found.servers_read)}",
        "",
        found.summary().splitlines()[0],
        "",
    ]
    lines += [f"- warning: {s.warning}" for s in found.servers if s.warning]
    for d in found.databases:
        if d.verdict is Verdict.IN_SYNC:
            continue
        since = f"; as Flyway left it at {d.known_good}" if d.known_good else ""
        lines += [
            f"**{d.database}**: {d.verdict.value} on {d.server} (at {d.version or 'empty'}, "
            f"latest {d.latest}{since})",
            "",
        ]
        odd = [m for m in d.migrations if m.state not in SETTLED_STATES]
        lines += [
            f"- {m.category.lower()} {m.version or m.description}: {m.state} ({m.script})"
            for m in odd
        ]
        lines += [f"- {p}" for p in d.problems.values()]
        lines += [f"- {c}" for c in d.schema_changes.values()]
        lines += ["", f"Fix: {d.fix}", ""]
    return "\n".join(lines)


def _markdown_cell(text: str) -> str:
    """Text on one line of a markdown table."""
    return " ".join(text.split()).replace("|", "\\|")


def plan_markdown(
    environment: str,
    plans: list[DatabasePlan],
    plan_id: str,
    *,
    asks: bool,
    changes: FileChanges | None = None,
) -> str:
    """The plan as a person reads it before approving: its fingerprint, what changed since the
    plan approved before it (when one was), per database its pending migrations with version,
    description, file, checksums and lock, and the lint's findings."""
    lines = [f"# Plan for {environment} (plan {plan_id})", ""]
    if asks:
        lines += [
            "Approve or reject this run in the Prefect UI (Resume), or with "
            "`ameide-migrate approve RUN_ID [--reject --reason TEXT]`. Nothing is migrated "
            "before a decision; a rejection, or no decision in time, ends the run Cancelled.",
            "",
        ]
    lines += _fingerprint_markdown(plan_id, "each database's state", changes, asks=asks)
    for p in plans:
        o = p.outcome
        if o.state is OutcomeState.UP_TO_DATE:
            lines += [f"## {p.database}: up to date at {o.before or 'nothing'}", ""]
            continue
        if o.state is OutcomeState.FAILED:
            lines += [f"## {p.database}: will not migrate", "", _markdown_cell(o.message)]
            if o.recovery:
                lines += ["", f"Fix: {_markdown_cell(o.recovery)}"]
            lines.append("")
        else:
            lines += [
                f"## {p.database}: {o.before or 'empty'} -> {o.latest}, "
                f"{len(p.migrations)} migration(s), strongest lock {p.lock}",
                "",
            ]
        if p.migrations:
            lines += [
                "| version | description | file | checksum | sha256 | lock |",
                "|---|---|---|---|---|---|",
                *(
                    f"| {m.version or 'repeatable'} | {_markdown_cell(m.description)} "
                    f"| {_markdown_cell(m.script)} "
                    f"| {m.checksum if m.checksum is not None else 'at run time'} "
                    f"| {m.sha256[:12]} | {m.lock} |"
                    for m in p.migrations
                ),
                "",
            ]
        lines += _locks_markdown(p)
        if o.findings:
            lines += [
                "| lint | file:line | rule | fix |",
                "|---|---|---|---|",
                *(
                    f"| {f.level.value} | {_markdown_cell(f.file)}:{f.line} | {f.rule} "
                    f"| {_markdown_cell(f.fix or f.message)} |"
                    for f in o.findings
                ),
                "",
            ]
    return "\n".join(lines)


@dataclass(frozen=True)
class _LockRun:
    """Locks of consecutive statements of one script that differ by nothing else (a seed file's
    thousands of INSERTs into one table): one row of a table, which a person can read and a
    terminal or an artifact can hold."""

    database: str
    script: str
    lock: locking.StatementLock
    """The first statement's."""
    last_line: int
    statements: int

    @property
    def where(self) -> str:
        if self.statements == 1:
            return f"{self.script}:{self.lock.line}"
        return f"{self.script}:{self.lock.line}-{self.last_line} ({self.statements:,} statements)"


def lock_runs(locks: Iterable[tuple[str, str, locking.StatementLock]]) -> list[_LockRun]:
    """(database, script, lock) in the statements' order, in runs."""
    runs: list[_LockRun] = []
    for database, script, lock in locks:
        last = runs[-1] if runs else None
        if (
            last is not None
            and (last.database, last.script) == (database, script)
            and _alike(last.lock, lock)
        ):
            runs[-1] = replace(last, last_line=lock.line, statements=last.statements + 1)
        else:
            runs.append(_LockRun(database, script, lock, lock.line, 1))
    return runs


def _alike(a: locking.StatementLock, b: locking.StatementLock) -> bool:
    """The same lock on the same relation holding the same, by another statement."""
    return _what_it_locks(a) == _what_it_locks(b)


def _what_it_locks(lock: locking.StatementLock) -> tuple[object, ...]:
    return (lock.relation, lock.mode, lock.facts, lock.new, lock.concurrently)


def _fingerprint_markdown(
    plan_id: str, states: str, changes: FileChanges | None, *, asks: bool
) -> list[str]:
    held = (
        " An approval holds for this fingerprint only: after the decision the files are read "
        "again, any change asks again, and Flyway reads the copy of the files that was checked."
    )
    lines = [
        f"Fingerprint `{plan_id}`: of {states} and the name, checksum and SHA-256 of every file "
        f"listed.{held if asks else ''}",
        "",
    ]
    if changes:
        lines += [
            f"**Asked again**: since plan {changes.approved} was approved, the files it "
            "listed changed:",
            "",
            *(f"- edited: {_markdown_cell(f)}" for f in changes.edited),
            *(f"- added: {_markdown_cell(f)}" for f in changes.added),
            *(f"- no longer listed: {_markdown_cell(f)}" for f in changes.dropped),
            "",
        ]
    return lines


def _locks_markdown(planned: DatabasePlan) -> list[str]:
    """Per statement, the locks it takes on relations that exist before it: mode, relation, what
    the relation holds, whether CONCURRENTLY applies (consecutive statements alike in one row).
    Relations the run creates are counted."""
    existing = lock_runs(
        (planned.database, m.script, lock)
        for m in planned.migrations
        for lock in m.locks
        if not lock.new
    )
    new = sum(1 for m in planned.migrations for lock in m.locks if lock.new)
    lines = []
    if existing:
        lines += [
            "| file:line | statement | lock | relation | rows | size | CONCURRENTLY |",
            "|---|---|---|---|---|---|---|",
            *(
                f"| {_markdown_cell(run.where)} | {_markdown_cell(run.lock.statement)} "
                f"| {run.lock.mode} | {_markdown_cell(run.lock.relation)} "
                f"| {rows_of(run.lock.facts)} | {size_of(run.lock.facts)} "
                f"| {run.lock.concurrently.value} |"
                for run in existing
            ),
            "",
        ]
    if new:
        lines += [
            f"{new} lock(s) on relations that do not exist before their statement (created by "
            "this run): no session waits for them.",
            "",
        ]
    return lines


def rows_of(facts: locking.RelationFacts | None) -> str:
    return "unknown" if facts is None else facts.rows_text


def size_of(facts: locking.RelationFacts | None) -> str:
    return "unknown" if facts is None else locking.human_bytes(facts.bytes)


def fleet_plan_markdown(
    environment: str,
    name: str,
    groups: Sequence[StateGroup],
    plan_id: str,
    changes: FileChanges | None = None,
) -> str:
    """A fleet's plan as a person approves it: its targets grouped by the state of their
    histories, each group with what would apply to every one of its targets."""
    targets = sum(len(g.targets) for g in groups)
    lines = [
        f"# Plan for fleet {name} in {environment} (plan {plan_id})",
        "",
        f"{targets} target(s) in {len(groups)} state(s). One decision covers them all: approve "
        "or reject it in the Prefect UI (Resume), or with `ameide-migrate approve RUN_ID "
        "[--reject --reason TEXT]`. Targets already up to date are not listed.",
        "",
        *_fingerprint_markdown(plan_id, "the targets' histories", changes, asks=True),
    ]
    for number, g in enumerate(groups, start=1):
        shown = ", ".join(g.targets[:10]) + (
            f" and {len(g.targets) - 10} more" if len(g.targets) > 10 else ""
        )
        lines += [
            f"## State {number}: {len(g.targets)} target(s) at {g.version or 'empty'} "
            f"(history {g.fingerprint})",
            "",
            shown,
            "",
            "| would apply | checksum | sha256 |",
            "|---|---|---|",
            *(
                f"| {_markdown_cell(script)} | {'at run time' if crc is None else crc} "
                f"| {sha256[:12]} |"
                for script, crc, sha256 in g.pending
            ),
            "",
        ]
    return "\n".join(lines)


def decision_markdown(environment: str, plan_id: str, decision: Decision) -> str:
    return (
        f"# Decision on the plan for {environment} (plan {plan_id})\n\n"
        f"**{decision.verdict.value}** by {_markdown_cell(decision.by)}: "
        f"{_markdown_cell(decision.reason)}\n"
    )


def artifact_rows(run: RunReport) -> list[dict[str, str]]:
    """One row per database; long values laid out for the UI's table by `table_cell`, and no
    lone `-`, which a cell would render as a list's bullet."""
    smoke = {s.database: s for s in run.smoke}
    rows = []
    for o in run.outcomes:
        check = smoke.get(o.database)
        rows.append(
            {
                "database": o.database,
                "server": run.server_of.get(o.database, ""),
                "before": o.before or "empty",
                "after": o.after or "empty",
                "latest": o.latest or "none",
                "applied": str(o.applied),
                "duration": f"{o.duration_s:.2f}s",
                "state": o.state.value,
                "smoke": "not run"
                if check is None
                else ("ok" if check.ok else table_cell("; ".join(check.problems))),
                "message": table_cell(o.message.splitlines()[0]) if o.message else "",
            }
        )
    return rows


def markdown_summary(
    run: RunReport, *, dry_run: bool = False, databases: Sequence[str] | None = None
) -> str:
    """The artifact's description. Its first line is what the UI's artifact card shows, so it
    says what kind of run this was, on which databases (`databases` when the run targeted some,
    None for all of them), and how it ended."""
    kind = "Dry run of migrate" if dry_run else "Migrate"
    scope = f"{_names(databases)} only" if databases else "all databases"
    verdict = "FAILED" if not run.ok else "nothing changed" if dry_run else "success"
    lines = [
        f"### {kind} `{run.environment}`{on_servers(run.servers_read)}, {scope}: {verdict}",
        "",
    ]
    lines.append(run.summary().splitlines()[0])
    findings = [f for o in run.outcomes for f in o.findings]
    if findings:
        errors, warnings = counts(findings)
        lines += [
            "",
            f"Lint of the pending migrations: {errors} error(s), {warnings} warning(s) (the "
            f"table `{lint_artifact_key(run.environment, dry_run=dry_run)}`).",
        ]
    if dry_run:
        lines += ["", "A dry run: nothing was applied. The table lists what a run would apply."]
    for o in noted(run):
        lines += ["", f"**{o.database}** {o.state.value}: {o.message}"]
    for o in run.failed:
        lines += ["", f"**{o.database}** failed:", "", "```", o.message, "```", "", o.recovery]
    for s in run.smoke_failures:
        lines += ["", f"**{s.database}** smoke check: {'; '.join(s.problems)}"]
    return "\n".join(lines)


def _names(databases: Sequence[str]) -> str:
    *rest, last = databases
    return f"{', '.join(rest)} and {last}" if rest else last


def noted(run: RunReport) -> list[DatabaseOutcome]:
    """The databases that ended well with something to say: what they waited for first, or
    that another run applied their migrations."""
    done = (OutcomeState.MIGRATED, OutcomeState.UP_TO_DATE)
    return [o for o in run.outcomes if o.state in done and o.message]


def lint_artifact_key(environment: str, *, dry_run: bool) -> str:
    """The run's findings, a table of their own beside the run's (made only when there are)."""
    return f"{artifact_key(environment, dry_run=dry_run)}-lint"


def finding_rows(run: RunReport) -> list[dict[str, str]]:
    return [
        {
            "database": o.database,
            "file": f.file,
            "line": str(f.line),
            "rule": f.rule,
            "level": f.level.value,
            "message": table_cell(f.message),
            "fix": table_cell(f.fix or ""),
        }
        for o in run.outcomes
        for f in o.findings
    ]


def image_markdown(built: BuiltImage) -> str:
    verb = "built" if built.built else "found (same content, not rebuilt)"
    lines = [
        f"### Migrations image {verb}",
        "",
        "| | |",
        "|---|---|",
        f"| reference | `{built.reference}` |",
        f"| tag | `{built.tag}` |",
        f"| flavor | {built.flavor} |",
        f"| Flyway | {built.flyway_version} |",
        f"| pushed | {'yes' if built.pushed else 'earlier' if built.digest else 'no'} |",
    ]
    if built.release_commit:
        lines.append(f"| release commit | `{built.release_commit}` |")
    return "\n".join(lines)
