"""`approve`: the decision on a protected environment's plan, from the terminal."""

from __future__ import annotations

import getpass
from dataclasses import dataclass

from ameide_migrate.adapters.prefect import api_choice, approvals
from ameide_migrate.config.settings import Settings


@dataclass(frozen=True)
class Approved:
    """A decision given to a run waiting for one."""

    flow_run_id: str
    approved: bool
    reason: str
    url: str


def approve(
    settings: Settings, run_id: str, *, approved: bool = True, reason: str = ""
) -> Approved:
    """Decide on the plan of a protected environment's run that waits for a decision: the
    terminal's counterpart of the Prefect UI's Resume form."""
    api = api_choice.choose_api(settings.state_dir, local_allowed=True, needed_for="approve")
    who = getpass.getuser()
    given = reason.strip() or ("approved" if approved else "rejected")
    approvals.decide(
        run_id, approved=approved, reason=f"{given} (`ameide-migrate approve {run_id}`, {who})"
    )
    return Approved(run_id, approved, given, api_choice.ui_address_of_flow_run(api.ui_url, run_id))
