"""`trigger`: a run of an environment's deployment started through the Prefect API, and
followed to its end (for CI)."""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from ameide_migrate.adapters import stopping
from ameide_migrate.adapters.prefect import api_choice, flow_runs, following
from ameide_migrate.commands.fleet import fleet_targets
from ameide_migrate.commands.shared import choose_api, silent
from ameide_migrate.config import environments
from ameide_migrate.config.settings import Settings
from ameide_migrate.core.errors import UsageError


@dataclass(frozen=True)
class Triggered:
    flow_run_id: UUID
    ui_url: str
    wait_seconds: float
    """How long a follower waits by default: an hour, plus the time a protected environment's
    run may wait for a decision on its plan."""


def trigger(
    settings: Settings,
    env: str,
    databases: list[str] | None = None,
    *,
    flow: str = "migrate",
    dry_run: bool = False,
    image: str | None = None,
    fleet_name: str | None = None,
    wait_for_lock: bool = False,
) -> Triggered:
    """A run of the environment's deployment, created through the Prefect API (for CI)."""
    if flow not in ("migrate", "drift", "fleet"):
        raise UsageError(f"unknown flow {flow!r}: choose migrate, drift or fleet")
    if (flow == "fleet") != (fleet_name is not None):
        raise UsageError("--fleet NAME goes with --flow fleet, and --flow fleet needs --fleet")
    parameters: dict[str, Any]
    if fleet_name is not None:
        declared = environments.fleet(fleet_name, settings)
        if databases:
            raise UsageError("--db does not apply to a fleet: its targets are the fleet's")
        # What this machine can check without the environment's secrets, before a run exists.
        environments.fleet_template(env, declared, settings)
        environments.fleet_registry(env, declared, settings)
        if declared.targets_query is None:
            fleet_targets(settings, env, fleet_name)
        parameters = {"name": fleet_name, "wait_for_lock": wait_for_lock}
    elif wait_for_lock:
        raise UsageError("--wait-for-lock goes with --flow fleet: a fleet runs one at a time")
    else:
        catalog = environments.catalog(env, settings)
        names = [d.name for d in catalog.select(databases)] if databases else []
        parameters = {"databases": names}
    if dry_run:
        if flow != "migrate":
            raise UsageError("--dry-run applies to the migrate flow only")
        parameters["dry_run"] = True
    if image is not None and "@sha256:" not in image:
        raise UsageError(
            f"--image {image} is not pinned by digest: pass REPOSITORY@sha256:DIGEST, as "
            "`ameide-migrate image build --push` prints it"
        )
    api = choose_api(settings, env, deployments=True)
    if fleet_name is not None and not wait_for_lock:
        from ameide_migrate.flows.fleet import await_the_fleets_turn

        # Refused before a run exists; the run checks again (or waits) once it does.
        await_the_fleets_turn(
            env,
            fleet_name,
            None,
            wait=False,
            how_to_wait="trigger it with --wait-for-lock",
            on_wait=silent,
        )
    job_variables = {"image": image} if image else None
    flow_run_id = following.start_deployment(f"{flow}/{env}", parameters, job_variables)
    policy = environments.get(env, settings).approval
    asks = flow in ("migrate", "fleet") and not dry_run and policy.required
    return Triggered(
        flow_run_id,
        api_choice.ui_address_of_flow_run(api.ui_url, str(flow_run_id)),
        3600 + (policy.timeout_minutes * 60 if asks else 0),
    )


def follow(
    flow_run_id: UUID,
    timeout: float,
    *,
    on_line: Callable[[str], None],
    on_waiting: Callable[[], None] | None = None,
) -> following.Outcome:
    """Follow a triggered run to its end: its state, its tasks' states and its logs as lines,
    `on_waiting` when it waits for a decision on its plan. Ctrl-C or SIGTERM (a CI job's
    timeout or cancel) cancels the run through Prefect, so its worker stops it, and ends this
    process (130 or 143) saying which state the run reached."""

    def on_interrupt(signum: int) -> None:
        name = signal.Signals(signum).name
        # At most 8 s: a CI runner sends SIGKILL soon after its SIGTERM (GitHub: 10 s in all).
        reached = flow_runs.cancel_flow_run(
            flow_run_id, f"stopped by {name} (ameide-migrate trigger)", wait=8
        )
        tail = "" if reached != "Cancelling" else ": its worker has not stopped it yet"
        sys.stderr.write(f"FAILED: stopped by {name}: flow run {flow_run_id} {reached}{tail}\n")

    with stopping.stopping_at_once(on_interrupt):
        return following.follow_flow_run(
            flow_run_id, timeout, on_log=on_line, on_state=on_line, on_waiting=on_waiting
        )
