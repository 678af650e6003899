"""A deployment runs the environment it was made for.

The Prefect server lays a run's parameters over its deployment's, so an API caller could start
`migrate/staging` with `environment=prod`: staging's worker, with staging's service account and
network, would then migrate prod. The run form offers no `environment`; this refuses the rest.
"""

from __future__ import annotations

from prefect.runtime import deployment, flow_run

from ameide_migrate.errors import UsageError


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
