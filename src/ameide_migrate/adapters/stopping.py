"""A signal that stops a run in this process stops it now: Ctrl-C (SIGINT), and the polite
`kill` (SIGTERM) that a CI timeout, a process manager or a closing session sends."""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)

_handling: list[Callable[[int, object], None]] = []
"""The signal handlers in force, innermost last: a run inside the dev loop is stopped as the
loop says."""


def handled() -> bool:
    """A stop handler of this module is in force in this process (a `stopping_at_once` block,
    or a deployment's run process's)."""
    return bool(_handling)


@contextmanager
def stopping_at_once(
    on_interrupt: Callable[[int], None], exit_code: int | None = None
) -> Iterator[None]:
    """A stop signal while a run is in flight stops the process now: `on_interrupt(signal)`
    (which ends the run on the server and says so), then the exit: `exit_code`, or 128 + the
    signal's number as a shell reports it (130 for Ctrl-C, 143 for SIGTERM).

    Waiting for the run to wind down would mean waiting for its task threads: Prefect's engine
    joins them, and they go on migrating (a retried step even starts a new JVM). Exiting takes
    the Flyway JVM with it (its parent-death signal), and PostgreSQL ends the migration's
    session, as after a kill. Outside this block the signals behave as before it.
    """

    if threading.current_thread() is not threading.main_thread():
        # Only the main thread may set signal handlers; a run on another thread (a test's,
        # a fleet's shard) is stopped with the process that the main thread stops.
        yield
        return

    stop = _stopper(on_interrupt, exit_code)
    previous = {sig: signal.signal(sig, stop) for sig in STOP_SIGNALS}
    _handling.append(stop)
    try:
        yield
    finally:
        _handling.pop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def reclaim() -> None:
    """At the start of a flow run in this process: the stop signals go to the block in force
    again. Prefect's engine installs its own SIGTERM handler for each flow run, which raises in
    the flow and then waits for the run's task threads: minutes, while a migration goes on."""
    if not _handling or threading.current_thread() is not threading.main_thread():
        return
    for sig in STOP_SIGNALS:
        signal.signal(sig, _handling[-1])


def for_the_rest_of_the_process(on_interrupt: Callable[[int], None]) -> None:
    """A deployment's run process: a stop signal (its worker cancelling the run, a pod evicted)
    ends it now, after `on_interrupt(signal)`, with 128 + the signal. Prefect's engine would
    wait for the run's task threads first, i.e. for the migration, until the worker's SIGKILL."""
    if threading.current_thread() is not threading.main_thread():
        return

    stop = _stopper(on_interrupt, None)
    # In force for the subflows too: each one's engine installs Prefect's handler again, and
    # `reclaim` at its start takes the signals back for this one.
    _handling.append(stop)
    for sig in STOP_SIGNALS:
        signal.signal(sig, stop)


def _stopper(
    on_interrupt: Callable[[int], None], exit_code: int | None
) -> Callable[[int, object], None]:
    """The signal handler: `on_interrupt(signal)`, then the exit, `exit_code` or 128 + the
    signal; a second signal meanwhile is ignored (a second Ctrl-C must not cut it short)."""

    def stop(signum: int, _frame: object) -> None:
        for sig in STOP_SIGNALS:
            signal.signal(sig, signal.SIG_IGN)
        try:
            on_interrupt(signum)
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(128 + signum if exit_code is None else exit_code)

    return stop
