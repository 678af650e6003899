"""Set-up shared by the verbs: Flyway installed, the Prefect API chosen, the local databases
seeded, the secret gate, and a flow run in this process.

Prefect, the flows and the deployment definitions are imported inside each verb, after
`choose_api` has chosen the Prefect API: Prefect reads its settings once, at import.
"""

from __future__ import annotations

import logging
import signal
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any
from uuid import UUID, uuid4

from pydantic import SecretStr

from ameide_migrate.adapters import flyway, stopping
from ameide_migrate.adapters.postgres.connection import Credentials
from ameide_migrate.adapters.prefect import api_choice, flow_runs
from ameide_migrate.config import environments
from ameide_migrate.config.settings import Settings
from ameide_migrate.core.errors import (
    REJECTED_STATE,
    ApprovalRejected,
    MigrateError,
    UsageError,
)
from ameide_migrate.services import credential_gate, local

Progress = Callable[[str], None]


def silent(_: str) -> None:
    return None


def install_flyway(
    settings: Settings, version: str | None = None, progress: Progress = silent
) -> tuple[flyway.Installation, bool]:
    """Flyway `version` (the pinned one by default) in the cache; (installation, newly made)."""
    chosen = version or settings.flyway_version
    return flyway.install(
        (settings.cache_dir / "flyway" / chosen).resolve(),
        chosen,
        driver_version=settings.postgresql_driver_version,
        java=settings.java,
        maven=settings.maven,
        progress=progress,
    )


def choose_api(settings: Settings, env: str, *, deployments: bool = False) -> api_choice.Api:
    """Choose the Prefect API before anything imports Prefect.

    PREFECT_API_URL when set. Else the embedded local server, except where the verb works on
    another environment's deployments (`deployments`): those live on a shared server.
    """
    what = f"--env {env}'s deployments" if deployments else "this command"
    is_local = environments.get(env, settings).local
    return api_choice.choose_api(
        settings.state_dir, local_allowed=is_local or not deployments, needed_for=what
    )


def local_environment(settings: Settings, command: str) -> environments.Environment:
    """The environment `command` works on: the one marked `local = true`, and no other."""
    declared = environments.all_of(settings)
    local_ones = [e for e in declared.values() if e.local]
    if not local_ones:
        raise UsageError(
            f"{environments.file_of(settings)} declares no local environment "
            f"({', '.join(declared)}): `ameide-migrate {command}` works on the embedded local "
            "one only; add [environments.local] with local = true"
        )
    return local_ones[0]


def seed_local(
    settings: Settings,
    databases: Iterable[str],
    admin_url: SecretStr | None = None,
    progress: Progress = silent,
) -> tuple[local.LocalEnvironment, str]:
    """The local databases and owners made (on the embedded cluster unless an admin URL is
    given) and their credentials stored; (the environment, where they were written)."""
    databases = list(databases)
    admin_url = admin_url or settings.local_admin_url
    conn = settings.vault_connection()
    paths = environments.vault_path_of("local", settings)
    if conn is not None:
        local.check_vault_server(settings.state_dir, admin_url, conn, databases, paths)
    env = local.up(
        settings.state_dir,
        databases,
        admin_url=admin_url,
        database_prefix=settings.local_database_prefix,
        progress=progress,
    )
    return env, local.seed(settings.state_dir, env.owners, conn, paths)


class _NoTracebackForExpectedFailures(logging.Filter):
    """A failed migration is news, not a crash: Prefect's message without the traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], MigrateError):
            record.exc_info = None
            record.exc_text = None
        return True


def run_flow(flow: Any, **parameters: Any) -> tuple[Any, UUID]:
    """Run a flow in this process; (what it returned, its flow-run id). A flow that failed with
    one of this project's errors returns that error; any other exception is raised."""
    import prefect.main  # noqa: F401  (sets up Prefect's logging handlers)

    for handler in logging.getLogger().handlers + logging.getLogger("prefect").handlers:
        if isinstance(handler, logging.StreamHandler):
            handler.addFilter(_NoTracebackForExpectedFailures())
    with _stopped_by_signals(flow.name):
        state = flow(**parameters, return_state=True)
    return settle(state), state.state_details.flow_run_id


@contextmanager
def _stopped_by_signals(flow_name: str) -> Iterator[None]:
    """Ctrl-C or SIGTERM (a CI timeout, `timeout`, a process manager) while the flow runs here:
    its flow and task runs cancelled on the server, a last line saying so, and the process ends
    at once (130 or 143), its Flyway JVM with it. Inside the dev loop, the loop's own handling."""
    if stopping.handled():
        yield
        return
    from prefect import tags

    session = f"ameide-migrate-{uuid4().hex[:12]}"

    def on_interrupt(signum: int) -> None:
        name = signal.Signals(signum).name
        ended = flow_runs.end_unfinished_runs(session, f"stopped by {name}")
        runs = f"{flow_name} run {', '.join(ended)} cancelled" if ended else "no run was left open"
        sys.stderr.write(
            f"FAILED: stopped by {name}: {runs}; a Flyway JVM it started ends with this process\n"
        )

    with tags(session), stopping.stopping_at_once(on_interrupt):
        yield


def settle(state: Any) -> Any:
    """A flow's final state as its outcome: its return value, or the project error it ended
    with (returned, for the caller to report); anything else is raised as it is."""
    if state.is_cancelled() and state.name == REJECTED_STATE:
        return ApprovalRejected(state.message or "the plan was rejected; nothing was migrated")
    outcome = state.result(raise_on_failure=False)
    if isinstance(outcome, BaseException) and not isinstance(outcome, MigrateError):
        raise outcome
    return outcome


def verified(
    settings: Settings, env: str, names: list[str], *, login: bool = True
) -> dict[str, Credentials]:
    """The secret gate over `names` from where `env` keeps its secrets; `login`: each logs in."""
    with credential_gate.secret_source(env, settings) as source:
        return credential_gate.verify_secrets(
            source, names, connect_timeout=settings.connect_timeout_seconds, login=login
        )


def verify_databases(
    settings: Settings, env: str, databases: list[str] | None = None
) -> dict[str, Credentials]:
    """The secret gate over the SQL tree's `databases` (all when None): each logs in."""
    names = [d.name for d in environments.catalog(env, settings).select(databases)]
    return verified(settings, env, names)
