"""The adapters: each external system spoken to in one place (PostgreSQL, the PostgreSQL this
project starts, Flyway, Prefect's API, Vault, the secret stores, Docker, git, free ports, OS
signals); they import only the config and the core."""
