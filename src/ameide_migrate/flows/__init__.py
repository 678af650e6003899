"""Prefect flows: thin orchestration over the verbs of `ameide_migrate`."""
