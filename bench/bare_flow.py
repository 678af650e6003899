"""The floor a run of `ameide-migrate run` stands on: one Prefect flow of one task that does
nothing, run in this process against the server PREFECT_API_URL names, as the command runs its
migrate flow.

    PREFECT_API_URL=... uv run python -m bench.bare_flow
"""

from __future__ import annotations

from prefect import flow, task


@task
def nothing() -> None:
    """The one task: its run is created, started and finished on the server, and does no work."""


@flow(name="bare")
def bare() -> None:
    nothing()


if __name__ == "__main__":
    bare()
