"""`ameide-migrate local up` and `local down`: the embedded local environment started and
stopped."""

from __future__ import annotations

from ameide_migrate.cli.shared import console, progress


def local_up() -> None:
    """Start everything a run from the Prefect UI needs: the local PostgreSQL with the local
    credentials, the Prefect server, migrate/local and drift/local, and a process worker."""
    from ameide_migrate.commands import local as verbs
    from ameide_migrate.config.settings import get_settings

    stack = verbs.local_up(get_settings(), progress)
    env, api = stack.environment, stack.api
    console.print(f"PostgreSQL: {env.admin.host}:{env.admin.port}", highlight=False)
    console.print(
        f"Prefect UI: {api.ui_url} (Deployments, migrate/local, Run; a worker of ameide-local "
        "picks the run up)",
        soft_wrap=True,
        highlight=False,
    )


def local_down() -> None:
    """Stop the local worker, Prefect server and PostgreSQL; their data stays for the next run."""
    from ameide_migrate.commands import local as verbs
    from ameide_migrate.config.settings import get_settings

    stopped = verbs.local_down(get_settings())
    console.print(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")
