"""A fleet's targets mended and adopted as the tool's own fixes say, on real PostgreSQL, Flyway
and Prefect: `fleet baseline` adopts tenants whose schema was built by hand (a fleet run then
applies only what is above), and a failed target is brought back by running, word for word, the
commands its `next:` printed (`repair --fleet ... --target ...`, then `fleet run --target`)."""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator

import psycopg
import pytest

from ameide_migrate.adapters.postgres.schema_history import read_history
from ameide_migrate.commands.shared import seed_local
from ameide_migrate.config.settings import get_settings

from .fix_platform import Platform, ameide, drop_owners
from .fixes import commands_in
from .test_fleet import TENANT_MIGRATIONS, add_fleet, tenant

WAVES = "canary = 1\ngrowth = 4\nparallel = 2\n"


def history(platform: Platform, target: str) -> list[tuple[str | None, str, bool]] | None:
    """(version, type, success) of each row of the target's history; None without one."""
    rows = read_history(tenant(platform, target), "flyway_schema_history")
    return None if rows is None else [(r.version, r.type, r.success) for r in rows]


def as_owner(platform: Platform, target: str, *statements: str) -> None:
    with psycopg.connect(**tenant(platform, target).conninfo(5), autocommit=True) as conn:  # type: ignore[arg-type]
        for statement in statements:
            conn.execute(statement.encode())


def index_valid(platform: Platform, target: str, index: str) -> bool | None:
    """Whether the index is valid; None when it does not exist."""
    with psycopg.connect(**tenant(platform, target).conninfo(5)) as conn:  # type: ignore[arg-type]
        row = conn.execute(
            "SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass(%s)", (index,)
        ).fetchone()
    return None if row is None else bool(row[0])


@pytest.fixture
def four_tenants(platform: Platform) -> Iterator[Platform]:
    targets = ["a", "b", "c", "d"]
    add_fleet(platform, targets, WAVES)
    seed_local(get_settings(), [f"tenant_{t}" for t in targets])
    yield platform
    drop_owners(platform.admin, {t: tenant(platform, t) for t in targets})


def test_fleet_baseline_adopts_the_tenants_built_by_hand_and_a_fleet_run_applies_what_is_above(
    four_tenants: Platform,
) -> None:
    platform = four_tenants
    # a and b: V1 and V2 applied by another tool; c: a new tenant, empty; d: migrated already.
    for target in ("a", "b"):
        as_owner(
            platform,
            target,
            TENANT_MIGRATIONS["V1__accounts.sql"],
            TENANT_MIGRATIONS["V2__accounts_email.sql"],
        )
    migrated = ameide("fleet", "run", "--env", "local", "--fleet", "tenants", "--target", "d")
    assert migrated.returncode == 0, migrated.stdout + migrated.stderr

    # Unadopted, the canary fails, and its fix names the adoption (ameide() checks that the
    # tool accepts every command it printed).
    refused = ameide("fleet", "run", "--env", "local", "--fleet", "tenants", timeout=600)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "`ameide-migrate baseline --env local --fleet tenants --target a --version VERSION`" in (
        refused.stdout
    )
    assert "`ameide-migrate fleet baseline --env local --fleet tenants --version VERSION`" in (
        refused.stdout
    )

    adopted = ameide(
        "fleet", "baseline", "--env", "local", "--fleet", "tenants", "--version", "2", timeout=600
    )

    assert adopted.returncode == 0, adopted.stdout + adopted.stderr
    rows = {
        line.split("│")[1].strip(): [cell.strip() for cell in line.split("│")[2:4]]
        for line in adopted.stdout.splitlines()
        if line.startswith("│ tenant_")
    }
    assert rows == {
        "tenant_a": ["baselined", "2"],
        "tenant_b": ["baselined", "2"],
        "tenant_c": ["empty", "-"],
        "tenant_d": ["has history", "3"],
    }
    assert adopted.stdout.strip().splitlines()[-1] == (
        "fleet tenants in local, baseline: 2 baselined, 1 empty, 1 has history"
    )
    assert history(platform, "a") == [("2", "BASELINE", True)]
    assert history(platform, "b") == [("2", "BASELINE", True)]
    assert history(platform, "c") is None
    assert [v for v, _, _ in history(platform, "d") or []] == ["1", "2", "3"]

    done = ameide("fleet", "run", "--env", "local", "--fleet", "tenants", timeout=600)

    assert done.returncode == 0, done.stdout + done.stderr
    for target in ("a", "b"):
        assert history(platform, target) == [("2", "BASELINE", True), ("3", "SQL", True)]
        assert index_valid(platform, target, "accounts_email_idx") is True
    assert [v for v, _, _ in history(platform, "c") or []] == ["1", "2", "3"]
    again = ameide("fleet", "baseline", "--env", "local", "--fleet", "tenants", "--target", "a")
    assert again.returncode == 0, again.stdout + again.stderr
    assert re.search(r"tenant_a +│ has history +│ 3 ", again.stdout), again.stdout


def test_a_failed_target_is_brought_back_by_the_commands_its_fix_printed(
    four_tenants: Platform,
) -> None:
    platform = four_tenants
    first = ameide("fleet", "run", "--env", "local", "--fleet", "tenants", timeout=600)
    assert first.returncode == 0, first.stdout + first.stderr
    # b holds two accounts of one name: the unique index of V4, built concurrently, fails there
    # and stays INVALID, and Flyway records the failed migration.
    as_owner(platform, "b", "INSERT INTO accounts VALUES (1, 'same'), (2, 'same')")
    (platform.sql_dir / "tenant" / "V4__accounts_name_key.sql").write_text(
        "CREATE UNIQUE INDEX CONCURRENTLY accounts_name_key ON accounts (name);\n"
    )

    failed = ameide("fleet", "run", "--env", "local", "--fleet", "tenants", timeout=600)

    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert history(platform, "b") == [
        ("1", "SQL", True),
        ("2", "SQL", True),
        ("3", "SQL", True),
        ("4", "SQL", False),
    ]
    # The target's own fix, under its failure (the halt's follows it).
    fix = next(line for line in failed.stdout.splitlines() if line.startswith("  next: Recover:"))
    assert "tenant_b" not in " ".join(commands_in(fix)), fix
    printed = commands_in(fix)
    assert printed == [
        "ameide-migrate repair --env local --fleet tenants --target b",
        "ameide-migrate fleet run --env local --fleet tenants --target b",
    ], fix
    drop = re.search(r"`(DROP INDEX CONCURRENTLY [^`]+)`", fix)
    assert drop is not None, fix

    # The cause fixed, then the fix as printed: the SQL as the owner, each command as given.
    as_owner(platform, "b", "DELETE FROM accounts WHERE id = 2", drop.group(1))
    repaired = ameide(*shlex.split(printed[0])[1:], timeout=600)
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    assert re.search(r"tenant_b +│ repaired +│ - +│ removed failed 4", repaired.stdout), (
        repaired.stdout
    )
    assert history(platform, "b") == [("1", "SQL", True), ("2", "SQL", True), ("3", "SQL", True)]
    rerun = ameide(*shlex.split(printed[1])[1:], timeout=600)

    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert [v for v, _, ok in history(platform, "b") or [] if ok] == ["1", "2", "3", "4"]
    assert index_valid(platform, "b", "accounts_name_key") is True
    nothing = ameide("fleet", "repair", "--env", "local", "--fleet", "tenants")
    assert nothing.returncode == 0, nothing.stdout + nothing.stderr
    assert nothing.stdout.strip().splitlines()[-1] == (
        "fleet tenants in local, repair: 4 nothing to repair"
    )
