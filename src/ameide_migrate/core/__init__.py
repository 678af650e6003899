"""The core: pure data and rules (errors, SQL statements and locks, the catalog, history, outcomes,
recovery texts) that talk to no external system; it imports nothing else of ameide_migrate."""
