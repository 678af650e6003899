"""Retry policy shared by every step: transient faults only, with capped exponential backoff
jittered by up to 20 %, and a last failure that says how long it was retried. A task's attempts
are Prefect's task retries (each one a state on the server); a step called inside a task (a
fleet's shard migrates its targets in one) retries through tenacity with the same policy."""

from __future__ import annotations

import functools
import random
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, ParamSpec, TypeVar

import tenacity
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import State, TaskRun
from prefect.context import TaskRunContext
from prefect.runtime import task_run
from prefect.tasks import Task

from ameide_migrate.config.settings import Settings, get_settings
from ameide_migrate.core.errors import MigrateError

P = ParamSpec("P")
R = TypeVar("R")


def only_transient(_task: Task[..., Any], _run: TaskRun, state: State[Any]) -> bool:
    """Retry connection refused/reset, lock waits, Vault down; a validation or SQL error fails
    at once."""
    return isinstance(state.data, MigrateError) and state.data.transient


def step_options(name: str) -> dict[str, Any]:
    """Task options: never cached, results kept in memory only, transient faults retried (how
    often and how long: `with_retries`, from the settings of the run)."""
    return {
        "name": name,
        "cache_policy": NO_CACHE,
        "persist_result": False,
        "retry_jitter_factor": 0.2,
        "retry_condition_fn": only_transient,
    }


def with_retries(step: Task[P, R], settings: Settings) -> Task[P, R]:
    """The task with the retry budget of these settings: read when a flow runs, not when its
    module is imported."""
    return step.with_options(retries=settings.retries, retry_delay_seconds=settings.retry_delays)


def says_how_long(body: Callable[P, R]) -> Callable[P, R]:
    """A task body whose transient fault, once no retry is left, says how long it was retried:
    "a PostgreSQL down for 40 s" and "a budget of 75 s" read differently from "it failed"."""

    @functools.wraps(body)
    def attempt(*args: P.args, **kwargs: P.kwargs) -> R:
        settings = get_settings()
        try:
            return body(*args, **kwargs)
        except MigrateError as error:
            last = task_run.run_count > settings.retries or not error.transient
            if last and error.transient and settings.retries and error.args:
                error.args = (
                    f"{error.args[0]} (kept trying for {_seconds_since_first_attempt():.0f}s, "
                    f"{task_run.run_count} attempts: the retry budget is about "
                    f"{settings.retry_budget_seconds:.0f}s, AMEIDE_RETRIES and "
                    "AMEIDE_RETRY_MAX_DELAY_SECONDS widen it)",
                    *error.args[1:],
                )
            raise

    return attempt


def _seconds_since_first_attempt() -> float:
    # Prefect keeps the start of a task run's first attempt across its retries.
    context = TaskRunContext.get()
    started = context.task_run.start_time if context else None
    return (datetime.now(UTC) - started).total_seconds() if started else 0.0


def _transient(error: BaseException) -> bool:
    return isinstance(error, MigrateError) and error.transient


def retried(step: Callable[P, R], settings: Settings) -> Callable[P, R]:
    """The step, a transient fault retried in this process after the run's delays (doubling,
    capped), each jittered by up to 20 % as the tasks' retries are: a thousand targets that met
    the same blocker do not come back at the same instant. The last fault is raised as it was."""
    delays = list(settings.retry_delays)

    def wait(state: tenacity.RetryCallState) -> float:
        # tenacity asks for the wait before it asks whether to stop: none after the last try.
        if state.attempt_number > len(delays):
            return 0.0
        jitter = random.uniform(0.8, 1.2)  # noqa: S311 (no secret)
        return delays[state.attempt_number - 1] * jitter

    return tenacity.retry(
        retry=tenacity.retry_if_exception(_transient),
        stop=tenacity.stop_after_attempt(len(delays) + 1),
        wait=wait,
        reraise=True,
    )(step)
