"""The documentation as its users read it: the site under docs/ builds strictly and offline, the
configuration reference names every setting and ameide.toml key the code reads (and none it
does not), and the README's links and command table agree with the pages."""

from __future__ import annotations

import importlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from pydantic import BaseModel

from ameide_migrate.cli.main import app
from ameide_migrate.config.environments import ApprovalPolicy, Environment
from ameide_migrate.config.fleets import Fleet, Waves
from ameide_migrate.config.lint_rules import LintRules
from ameide_migrate.config.settings import Settings
from ameide_migrate.config.vault_settings import VaultLayout, VaultSettings

from .fix_platform import REPO

BIN = Path(sys.executable).parent
DOCS = REPO / "docs"
README = REPO / "README.md"
# Material's banner about MkDocs 2.0 is printed on every build; it says nothing about this site.
QUIET = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}


def _build(config: Path, site: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "mkdocs"), "build", "--strict", "-f", str(config), "-d", str(site)],
        cwd=config.parent,
        env=QUIET,
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.mark.static
def test_the_site_builds_strictly_with_every_page_and_nothing_from_another_host(
    tmp_path: Path,
) -> None:
    done = _build(REPO / "mkdocs.yml", tmp_path / "site")

    assert done.returncode == 0, done.stdout + done.stderr
    for page in DOCS.glob("*.md"):
        built = tmp_path / "site" / ("" if page.stem == "index" else page.stem) / "index.html"
        assert built.is_file(), f"{page.name} was not built"
    # An air-gapped reader gets the whole site: no font, stylesheet or script from elsewhere.
    for html in (tmp_path / "site").rglob("*.html"):
        loaded = re.findall(
            r'<(?:link|script)[^>]+(?:href|src)="(https?://[^"]+)"', html.read_text()
        )
        assert loaded == [], f"{html.relative_to(tmp_path)} loads {loaded}"
    quick_start = (tmp_path / "site" / "index.html").read_text()
    assert "./dev run" in quick_start, "the README's quick start is not on the site's first page"


@pytest.mark.static
def test_a_broken_link_between_pages_fails_the_build(tmp_path: Path) -> None:
    shutil.copytree(DOCS, tmp_path / "docs")
    shutil.copy(REPO / "mkdocs.yml", tmp_path)
    shutil.copy(README, tmp_path)
    with (tmp_path / "docs" / "fleets.md").open("a") as page:
        page.write("\nSee [the waves](no-such-page.md).\n")

    done = _build(tmp_path / "mkdocs.yml", tmp_path / "site")

    assert done.returncode == 1, done.stdout + done.stderr
    assert "no-such-page.md" in done.stderr


def _reference() -> str:
    return (DOCS / "configuration.md").read_text()


def _documented_variables() -> set[str]:
    return set(re.findall(r"`(AMEIDE_[A-Z_]+)`", _reference()))


def test_every_ameide_variable_the_settings_read_is_in_the_reference() -> None:
    # flyway_variables are Flyway's own FLYWAY_*; vault is read field by field below.
    read = {f"AMEIDE_{name.upper()}" for name in Settings.model_fields} - {
        "AMEIDE_FLYWAY_VARIABLES",
        "AMEIDE_VAULT",
    }
    read |= {f"AMEIDE_VAULT_{name.upper()}" for name in VaultSettings.model_fields}
    # Vault's own spellings, which the settings read beside AMEIDE_VAULT_<FIELD>.
    read |= {"AMEIDE_VAULT_ADDR", "AMEIDE_VAULT_CACERT"}

    assert read - _documented_variables() == set(), "settings missing from docs/configuration.md"
    assert _documented_variables() - read == set(), "docs/configuration.md names no setting"


def _keys_of(section: str) -> set[str]:
    """The keys in the first column of the tables under a heading of the reference, up to the
    next heading of the same or a higher level."""
    text = _reference()
    start = text.index(section)
    level = section.split(" ")[0]
    following = re.search(rf"^#{{1,{len(level)}}} ", text[start + len(section) :], re.MULTILINE)
    body = text[start : start + len(section) + (following.start() if following else len(text))]
    return set(re.findall(r"^\| `([a-z_0-9]+)` \|", body, re.MULTILINE))


