"""The flows, as entry modules: each re-exports its flow from `ameide_migrate.flows`, where the
code lives (the wheel installs that one package). `prefect deploy` and scripts may name
`flows/migrate.py:migrate_flow` in a checkout; deployments name the package's module path."""
