"""Per-environment deployments of the flows, from one definition (local, staging, prod)."""
