"""`ameide-migrate lint`: the findings as a table, as JSON for tools, or as GitHub Actions
annotations, and the verdict."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ameide_migrate.cli.shared import DbOption, FleetOfOption, TargetOption, console
from ameide_migrate.core.errors import ExitCode, UsageError

if TYPE_CHECKING:
    from ameide_migrate.commands.lint import LintReport
    from ameide_migrate.core.findings import Finding


def lint(
    paths: Annotated[
        list[Path] | None,
        typer.Argument(
            help="Migration files or folders (a database's, the tree's); default: the whole "
            "SQL tree, or with --env what is pending there.",
            show_default=False,
        ),
    ] = None,
    env: Annotated[
        str | None,
        typer.Option(
            "--env",
            "-e",
            help="Its levels and placeholders; without PATH, lint only what is pending in its "
            "databases (reads their history; for local, makes them first as run does).",
        ),
    ] = None,
    db: DbOption = None,
    output_format: Annotated[
        str,
        typer.Option("--format", help="table, json (for tools) or github (Actions annotations)."),
    ] = "table",
    fleet: FleetOfOption = None,
    target: TargetOption = None,
) -> None:
    """Lint migrations with squawk and the transaction checks, before they lock anything.

    Exits 0 clean or warnings only, 1 an error finding, 2 a usage mistake.
    """
    from ameide_migrate import terminal
    from ameide_migrate.commands import lint as verbs
    from ameide_migrate.config.settings import get_settings

    if output_format not in ("table", "json", "github"):
        raise UsageError(f"unknown format {output_format!r}: choose table, json or github")
    linted = verbs.lint(get_settings(), env, db, paths, fleet_name=fleet, targets=target)
    if output_format == "json":
        typer.echo(json.dumps(_lint_json(linted), indent=2, ensure_ascii=False))
    elif output_format == "github":
        for _, finding in linted.findings:
            typer.echo(_annotation(linted.root, finding))
        typer.echo(_lint_verdict(linted))
    else:
        if linted.findings:
            title = f"Lint: {env}" if env else "Lint"
            terminal.print_findings(linted.findings, console, title=title)
        console.print(_lint_verdict(linted), highlight=False, soft_wrap=True)
    if linted.errors:
        raise SystemExit(ExitCode.FAILED)


def _lint_json(linted: LintReport) -> dict[str, Any]:
    return {
        "environment": linted.environment,
        "pending_only": linted.pending_only,
        "root": str(linted.root),
        "checked": linted.checked,
        "errors": linted.errors,
        "warnings": linted.warnings,
        "findings": [{"database": d, **f.as_json()} for d, f in linted.findings],
    }


def _lint_verdict(linted: LintReport) -> str:
    what = f"{len(linted.checked)} migration(s)"
    if linted.pending_only:
        what = f"{len(linted.checked)} pending migration(s) in {linted.environment}"
    if not linted.checked:
        return f"lint: nothing to lint ({what})"
    if linted.errors:
        return f"lint FAILED: {linted.errors} error(s), {linted.warnings} warning(s) in {what}"
    if linted.warnings:
        return f"lint passed: {linted.warnings} warning(s), no error, in {what}"
    return f"lint passed: no finding in {what}"


def _annotation(root: Path, finding: Finding) -> str:
    """A GitHub Actions workflow command: the finding shown on its line of the pull request
    (the file relative to the working directory, the repository's root in a workflow)."""
    where = os.path.relpath(root / finding.file)
    command = "error" if finding.level == "error" else "warning"
    text = finding.message + (f" Fix: {finding.fix}" if finding.fix else "")
    properties = (
        f"file={_escape_property(where)},line={finding.line},title={_escape_property(finding.rule)}"
    )
    return f"::{command} {properties}::{_escape_data(text)}"


def _escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")
