"""`drift`: the databases checked against the SQL tree, read-only."""

from __future__ import annotations

from typing import Literal

from ameide_migrate.commands.shared import Progress, choose_api, install_flyway, run_flow, silent
from ameide_migrate.config import environments
from ameide_migrate.config.settings import Settings
from ameide_migrate.core.errors import UsageError
from ameide_migrate.services.drift import DriftFound, DriftReport


def drift(
    settings: Settings,
    env: str,
    databases: list[str] | None = None,
    engine: Literal["native", "flyway"] = "native",
    progress: Progress = silent,
    fleet_name: str | None = None,
) -> DriftReport:
    """Every targeted database checked against the SQL tree, read-only: the tree's databases,
    or a fleet's targets against its template."""

    if fleet_name is not None:
        if databases:
            raise UsageError("--db and --fleet cannot be combined: a fleet checks its targets")
        environments.fleet_template(env, environments.fleet(fleet_name, settings), settings)
        targets = None
    else:
        catalog = environments.catalog(env, settings)
        targets = [d.name for d in catalog.select(databases)] if databases else None
    if engine == "flyway":
        install_flyway(settings, progress=progress)
    choose_api(settings, env)
    from ameide_migrate.flows.drift import drift_flow

    outcome, _ = run_flow(
        drift_flow, environment=env, databases=targets, engine=engine, fleet=fleet_name
    )
    found = outcome.report if isinstance(outcome, DriftFound) else outcome
    if isinstance(found, BaseException):
        raise found
    if not isinstance(found, DriftReport):
        raise TypeError(f"the drift flow returned {found!r}")
    return found
