"""Every environment's deployments, from one definition: `migrate/<env>` and `drift/<env>`, and
when ameide.toml declares fleets, `fleet/<env>` and `fleet-shard/<env>` (the runs a fleet run
starts for its shards, a Kubernetes Job each).

Flows are referenced by module path (`ameide_migrate.flows.migrate.migrate_flow`), so a worker
runs the code it has installed: the process worker's virtualenv locally, the migrations image on
Kubernetes.
"""

from __future__ import annotations

from typing import Any, cast

from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
from prefect.client.schemas.schedules import CronSchedule
from prefect.deployments.runner import RunnerDeployment
from prefect.types.entrypoint import EntrypointType

from ameide_migrate.config import environments
from ameide_migrate.config.settings import Settings
from ameide_migrate.core.catalog import Catalog
from ameide_migrate.flows.drift import drift_flow
from ameide_migrate.flows.fleet import fleet_flow, fleet_shard_flow
from ameide_migrate.flows.migrate import migrate_flow


def _form(deployment: RunnerDeployment, catalog: Catalog, fleets: list[str]) -> RunnerDeployment:
    """The run form a person fills in the UI.

    It offers no `environment`: the deployment belongs to one environment, which its parameters
    fix, and the server lays a run's parameters over the deployment's. It leaves out the image
    build: a deployment's run already runs inside the image, pinned by digest. `databases` is a
    multi-select of the catalog's databases from the start (empty: all of them), and every field
    has a title in words rather than the parameter's name. The drift check's `fleet` is a
    choice of the declared fleets (empty: the tree's databases), and no field where none is.
    """
    schema = deployment._parameter_openapi_schema.model_dump()
    properties = schema["properties"]
    for fixed in ("environment", "build"):
        properties.pop(fixed, None)
    schema["definitions"].pop("ImageBuild", None)
    properties["databases"] = {
        **_described(properties["databases"]),
        "type": "array",
        "items": {"type": "string", "enum": list(catalog.databases)},
        "uniqueItems": True,
        "default": [],
    }
    # Empty leaves the worker's own setting; a number field rather than a choice of types.
    properties["concurrency"] = {
        **_described(properties["concurrency"]),
        "type": "integer",
        "minimum": 1,
    }
    if "fleet" in properties and not fleets:
        properties.pop("fleet")
    elif "fleet" in properties:
        properties["fleet"] = {
            **_described(properties["fleet"]),
            "type": "string",
            "enum": ["", *fleets],
            "default": "",
        }
    for name, shown in properties.items():
        shown["title"] = name.replace("_", " ").capitalize()
    deployment._parameter_openapi_schema = type(deployment._parameter_openapi_schema)(**schema)
    return deployment


def _described(generated: dict[str, Any]) -> dict[str, Any]:
    """A generated field's description and place in the form, without its type."""
    return {key: generated[key] for key in ("description", "position") if key in generated}


def deployments_for(
    settings: Settings,
    name: str,
    catalog: Catalog,
    image: str | None = None,
    job_variables: dict[str, Any] | None = None,
) -> list[RunnerDeployment]:
    """The environment's deployments; `job_variables` are laid over its own (a site's
    namespace, its cluster's networking, extra env)."""
    env = environments.get(name, settings)
    job_variables = {**env.deployment_job_variables(), **(job_variables or {})}
    if image:
        job_variables["image"] = image
    common: dict[str, Any] = {
        "work_pool_name": env.work_pool,
        "tags": [*env.tags, "ameide-migrate"],
        "job_variables": job_variables,
        "entrypoint_type": EntrypointType.MODULE_PATH,
    }
    migrate = migrate_flow.to_deployment(
        name,
        parameters={"environment": name},
        description=f"Migrate the databases of {name} to the latest version.",
        # Two migrate runs of one environment never overlap: the second waits its turn.
        concurrency_limit=ConcurrencyLimitConfig(
            limit=1, collision_strategy=ConcurrencyLimitStrategy.ENQUEUE
        ),
        **common,
    )
    drift = drift_flow.to_deployment(
        name,
        parameters={"environment": name},
        description=f"Nightly schema-drift check of {name}.",
        schedules=[CronSchedule(cron=env.drift_cron, timezone=env.timezone)],
        **common,
    )
    fleets = sorted(environments.fleets(settings))
    found = [
        _form(cast(RunnerDeployment, migrate), catalog, fleets),
        _form(cast(RunnerDeployment, drift), catalog, fleets),
    ]
    if fleets:
        fleet = fleet_flow.to_deployment(
            name,
            parameters={"environment": name},
            description=f"Migrate a fleet of {name} in waves (ameide.toml's [fleets.NAME]).",
            **common,
        )
        shard = fleet_shard_flow.to_deployment(
            name,
            parameters={"environment": name},
            description=f"A shard of a fleet run's wave in {name}: the fleet run starts it; it "
            "refuses to run alone.",
            **common,
        )
        found += [
            _fleet_form(cast(RunnerDeployment, fleet), fleets),
            _fixed_environment(cast(RunnerDeployment, shard)),
        ]
    return found


def _fleet_form(deployment: RunnerDeployment, fleets: list[str]) -> RunnerDeployment:
    """A fleet run's form: the fleet, a choice of the declared ones; its targets, a list."""
    deployment = _fixed_environment(deployment)
    schema = deployment._parameter_openapi_schema.model_dump()
    properties = schema["properties"]
    properties["name"] = {
        **_described(properties["name"]),
        "type": "string",
        "enum": fleets,
        "default": fleets[0],
    }
    properties["targets"] = {
        **_described(properties["targets"]),
        "type": "array",
        "items": {"type": "string"},
        "default": [],
    }
    schema["required"] = ["name"]
    for name, shown in properties.items():
        shown["title"] = {"name": "Fleet"}.get(name, name.replace("_", " ").capitalize())
    deployment._parameter_openapi_schema = type(deployment._parameter_openapi_schema)(**schema)
    return deployment


def _fixed_environment(deployment: RunnerDeployment) -> RunnerDeployment:
    """No `environment` field: the deployment's parameters fix it."""
    schema = deployment._parameter_openapi_schema.model_dump()
    schema["properties"].pop("environment", None)
    deployment._parameter_openapi_schema = type(deployment._parameter_openapi_schema)(**schema)
    return deployment
