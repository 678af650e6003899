"""The environments a platform migrates, and where each one's database credentials come from."""

from __future__ import annotations

from collections.abc import Iterable

from ameide_migrate import credentials
from ameide_migrate.errors import CredentialsMissing, UnknownEnvironment
from ameide_migrate.postgres import Credentials
from ameide_migrate.settings import Settings

ENVIRONMENTS = ("local", "staging", "prod")


def check(name: str) -> str:
    if name not in ENVIRONMENTS:
        raise UnknownEnvironment(name, ENVIRONMENTS)
    return name


def placeholders(environment: str) -> dict[str, str]:
    """Flyway placeholders every database of `environment` sees."""
    return {"environment": environment}


def load_credentials(
    environment: str, settings: Settings, databases: Iterable[str]
) -> dict[str, Credentials]:
    if check(environment) == "local":
        return credentials.read_local_store(settings.state_dir, databases)
    raise CredentialsMissing(
        f"environment {environment} reads its database credentials from Vault, and no Vault "
        "connection is configured for it: register the Vault block for this environment "
        "(see the README's Vault section), then rerun"
    )
