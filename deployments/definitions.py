"""Entry module; the code is `ameide_migrate.deployments.definitions`."""

from ameide_migrate.deployments.definitions import deployments_for

__all__ = ["deployments_for"]
