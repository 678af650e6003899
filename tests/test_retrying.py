"""The retry policy of a step called inside a task (a fleet shard's targets): transient faults
retried after the run's delays, anything else raised at once, the last fault as it was."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from ameide_migrate.config.settings import Settings
from ameide_migrate.core.errors import DatabaseUnreachable, MigrateError
from ameide_migrate.flows.retrying import retried

SETTINGS = Settings(retries=3, retry_delay_seconds=0.01, retry_max_delay_seconds=0.02)


def failing(*faults: Exception) -> tuple[list[int], Callable[[str], str]]:
    """A step raising `faults` one per call, then answering its call's number; its calls."""
    calls: list[int] = []

    def step(answer: str) -> str:
        calls.append(len(calls) + 1)
        if len(calls) <= len(faults):
            raise faults[len(calls) - 1]
        return f"{answer} on call {len(calls)}"

    return calls, step


def test_a_transient_fault_is_retried_until_the_step_answers() -> None:
    calls, step = failing(DatabaseUnreachable("refused"), DatabaseUnreachable("reset"))
    assert retried(step, SETTINGS)("applied") == "applied on call 3"
    assert calls == [1, 2, 3]


def test_a_fault_that_is_not_transient_is_raised_at_once() -> None:
    failed = MigrateError("syntax error at or near SELEC")
    calls, step = failing(failed)
    with pytest.raises(MigrateError) as raised:
        retried(step, SETTINGS)("applied")
    assert raised.value is failed
    assert calls == [1]


def test_the_last_transient_fault_is_raised_as_it_was_once_the_budget_is_spent() -> None:
    faults = [DatabaseUnreachable(f"refused {n}") for n in range(1, 6)]
    calls, step = failing(*faults)
    with pytest.raises(DatabaseUnreachable) as raised:
        retried(step, SETTINGS)("applied")
    assert raised.value is faults[3]  # the first try and three retries
    assert calls == [1, 2, 3, 4]
