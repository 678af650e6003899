"""Entry module of the release flow; the code is `ameide_migrate.flows.release`."""

from ameide_migrate.flows.release import release_flow

__all__ = ["release_flow"]
