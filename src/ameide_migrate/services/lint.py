"""The migration lint: squawk (the PostgreSQL migration linter) over the SQL Flyway will run, plus
the checks squawk lacks, each finding at the level its environment gives the rule.

The one module that runs squawk. Each script is read as Flyway reads it: placeholders replaced
(the file's own lines kept, so a finding's line is the file's), and squawk told whether Flyway
will wrap it in a transaction (it does unless a statement PostgreSQL refuses in one is there).

A batch is linted in the order Flyway applies it, and a rule about work on a table is judged by
the table the statement works on (`locking.Batch`): one created earlier in the batch is new, so
nothing; with the target database's facts (a run, its plan, `lint --env`), one that does not
exist there is new too, an empty one carries no lock risk, and a small one at most a warning.
Without a database (a lint of files), any table the batch does not create may exist and be large.

Levels: every rule is `error` (the run stops that database before Flyway starts), `warning`
(reported, the run goes on) or `off`: `config/lint_rules` holds the rules, their defaults and
the `[lint]` and `[environments.NAME.lint]` tables of ameide.toml (`rules`, and `max_level`).
"""

from __future__ import annotations

import bisect
import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from ameide_migrate.config.lint_rules import (
    DEFAULT_LEVELS,
    MIXED_TRANSACTION,
    NON_TRANSACTIONAL_IN_TRANSACTION,
    SQUAWK_RULES,
    SYNTAX_ERROR,
    LintRules,
)
from ameide_migrate.core import locking, statements
from ameide_migrate.core.catalog import DatabaseCatalog, Migration
from ameide_migrate.core.errors import LinterNotInstalled, LintFailed
from ameide_migrate.core.findings import Finding, Level
from ameide_migrate.core.placeholders import as_run, substitute

# Rules about a lock on a busy table: how long it is held depends on the table's size, so the
# target's facts decide (no risk on an absent or empty table, at most a warning on a small one).
_LOCK_RULES = frozenset(
    {
        "require-concurrent-index-creation",
        "require-concurrent-index-deletion",
        "require-concurrent-reindex",
        "require-concurrent-partition-detach",
        "constraint-missing-not-valid",
        "adding-foreign-key-constraint",
        "disallowed-unique-constraint",
        "adding-field-with-default",
        "adding-not-nullable-field",
        "adding-serial-primary-key-field",
        "changing-column-type",
        "prefer-repack",
    }
)
# Rules that matter once the table holds rows: a NOT NULL column with no default fails on them.
_ROWS_RULES = frozenset({"adding-required-field"})
# Rules about the table's clients (a rename or drop breaks them) or its statements' robustness:
# they matter wherever the table exists, whatever its size, and not on one the batch creates.
_EXISTS_RULES = frozenset(
    {
        "renaming-column",
        "renaming-table",
        "ban-drop-column",
        "ban-drop-table",
        "ban-drop-not-null",
        "ban-drop-constraint",
        "ban-drop-index",
        "ban-set-default",
        "ban-add-column",
        "prefer-robust-stmts",
        "require-lock-timeout",
        "require-statement-timeout",
        "require-timeout-settings",
    }
)
_TABLE_WORK_RULES = _LOCK_RULES | _ROWS_RULES | _EXISTS_RULES


@dataclass(frozen=True)
class Script:
    """One migration as squawk reads it."""

    name: str
    """Relative to the SQL tree's root (POSIX): what findings name."""
    text: str
    """Its SQL with the placeholders replaced, line for line."""


def script_of_file(path: Path, root: Path, placeholders: Mapping[str, str]) -> Script:
    """A file as UTF-8, its `${name}` placeholders replaced."""
    name = relative_name(path, root)
    try:
        text = path.read_bytes().decode("utf-8").removeprefix("\ufeff")
    except OSError as e:
        raise LintFailed(f"cannot read {path}: {e.strerror}") from None
    except UnicodeDecodeError as e:
        raise LintFailed(
            f"{path} is not UTF-8 (byte {e.start}): lint it through its database folder, whose "
            "flyway.toml or flyway.conf gives its encoding"
        ) from None
    return Script(name, substitute(text, placeholders, script=name))


def script_of_migration(db: DatabaseCatalog, migration: Migration, root: Path) -> Script:
    """A catalog's migration, read in its encoding with its database's placeholders and syntax."""
    return Script(relative_name(migration.path, root), as_run(db, migration))


def relative_name(path: Path, root: Path) -> str:
    """The path relative to `root` when under it (POSIX), else as it is."""
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return path.as_posix()


def lint_files(
    files: Sequence[Path],
    rules: LintRules,
    *,
    root: Path,
    placeholders: Mapping[str, str] | None = None,
) -> list[Finding]:
    """The findings of `files`, one batch in the order given (a table one of them creates is new
    for those after it), with no database to ask: any other table may exist and be large. Files
    are UTF-8, with `${name}` placeholders."""
    return lint_scripts([script_of_file(f, root, placeholders or {}) for f in files], rules)


