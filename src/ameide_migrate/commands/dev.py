"""`dev`: the local databases migrated as their SQL changes."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING
from uuid import uuid4

from ameide_migrate.adapters import stopping
from ameide_migrate.adapters.postgres.provisioning import drop_database
from ameide_migrate.adapters.postgres.schema_history import read_history
from ameide_migrate.adapters.prefect import flow_runs
from ameide_migrate.commands.image import build_image
from ameide_migrate.commands.lint import lint
from ameide_migrate.commands.run import RunResult, run
from ameide_migrate.commands.shared import (
    Progress,
    choose_api,
    local_environment,
    seed_local,
    silent,
    verify_databases,
)
from ameide_migrate.config import environments
from ameide_migrate.config.settings import Settings
from ameide_migrate.core.errors import ExitCode, UsageError
from ameide_migrate.services import dev_loop
from ameide_migrate.services.context import RunContext

if TYPE_CHECKING:
    from ameide_migrate.services.image import BuiltImage


def reset_local_database(settings: Settings, database: str, progress: Progress = silent) -> str:
    """One database of the local environment rebuilt from empty: dropped, then made again with
    its owner and credentials as seeding makes it (the next run migrates it from empty). Local
    only: no other environment's database is ever dropped. Its physical name."""
    target = local_environment(settings, "dev")
    (db,) = environments.catalog(target.name, settings).select([database])
    env, _ = seed_local(settings, [db.name], progress=progress)
    physical = env.owners[db.name].database
    drop_database(env.admin, physical)
    seed_local(settings, [db.name], progress=progress)
    return physical


def edited_local_migrations(
    settings: Settings, databases: list[str]
) -> list[dev_loop.EditedMigration]:
    """The local databases' applied migrations edited since, read from their history tables."""

    target = local_environment(settings, "dev")
    targets = environments.catalog(target.name, settings).select(databases)
    credentials = verify_databases(settings, target.name, [d.name for d in targets])
    ctx = RunContext.create(target.name, targets, credentials, settings)
    found = []
    try:
        for db in targets:
            rows = read_history(
                credentials[db.name],
                ctx.history_table(db.name),
                timeout=settings.connect_timeout_seconds,
            )
            found += dev_loop.edited_migrations(db, rows)
    finally:
        ctx.close()
    return found


def dev(
    settings: Settings,
    *,
    reset: str | None = None,
    image: bool = False,
    registry: str | None = None,
    on_event: Callable[[dev_loop.Event], None],
    progress: Progress = silent,
) -> None:
    """Migrate the local databases as their SQL changes, until Ctrl-C: at start every database
    (after rebuilding `reset` from empty), then on each change only those whose folders changed,
    one Prefect run each time; with `image`, the migrations image built and pushed after each
    run that succeeded. Returns on Ctrl-C, having said so (`Stopped`); Ctrl-C during a run exits
    the process at once (exit 130) once the run is ended on the server."""
    target = local_environment(settings, "dev")
    catalog = environments.catalog(target.name, settings)
    if reset is not None:
        catalog.select([reset])  # an unknown name is a usage error before anything starts
    if image and not (registry or settings.image_registry):
        raise UsageError(
            "--image pushes the migrations image for a local cluster: give --registry "
            "HOST[:PORT][/PATH] or set AMEIDE_IMAGE_REGISTRY"
        )
    api = choose_api(settings, target.name)
    # Prefect's console lines repeat, per task, what the table says once; the run's logs stay
    # on the server, behind the link printed with each table.
    os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "CRITICAL")
    from prefect import tags

    # Every run of this session carries its tag: on Ctrl-C, what it left unfinished is found.
    session = f"ameide-migrate-dev-{uuid4().hex[:12]}"

    runs = 0

    def stopped() -> dev_loop.Stopped:
        ended = flow_runs.end_unfinished_runs(session, "stopped by Ctrl-C (ameide-migrate dev)")
        return dev_loop.Stopped(runs, tuple(ended))

    def on_interrupt(_signal: int) -> None:
        on_event(stopped())

    @contextmanager
    def in_session() -> Iterator[None]:
        with (
            tags("ameide-migrate dev", session),
            stopping.stopping_at_once(on_interrupt, ExitCode.INTERRUPTED),
        ):
            yield

    def migrate_changed(databases: list[str] | None) -> RunResult:
        nonlocal runs
        runs += 1
        with in_session():
            return run(settings, target.name, databases, build=False, progress=progress)

    def build() -> BuiltImage:
        with in_session():
            return build_image(settings, push=True, registry=registry)

    root = settings.sql_dir.absolute()
    outside = [environments.file_of(settings)] + [
        Path(p.strip())
        for p in settings.flyway_variables.get("FLYWAY_CONFIG_FILES", "").split(",")
        if p.strip()
    ]
    loop = dev_loop.DevLoop(
        root,
        dev_loop.Actions(
            catalog=lambda: environments.catalog(target.name, settings),
            migrate=migrate_changed,
            edited=lambda databases: edited_local_migrations(settings, databases),
            build_image=build if image else None,
            lint=lambda files: lint(settings, target.name, paths=files).findings,
        ),
        on_event,
        config_files=tuple(
            p.absolute() for p in outside if p.is_file() and not p.absolute().is_relative_to(root)
        ),
    )
    on_event(dev_loop.Watching(api.ui_url, loop.watched))
    # `kill` (SIGTERM) stops the session as Ctrl-C does: its runs ended, nothing left behind.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        if reset is not None:
            on_event(dev_loop.Rebuilt(reset, reset_local_database(settings, reset, progress)))
        loop.start()
        loop.watch()
    except KeyboardInterrupt:
        # A second Ctrl-C must not cut this short: it is what ends the runs left Running.
        for sig in stopping.STOP_SIGNALS:
            signal.signal(sig, signal.SIG_IGN)
    on_event(stopped())
