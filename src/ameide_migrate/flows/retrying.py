"""Retry policy shared by every task: transient faults only, with exponential backoff."""

from __future__ import annotations

from typing import Any

from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import State, TaskRun
from prefect.tasks import Task, exponential_backoff

from ameide_migrate.errors import MigrateError
from ameide_migrate.settings import Settings


def only_transient(_task: Task[..., Any], _run: TaskRun, state: State[Any]) -> bool:
    """Retry connection refused/reset, lock waits, Vault down; a validation or SQL error fails
    at once."""
    return isinstance(state.data, MigrateError) and state.data.transient


def retrying(name: str, settings: Settings) -> dict[str, Any]:
    """Task options: never cached, results kept in memory only, transient faults retried."""
    return {
        "name": name,
        "cache_policy": NO_CACHE,
        "persist_result": False,
        "retries": settings.retries,
        "retry_delay_seconds": exponential_backoff(settings.retry_delay_seconds),
        "retry_jitter_factor": 0.2,
        "retry_condition_fn": only_transient,
    }
