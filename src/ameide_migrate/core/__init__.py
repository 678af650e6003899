"""The core: pure data and rules (errors, SQL statements and locks, the catalog, history, outcomes,
fix texts) that talk to no external system; it imports nothing of ameide_migrate above it."""
