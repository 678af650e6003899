"""`ameide-migrate approve`: a protected environment's plan approved or rejected."""

from __future__ import annotations

from typing import Annotated

import typer

from ameide_migrate.cli.shared import console
from ameide_migrate.core.errors import UsageError


def approve(
    run_id: Annotated[str, typer.Argument(help="The flow run waiting for a decision.")],
    reject: Annotated[
        bool, typer.Option("--reject", help="Reject the plan: the run ends Cancelled.")
    ] = False,
    reason: Annotated[
        str, typer.Option(help="Why; recorded with the decision in the run's artifacts.")
    ] = "",
) -> None:
    """Approve (or reject) the plan of a protected environment's run, as the UI's Resume does."""
    from ameide_migrate.commands import approval as verbs
    from ameide_migrate.config.settings import get_settings

    if reject and not reason.strip():
        raise UsageError("--reject needs --reason TEXT: say why, it is recorded with the run")
    done = verbs.approve(get_settings(), run_id, approved=not reject, reason=reason)
    verdict = "approved" if done.approved else "rejected"
    console.print(
        f"{verdict} the plan of flow run {done.flow_run_id}: {done.url}",
        highlight=False,
        soft_wrap=True,
    )
