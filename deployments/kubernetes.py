"""Entry module; the code is `ameide_migrate.deployments.kubernetes`."""

from ameide_migrate.deployments.kubernetes import RUN_AS_USER, job_template

__all__ = ["RUN_AS_USER", "job_template"]
