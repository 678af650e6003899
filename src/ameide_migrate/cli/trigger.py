"""`ameide-migrate trigger`: a deployment's run started through the Prefect API, and followed."""

from __future__ import annotations

from typing import Annotated

import typer

from ameide_migrate.cli.shared import DbOption, EnvOption, WaitForLockOption, console


def trigger(
    env: EnvOption,
    db: DbOption = None,
    flow: Annotated[str, typer.Option(help="migrate, drift or fleet.")] = "migrate",
    fleet: Annotated[
        str | None, typer.Option("--fleet", help="With --flow fleet: the fleet to migrate.")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="migrate: list what would be applied, change nothing.")
    ] = False,
    wait: Annotated[bool, typer.Option(help="Follow the run's state and logs to the end.")] = False,
    timeout: Annotated[
        float | None,
        typer.Option(
            help="Seconds to wait with --wait; by default an hour, plus a protected "
            "environment's time for a decision on the plan."
        ),
    ] = None,
    image: Annotated[
        str | None,
        typer.Option(
            help="Run on this migrations image (REPOSITORY@sha256:DIGEST, as `image build "
            "--push` prints it) instead of the deployment's."
        ),
    ] = None,
    wait_for_lock: WaitForLockOption = False,
) -> None:
    """Start a run of the environment's deployment through the Prefect API (for CI).

    Exits 0 completed, 1 failed, crashed or cancelled, 3 drift found, 4 timed out (the run keeps
    going), 5 a protected environment's plan rejected or not approved in time.
    """
    from ameide_migrate import terminal
    from ameide_migrate.commands import trigger as verbs
    from ameide_migrate.config.settings import get_settings

    started = verbs.trigger(
        get_settings(),
        env,
        db,
        flow=flow,
        dry_run=dry_run,
        image=image,
        fleet_name=fleet,
        wait_for_lock=wait_for_lock,
    )
    flow_run_id, ui = started.flow_run_id, started.ui_url
    console.print(f"flow run {flow_run_id}: {ui}", soft_wrap=True, highlight=False)
    if not wait:
        return

    def line(text: str) -> None:
        console.print(text, markup=False, highlight=False, soft_wrap=True)

    def waiting() -> None:
        line(f"waiting for a decision on the plan: approve or reject it at {ui}")
        line(f"  or: ameide-migrate approve {flow_run_id} [--reject --reason TEXT]")

    outcome = verbs.follow(
        flow_run_id, timeout or started.wait_seconds, on_line=line, on_waiting=waiting
    )
    for table in outcome.tables:
        terminal.print_artifact_table(table, console)
    console.print(f"Flow run: {ui}", soft_wrap=True, highlight=False)
    line(outcome.summary)
    raise SystemExit(outcome.exit_code)
