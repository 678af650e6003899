"""A run's results as people like to read them: a rich table, artifact rows, a markdown summary."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from ameide_migrate import locking
from ameide_migrate.drift import DriftReport, Verdict
from ameide_migrate.fleet import STANDINGS
from ameide_migrate.history import SETTLED_STATES
from ameide_migrate.image import BuiltImage
from ameide_migrate.lint import Finding, Level, counts
from ameide_migrate.outcomes import DatabaseOutcome, OutcomeState, RunReport
from ameide_migrate.plan import DatabasePlan, Decision, FileChanges
from ameide_migrate.prefect_api import ArtifactTable

if TYPE_CHECKING:
    from ameide_migrate import dev_loop
    from ameide_migrate.commands import FleetChore, FleetTarget
    from ameide_migrate.fleet import FleetReport, StateGroup, WaveProgress

_STYLE = {
    OutcomeState.MIGRATED: "green",
    OutcomeState.UP_TO_DATE: "cyan",
    OutcomeState.FAILED: "bold red",
    OutcomeState.WOULD_APPLY: "yellow",
    OutcomeState.INTERRUPTED: "bold magenta",
}


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


def _server_heading(servers: Sequence[str]) -> tuple[str, bool]:
    """A terminal table's (heading suffix, server column): the one server every row was read on
    in the heading, else a column naming each row's."""
    if len(servers) == 1:
        return f" on {servers[0]}", False
    return "", len(servers) > 1


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


