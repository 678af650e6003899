"""Entry module of the drift flow; the code is `ameide_migrate.flows.drift`."""

from ameide_migrate.flows.drift import drift_flow

__all__ = ["drift_flow"]
