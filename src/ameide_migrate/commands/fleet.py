"""`fleet run` and `fleet status`, and the fleet's targets as the other verbs choose them."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pydantic import SecretStr

from ameide_migrate.adapters.postgres.connection import first_column
from ameide_migrate.adapters.postgres.index_catalog import indexes_named
from ameide_migrate.adapters.postgres.schema_history import read_history
from ameide_migrate.adapters.prefect import api_choice, artifacts, automations
from ameide_migrate.commands.shared import (
    Progress,
    choose_api,
    install_flyway,
    run_flow,
    seed_local,
    silent,
    verified,
    verify_databases,
)
from ameide_migrate.config import environments
from ameide_migrate.config.fleets import Fleet
from ameide_migrate.config.settings import Settings
from ameide_migrate.core import interruption, recovery
from ameide_migrate.core.catalog import DatabaseCatalog
from ameide_migrate.core.errors import MigrateError
from ameide_migrate.core.outcomes import OutcomeState
from ameide_migrate.services import fleet, local, migrate
from ameide_migrate.services.context import RunContext, history_table_of
from ameide_migrate.services.fleet import FleetHalted

if TYPE_CHECKING:
    from ameide_migrate.services.fleet import FleetReport


@dataclass(frozen=True)
class FleetRun:
    """A fleet's run: every target's outcome by wave, where the run is recorded, and the failure
    the command ends with (None when every target migrated)."""

    report: FleetReport | None
    flow_run_url: str
    failure: MigrateError | None


def fleet_targets(settings: Settings, env: str, name: str) -> list[str]:
    """The fleet's targets as its flow reads them: a query runs on its registry through the
    secret gate, as the registry's credentials are (nothing is made for it)."""
    declared = environments.fleet(name, settings)

    def query(registry: str, sql: str) -> list[str]:
        creds = verify_databases(settings, env, [registry])[registry]
        return first_column(creds, sql, timeout=settings.connect_timeout_seconds)

    environments.fleet_registry(env, declared, settings)
    return fleet.resolve_targets(
        declared, environments.fleet_targets_file(declared, settings), query
    )


def check_fleet(
    settings: Settings, env: str, name: str, targets: list[str] | None = None
) -> list[str]:
    """Everything a fleet run needs, checked before any database, role, secret or flow run is
    made: its template folder, its registry, its targets (each named once, each a database
    name, `targets` among them) and where their secrets are read. The targets it would
    migrate, in the fleet's order."""
    declared = environments.fleet(name, settings)
    environments.fleet_template(env, declared, settings)
    chosen = fleet.chosen_targets(declared, fleet_targets(settings, env, name), targets)
    others = [f for f in environments.fleets(settings).values() if f.name != name]
    fleet.check_vault_paths(
        declared, others, env, chosen, environments.vault_path_of(env, settings)
    )
    return chosen


def fleet_run(
    settings: Settings,
    env: str,
    name: str,
    targets: list[str] | None = None,
    *,
    admin_url: SecretStr | None = None,
    wait_for_lock: bool = False,
    progress: Progress = silent,
    on_api: Callable[[api_choice.Api], None] = lambda _: None,
    on_target: fleet.WaveProgress = lambda _wave, _size, _outcome: None,
    undo_interrupted: bool = False,
) -> FleetRun:
    """A fleet's targets migrated in waves (for the local environment, their databases and
    owners made first, once everything the run needs is checked); refused (FleetBusy) while
    another run of the fleet in the environment has not ended, or, `wait_for_lock`, started
    once it has."""
    declared = environments.fleet(name, settings)
    # A registry is queried on the server the run was given, as the flow will.
    with local.reading_server(local.server_of(admin_url)):
        chosen = check_fleet(settings, env, name, targets)
    api = choose_api(settings, env)
    automations.ensure_heartbeat_guard()
    on_api(api)
    from ameide_migrate.flows.fleet import await_the_fleets_turn, fleet_flow

    # Before anything is made; the run checks again once it exists, against runs started since.
    await_the_fleets_turn(
        env,
        name,
        None,
        wait=wait_for_lock,
        how_to_wait="run again with --wait-for-lock",
        on_wait=progress,
    )
    install_flyway(settings, progress=progress)
    server = None
    if environments.get(env, settings).local:
        progress(f"fleet {name}: making the local databases of {len(chosen)} target(s)")
        made, _ = seed_local(
            settings, [declared.database_of(t) for t in chosen], admin_url, progress
        )
        server = made.admin.server
    with fleet.progress_to(on_target), local.reading_server(server):
        outcome, flow_run_id = run_flow(
            fleet_flow,
            environment=env,
            name=name,
            targets=targets,
            wait_for_lock=wait_for_lock,
            undo_interrupted=undo_interrupted,
        )
    url = api_choice.ui_address_of_flow_run(api.ui_url, str(flow_run_id))
    if isinstance(outcome, FleetHalted):
        return FleetRun(outcome.report, url, outcome)
    if isinstance(outcome, MigrateError):
        return FleetRun(None, url, outcome)
    return FleetRun(outcome, url, None)