def _lock_runs(locks: Iterable[tuple[str, str, locking.StatementLock]]) -> list[_LockRun]:
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
    existing = _lock_runs(
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
                f"| {_rows(run.lock.facts)} | {_size(run.lock.facts)} "
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


def _rows(facts: locking.RelationFacts | None) -> str:
    return "unknown" if facts is None else facts.rows_text


def _size(facts: locking.RelationFacts | None) -> str:
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
    for o in _noted(run):
        lines += ["", f"**{o.database}** {o.state.value}: {o.message}"]
    for o in run.failed:
        lines += ["", f"**{o.database}** failed:", "", "```", o.message, "```", "", o.recovery]
    for s in run.smoke_failures:
        lines += ["", f"**{s.database}** smoke check: {'; '.join(s.problems)}"]
    return "\n".join(lines)


def _names(databases: Sequence[str]) -> str:
    *rest, last = databases
    return f"{', '.join(rest)} and {last}" if rest else last


def _noted(run: RunReport) -> list[DatabaseOutcome]:
    """The databases that ended well with something to say: what they waited for first, or
    that another run applied their migrations."""
    done = (OutcomeState.MIGRATED, OutcomeState.UP_TO_DATE)
    return [o for o in run.outcomes if o.state in done and o.message]


def print_run(run: RunReport, console: Console) -> None:
    """The run's outcomes as a table; its heading names the server they were read on, or a
    column names each one's when they were read on several."""
    smoke = {s.database: s for s in run.smoke}
    heading, by_row = _server_heading(run.servers_read)
    notes = "\n".join(f"{o.database}: {escape(o.message)}" for o in _noted(run))
    table = Table(
        title=f"Migrations: {run.environment}{heading}",
        title_justify="left",
        caption=notes or None,
        caption_justify="left",
    )
    columns = ("database", *(("server",) if by_row else ()), "before", "after", "applied")
    for column in (*columns, "duration", "state", "smoke"):
        table.add_column(column, justify="right" if column in ("applied", "duration") else "left")
    for o in run.outcomes:
        check = smoke.get(o.database)
        table.add_row(
            o.database,
            *((run.server_of.get(o.database, ""),) if by_row else ()),
            o.before or "empty",
            o.after or "empty",
            str(o.applied),
            f"{o.duration_s:.2f}s",
            f"[{_STYLE[o.state]}]{o.state.value}[/]",
            "-"
            if check is None
            else ("[green]ok[/]" if check.ok else "[red]" + "; ".join(check.problems) + "[/]"),
        )
    console.print(table)
    for o in run.outcomes:
        if o.state is OutcomeState.WOULD_APPLY:
            console.print(f"{o.database} would apply: {o.message}", soft_wrap=True)
    locks = [(o.database, script, lock) for o in run.outcomes for script, lock in o.locks]
    if locks:
        print_locks(locks, console, title=f"Locks on existing tables: {run.environment}")
    findings = [(o.database, f) for o in run.outcomes for f in o.findings]
    if findings:
        print_findings(
            findings, console, title=f"Lint of the pending migrations: {run.environment}"
        )
    for o in run.failed:
        console.print(f"[bold red]{o.database}[/]: {escape(o.message)}", soft_wrap=True)
        console.print(f"  [yellow]next:[/] {escape(o.recovery)}", soft_wrap=True)


def print_locks(
    locks: Sequence[tuple[str, str, locking.StatementLock]], console: Console, *, title: str
) -> None:
    """(database, script, lock) as a table: where, the mode, the relation, what it holds, and
    whether CONCURRENTLY applies; consecutive statements alike in one row."""
    table = Table(title=title, title_justify="left")
    for column in ("file:line", "lock", "relation", "rows", "size", "CONCURRENTLY"):
        table.add_column(column, justify="right" if column in ("rows", "size") else "left")
    for run in _lock_runs(locks):
        table.add_row(
            escape(run.where),
            run.lock.mode,
            escape(run.lock.relation),
            _rows(run.lock.facts),
            _size(run.lock.facts),
            run.lock.concurrently.value,
        )
    console.print(table)


def print_fleet(found: FleetReport, console: Console) -> None:
    """A fleet's run: a line a wave (its targets, how they ended, how long the slowest took),
    then each interrupted and failed target with its fix, and why the fleet halted."""
    table = Table(
        title=f"Fleet {found.fleet}: {found.environment}{on_servers(found.servers_read)}",
        title_justify="left",
    )
    for column in ("wave", "targets", "migrated", "up to date", "failed", "slowest"):
        table.add_column(column, justify="left" if column == "wave" else "right")
    if found.up_to_date:
        count = str(len(found.up_to_date))
        table.add_row("-", count, "0", count, "0", "up to date already: in no wave")
    for number, wave in enumerate(found.waves, start=1):
        states = [o.state for o in wave]
        table.add_row(
            str(number),
            str(len(wave)),
            str(states.count(OutcomeState.MIGRATED)),
            str(states.count(OutcomeState.UP_TO_DATE)),
            f"[bold red]{states.count(OutcomeState.FAILED)}[/]"
            if OutcomeState.FAILED in states
            else "0",
            f"{max((o.duration_s for o in wave), default=0):.2f}s",
        )
    if found.interrupted:
        count = str(len(found.interrupted))
        table.add_row("-", count, "0", "0", "0", "interrupted: in no wave")
    if found.not_started:
        table.add_row("-", str(len(found.not_started)), "", "", "", "not started")
    if found.quarantined:
        count = str(len(found.quarantined))
        table.add_row("-", count, "0", "0", "0", "quarantined at the gate: in no wave")
    console.print(table)
    several = len(found.servers_read) > 1
    for o in [*found.interrupted, *found.failed]:
        on = f" on {found.server_of.get(o.database, '')}" if several else ""
        style = _STYLE[o.state]
        console.print(f"[{style}]{o.database}[/]{on}: {escape(o.message)}", soft_wrap=True)
        console.print(f"  [yellow]next:[/] {escape(o.recovery)}", soft_wrap=True)
    for q in found.quarantined:
        console.print(f"[bold red]{q.database}[/] quarantined: {escape(q.reason)}", soft_wrap=True)
        console.print(f"  [yellow]next:[/] {escape(q.fix)}", soft_wrap=True)
    if found.halted:
        after = f"after wave {len(found.waves)}" if found.waves else "before its first wave"
        console.print(
            f"[bold red]halted[/] {after}: {escape(found.halted)}; "
            f"{len(found.not_started)} target(s) not started.",
            soft_wrap=True,
        )
        console.print(f"  [yellow]next:[/] {escape(found.next_step())}", soft_wrap=True)


@contextmanager
def wave_bars(console: Console) -> Iterator[WaveProgress]:
    """A progress bar a wave, on `console`, advanced by the listener it yields."""
    with Progress(
        TextColumn("wave {task.fields[wave]}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[failed]} failed"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as bars:
        tasks: dict[int, TaskID] = {}
        failed: dict[int, int] = {}
        lock = threading.Lock()

        def on_target(wave: int, size: int, outcome: DatabaseOutcome) -> None:
            with lock:
                if wave not in tasks:
                    tasks[wave] = bars.add_task("", total=size, wave=wave, failed=0)
                    failed[wave] = 0
                failed[wave] += outcome.state is OutcomeState.FAILED
                bars.update(tasks[wave], advance=1, failed=failed[wave])

        yield on_target


def print_fleet_status(name: str, targets: Sequence[FleetTarget], console: Console) -> None:
    """Per target its version and last outcome (and the server it was read on, in the heading
    when they share one), then how many stand where."""
    heading, by_row = _server_heading(list(dict.fromkeys(t.server for t in targets)))
    table = Table(title=f"Fleet {name}{heading}", title_justify="left")
    for column in ("target", *(("server",) if by_row else ()), "version", "latest", "state"):
        table.add_column(column)
    table.add_column("last outcome")
    for t in targets:
        table.add_row(
            t.database,
            *((t.server,) if by_row else ()),
            t.version or "empty",
            t.latest or "-",
            t.state,
            t.last_outcome,
        )
    console.print(table)
    for t in targets:
        if t.fix:
            console.print(f"[bold magenta]{t.database}[/]: {escape(t.fix)}", soft_wrap=True)
    counts = Counter(t.state for t in targets)
    order = [*STANDINGS, *sorted(set(counts) - set(STANDINGS))]
    console.print(", ".join(f"{counts[s]} {s}" for s in order if counts[s]), highlight=False)


def print_fleet_chore(done: FleetChore, console: Console) -> None:
    """A baseline or repair over a fleet: each target's outcome, version and what was done."""
    table = Table(title=f"Fleet {done.fleet}, {done.verb}", title_justify="left")
    for column in ("target", "outcome", "version", "message"):
        table.add_column(column)
    for t in done.targets:
        style = "red" if t.outcome == "failed" else None
        table.add_row(t.database, t.outcome, t.version or "-", escape(t.message), style=style)
    console.print(table)


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


_LEVEL_STYLE = {Level.ERROR: "bold red", Level.WARNING: "yellow", Level.OFF: "dim"}


def print_findings(
    findings: Sequence[tuple[str | None, Finding]], console: Console, *, title: str
) -> None:
    """The lint's findings as a table, (database or None, finding) each: the file (from the
    SQL tree's root, so it names the database), line, rule, level, and the fix (the problem
    itself where squawk suggests none)."""
    # File and rule stay whole where the terminal allows; a narrow one folds them, and never
    # drops line, level or fix.
    rule = max((len(f.rule) for _, f in findings), default=4)
    path = max((len(f.file) for _, f in findings), default=4)
    room = console.width - 4 - 7 - 24 - 16  # line, level, a readable fix, the borders
    rule_width = min(rule, max(12, room - min(path, room // 2)))
    table = Table(title=title, title_justify="left")
    table.add_column("file", width=min(path, max(12, room - rule_width)), overflow="fold")
    table.add_column("line", justify="right", min_width=4, no_wrap=True)
    table.add_column("rule", width=rule_width, overflow="fold")
    table.add_column("level", min_width=7, no_wrap=True)
    table.add_column("fix", ratio=1, min_width=24, overflow="fold")
    for _, f in findings:
        table.add_row(
            escape(f.file),
            str(f.line),
            f.rule,
            f"[{_LEVEL_STYLE[f.level]}]{f.level.value}[/]",
            escape(f.fix or f.message),
        )
    console.print(table)


_VERDICT_STYLE = {
    Verdict.IN_SYNC: "green",
    Verdict.BEHIND: "yellow",
    Verdict.DRIFTED: "bold red",
    Verdict.NO_HISTORY: "bold red",
    Verdict.UNREACHABLE: "bold red",
    Verdict.INTERRUPTED: "bold magenta",
}


def print_drift(found: DriftReport, console: Console) -> None:
    heading, by_row = _server_heading(found.servers_read)
    table = Table(title=f"Schema drift: {found.environment}{heading}", title_justify="left")
    columns = ("database", *(("server",) if by_row else ()), "verdict", "version", "latest")
    for column in (*columns, "pending"):
        table.add_column(column, justify="right" if column == "pending" else "left")
    for d in found.databases:
        table.add_row(
            d.database,
            *((d.server,) if by_row else ()),
            f"[{_VERDICT_STYLE[d.verdict]}]{d.verdict.value}[/]",
            d.version or "empty",
            d.latest or "-",
            str(d.pending),
        )
    console.print(table)
    for server in found.servers:
        if server.warning:
            console.print(f"[yellow]warning:[/] {server.warning}", soft_wrap=True)
    for d in found.databases:
        for problem in [*d.problems.values(), *d.schema_changes.values()]:
            console.print(f"[red]{d.database}[/]: {problem}", soft_wrap=True)
        if d.fix:
            console.print(f"[yellow]{d.database} fix:[/] {d.fix}", soft_wrap=True)


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


def print_image(built: BuiltImage, console: Console) -> None:
    table = Table(title="migrations image", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("reference", built.reference)
    table.add_row("tag", built.tag)
    table.add_row("built", "yes" if built.built else "no: the same content exists already")
    table.add_row("pushed", "yes" if built.pushed else "earlier" if built.digest else "no")
    if built.release_commit:
        table.add_row("release commit", built.release_commit)
    console.print(table)


def print_artifact_table(table: ArtifactTable, console: Console) -> None:
    """A run's table artifact as `trigger` shows it at the end of a CI log: the short columns
    as a table, each long value (a message, a fix) on its own line under it, never cut."""
    if not table.rows:
        return
    columns = list(table.rows[0])
    long = {c for c in columns if any(len(r.get(c, "")) > _CELL_WIDTH for r in table.rows)}
    rendered = Table(title=table.key, title_justify="left")
    for column in columns:
        if column not in long:
            rendered.add_column(column, no_wrap=True)
    for row in table.rows:
        rendered.add_row(*(escape(row.get(c, "")) for c in columns if c not in long))
    console.print(rendered)
    for row in table.rows:
        for column in columns:
            if column in long and row.get(column):
                name = escape(row.get(columns[0], ""))
                console.print(f"{name} {column}: {escape(row[column])}", soft_wrap=True)


_CELL_WIDTH = 24


def print_dev_event(event: dev_loop.Event, console: Console) -> None:
    """What `ameide-migrate dev` shows as it goes: one row per database of each run, with the
    run's link; an edited applied migration with its two fixes; the image kept in step."""
    # Here, not at the top: every flow imports this module, and none needs the file watcher.
    from ameide_migrate import dev_loop

    stamp = datetime.now().strftime("%H:%M:%S")
    if isinstance(event, dev_loop.Watching):
        console.print(f"Prefect UI: {event.ui_url}", highlight=False, soft_wrap=True)
        watched = ", ".join(str(p) for p in event.paths)
        console.print(f"watching {watched} (Ctrl-C stops)", highlight=False, soft_wrap=True)
    elif isinstance(event, dev_loop.Rebuilt):
        console.print(
            f"{stamp} {event.database}: dropped and made again, empty (database "
            f"{event.physical}); the first run migrates it from empty",
            highlight=False,
            soft_wrap=True,
        )
    elif isinstance(event, dev_loop.Linted):
        names = ", ".join(p.name for p in event.files)
        if event.findings:
            print_findings(event.findings, console, title=f"{stamp} lint: {names}")
        else:
            console.print(f"{stamp} lint: {names}: no findings", highlight=False, soft_wrap=True)
    elif isinstance(event, dev_loop.Started):
        scope = ", ".join(event.databases) if event.databases is not None else "every database"
        console.print(
            f"{stamp} {escape(event.cause)}: migrating {scope}", highlight=False, soft_wrap=True
        )
    elif isinstance(event, dev_loop.Ran):
        _print_dev_run(event, console)
    elif isinstance(event, dev_loop.Refused):
        console.print(
            f"{stamp} {escape(event.cause)}: [bold red]{escape(str(event.error))}[/]",
            highlight=False,
            soft_wrap=True,
        )
    elif isinstance(event, dev_loop.ImageReady):
        built = event.built
        verb = "built and pushed" if built.built else "unchanged (same content tag)"
        console.print(f"{stamp} image {verb}: {built.reference}", highlight=False, soft_wrap=True)
    elif isinstance(event, dev_loop.ImageSkipped):
        console.print(f"{stamp} image not rebuilt: {event.reason}", highlight=False)
    else:
        ended = f"; ended the run it left running ({', '.join(event.ended)})" if event.ended else ""
        console.print(
            f"ameide-migrate dev stopped after {event.runs} run(s){ended}; nothing is left running",
            highlight=False,
            soft_wrap=True,
        )


def _print_dev_run(event: dev_loop.Ran, console: Console) -> None:
    run = event.result.report
    if run is None:
        failure = event.result.failure
        console.print(f"[bold red]{escape(str(failure))}[/]", highlight=False, soft_wrap=True)
    else:
        heading, by_row = _server_heading(run.servers_read)
        table = Table(title=heading.strip() or None, box=None, pad_edge=False, title_justify="left")
        for column in ("database", *(("server",) if by_row else ()), "version", "applied"):
            table.add_column(column, justify="right" if column == "applied" else "left")
        table.add_column("state")
        for o in run.outcomes:
            table.add_row(
                o.database,
                *((run.server_of.get(o.database, ""),) if by_row else ()),
                f"{o.before or 'empty'} -> {o.after or 'empty'}",
                str(o.applied),
                f"[{_STYLE[o.state]}]{o.state.value}[/]",
            )
        console.print(table)
        edited = {e.database: e for e in event.edited}
        for o in run.failed:
            if o.database in edited:
                continue
            console.print(f"[bold red]{o.database}[/]: {escape(o.message)}", soft_wrap=True)
            console.print(f"  [yellow]next:[/] {escape(o.recovery)}", soft_wrap=True)
        for s in run.smoke_failures:
            console.print(f"[red]{s.database}[/] smoke check: {'; '.join(s.problems)}")
    for e in event.edited:
        console.print(escape(e.message()), highlight=False, soft_wrap=True)
    console.print(f"Flow run: {event.result.flow_run_url}", highlight=False, soft_wrap=True)
