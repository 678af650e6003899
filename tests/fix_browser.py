"""A real browser on the Prefect UI: Debian's chromium driven by Playwright for Python.

Playwright's own browser download cannot be reached here, so it drives the system's chromium
(`./dev test` installs it). The helpers do what a person does in the UI, click for click, and read
what the page shows; they take a Playwright `Page` and the UI's address and need no fixture, so a
tier that starts its own server (`local up`) can call them too.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import Locator, Page, ViewportSize, expect, sync_playwright

from ameide_migrate.adapters.ports import free_port
from tests.fix_tiers import mark_if_uses, register

CHROMIUM = Path("/usr/bin/chromium")
VIEWPORT: ViewportSize = {"width": 1920, "height": 1080}
"""A desktop screen; the artifact tables are laid out to show whole at this width."""

_FINAL_BADGE = ", ".join(
    f".page-heading-flow-run__meta .state-badge.state--{kind}"
    for kind in ("completed", "failed", "crashed", "cancelled")
)

_FIXTURES = frozenset({"browser", "page"})


def pytest_configure(config: pytest.Config) -> None:
    register(
        config,
        "browser",
        "drives the Prefect UI in Debian's chromium with Playwright, as a person does",
    )


def pytest_itemcollected(item: pytest.Item) -> None:
    mark_if_uses(item, _FIXTURES, "browser")


@pytest.fixture(scope="session")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Debian's chromium, headless, for the whole session; the address of its DevTools endpoint.

    Playwright connects to it per test (`page`): Playwright's sync API keeps its event loop
    running in the calling thread while it is connected, and Prefect, seeing a running loop,
    would turn every later in-process flow call of the session into an unawaited coroutine.
    """
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run ./dev test, which installs Debian's chromium")
    port = free_port()
    profile = tmp_path_factory.mktemp("chromium")
    with (profile / "chromium.log").open("wb") as log:
        process = subprocess.Popen(
            [
                str(CHROMIUM),
                "--headless",
                f"--remote-debugging-port={port}",
                "--remote-debugging-address=127.0.0.1",
                f"--user-data-dir={profile}",
                "--no-first-run",
                # A desktop's mouse, as Playwright's own launch declares it: headless, chromium
                # declares none, and the UI then shows phone-style native selects.
                "--blink-settings=primaryHoverType=2,availableHoverTypes=2,"
                "primaryPointerType=4,availablePointerTypes=4",
                # Chromium's sandbox refuses to run as root.
                *(["--no-sandbox"] if os.geteuid() == 0 else []),
                "about:blank",
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while not _answers(f"{endpoint}/json/version"):
            log_text = (profile / "chromium.log").read_text(errors="replace")
            assert process.poll() is None, f"chromium exited: {log_text[-2000:]}"
            assert time.monotonic() < deadline, f"chromium did not listen: {log_text[-2000:]}"
            time.sleep(0.2)
        yield endpoint
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture
def page(browser: str, tmp_path: Path) -> Iterator[Page]:
    """A fresh browser tab, for the test's duration; what it showed last is kept as
    `last-page.png` in the test's folder.

    While a test holds it, Playwright's event loop runs in the test's thread: start flows the way
    a person does (the command line, the UI), not in-process.
    """
    with sync_playwright() as playwright:
        connected = playwright.chromium.connect_over_cdp(browser)
        context = connected.new_context(viewport=VIEWPORT)
        tab = context.new_page()
        try:
            yield tab
        finally:
            if not tab.is_closed():
                tab.screenshot(path=str(tmp_path / "last-page.png"), full_page=True)
            context.close()


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310 (a local address)
            return bool(response.status == 200)
    except OSError:
        return False


@dataclass(frozen=True)
class ArtifactSeen:
    """A table artifact as its page in the UI shows it."""

    key: str
    description: str
    rows: list[dict[str, str]]
    """Each row by column; a cell's lines joined by single spaces."""
    cut_off: list[str]
    """The cells whose text the page does not show whole (cut at the cell's or table's edge)."""


@dataclass(frozen=True)
class RunSeen:
    """A flow run started from the UI, as the UI shows it once it ended."""

    url: str
    state: str
    """The name on the run's state badge: Completed, Failed, Drifted, Crashed, Cancelled."""
    artifact: ArtifactSeen


def open_custom_run(page: Page, ui_url: str, deployment_name: str) -> None:
    """From the Deployments page to the deployment's custom run form (`flow/deployment`)."""
    flow_name, name = deployment_name.split("/", 1)
    page.goto(f"{ui_url.rstrip('/')}/deployments")
    row = (
        page.locator("tbody tr")
        .filter(has=page.get_by_role("link", name=flow_name, exact=True))
        .filter(has=page.get_by_role("link", name=name, exact=True))
    )
    row.get_by_role("link", name=name, exact=True).click()
    page.get_by_role("button", name="Run", exact=True).click()
    page.get_by_role("button", name="Custom run").click()
    expect(page.get_by_role("button", name="Submit")).to_be_visible()


def form_labels(page: Page) -> list[str]:
    """The labels of the run form's fields, in order, as the form shows them."""
    labels = page.locator(".schema-form-property__label")
    expect(labels.first).to_be_visible()
    return labels.all_inner_texts()


def open_multi_select(page: Page, title: str) -> list[str]:
    """Open the form's multi-select titled `title`; the options it offers."""
    # The chevron: a click on the control itself opens the list and closes it again at once
    # under an automated mouse.
    _field(page, title).locator(".p-select-button__icon").click()
    listbox = page.get_by_role("listbox")
    expect(listbox).to_be_visible()
    return listbox.get_by_role("option").all_inner_texts()


def _field(page: Page, title: str) -> Locator:
    return page.locator(".schema-form-property").filter(
        has=page.locator(".schema-form-property__label", has_text=re.compile(rf"^{title}\b"))
    )


def pick(page: Page, title: str, choices: Sequence[str]) -> None:
    """Tick `choices` in the form's multi-select titled `title` and close it."""
    open_multi_select(page, title)
    listbox = page.get_by_role("listbox")
    for choice in choices:
        listbox.get_by_role("option", name=choice, exact=True).click()
    # A click beside the list closes it, as a person's does.
    _field(page, title).locator(".schema-form-property__description").click()
    expect(listbox).to_be_hidden()
    for choice in choices:
        expect(_field(page, title).locator(".p-select-button")).to_contain_text(choice)


def wait_for_final_state(page: Page, timeout: float) -> str:
    """On a flow run's page: the name of its state once it is final."""
    badge = page.locator(_FINAL_BADGE)
    expect(badge).to_be_visible(timeout=timeout * 1000)
    return badge.inner_text().strip()


def artifact_table(page: Page) -> ArtifactSeen:
    """On a flow run's page: open its Artifacts tab, then its table artifact; what that shows."""
    page.locator(".p-tab", has_text=re.compile(r"^\s*Artifacts\s*$")).click()
    card = page.locator(".artifact-card").filter(
        has=page.locator(".artifact-card__subheader", has_text=re.compile(r"^\s*table\s*$", re.I))
    )
    expect(card.first).to_be_visible()
    key = card.first.locator(".artifact-card__title").inner_text().strip()
    card.first.click()
    table = page.locator(".artifact-data-table")
    expect(table.locator("tbody tr").first).to_be_visible()
    columns = [_seen(h) for h in table.locator("thead th").all_inner_texts()]
    rows = [
        dict(zip(columns, (_seen(c) for c in row.locator("td").all_inner_texts()), strict=True))
        for row in table.locator("tbody tr").all()
    ]
    count = int(table.locator(".artifact-data-table__count").inner_text())
    assert count == len(rows), f"the artifact {key} has {count} rows, the page shows {len(rows)}"
    description = _seen(page.locator(".artifact-description").inner_text())
    cut_off = table.locator(".p-table").evaluate(_CUT_OFF_CELLS)
    return ArtifactSeen(key, description, rows, [_seen(c) for c in cut_off])


_CUT_OFF_CELLS = """frame => {
    const edge = frame.getBoundingClientRect().right;
    return [...frame.querySelectorAll("tbody td")]
        .filter(td =>
            td.scrollWidth > td.clientWidth || td.getBoundingClientRect().right > edge + 1)
        .map(td => td.innerText);
}"""


def run_deployment_from_ui(
    page: Page, ui_url: str, deployment_name: str, databases: Sequence[str], timeout: float = 240
) -> RunSeen:
    """Start a custom run of `deployment_name` (`migrate/local`) from the UI at `ui_url` with
    `databases` ticked, follow it to its run page until it ends (at most `timeout` seconds), and
    read its table artifact there."""
    open_custom_run(page, ui_url, deployment_name)
    pick(page, "Databases", databases)
    for attempt in range(3):
        with page.expect_response(re.compile(r"/create_flow_run$")) as created:
            page.get_by_role("button", name="Submit").click()
        answer = created.value.json()
        # 503: the server's SQLite database was busy, which Prefect's own client retries; the
        # UI shows an error and keeps the form, and a person submits it again.
        if created.value.status != 503 or attempt == 2:
            break
        page.wait_for_timeout(2000)
    assert "id" in answer, f"the server refused the run: {answer}"
    flow_run_id = answer["id"]
    # The UI mounts its toasts twice, one over the other; a person clicks the one on top.
    page.get_by_role("button", name="View run").last.click()
    page.wait_for_url(re.compile(rf"/runs/flow-run/{flow_run_id}"))
    url = page.url
    state = wait_for_final_state(page, timeout)
    return RunSeen(url, state, artifact_table(page))


def _seen(text: str) -> str:
    """Text as a person reads it: the lines of a cell one after the other."""
    return " ".join(text.split())
