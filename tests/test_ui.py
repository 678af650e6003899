"""What a person sees in the Prefect UI, in a real browser: the run forms, a run started from
them, and the artifacts a run leaves."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from ameide_migrate.adapters.prefect.local_server import Server
from ameide_migrate.core.catalog import PLATFORM_DATABASES

from .fix_browser import (
    artifact_table,
    form_labels,
    open_custom_run,
    open_multi_select,
    run_deployment_from_ui,
)
from .fix_platform import Platform, ameide

pytestmark = pytest.mark.browser


def test_the_run_forms_offer_no_environment_and_the_eight_databases_to_pick(
    deployed: Platform, prefect_server: Server, page: Page
) -> None:
    open_custom_run(page, prefect_server.ui_url, "migrate/local")
    assert form_labels(page) == [
        "Databases (Optional)",
        "Concurrency (Optional)",
        "Dry run (Optional)",
    ]
    assert open_multi_select(page, "Databases") == list(PLATFORM_DATABASES)

    open_custom_run(page, prefect_server.ui_url, "drift/local")
    # No fleet is declared in the sample tree: the drift form offers no fleet to pick.
    assert form_labels(page) == [
        "Databases (Optional)",
        "Engine (Optional)",
        "Concurrency (Optional)",
    ]
    assert open_multi_select(page, "Databases") == list(PLATFORM_DATABASES)


def test_a_run_started_from_the_ui_completes_and_its_artifact_shows_the_two_databases_picked(
    process_worker: Platform, prefect_server: Server, page: Page
) -> None:
    run = run_deployment_from_ui(page, prefect_server.ui_url, "migrate/local", ["threads", "graph"])

    assert run.state == "Completed"
    assert run.artifact.key == "migrate-local"
    assert run.artifact.description.startswith(
        f"Migrate local on {process_worker.admin.server}, graph and threads only: success"
    )
    seen = {r["database"]: (r["before"], r["after"], r["state"]) for r in run.artifact.rows}
    assert seen == {"graph": ("empty", "3", "migrated"), "threads": ("empty", "4", "migrated")}
    assert process_worker.versions("threads")[-1] == "4"
    assert process_worker.versions("platform") == []  # not picked, not touched


def test_a_dry_run_has_an_artifact_of_its_own_that_says_so(
    platform: Platform, prefect_server: Server, page: Page
) -> None:
    real = ameide("run", "--env", "local", "--db", "threads")
    dry = ameide("run", "--env", "local", "--db", "threads", "--db", "graph", "--dry-run")
    assert real.returncode == dry.returncode == 0, real.stderr + dry.stderr

    page.goto(printed_flow_run(dry.stderr))
    artifact = artifact_table(page)
    assert artifact.key == "migrate-local-dry-run"
    assert artifact.description.startswith(
        f"Dry run of migrate local on {platform.admin.server}, graph and threads only: "
        "nothing changed"
    )
    assert {r["database"]: (r["state"], r["smoke"]) for r in artifact.rows} == {
        "graph": ("would apply", "not run"),
        "threads": ("up to date", "not run"),
    }
    # The latest `migrate-local` is still what the real run did.
    page.goto(f"{prefect_server.ui_url}/artifacts/key/migrate-local")
    expect(page.locator(".artifact-description h3")).to_have_text(
        f"Migrate local on {platform.admin.server}, threads only: success"
    )


def test_the_drift_table_shows_each_fix_whole_and_without_markdown(
    process_worker: Platform, prefect_server: Server, page: Page
) -> None:
    migrated = ameide("run", "--env", "local", "--db", "threads")
    assert migrated.returncode == 0, migrated.stderr
    edited = process_worker.sql_dir / "threads" / "V2__threads_message_attachments_and_triggers.sql"
    edited.write_text(edited.read_text() + "-- edited by hand\n")

    run = run_deployment_from_ui(page, prefect_server.ui_url, "drift/local", ["threads", "graph"])

    assert run.state == "Drifted"
    assert run.artifact.key == "drift-local"
    fixes = {r["database"]: r["fix"] for r in run.artifact.rows}
    assert fixes["graph"] == "apply what is pending: ameide-migrate run --env local --db graph"
    assert "ameide-migrate repair --env local --db threads to realign checksums" in fixes["threads"]
    assert not [c for r in run.artifact.rows for c in r.values() if "`" in c]
    assert run.artifact.cut_off == []


def printed_flow_run(output: str) -> str:
    """The address `run` prints last: `Flow run: <ui address>`."""
    (line,) = [line for line in output.splitlines() if line.startswith("Flow run: ")]
    return line.removeprefix("Flow run: ")
