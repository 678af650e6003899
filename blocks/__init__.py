"""The blocks, as entry modules: the code is `ameide_migrate.blocks` (connection data only)."""
