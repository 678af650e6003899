"""The process table as /proc shows it: what a run started, and whether it is still there.

A test checks that a run's processes (its Flyway JVM above all) ended against this table, not
against what the tool says of them."""

from __future__ import annotations

from pathlib import Path
from uuid import UUID

PROC = Path("/proc")


def all_processes() -> list[int]:
    return [int(p.name) for p in PROC.iterdir() if p.name.isdigit()]


def children(pid: int) -> list[int]:
    """The processes whose parent is `pid`."""
    found = []
    for status in PROC.glob("[0-9]*/status"):
        try:
            fields = dict(
                line.split(":\t", 1) for line in status.read_text().splitlines() if ":\t" in line
            )
        except OSError:
            continue
        if fields.get("PPid", "").strip() == str(pid):
            found.append(int(status.parent.name))
    return found


def descendants(pid: int) -> list[int]:
    """The children of `pid`, theirs, and so on down."""
    found, todo = [], [pid]
    while todo:
        below = children(todo.pop())
        found += below
        todo += below
    return found


def gone(pid: int) -> bool:
    """Exited: no such process, or a zombie nobody reaped yet (it runs nothing)."""
    try:
        state = (PROC / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state in ("Z", "X")


def command_line(pid: int) -> str:
    """Its arguments joined by spaces; empty once it has gone."""
    try:
        return (PROC / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def process_table() -> dict[int, tuple[int, str, bytes]]:
    """Every process: pid -> (parent, command, environment)."""
    found = {}
    for entry in PROC.glob("[0-9]*"):
        try:
            status = dict(
                line.split(":\t", 1)
                for line in (entry / "status").read_text().splitlines()
                if ":\t" in line
            )
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        found[int(entry.name)] = (int(status["PPid"]), status["Name"].strip(), environ)
    return found


def processes_of_run(run_id: UUID) -> dict[int, str]:
    """The processes a flow run's worker started for it (the run's id in their environment)
    and all they started in turn (the Flyway JVM keeps none of that environment): pid -> name."""
    table = process_table()
    marker = f"PREFECT__FLOW_RUN_ID={run_id}".encode()
    found = {pid: name for pid, (_, name, env) in table.items() if marker in env.split(b"\0")}
    grew = True
    while grew:
        more = {pid: name for pid, (ppid, name, _) in table.items() if ppid in found}
        grew = not more.keys() <= found.keys()
        found |= more
    return found