def lint_migrations(
    db: DatabaseCatalog,
    migrations: Iterable[Migration],
    rules: LintRules,
    *,
    root: Path,
    facts: locking.Facts | None = None,
) -> list[Finding]:
    """The findings of a database's migrations (one batch, in Flyway's order), each read with its
    database's Flyway configuration, judged against `facts` (what the target holds) when given."""
    return lint_scripts([script_of_migration(db, m, root) for m in migrations], rules, facts)


def lint_scripts(
    scripts: Sequence[Script], rules: LintRules, facts: locking.Facts | None = None
) -> list[Finding]:
    """The findings of one batch of scripts, at `rules`' levels; `off` ones dropped.

    A rule about work on a table is judged by the table the statement works on: nothing where it
    is new in the batch; with the target's `facts`, nothing where it does not exist, and for the
    lock rules nothing on an empty table and at most a warning on one smaller than `rules`'
    large table. Without facts, any table the batch does not create may be large."""
    if not scripts:
        return []
    binary = squawk_binary()
    batch = locking.Batch(facts)
    findings: list[Finding] = []
    order = {script.name: i for i, script in enumerate(scripts)}
    # squawk looks for a .squawk.toml from its working directory up: ameide.toml alone decides.
    with tempfile.TemporaryDirectory(prefix="ameide-lint-") as elsewhere:
        for script in scripts:
            parsed = statements.split(script.text)
            before = len(findings)
            refused = statements.non_transactional_among(parsed)
            starts = [statement.line for statement in parsed]
            worked_on = []
            for statement in parsed:
                targets = locking.locks(statement)
                worked_on.append(batch.existing(targets[0]) if targets else None)
                batch.after(statement)
            for finding in _squawk(binary, script, rules, not refused, Path(elsewhere)):
                index = _statement_at(starts, finding.line)
                if finding.rule in _TABLE_WORK_RULES and index is not None:
                    judged = _judged(finding, worked_on[index], rules)
                    if judged is not None:
                        findings.append(judged)
                else:
                    findings.append(finding)
            findings += _transaction_findings(script, parsed, refused, rules)
            if parsed and parsed[0].fallback is not None:
                # The script's own checks read it without PostgreSQL's grammar: say so.
                findings[before:] = [
                    replace(f, message=f"{f.message} [{parsed[0].reading}]")
                    for f in findings[before:]
                ]
    findings.sort(key=lambda f: (order[f.file], f.line))
    return [f for f in findings if f.level is not Level.OFF]


def _judged(
    finding: Finding, table: locking.RelationFacts | bool | None, rules: LintRules
) -> Finding | None:
    """A table-work finding as the table it works on decides: `table` is its facts, False when
    it does not exist before the statement, True when it may (no database was asked), None when
    the statement's table is not known."""
    if table is None or table is True:
        return finding
    if table is False:
        return None
    if finding.rule in _EXISTS_RULES:
        return replace(finding, message=f"{finding.message} [{table.describe()}]")
    if table.empty:
        return None
    if finding.rule in _ROWS_RULES:
        return replace(finding, message=f"{finding.message} [{table.describe()}]")
    large = rules.large_table
    if large.holds(table):
        return replace(
            finding,
            message=f"{finding.message} [{table.describe()}: a large table, from "
            f"{large.describe()}]",
        )
    level = Level.WARNING if finding.level is Level.ERROR else finding.level
    return replace(
        finding,
        level=level,
        message=f"{finding.message} [{table.describe()}: a small table, under "
        f"{large.describe()}, so at most a warning]",
    )


def squawk_binary() -> Path:
    """squawk as the squawk-cli package installs it: beside this Python, else on PATH."""
    beside = Path(sys.executable).parent / "squawk"
    if beside.is_file():
        return beside
    found = shutil.which("squawk")
    if found is None:
        raise LinterNotInstalled(
            f"squawk is not installed (looked beside {sys.executable} and on PATH): install the "
            "project's dependencies (`uv sync`, which installs squawk-cli) or `pip install "
            "squawk-cli`"
        )
    return Path(found)


def _squawk(
    binary: Path, script: Script, rules: LintRules, in_transaction: bool, cwd: Path
) -> list[Finding]:
    excludable = [r for r in SQUAWK_RULES if r != "unused-ignore"]
    off = [r for r in excludable if rules.level(r) is Level.OFF]
    # squawk's opt-in rules run when a level names them; the others run unless off.
    named = {*DEFAULT_LEVELS, *rules.rules}
    on = [r for r in excludable if r in named and rules.level(r) is not Level.OFF]
    command = [
        str(binary),
        "--reporter",
        "json",
        "--stdin-filepath",
        script.name,
        "--assume-in-transaction" if in_transaction else "--no-assume-in-transaction",
    ]
    if on:
        command.append("--include=" + ",".join(on))
    if off:
        command.append("--exclude=" + ",".join(off))
    key = (*command, script.text, rules.model_dump_json())
    if (known := _squawked.get(key)) is not None:
        return list(known)
    found = _run_squawk(binary, script, rules, command, cwd)
    if len(_squawked) >= _SQUAWKED_AT_MOST:
        _squawked.clear()
    _squawked[key] = tuple(found)
    return found


