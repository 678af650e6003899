"""`ameide-migrate secrets verify` and `secrets seed-local`: the databases' credentials checked
where they live, and the local ones made."""

from __future__ import annotations

from typing import Annotated

import typer

from ameide_migrate.cli.shared import (
    DbOption,
    EnvOption,
    FleetOfOption,
    TargetOption,
    checked_admin_url,
    console,
    progress,
)
from ameide_migrate.core.errors import UsageError


def secrets_verify(
    env: EnvOption, db: DbOption = None, fleet: FleetOfOption = None, target: TargetOption = None
) -> None:
    """Check every database's credentials (or a fleet's targets'): present, well-formed, and
    able to log in.

    Reads Vault (VAULT_ADDR, VAULT_TOKEN or AMEIDE_VAULT_AUTH_METHOD...); for local without
    Vault, the local store. Exits 1 listing every problem, each with its fix.
    """
    from ameide_migrate.commands import secrets as verbs
    from ameide_migrate.config.settings import get_settings

    if db and fleet is not None:
        raise UsageError("give --db (databases of the tree) or --fleet (a fleet's), not both")
    if target and fleet is None:
        raise UsageError("--target names a fleet's target: give its --fleet NAME too")
    found = verbs.verify_secrets(get_settings(), env, db, fleet_name=fleet, targets=target)
    for name, creds in found.items():
        console.print(f"[green]ok[/] {name}: {creds.user} @ {creds.url}")


def secrets_seed_local(
    admin_url: Annotated[
        str | None,
        typer.Option(
            envvar="AMEIDE_LOCAL_ADMIN_URL",
            help="Superuser URL of the PostgreSQL to use; default: the embedded cluster.",
        ),
    ] = None,
) -> None:
    """Create the local roles and databases with deterministic credentials and store them: in
    Vault when VAULT_ADDR is set, else in the local store (mode 0600). Idempotent."""
    from ameide_migrate.commands import shared as verbs
    from ameide_migrate.config import environments
    from ameide_migrate.config.settings import get_settings

    settings = get_settings()
    catalog = environments.catalog("local", settings)
    secret = checked_admin_url(admin_url)
    _, where = verbs.seed_local(settings, catalog.databases, secret, progress)
    console.print(f"local credentials of {len(catalog.databases)} databases written to {where}")
