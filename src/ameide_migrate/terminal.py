"""What the command line prints: rich tables of runs, fleets, drift, lint findings, images and a
triggered run's artifacts, the dev loop's events and the fleet's progress bars. The flows'
artifacts are `report`'s; this module serves the terminal alone, so it may know the verbs' own
results (the `commands` package) and the dev loop's events."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
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

from ameide_migrate.adapters.prefect.artifacts import ArtifactTable
from ameide_migrate.core import locking
from ameide_migrate.core.findings import Finding, Level
from ameide_migrate.core.outcomes import DatabaseOutcome, OutcomeState, RunReport
from ameide_migrate.services.drift import DriftReport, Verdict
from ameide_migrate.services.fleet import STANDINGS
from ameide_migrate.services.image import BuiltImage
from ameide_migrate.services.report import lock_runs, noted, on_servers, rows_of, size_of

if TYPE_CHECKING:
    from ameide_migrate.commands.fleet import FleetTarget
    from ameide_migrate.commands.repair import FleetChore
    from ameide_migrate.services import dev_loop
    from ameide_migrate.services.fleet import FleetReport, WaveProgress


_STYLE = {
    OutcomeState.MIGRATED: "green",
    OutcomeState.UP_TO_DATE: "cyan",
    OutcomeState.FAILED: "bold red",
    OutcomeState.WOULD_APPLY: "yellow",
    OutcomeState.INTERRUPTED: "bold magenta",
}


def _server_heading(servers: Sequence[str]) -> tuple[str, bool]:
    """A terminal table's (heading suffix, server column): the one server every row was read on
    in the heading, else a column naming each row's."""
    if len(servers) == 1:
        return f" on {servers[0]}", False
    return "", len(servers) > 1


def print_run(run: RunReport, console: Console) -> None:
    """The run's outcomes as a table; its heading names the server they were read on, or a
    column names each one's when they were read on several."""
    smoke = {s.database: s for s in run.smoke}
    heading, by_row = _server_heading(run.servers_read)
    notes = "\n".join(f"{o.database}: {escape(o.message)}" for o in noted(run))
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
    for run in lock_runs(locks):
        table.add_row(
            escape(run.where),
            run.lock.mode,
            escape(run.lock.relation),
            rows_of(run.lock.facts),
            size_of(run.lock.facts),
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
    from ameide_migrate.services import dev_loop

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