def _fields(*models: type[BaseModel]) -> set[str]:
    return {name for model in models for name in model.model_fields} - {"name"}


@pytest.mark.parametrize(
    ("section", "models"),
    [
        ("### `[environments.NAME]`", (Environment, VaultLayout, ApprovalPolicy)),
        ("### `[lint]` and `[environments.NAME.lint]`", (LintRules,)),
        ("### `[fleets.NAME]`", (Fleet, Waves)),
    ],
    ids=["environments", "lint", "fleets"],
)
def test_every_ameide_toml_key_is_in_the_reference(
    section: str, models: tuple[type[BaseModel], ...]
) -> None:
    documented = _keys_of(section)

    assert _fields(*models) - documented == set(), f"keys missing under {section}"
    assert documented - _fields(*models) == set(), f"{section} names keys the file refuses"


def _readme() -> str:
    return README.read_text()


def test_the_readme_is_short_and_links_to_every_page_that_exists() -> None:
    linked = set(re.findall(r"\]\((docs/[^)#]+)", _readme()))
    pages = {f"docs/{page.name}" for page in DOCS.glob("*.md")} - {"docs/index.md"}

    assert len(_readme().splitlines()) < 250
    assert {link for link in linked if not (REPO / link).is_file()} == set()
    assert pages - linked == set(), "pages the README does not link to"


def _command_rows(text: str) -> list[str]:
    rows = [line for line in text.splitlines() if line.startswith("| `")]
    return [row.replace("](docs/", "](") for row in rows if "| command |" not in row]


def test_the_readme_command_table_is_the_command_line_page_and_names_every_verb() -> None:
    rows = _command_rows(_readme().split("## The command line")[1].split("\n## ")[0])
    click_app = typer.main.get_command(app)
    assert isinstance(click_app, typer.core.TyperGroup)
    verbs = set()
    for name, command in click_app.commands.items():
        if isinstance(command, typer.core.TyperGroup):
            verbs |= {f"{name} {sub}" for sub in command.commands}
        else:
            verbs.add(name)

    assert rows == _command_rows((DOCS / "command-line.md").read_text())
    named = {verb for verb in verbs if any(f"`{verb} " in r or f"`{verb}`" in r for r in rows)}
    assert verbs - named == set(), "verbs missing from the command table"


# Dotted names in the pages that are no module: the metrics' file name, the fingerprint's table.
NOT_MODULES = {"ameide_migrate.prom", "ameide_migrate.schema_fingerprint"}


def _named(pattern: str) -> set[str]:
    pages = [README, *sorted(DOCS.glob("*.md"))]
    spans = {span for page in pages for span in re.findall(r"`([^`\n]+)`", page.read_text())}
    return {found for span in spans for found in re.findall(pattern, span)}


def test_every_file_and_module_the_pages_name_exists() -> None:
    """Modules move into their layers: a page that names a path or a dotted name from before the
    move would send a reader nowhere."""
    paths = _named(r"^([\w.-]+/[\w./-]+\.(?:py|java|ya?ml|toml|sh|json))$")
    bases = [REPO, REPO / "src", REPO / "src" / "ameide_migrate"]
    missing = {path for path in paths if not any((base / path).exists() for base in bases)}
    assert missing == set()

    unresolved = set()
    for dotted in _named(r"\b(ameide_migrate(?:\.\w+)+)") - NOT_MODULES:
        parts = dotted.split(".")
        for cut in range(len(parts), 0, -1):
            try:
                found: object = importlib.import_module(".".join(parts[:cut]))
            except ModuleNotFoundError:
                continue
            for attribute in parts[cut:]:
                found = getattr(found, attribute, None)
            if found is None:
                unresolved.add(dotted)
            break
    assert unresolved == set()
