"""`ameide-migrate deploy`: an environment's deployments registered, job variables laid over."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from ameide_migrate.cli.shared import EnvOption, console
from ameide_migrate.core.errors import UsageError


def deploy(
    env: EnvOption,
    image: Annotated[
        str | None,
        typer.Option(help="Kubernetes pools: the migrations image, pinned by digest."),
    ] = None,
    job_variables: Annotated[
        Path | None,
        typer.Option(
            exists=True,
            dir_okay=False,
            help="A JSON or YAML file of job variables (namespace, host_network, env, ...) laid "
            "over the environment's own.",
        ),
    ] = None,
) -> None:
    """Register migrate/<env> and drift/<env> with the Prefect API in PREFECT_API_URL.

    Idempotent: running it again updates the same two deployments.
    """
    from ameide_migrate.commands import deploy as verbs
    from ameide_migrate.config.settings import get_settings

    overrides = _job_variables_file(job_variables) if job_variables else {}
    for name, deployment_id in verbs.deploy(get_settings(), env, image, overrides):
        console.print(f"{name}: {deployment_id}", highlight=False)


def _job_variables_file(path: Path) -> dict[str, Any]:
    import yaml

    try:
        loaded = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise UsageError(f"--job-variables {path} is not YAML or JSON: {e}") from None
    if not isinstance(loaded, dict):
        raise UsageError(f"--job-variables {path} must hold a mapping of job variables")
    return loaded