@dataclass(frozen=True)
class FleetTarget:
    """One target as `fleet status` shows it: where its history stands now, and its last
    outcome in the fleet's ledger (the latest fleet artifact)."""

    database: str
    version: str | None
    latest: str | None
    state: str
    """One of `fleet.STANDINGS`."""
    last_outcome: str
    last_message: str
    server: str
    """Where its history was read (HOST:PORT), as its credentials name it."""
    fix: str = ""
    """For an interrupted target: what undoes its migration, and the rerun."""


def fleet_status(settings: Settings, env: str, name: str) -> list[FleetTarget]:
    """Every target of the fleet, read-only: its version and its last outcome."""

    declared = environments.fleet(name, settings)
    template = environments.fleet_template(env, declared, settings)
    names = [declared.database_of(t) for t in fleet_targets(settings, env, name)]
    choose_api(settings, env)
    from ameide_migrate.flows.fleet import artifact_key

    ledger = {row.get("target", ""): row for row in artifacts.latest_table(artifact_key(env, name))}
    found = verified(settings, env, names, login=False)
    latest = str(template.latest_version) if template.latest_version else None
    history_table = history_table_of(template, settings.flyway_table)

    def one(database: str) -> FleetTarget:
        row = ledger.get(database, {})
        last = row.get("state", "never run"), row.get("message", "")
        server = found[database].server
        try:
            history = read_history(
                found[database], history_table, timeout=settings.connect_timeout_seconds
            )
        except MigrateError:
            return FleetTarget(database, None, latest, "unreachable", *last, server=server)
        inspection = migrate.compare(template, history)
        state = fleet.standing(
            up_to_date=inspection.up_to_date, has_history=history is not None, last_outcome=last[0]
        )
        try:
            cut_short = interruption.find(database, template, history, indexes_of(database))
        except MigrateError:
            return FleetTarget(
                database, inspection.version, latest, "unreachable", *last, server=server
            )
        if cut_short is not None:
            subject = recovery.Subject(env, database, name, declared.target_of(database))
            fix = recovery.after_interrupted(cut_short, subject)
            return FleetTarget(
                database,
                inspection.version,
                latest,
                OutcomeState.INTERRUPTED.value,
                *last,
                server=server,
                fix=f"{cut_short.describe()} Fix: {fix}",
            )
        return FleetTarget(database, inspection.version, latest, state, *last, server=server)

    def indexes_of(database: str) -> interruption.IndexLookup:
        return lambda wanted: indexes_named(
            found[database], wanted, timeout=settings.connect_timeout_seconds
        )

    with ThreadPoolExecutor(max_workers=8) as pool:
        return list(pool.map(one, names))


def fleet_databases(
    settings: Settings, env: str, name: str, targets: list[str] | None
) -> tuple[Fleet, dict[str, DatabaseCatalog]]:
    """The fleet's chosen targets (all when `targets` is empty), each a database of its
    template, in the fleet's order."""
    declared = environments.fleet(name, settings)
    template = environments.fleet_template(env, declared, settings)
    chosen = fleet.chosen_targets(declared, fleet_targets(settings, env, name), targets)
    return declared, {declared.database_of(t): template for t in chosen}


def fleet_context(
    settings: Settings, env: str, name: str, targets: list[str] | None
) -> tuple[Fleet, RunContext]:
    """The fleet's chosen targets (all when `targets` is empty) with their credentials verified
    through the secret gate before any is touched (for the local environment, their databases
    and owners made first, as a fleet run makes them), in a context of their own."""

    declared, databases = fleet_databases(settings, env, name, targets)
    if environments.get(env, settings).local:
        seed_local(settings, list(databases))
    credentials = verified(settings, env, list(databases))
    return declared, RunContext.create(env, databases, credentials, settings, fleet=declared)
