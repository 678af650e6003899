"""The deployments, as entry modules: the code is `ameide_migrate.deployments` (every
environment's deployments from one definition, the Kubernetes job template); beside them the CI
files (`ci/`, `tekton/`)."""
