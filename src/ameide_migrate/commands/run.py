"""`run`: the environment's databases migrated by a flow run in this process."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pydantic import SecretStr

from ameide_migrate.adapters.prefect import api_choice, automations
from ameide_migrate.commands.deploy import serve_local_deployments
from ameide_migrate.commands.shared import (
    Progress,
    choose_api,
    install_flyway,
    run_flow,
    seed_local,
    silent,
)
from ameide_migrate.config import environments
from ameide_migrate.config.settings import Settings
from ameide_migrate.core.errors import MigrateError
from ameide_migrate.core.outcomes import RunFailed
from ameide_migrate.services import local

if TYPE_CHECKING:
    from ameide_migrate.core.outcomes import RunReport


@dataclass(frozen=True)
class RunResult:
    """A migrate run: every database's outcome, where the run is recorded, and the failure the
    command ends with (None when every database is where it should be)."""

    report: RunReport | None
    api: api_choice.Api
    flow_run_url: str
    failure: MigrateError | None
    ui_serves_runs: bool
    """The local stack is up: the run could as well have been started from the UI."""


def run(
    settings: Settings,
    env: str,
    databases: list[str] | None = None,
    *,
    admin_url: SecretStr | None = None,
    concurrency: int | None = None,
    dry_run: bool = False,
    build: bool | None = None,
    registry: str | None = None,
    progress: Progress = silent,
    on_api: Callable[[api_choice.Api], None] = lambda _: None,
) -> RunResult:
    """(Build and push the image,) verify the credentials, migrate, prove it (flyway info)."""
    target = environments.get(env, settings)
    catalog = environments.catalog(env, settings)
    targets = [d.name for d in catalog.select(databases)]
    install_flyway(settings, progress=progress)
    server = None
    if target.local:
        # Only the targeted databases: `--db X` touches X alone.
        made, _ = seed_local(settings, targets, admin_url, progress)
        server = made.admin.server
    api = choose_api(settings, env)
    automations.ensure_heartbeat_guard()
    serves = api.local and target.local
    if serves:
        serve_local_deployments(settings, api, catalog)
    on_api(api)
    from ameide_migrate.flows.image import ImageBuild
    from ameide_migrate.flows.migrate import migrate_flow

    # The run reads the local entries of the server it just seeded, no other.
    with local.reading_server(server):
        outcome, flow_run_id = run_flow(
            migrate_flow,
            environment=env,
            databases=targets if databases else None,
            concurrency=concurrency,
            dry_run=dry_run,
            build=ImageBuild(registry=registry)
            if (build is None and not target.local) or build
            else None,
        )
    url = api_choice.ui_address_of_flow_run(api.ui_url, str(flow_run_id))
    if isinstance(outcome, RunFailed):
        return RunResult(outcome.report, api, url, outcome, serves)
    if isinstance(outcome, MigrateError):
        return RunResult(None, api, url, outcome, serves)
    return RunResult(outcome, api, url, None, serves)
