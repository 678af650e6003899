"""Prefect blocks: connection data only (the Vault connection comes with the Vault secret gate)."""
