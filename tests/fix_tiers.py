"""The suite's tiers, each owned by the fixture plugin of the system it needs.

Every fixture plugin registers its marker with `register` and, as each test is collected, marks
it when it uses one of the plugin's fixtures (`mark_if_uses`): fix_pg marks `postgres`,
fix_flyway `flyway`, fix_prefect `prefect`, fix_vault `vault`, fix_docker `docker`, fix_k8s
`k8s`, fix_helm `helm`, fix_actionlint `actionlint`, fix_browser `browser`, fix_user `user`. A
test that starts one of those systems without its fixture says so with the same marker.

Then this plugin marks `fast` every test that holds none of them, nor `slow` or `static`: it needs
no PostgreSQL, no Prefect server, no JVM, no Docker and no cluster, and `./dev test -m fast` runs
it anywhere in seconds. Tools built from source once (helm, actionlint) are tiers of their own,
not servers, so their tests stay out of `fast` and a cold machine's fast run builds nothing.
"""

from __future__ import annotations

import pytest

_NOT_FAST = pytest.StashKey[set[str]]()
# Markers of the suite that keep a test out of the fast tier whatever its fixtures.
_ALWAYS_NOT_FAST = frozenset({"slow", "static"})


def register(config: pytest.Config, marker: str, description: str) -> None:
    """Declare a fixture plugin's marker: registered for --strict-markers, and not fast."""
    config.addinivalue_line("markers", f"{marker}: {description}")
    config.stash.setdefault(_NOT_FAST, set()).add(marker)


def mark_if_uses(item: pytest.Item, fixtures: frozenset[str], marker: str) -> None:
    """Mark `item` with `marker` when it uses one of `fixtures`, directly or through another."""
    if not fixtures.isdisjoint(getattr(item, "fixturenames", ())):
        item.add_marker(marker)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "fast: needs no server, no JVM, no Docker and no cluster (derived: see tests/fix_tiers.py)",
    )
    config.addinivalue_line(
        "markers", "static: the project's own static checks (ruff, mypy), not a behaviour"
    )


# Before the `-m` selection (a plain hook of pytest's own) and after every plugin's
# `pytest_itemcollected` has marked what its fixtures need.
@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    not_fast = config.stash.get(_NOT_FAST, set()) | _ALWAYS_NOT_FAST
    for item in items:
        if item.get_closest_marker("fast") is not None:
            raise pytest.UsageError(
                f"{item.nodeid}: `fast` is derived from the fixtures a test uses; "
                "remove the marker (see tests/fix_tiers.py)"
            )
        if not any(item.get_closest_marker(marker) for marker in not_fast):
            item.add_marker(pytest.mark.fast)
