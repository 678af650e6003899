"""`local up` and `local down`: the local stack a run from the Prefect UI needs."""

from __future__ import annotations

from dataclasses import dataclass

from ameide_migrate.adapters.prefect import api_choice
from ameide_migrate.commands.deploy import serve_local_deployments
from ameide_migrate.commands.shared import (
    Progress,
    install_flyway,
    local_environment,
    seed_local,
    silent,
)
from ameide_migrate.config import environments
from ameide_migrate.config.settings import Settings
from ameide_migrate.core.errors import UsageError
from ameide_migrate.services import local


@dataclass(frozen=True)
class LocalStack:
    environment: local.LocalEnvironment
    api: api_choice.Api


def local_up(settings: Settings, progress: Progress = silent) -> LocalStack:
    """Everything a run from the Prefect UI needs: the local PostgreSQL with the local
    credentials, the Prefect server, the local deployments and a process worker."""
    target = local_environment(settings, "local up")
    catalog = environments.catalog(target.name, settings)
    env, _ = seed_local(settings, catalog.databases, None, progress)
    install_flyway(settings, progress=progress)
    api = api_choice.choose_api(settings.state_dir, local_allowed=True, needed_for="local up")
    if not api.local:
        raise UsageError(
            f"PREFECT_API_URL is set ({api.api_url}): `local up` starts its own Prefect server; "
            f"unset PREFECT_API_URL, or run `ameide-migrate deploy --env {target.name}` and a "
            f"worker of {target.work_pool} against that server"
        )
    serve_local_deployments(settings, api, catalog)
    return LocalStack(env, api)


def local_down(settings: Settings) -> list[str]:
    """Stop the local worker, Prefect server and PostgreSQL; their data stays."""
    return local.down(settings.state_dir)
