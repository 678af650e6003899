"""The verbs, as plain functions that take the settings first (alembic's `command` module),
one module per group of verbs; set-up they share is in `shared`.

The command line only parses arguments and prints what these return; the flows add tasks,
retries and artifacts over the domain modules.
"""
