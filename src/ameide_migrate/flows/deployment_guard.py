"""A deployment runs the environment it was made for.

The Prefect server lays a run's parameters over its deployment's, so an API caller could start
`migrate/staging` with `environment=prod`: staging's worker, with staging's service account and
network, would then migrate prod. The run form offers no `environment`; this refuses the rest.
"""

from __future__ import annotations

from uuid import UUID

from prefect.runtime import deployment, flow_run

from ameide_migrate.adapters import stopping
from ameide_migrate.adapters.prefect import flow_runs
from ameide_migrate.core.errors import UsageError


def own_environment(requested: str) -> str:
    """`requested`, when the run is no deployment's or its deployment is that environment's
    (deployments are named after their environment: `migrate/<env>`)."""
    if deployment.id and deployment.name and deployment.name != requested:
        raise UsageError(
            f"this run of deployment {flow_run.flow_name}/{deployment.name} asked for "
            f"environment {requested!r}: a deployment runs its own environment only; trigger "
            f"{flow_run.flow_name}/{requested} for {requested}"
        )
    return requested


def stopped_at_once() -> None:
    """At the start of a flow: a stop signal ends its process within seconds, the Flyway JVM
    with it. In the command line's process, as the command says (its runs cancelled); in a
    deployment's run process, the run marked Crashed (or left to the worker that is cancelling
    it). Prefect's engine installs its own SIGTERM handler for each flow run, which waits for
    the run's task threads: for the migration."""
    if stopping.handled():
        stopping.reclaim()
    elif deployment.id and flow_run.id:
        run_id = UUID(str(flow_run.id))
        stopping.for_the_rest_of_the_process(
            lambda signum: flow_runs.end_this_run_on_signal(run_id, signum)
        )