_squawked: dict[tuple[str, ...], tuple[Finding, ...]] = {}
"""squawk's findings by its command, the script's text and the levels: the same file linted for
each target of a fleet (a thousand of them) is one squawk process, not a thousand."""
_SQUAWKED_AT_MOST = 4096


def _run_squawk(
    binary: Path, script: Script, rules: LintRules, command: list[str], cwd: Path
) -> list[Finding]:
    try:
        done = subprocess.run(
            command,
            input=script.text.encode("utf-8"),
            capture_output=True,
            cwd=cwd,
            timeout=120,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise LintFailed(f"squawk ({binary}) could not lint {script.name}: {e}") from None
    try:
        reported = json.loads(done.stdout.decode("utf-8") or "[]")
    except (UnicodeDecodeError, json.JSONDecodeError):
        reported = None
    if done.returncode not in (0, 1) or not isinstance(reported, list):
        error = done.stderr.decode("utf-8", "replace").strip()
        raise LintFailed(
            f"squawk ({binary}) failed on {script.name} (exit {done.returncode}): {error}"
        )
    found: list[Finding] = []
    syntax_reported = False
    for item in reported:
        rule = str(item.get("rule_name"))
        if rule == SYNTAX_ERROR:
            # One parse error cascades into many: the first says where.
            if syntax_reported:
                continue
            syntax_reported = True
        found.append(
            Finding(
                file=script.name,
                line=int(item.get("line", 0)) + 1,
                rule=rule,
                level=rules.level(rule),
                message=str(item.get("message", "")),
                fix=_syntax_fix() if rule == SYNTAX_ERROR else item.get("help"),
            )
        )
    return found


def _syntax_fix() -> str:
    return (
        "squawk could not parse this statement, so the file was not checked past it: fix the "
        f"SQL, or set {SYNTAX_ERROR} to warning when PostgreSQL accepts it"
    )


def _transaction_findings(
    script: Script,
    parsed: list[statements.Statement],
    refused: list[statements.NonTransactional],
    rules: LintRules,
) -> list[Finding]:
    """The checks squawk lacks: a statement PostgreSQL refuses in a transaction mixed with
    others in one file (Flyway refuses the file, or with mixed=true runs all of it outside a
    transaction), and one inside an explicit BEGIN ... COMMIT."""
    found = []
    refused_lines = {r.statement.line for r in refused}
    others = [s for s in parsed if s.line not in refused_lines]
    if refused and others:
        first = refused[0]
        found.append(
            Finding(
                script.name,
                first.statement.line,
                MIXED_TRANSACTION,
                rules.level(MIXED_TRANSACTION),
                f"{first.kind} cannot run in a transaction, and this file also holds "
                f"transactional statements (line {others[0].line}: {others[0].words[:60]}): "
                "Flyway refuses the file, or with mixed=true runs all of it outside a "
                "transaction, where a failure leaves the statements before it applied",
                f"Move {first.kind} into a migration of its own, with no other statement.",
            )
        )
    kinds: dict[int, str] = {}
    for r in refused:
        kinds.setdefault(r.statement.line, r.kind)
    in_block = False
    for statement in parsed:
        control = statements.transaction_control(statement)
        if control is not None:
            in_block = control == "BEGIN"
        kind = kinds.get(statement.line)
        if in_block and kind is not None and kind != "CREATE INDEX CONCURRENTLY":
            found.append(
                Finding(
                    script.name,
                    statement.line,
                    NON_TRANSACTIONAL_IN_TRANSACTION,
                    rules.level(NON_TRANSACTIONAL_IN_TRANSACTION),
                    f"{kind} cannot run inside a transaction block, and this one is inside "
                    "BEGIN ... COMMIT: PostgreSQL refuses it",
                    "Remove the BEGIN and COMMIT: Flyway runs this file outside a transaction.",
                )
            )
    return found


def _statement_at(starts: list[int], line: int) -> int | None:
    """The statement a finding's line falls in, by the lines the statements start on (in
    order): the last one starting on or before it."""
    index = bisect.bisect_right(starts, line) - 1
    return index if index >= 0 else None


def lock_level(
    file: Path,
    *,
    placeholders: Mapping[str, str] | None = None,
    new_tables: Collection[str] = (),
) -> str:
    """The strongest lock the file's statements take on tables that may exist before it runs,
    as PostgreSQL names it ("ACCESS EXCLUSIVE", "SHARE", ...), or "none", with no database
    asked: tables the file creates first, and `new_tables`, do not count."""
    text = file.read_bytes().decode("utf-8").removeprefix("\ufeff")
    batch = locking.Batch()
    batch.new.update(new_tables)
    return locking.strongest(locking.statement_locks(substitute(text, placeholders or {}), batch))


def counts(findings: Iterable[Finding]) -> tuple[int, int]:
    """(errors, warnings)."""
    found = list(findings)
    errors = sum(1 for f in found if f.level is Level.ERROR)
    return errors, len(found) - errors
