"""Entry module of the migrate flow; the code is `ameide_migrate.flows.migrate`."""

from ameide_migrate.flows.migrate import migrate_flow

__all__ = ["migrate_flow"]
