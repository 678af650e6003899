"""Fleets: the same migrations on many tenant databases, in waves with a canary and a halt.

Fast: how waves grow, when they halt, and the mistakes a fleet's declaration can hold. With a real
PostgreSQL, Flyway and Prefect server: 200 tenant databases through the command line, a canary
whose migration fails halting the fleet before its second wave, and a rerun after the fix
bringing every target up, as `fleet status` then shows.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from rich.console import Console

from ameide_migrate import terminal
from ameide_migrate.adapters import secret_sources
from ameide_migrate.adapters import vault as vault_api
from ameide_migrate.adapters.postgres.connection import Credentials, connect
from ameide_migrate.adapters.postgres.schema_history import read_history
from ameide_migrate.adapters.prefect import following
from ameide_migrate.commands.fleet import FleetTarget, check_fleet, fleet_run
from ameide_migrate.commands.shared import seed_local
from ameide_migrate.commands.trigger import follow, trigger
from ameide_migrate.config import environments
from ameide_migrate.config.fleets import Fleet, Waves, targets_of_file
from ameide_migrate.config.settings import Settings, get_settings
from ameide_migrate.core import interruption
from ameide_migrate.core.errors import (
    ApprovedFilesChanged,
    DatabaseRefusedConnection,
    DatabaseUnreachable,
    EnvironmentsFileInvalid,
    FleetInvalid,
)
from ameide_migrate.core.history import HistoryRow
from ameide_migrate.core.indexes import NamedIndex
from ameide_migrate.core.outcomes import DatabaseOutcome, OutcomeState
from ameide_migrate.services import fleet, plan
from ameide_migrate.services.credential_gate import Unreachable
from ameide_migrate.services.fleet import FleetReport

from .fix_platform import REPO, Platform, ameide, drop_owners, sleeping, wait_for
from .fix_vault import Vault
from .fix_worker import start_worker, stop_worker
from .test_approval import artifact, paused_run, protect

TARGETS = [f"t{n:03d}" for n in range(200)]


def outcome(
    state: OutcomeState, seconds: float = 0.1, database: str = "tenant_t000"
) -> DatabaseOutcome:
    return DatabaseOutcome(database, state, None, "3", "3", 3, seconds)


def test_waves_start_with_the_canary_and_grow_by_their_factor() -> None:
    assert [len(w) for w in fleet.plan_waves(TARGETS, Waves())] == [1, 4, 16, 64, 115]
    grown = fleet.plan_waves(TARGETS, Waves(canary=2, growth=3, max_wave=50))
    assert [len(w) for w in grown] == [2, 6, 18, 50, 50, 50, 24]
    assert [t for w in grown for t in w] == TARGETS
    named = fleet.plan_waves(TARGETS, Waves(canary_targets=("t150", "t007")))
    assert named[0] == ["t150", "t007"]
    assert "t150" not in named[1]
    with pytest.raises(FleetInvalid, match="canary_targets t999 are no targets"):
        fleet.plan_waves(TARGETS, Waves(canary_targets=("t999",)))


def test_only_targets_with_work_pending_go_in_waves_and_the_canary_is_one_of_them() -> None:
    pending = TARGETS[100:]
    assert fleet.plan_pending_waves(TARGETS, [], Waves()) == []
    waves = fleet.plan_pending_waves(TARGETS, pending, Waves())
    assert waves[0] == ["t100"]
    assert [t for w in waves for t in w] == pending
    named = Waves(canary_targets=("t007", "t150"))
    assert fleet.plan_pending_waves(TARGETS, pending, named)[0] == ["t150"]
    up_to_date_canary = Waves(canary_targets=("t007",), canary=2)
    assert fleet.plan_pending_waves(TARGETS, pending, up_to_date_canary)[0] == ["t100", "t101"]
    with pytest.raises(FleetInvalid, match="canary_targets t999 are no targets"):
        fleet.plan_pending_waves(TARGETS, pending, Waves(canary_targets=("t999",)))


def test_a_wave_halts_the_fleet_on_failures_a_failure_rate_or_its_p95() -> None:
    ok = outcome(OutcomeState.MIGRATED)
    failed = outcome(OutcomeState.FAILED, database="tenant_t009")
    assert fleet.halt_reason([ok, ok], Waves()) is None
    assert fleet.halt_reason([ok, failed], Waves()) == (
        "halt_failures = 0: 1 of 2 target(s) failed: tenant_t009"
    )
    lenient = Waves(halt_failures=5, halt_failure_percent=20)
    assert fleet.halt_reason([ok] * 9 + [failed], lenient) is None
    assert fleet.halt_reason([ok] * 3 + [failed] * 2, lenient) == (
        "halt_failure_percent = 20: 40 % of the wave failed (2 of 5): tenant_t009, tenant_t009"
    )
    slow = [outcome(OutcomeState.MIGRATED, s, f"tenant_t{s:03d}") for s in (1, 12, 1, 30)]
    assert fleet.halt_reason(slow, Waves(halt_p95_seconds=10)) == (
        "halt_p95_seconds = 10: the wave's p95 duration was 30.00s (nearest rank of 4 "
        "target(s)); slower than 10s: tenant_t030 30.00s, tenant_t012 12.00s"
    )


def test_a_waves_p95_is_by_nearest_rank_never_above_its_slowest_target() -> None:
    durations = [2.56, 2.56, 2.57, 5.56]
    assert fleet.p95_nearest_rank(durations) == 5.56
    wave = [outcome(OutcomeState.MIGRATED, s, f"tenant_t{i}") for i, s in enumerate(durations)]
    # Interpolated, that wave read 7.8 s: above a limit of 6 no target came near.
    assert fleet.halt_reason(wave, Waves(halt_p95_seconds=6)) is None
    assert fleet.p95_nearest_rank([float(s) for s in range(1, 101)]) == 95
    assert fleet.p95_nearest_rank([3.0]) == 3.0


def test_a_halt_names_what_to_fix_and_never_failed_targets_when_none_failed() -> None:
    slow = FleetReport("local", "tenants")
    slow.waves = [[outcome(OutcomeState.MIGRATED, s, f"tenant_t{s}") for s in (1, 9)]]
    slow.halted = fleet.halt_reason(slow.waves[0], Waves(halt_p95_seconds=5))
    slow.not_started = ["tenant_t7"]
    summary = slow.summary()
    assert summary.splitlines()[:2] == [
        "fleet tenants in local: 2 migrated in 1 wave(s), 1 not started",
        "halted after wave 1: halt_p95_seconds = 5: the wave's p95 duration was 9.00s (nearest "
        "rank of 2 target(s)); slower than 5s: tenant_t9 9.00s",
    ]
    assert "No target failed" in summary
    assert "failed targets" not in summary
    assert "`ameide-migrate fleet run --env local --fleet tenants`" in summary
    printed = Console(record=True, width=200)
    terminal.print_fleet(slow, printed)
    shown = printed.export_text()
    assert "failed targets" not in shown
    assert "No target failed" in shown

    broken = FleetReport("local", "tenants")
    broken.waves = [[outcome(OutcomeState.FAILED, 1, "tenant_t1")]]
    broken.halted = fleet.halt_reason(broken.waves[0], Waves())
    assert "halt_failures = 0: 1 of 1 target(s) failed: tenant_t1" in broken.summary()
    assert "Fix the failed targets as each says" in broken.summary()


def test_targets_unreachable_at_the_gate_are_quarantined_up_to_the_fleets_limit() -> None:
    refused = fleet.Quarantined(
        "tenant_t1",
        "database tenant_t1 at h:5432 refused tenant_t1_owner: permission denied",
        'run `GRANT CONNECT ON DATABASE "tenant_t1" TO "tenant_t1_owner";` as an administrator, '
        "then `ameide-migrate fleet run --env local --fleet tenants --target t1`",
    )
    down = fleet.Quarantined("tenant_t2", "database tenant_t2 is unreachable", "bring it up")
    declared = Fleet(name="tenants", template="tenant", targets=("t1", "t2"))
    assert declared.target_of("tenant_t1") == "t1"
    turned_away: dict[str, Unreachable] = {
        "tenant_t1": DatabaseRefusedConnection(refused.reason, fix="let it in"),
        "tenant_t2": DatabaseUnreachable("database tenant_t2 is unreachable"),
    }
    assert fleet.quarantined(declared, "local", turned_away) == [
        fleet.Quarantined(
            "tenant_t1",
            refused.reason,
            "let it in, then `ameide-migrate fleet run --env local --fleet tenants --target t1`",
        ),
        fleet.Quarantined(
            "tenant_t2",
            "database tenant_t2 is unreachable",
            "bring its server up, then "
            "`ameide-migrate fleet run --env local --fleet tenants --target t2`",
        ),
    ]
    assert Waves().quarantine_max == 1
    assert fleet.quarantine_reason([refused], Waves()) is None
    assert fleet.quarantine_reason([refused, down], Waves()) == (
        "quarantine_max = 1: 2 target(s) unreachable at the gate: tenant_t1, tenant_t2; no "
        "target was touched"
    )

    went_on = FleetReport("local", "tenants", quarantined=[refused])
    went_on.waves = [[outcome(OutcomeState.MIGRATED, 1, "tenant_t0")]]
    assert not went_on.ok
    assert went_on.summary().splitlines() == [
        "fleet tenants in local: 1 migrated in 1 wave(s), 1 quarantined",
        f"- tenant_t1 quarantined: {refused.reason}; fix: {refused.fix}",
    ]
    assert [r["state"] for r in went_on.rows()] == ["migrated", "quarantined"]

    stopped = FleetReport("local", "tenants", quarantined=[refused, down])
    stopped.halted = fleet.quarantine_reason(stopped.quarantined, Waves())
    stopped.not_started = ["tenant_t0"]
    summary = stopped.summary()
    assert "halted before its first wave: quarantine_max = 1" in summary
    assert "Let the unreachable targets in as each fix says" in summary
    assert "failed targets" not in summary
    assert "slow" not in summary


def test_fleet_status_counts_failed_quarantined_not_started_and_behind_apart() -> None:
    def at(last: str, *, up_to_date: bool = False, history: bool = True) -> str:
        return fleet.standing(up_to_date=up_to_date, has_history=history, last_outcome=last)

    assert at("failed", up_to_date=True) == "up to date"
    assert at("failed") == "failed"
    assert at("not started", history=False) == "not started"
    assert at("quarantined") == "quarantined"
    assert at("migrated") == "behind"
    assert at("never run", history=False) == "no history"
    shown = Console(record=True, width=200)
    targets = [
        FleetTarget(f"tenant_t{i}", "1", "2", state, "", "", "127.0.0.1:5432")
        for i, state in enumerate(["behind", "not started", "failed", "behind", "unreachable"])
    ]
    terminal.print_fleet_status("tenants", targets, shown)
    text = shown.export_text()
    assert text.startswith("Fleet tenants on 127.0.0.1:5432")
    assert text.strip().splitlines()[-1] == ("1 failed, 1 not started, 2 behind, 1 unreachable")


def test_a_fleet_takes_its_targets_one_way_with_names_a_database_can_have(
    tmp_path: Path,
) -> None:
    with pytest.raises(ValueError, match="give its targets one way"):
        Fleet(name="tenants", template="tenant", targets=("a",), targets_file="x.txt")
    with pytest.raises(ValueError, match="targets_query needs registry"):
        Fleet(name="tenants", template="tenant", targets_query="SELECT 1")
    listed = tmp_path / "tenants.txt"
    listed.write_text("# active tenants\nacme\n\nglobex  # since 2024\n")
    declared = Fleet(name="tenants", template="tenant", targets_file="tenants.txt")
    assert targets_of_file(declared, listed) == ["acme", "globex"]
    # A target listed twice is a mistake in the list (a tenant pasted twice, or two tenants
    # given one slug): named, not tidied away.
    listed.write_text("acme\nglobex\nacme\ninitech\nglobex\n")
    with pytest.raises(FleetInvalid, match=r"acme, globex named more than once \(.*tenants.txt\)"):
        targets_of_file(declared, listed)
    listed.write_text("acme\ndrop table x;--\n")
    with pytest.raises(FleetInvalid, match=r"target 'drop table x;--' \(.*tenants.txt\)"):
        targets_of_file(declared, listed)


def fleet_tree(root: Path, fleet_table: str) -> None:
    """A tree with the platform's `platform` database and a `tenant` template."""
    (root / "platform").mkdir(parents=True)
    (root / "platform" / "V1__init.sql").write_text("CREATE TABLE tenants (slug text);\n")
    (root / "tenant").mkdir()
    (root / "tenant" / "V1__accounts.sql").write_text("CREATE TABLE accounts (id bigint);\n")
    (root / "ameide.toml").write_text(
        '[environments.local]\nlocal = true\n\n[fleets.tenants]\ntemplate = "tenant"\n'
        + fleet_table
    )


def test_the_template_is_no_database_of_its_own_and_mistakes_are_named(tmp_path: Path) -> None:
    fleet_tree(tmp_path, 'targets = ["acme"]\n')
    settings = Settings(sql_dir=tmp_path)

    assert list(environments.catalog("local", settings).databases) == ["platform"]
    assert environments.fleet("tenants", settings).database_of("acme") == "tenant_acme"
    with pytest.raises(FleetInvalid, match=r"unknown fleet 'nosuch': .* declares tenants"):
        environments.fleet("nosuch", settings)
    fleet_tree(tmp_path / "other", 'targets = ["acme"]\n[fleets.tenants.waves]\ncanry = 1\n')
    with pytest.raises(EnvironmentsFileInvalid, match=r"fleets\.tenants: unknown key waves\.canry"):
        environments.fleets(Settings(sql_dir=tmp_path / "other"))


def test_a_wave_splits_into_shards_of_near_equal_size_and_their_ledger_round_trips() -> None:
    wave = TARGETS[:10]
    assert fleet.shards_of(wave, 3) == [wave[:4], wave[4:7], wave[7:]]
    assert fleet.shards_of(wave[:2], 5) == [wave[:1], wave[1:2]]  # never an empty shard
    assert fleet.shards_of(wave, 1) == [wave]

    failed = DatabaseOutcome(
        "tenant_t007", OutcomeState.FAILED, "2", "2", "3", 0, 1.25, 'relation "x" ünknown', "fix"
    )
    done = [outcome(OutcomeState.MIGRATED), failed]
    rows = fleet.shard_rows(done)
    # The API hands a table artifact's cells back as strings.
    as_stored = [{k: "" if v is None else str(v) for k, v in row.items()} for row in rows]
    assert fleet.outcomes_of_rows(as_stored) == [
        DatabaseOutcome("tenant_t000", OutcomeState.MIGRATED, None, "3", "3", 3, 0.1),
        failed,
    ]


def test_a_target_its_shard_run_never_reported_is_what_its_history_says(tmp_path: Path) -> None:
    """A shard run cancelled or crashed leaves no ledger: its targets are read back from their
    histories, what it committed counted, never reported as not applied."""
    fleet_tree(tmp_path, 'targets = ["a", "b", "c", "d"]\n')
    for name, text in TENANT_MIGRATIONS.items():
        (tmp_path / "tenant" / name).write_text(text)
    settings = Settings(sql_dir=tmp_path)
    template = environments.fleet_template(
        "local", environments.fleet("tenants", settings), settings
    )
    rows = [
        HistoryRow(n, str(m.version), m.description, "SQL", m.script, m.checksum, True)
        for n, m in enumerate(template.migrations, start=1)
    ]
    why = "its shard run s1 ended Crashed"

    done = fleet.read_back("tenant_a", template, None, rows, why, 4.0)
    midway = fleet.read_back("tenant_b", template, rows[:1], rows[:2], why, 4.0)
    untouched = fleet.read_back("tenant_c", template, None, None, why, 4.0)
    unread = fleet.read_back("tenant_d", template, rows[:1], "its history: refused", why, 4.0)

    assert (done.state, done.before, done.after, done.applied) == (
        OutcomeState.MIGRATED, None, "3", 3
    )  # fmt: skip
    assert done.message == f"{why}; its history shows it at 3, the latest"
    assert (midway.state, midway.before, midway.after, midway.applied) == (
        OutcomeState.FAILED, "1", "2", 1
    )  # fmt: skip
    assert "shows it at 2 of 3: 1 migration(s) applied, the rest not" in midway.message
    assert (untouched.state, untouched.after, untouched.applied) == (OutcomeState.FAILED, None, 0)
    assert "shows it at empty of 3: 0 migration(s) applied" in untouched.message
    assert (unread.state, unread.before, unread.after) == (OutcomeState.FAILED, "1", None)
    assert unread.message == f"{why}; its history: refused"
    # Prefect's words on a crash come after where the target stands: a ledger row is cut short.
    said = "Flow run infrastructure exited with non-zero status code -9. " * 5
    crashed = fleet.read_back("tenant_b", template, rows[:1], rows[:2], why, 4.0, said)
    assert crashed.message.startswith(
        f"{why}; its history shows it at 2 of 3: 1 migration(s) applied, the rest not; "
        "the run's state said: Flow run infrastructure exited"
    ), crashed.message


def test_a_canary_whose_undo_failed_leaves_its_place_to_a_pending_target(tmp_path: Path) -> None:
    """Set apart after its undo failed, an interrupted canary is no wave's: the waves are planned
    again on the pending targets, the first of them the canary, not the next, larger wave."""
    fleet_tree(tmp_path, "targets = [" + ", ".join(f'"{t}"' for t in TARGETS[:10]) + "]\n")
    for name, text in TENANT_MIGRATIONS.items():
        (tmp_path / "tenant" / name).write_text(text)
    settings = Settings(sql_dir=tmp_path)
    declared = environments.fleet("tenants", settings)
    template = environments.fleet_template("local", declared, settings)
    rows = [
        HistoryRow(n, str(m.version), m.description, "SQL", m.script, m.checksum, True)
        for n, m in enumerate(template.migrations[:2], start=1)
    ]
    build = interruption.index_builds(template.migrations[2].text())[0]
    built = NamedIndex("public", "accounts_email_idx", "accounts", False)
    cut_short = interruption.Interrupted("tenant_t000", template.migrations[2], ((build, built),))
    names = TARGETS[:10]
    histories = {declared.database_of(t): rows for t in names}

    def sort(undo_failed: dict[str, str]) -> fleet.Sorted:
        return fleet.sort_targets(
            declared,
            "local",
            names,
            template,
            histories,
            up_to_date={"tenant_t009"},
            set_apart={"tenant_t000": cut_short} if undo_failed else {},
            unreachable={"tenant_t008"},
            undo_failed=undo_failed,
        )

    assert sort({}).waves == [["t000"], names[1:5], names[5:8]]
    failed = sort({"tenant_t000": "permission denied to drop index accounts_email_idx"})
    assert failed.waves == [["t001"], names[2:6], names[6:8]]
    assert [o.database for o in failed.up_to_date] == ["tenant_t009"]
    [apart] = failed.interrupted
    assert (apart.database, apart.state, apart.before) == (
        "tenant_t000", OutcomeState.INTERRUPTED, "2"
    )  # fmt: skip
    assert apart.message.endswith(
        "Undoing it failed: permission denied to drop index accounts_email_idx"
    )
    assert "V3__accounts_email_index.sql was interrupted" in apart.message
    assert "--fleet tenants --target t000 --undo-interrupted" in apart.recovery


def test_a_shard_pins_its_template_only_when_its_files_are_those_approved(tmp_path: Path) -> None:
    fleet_tree(tmp_path / "tree", 'targets = ["a"]\n')
    settings = Settings(sql_dir=tmp_path / "tree")
    declared = environments.fleet("tenants", settings)
    template = environments.fleet_template("local", declared, settings)
    approved = {m.script: m.sha256 for m in template.migrations}
    pinned = plan.pinned_as_approved(declared, "local", template, approved, tmp_path / "one")
    assert pinned.directory.is_relative_to(tmp_path / "one")
    assert {m.script: m.sha256 for m in pinned.migrations} == approved

    (template.directory / "V1__accounts.sql").write_text("CREATE TABLE accounts (id int);\n")
    (template.directory / "V2__more.sql").write_text("SELECT 1;\n")
    with pytest.raises(ApprovedFilesChanged) as refused:
        plan.pinned_as_approved(declared, "local", template, approved, tmp_path / "two")
    assert str(refused.value) == (
        "a shard of fleet tenants in local: the files of its template tenant are not those the "
        "fleet's plan was approved on (edited V1__accounts.sql; added V2__more.sql): the shard "
        "migrated nothing. Run the fleet again and approve the plan of the files as they are now"
    )


def test_a_fleet_keeps_its_targets_secrets_where_its_vault_path_says() -> None:
    declared = Fleet(
        name="tenants", template="tenant", targets=("acme",), vault_path="{environment}/t/{target}"
    )
    assert declared.vault_path_of("prod", "tenant_acme") == "prod/t/acme"
    assert declared.vault_path_of("prod", "platform") is None
    with pytest.raises(ValueError, match=r"names no \{target\}"):
        Fleet(name="tenants", template="tenant", targets=("a",), vault_path="{environment}/all")
    with pytest.raises(ValueError, match=r"names 'tenant': it may name \{environment\}"):
        Fleet(name="tenants", template="tenant", targets=("a",), vault_path="{tenant}/{target}")
    with pytest.raises(ValueError, match=r"makes paths such as 'staging//acme'"):
        Fleet(
            name="tenants", template="tenant", targets=("a",), vault_path="{environment}//{target}"
        )
    with pytest.raises(ValueError, match=r"makes paths such as '/staging/acme'"):
        Fleet(
            name="tenants", template="tenant", targets=("a",), vault_path="/{environment}/{target}"
        )


def test_a_fleet_run_checks_template_registry_targets_and_secret_paths_before_anything(
    tmp_path: Path,
) -> None:
    """What `fleet run` checks before it makes a database, a role, a secret or a flow run (the
    test with a server below proves nothing is made)."""
    fleet_tree(tmp_path, 'targets = ["acme", "globex"]\n')
    toml = tmp_path / "ameide.toml"
    base = toml.read_text()

    def checked(table: str, targets: list[str] | None = None) -> list[str]:
        toml.write_text(base.replace('targets = ["acme", "globex"]\n', table))
        return check_fleet(Settings(sql_dir=tmp_path), "local", "tenants", targets)

    assert checked('targets = ["acme", "globex"]\n') == ["acme", "globex"]
    assert checked('targets = ["acme", "globex"]\n', ["globex"]) == ["globex"]
    with pytest.raises(FleetInvalid, match=r"initech are no targets of it; .* begin acme, globex"):
        checked('targets = ["acme", "globex"]\n', ["initech"])
    with pytest.raises(FleetInvalid, match=r"acme named more than once \(its targets list\)"):
        checked('targets = ["acme", "globex", "acme"]\n')
    toml.write_text(base.replace('template = "tenant"', 'template = "tenants"'))
    with pytest.raises(FleetInvalid, match=r"template 'tenants' is no folder .* platform, tenant"):
        check_fleet(Settings(sql_dir=tmp_path), "local", "tenants")
    with pytest.raises(FleetInvalid, match=r"template 'tenants' is no folder"):  # no run started
        trigger(Settings(sql_dir=tmp_path), "local", flow="fleet", fleet_name="tenants")
    with pytest.raises(
        FleetInvalid, match=r"registry 'billing' is no database of local .*platform"
    ):
        checked('registry = "billing"\ntargets_query = "SELECT slug FROM tenants"\n')
    with pytest.raises(FleetInvalid, match=r"registry 'tenant' is no database of local"):
        checked('registry = "tenant"\ntargets_query = "SELECT slug FROM tenants"\n')
    # Two fleets of templates that begin alike: `tenant`'s vault_path would claim the targets
    # of `tenant_eu` (databases tenant_eu_<target>), whose secrets live elsewhere.
    (tmp_path / "tenant_eu").mkdir()
    (tmp_path / "tenant_eu" / "V1__accounts.sql").write_text("CREATE TABLE accounts (id int);\n")
    toml.write_text(
        base.replace(
            'targets = ["acme", "globex"]\n',
            'targets = ["acme"]\nvault_path = "{environment}/tenants/{target}"\n'
            '\n[fleets.eu]\ntemplate = "tenant_eu"\ntargets = ["acme"]\n'
            'vault_path = "{environment}/eu/{target}"\n',
        )
    )
    with pytest.raises(
        FleetInvalid,
        match=r"fleet eu: the secret of its target acme would be read at local/tenants/eu_acme, "
        r"by the vault_path of fleet tenants .* not at local/eu/acme",
    ):
        check_fleet(Settings(sql_dir=tmp_path), "local", "eu")


def test_a_tree_with_fleets_deploys_a_fleet_form_and_a_shard_deployment(tmp_path: Path) -> None:
    from ameide_migrate.deployments.definitions import deployments_for

    fleet_tree(
        tmp_path,
        'targets = ["acme", "globex"]\n[fleets.vendors]\ntemplate = "tenant"\n'
        'targets = ["initech"]\n',
    )
    settings = Settings(sql_dir=tmp_path)
    found = deployments_for(settings, "local", environments.catalog("local", settings))

    by_flow = {str(d.flow_name): d for d in found}
    assert sorted(by_flow) == ["drift", "fleet", "fleet-shard", "migrate"]
    assert by_flow["fleet-shard"].parameters == {"environment": "local"}
    form = by_flow["fleet"]._parameter_openapi_schema.model_dump()["properties"]
    assert "environment" not in form
    assert form["name"]["enum"] == ["tenants", "vendors"]
    assert form["name"]["title"] == "Fleet"
    assert form["targets"]["type"] == "array"
    # The nightly drift may check a fleet instead of the tree: a choice of the declared ones.
    drift_form = by_flow["drift"]._parameter_openapi_schema.model_dump()["properties"]
    assert drift_form["fleet"]["enum"] == ["", "tenants", "vendors"]
    assert drift_form["fleet"]["title"] == "Fleet"
    # A tree without fleets deploys what it did before, drift's form without a fleet field.
    (tmp_path / "plain").mkdir()
    fleet_tree(tmp_path / "plain", 'targets = ["acme"]\n')
    toml = tmp_path / "plain" / "ameide.toml"
    toml.write_text(toml.read_text().split("[fleets")[0])
    plain = Settings(sql_dir=tmp_path / "plain")
    deployed = deployments_for(plain, "local", environments.catalog("local", plain))
    assert [d.flow_name for d in deployed] == ["migrate", "drift"]
    assert "fleet" not in deployed[1]._parameter_openapi_schema.model_dump()["properties"]


def test_trigger_names_what_a_fleet_run_needs_before_it_calls_the_api(tmp_path: Path) -> None:
    from ameide_migrate.core.errors import UsageError

    fleet_tree(tmp_path, 'targets = ["acme"]\n')
    settings = Settings(sql_dir=tmp_path)
    with pytest.raises(UsageError, match="--flow fleet needs --fleet"):
        trigger(settings, "local", flow="fleet")
    with pytest.raises(UsageError, match="--fleet NAME goes with --flow fleet"):
        trigger(settings, "local", fleet_name="tenants")
    with pytest.raises(FleetInvalid, match=r"unknown fleet 'vendors'.*declares tenants"):
        trigger(settings, "local", flow="fleet", fleet_name="vendors")
    with pytest.raises(UsageError, match="--db does not apply to a fleet"):
        trigger(settings, "local", ["platform"], flow="fleet", fleet_name="tenants")
    with pytest.raises(UsageError, match="unknown flow 'fleets': choose migrate, drift or fleet"):
        trigger(settings, "local", flow="fleets")
    with pytest.raises(UsageError, match="--wait-for-lock goes with --flow fleet"):
        trigger(settings, "local", wait_for_lock=True)


# --- With a real PostgreSQL, Flyway and Prefect --------------------------------------------------

TENANT_MIGRATIONS = {
    "V1__accounts.sql": "CREATE TABLE accounts (id bigint PRIMARY KEY, name text NOT NULL);\n",
    "V2__accounts_email.sql": "ALTER TABLE accounts ADD COLUMN email text;\n",
    "V3__accounts_email_index.sql": (
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS accounts_email_idx ON accounts (email);\n"
    ),
}


def add_fleet(
    platform: Platform,
    targets: list[str],
    waves: str = "",
    extra: dict[str, str] | None = None,
    *,
    vault_path: str | None = None,
    environments: str = "",
) -> None:
    """The platform's tree with a `tenant` template (and `extra` migrations), `targets` in
    tenants.txt, and in its ameide.toml the fleet `tenants` of them (its secrets at
    `vault_path`, its `[fleets.tenants.waves]` the TOML `waves`) and the `environments` (TOML)."""
    template = platform.sql_dir / "tenant"
    template.mkdir()
    for name, text in {**TENANT_MIGRATIONS, **(extra or {})}.items():
        (template / name).write_text(text)
    (platform.sql_dir / "tenants.txt").write_text("\n".join(targets) + "\n")
    declared = '\n[fleets.tenants]\ntemplate = "tenant"\ntargets_file = "tenants.txt"\n'
    if vault_path is not None:
        declared += f'vault_path = "{vault_path}"\n'
    if waves:
        declared += f"\n[fleets.tenants.waves]\n{waves}"
    toml = platform.sql_dir / "ameide.toml"
    toml.write_text(toml.read_text() + declared + environments)
    get_settings.cache_clear()


def targets_in_vault(
    platform: Platform, vault: Vault, monkeypatch: pytest.MonkeyPatch, targets: list[str]
) -> dict[str, Credentials]:
    """The targets' databases made, and their secrets in `vault` under the test's prefix, where
    a fleet's `vault_path = "{prefix}{environment}/tenants/{target}"` has qa read them (by the
    target's name); the settings point at that Vault. Their owners, by database."""
    vault.set_for_runs(monkeypatch, f"{platform.prefix}{{environment}}/{{database}}")
    owners = seed_local(get_settings(), [f"tenant_{t}" for t in targets])[0].owners
    conn = get_settings().vault_connection()
    assert conn is not None
    with vault_api.session(conn) as client:
        for database, creds in owners.items():
            path = f"{platform.prefix}qa/tenants/{database.removeprefix('tenant_')}"
            vault_api.write_secret(client, conn, path, secret_sources.secret_of(database, creds))
    return owners


@pytest.fixture
def tenants(platform: Platform) -> Iterator[Platform]:
    """The platform's tree with a `tenant` template and a fleet of 200 targets in waves that
    grow fourfold from a canary of one, each in three shards."""
    add_fleet(platform, TARGETS, "canary = 1\ngrowth = 4\nparallel = 4\nshards = 3\n")
    yield platform
    drop_owners(platform.admin, {t: tenant(platform, t) for t in TARGETS})


def tenant(platform: Platform, target: str) -> Credentials:
    """The local credentials of a target's database."""
    return secret_sources.local_credentials(
        f"tenant_{target}",
        host=platform.admin.host,
        port=platform.admin.port,
        prefix=platform.prefix,
    )


def postgres_admin(platform: Platform, statement: str) -> None:
    with psycopg.connect(**platform.admin.conninfo(5), autocommit=True) as conn:  # type: ignore[arg-type]
        conn.execute(statement.encode())


def histories(platform: Platform, targets: list[str] = TARGETS) -> dict[str, list[str]]:
    """Each target's applied versions."""

    def versions(target: str) -> list[str]:
        creds = tenant(platform, target)
        rows = read_history(creds, "flyway_schema_history") or []
        return [r.version for r in rows if r.version and r.success]

    with ThreadPoolExecutor(max_workers=8) as pool:
        return dict(zip(targets, pool.map(versions, targets), strict=True))


@pytest.mark.slow
def test_a_failed_canary_halts_the_fleet_before_its_second_wave_and_a_rerun_completes_it(
    tenants: Platform,
) -> None:
    # The canary's database turned read-only (a tenant moved to a replica by mistake): every
    # migration fails there.
    canary = tenant(tenants, "t000")
    seed_local(get_settings(), ["tenant_t000"])
    read_only = "ALTER DATABASE {} SET default_transaction_read_only = {}"
    postgres_admin(tenants, read_only.format(canary.database, "on"))

    halted = ameide("fleet", "run", "--env", "local", "--fleet", "tenants", timeout=900)

    assert halted.returncode == 1, halted.stdout + halted.stderr
    assert "Traceback" not in halted.stdout + halted.stderr
    assert "halted after wave 1" in halted.stdout
    assert "199 target(s) not started" in halted.stdout
    assert "read-only transaction" in halted.stdout
    assert "FAILED: fleet tenants in local: 1 failed in 1 wave(s), 199 not started" in (
        halted.stderr
    )
    found = histories(tenants)
    assert found["t000"] == []
    assert all(found[t] == [] for t in TARGETS[1:]), "a target after the canary was touched"

    postgres_admin(tenants, read_only.format(canary.database, "off"))
    rerun = ameide("fleet", "run", "--env", "local", "--fleet", "tenants", timeout=900)

    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert all(v == ["1", "2", "3"] for v in histories(tenants).values())
    # Each wave ran as shards, subflows of this process: the last wave's 115 targets in 3.
    last_wave = in_process_shards("tenants wave 5 shard")
    assert sorted(r.name for r in last_wave)[-3:] == [
        f"tenants wave 5 shard {n} of 3" for n in (1, 2, 3)
    ]
    status = ameide("fleet", "status", "--env", "local", "--fleet", "tenants")
    assert status.returncode == 0, status.stdout + status.stderr
    assert status.stdout.strip().splitlines()[-1] == "200 up to date"
    assert status.stdout.count("migrated") == 200

    # Once more: every target up to date, no JVM started.
    again = ameide("fleet", "run", "--env", "local", "--fleet", "tenants", timeout=900)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "Flyway" not in again.stderr
    already = r"- +│ +200 +│ +0 +│ +200 +│ +0 +│ up to date already: in no wave"
    assert re.search(already, again.stdout), again.stdout


def made_so_far(platform: Platform) -> dict[str, object]:
    """What a run makes: databases and roles on the server, the local store's entries, and
    flow runs (those of this process's kind: no deployment's)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterDeploymentId

    with psycopg.connect(**platform.admin.conninfo(5), autocommit=True) as conn:  # type: ignore[arg-type]
        databases = sorted(r[0] for r in conn.execute("SELECT datname FROM pg_database"))
        roles = sorted(r[0] for r in conn.execute("SELECT rolname FROM pg_roles"))
    with get_client(sync_client=True) as client:
        runs = client.count_flow_runs(
            flow_run_filter=FlowRunFilter(deployment_id=FlowRunFilterDeploymentId(is_null_=True))
        )
    store = (platform.state_dir / secret_sources.STORE_NAME).read_text()
    return {"databases": databases, "roles": roles, "store": store, "flow runs": runs}


@pytest.mark.parametrize(
    ("declared", "refusal"),
    [
        (
            '\n[fleets.tenants]\ntemplate = "tenants"\ntargets_file = "tenants.txt"\n',
            "FAILED: fleet tenants: its template 'tenants' is no folder of the SQL tree",
        ),
        (
            '\n[fleets.tenants]\ntemplate = "tenant"\nregistry = "billing"\n'
            'targets_query = "SELECT slug FROM tenant_registry"\n',
            "FAILED: fleet tenants: its registry 'billing' is no database of local",
        ),
        (
            '\n[fleets.tenants]\ntemplate = "tenant"\ntargets = ["acme", "globex", "acme"]\n',
            "FAILED: fleet tenants: acme named more than once (its targets list)",
        ),
    ],
    ids=["template missing", "registry unknown", "target named twice"],
)
def test_a_fleet_that_cannot_run_as_declared_makes_nothing_before_it_is_refused(
    platform: Platform, declared: str, refusal: str
) -> None:
    add_fleet(platform, ["acme", "globex", "initech"])
    toml = platform.sql_dir / "ameide.toml"
    toml.write_text(toml.read_text().split("\n[fleets.tenants]")[0] + declared)
    get_settings.cache_clear()
    before = made_so_far(platform)

    refused = ameide("fleet", "run", "--env", "local", "--fleet", "tenants")

    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert refusal in refused.stderr, refused.stderr
    assert "Traceback" not in refused.stdout + refused.stderr
    assert made_so_far(platform) == before


REGISTRY_FLEET = """
[fleets.tenants]
template = "tenant"
registry = "platform"
targets_query = "SELECT slug FROM tenant_registry WHERE active ORDER BY slug"
"""


def test_a_fleets_targets_come_from_a_query_on_its_registry(platform: Platform) -> None:
    with psycopg.connect(**platform.owners["platform"].conninfo(5), autocommit=True) as conn:  # type: ignore[arg-type]
        conn.execute("CREATE TABLE tenant_registry (slug text, active boolean)")
        conn.execute(
            "INSERT INTO tenant_registry VALUES "
            "('acme', true), ('globex', true), ('initech', false), ('umbrella', true)"
        )
    template = platform.sql_dir / "tenant"
    template.mkdir()
    for name, text in TENANT_MIGRATIONS.items():
        (template / name).write_text(text)
    toml = platform.sql_dir / "ameide.toml"
    toml.write_text(toml.read_text() + REGISTRY_FLEET)
    get_settings.cache_clear()
    active = ["acme", "globex", "umbrella"]
    try:
        done = ameide("fleet", "run", "--env", "local", "--fleet", "tenants", timeout=600)

        assert done.returncode == 0, done.stdout + done.stderr
        # A bar a wave: 1 target, then the 2 others.
        assert re.search(r"wave 1 .* 1/1 0 failed", done.stderr), done.stderr
        assert re.search(r"wave 2 .* 2/2 0 failed", done.stderr), done.stderr
        status = ameide("fleet", "status", "--env", "local", "--fleet", "tenants")
        assert status.returncode == 0, status.stdout + status.stderr
        assert status.stdout.strip().splitlines()[-1] == "3 up to date"
        for slug in active:
            assert f"tenant_{slug}" in status.stdout
        assert "initech" not in status.stdout
    finally:
        drop_owners(platform.admin, {t: tenant(platform, t) for t in active})


def test_one_approval_covers_the_targets_of_each_state_in_a_protected_environment(
    platform: Platform,
) -> None:
    twelve = TARGETS[:12]
    runner: threading.Thread | None = None
    template = platform.sql_dir / "tenant"
    template.mkdir()
    (template / "V1__accounts.sql").write_text(TENANT_MIGRATIONS["V1__accounts.sql"])
    (platform.sql_dir / "tenants.txt").write_text("\n".join(twelve) + "\n")
    toml = platform.sql_dir / "ameide.toml"
    toml.write_text(
        toml.read_text() + '\n[fleets.tenants]\ntemplate = "tenant"\ntargets_file = "tenants.txt"\n'
    )
    get_settings.cache_clear()
    try:
        # Four targets are at V1 already; then V2 and V3 arrive, and local is protected.
        first = ameide("fleet", "run", "--fleet", "tenants", *(f"-t{t}" for t in twelve[:4]))
        assert first.returncode == 0, first.stdout + first.stderr
        for name in ("V2__accounts_email.sql", "V3__accounts_email_index.sql"):
            (template / name).write_text(TENANT_MIGRATIONS[name])
        protect(platform)
        ended: list[Any] = []
        runner = threading.Thread(
            target=lambda: ended.append(fleet_run(get_settings(), "local", "tenants"))
        )
        runner.start()
        run_id = wait_for("paused fleet run", paused_run)

        plan = artifact("fleet-local-tenants-plan", run_id)
        assert "12 target(s) in 2 state(s). One decision covers them all" in plan
        assert "## State 1: 8 target(s) at empty" in plan
        assert "## State 2: 4 target(s) at 1 " in plan
        assert "| V2__accounts_email.sql |" in plan
        assert all(versions == [] for versions in histories(platform, twelve[4:]).values())
        approved = ameide("approve", str(run_id), "--reason", "CHG-7")
        assert approved.returncode == 0, approved.stdout + approved.stderr
        runner.join(timeout=300)

        (done,) = ended
        assert done.failure is None, done.failure
        assert all(v == ["1", "2", "3"] for v in histories(platform, twelve).values())
        assert "CHG-7" in artifact("fleet-local-tenants-decision", run_id)
    finally:
        if runner is not None and runner.is_alive():  # a failed check: no run left waiting
            waiting = paused_run()
            if waiting is not None:
                ameide("approve", str(waiting), "--reject", "--reason", "the test failed")
            runner.join(timeout=120)
        drop_owners(platform.admin, {t: tenant(platform, t) for t in twelve})


def relations(platform: Platform, targets: list[str], *names: str) -> dict[str, list[str]]:
    """Per target, which of the relations `names` its database holds."""
    found = {}
    for target in targets:
        with connect(tenant(platform, target)) as conn:
            found[target] = [
                n
                for n in names
                if (row := conn.execute("SELECT to_regclass(%s)", (n,)).fetchone()) and row[0]
            ]
    return found


def test_a_fleets_approval_covers_the_files_it_showed_an_edited_and_an_added_file_ask_again(
    platform: Platform,
) -> None:
    """While the fleet waits, V3 is edited (another index) and a V4 added: the approval of the
    plan that showed V3 as it was applies nothing to any target; the fleet asks again with a plan
    naming both, and the approval of that plan applies them as they now are."""
    four = TARGETS[:4]
    runner: threading.Thread | None = None
    add_fleet(platform, four)
    template = platform.sql_dir / "tenant"
    try:
        protect(platform)
        ended: list[Any] = []
        runner = threading.Thread(
            target=lambda: ended.append(fleet_run(get_settings(), "local", "tenants"))
        )
        runner.start()
        run_id = wait_for("paused fleet run", paused_run)
        first_plan = artifact("fleet-local-tenants-plan", run_id)
        approved = re.search(r"Fingerprint `([0-9a-f]{16})`", first_plan)
        assert approved, first_plan
        assert "| V3__accounts_email_index.sql |" in first_plan
        (template / "V3__accounts_email_index.sql").write_text(
            "CREATE INDEX CONCURRENTLY IF NOT EXISTS accounts_name_idx ON accounts (name);\n"
        )
        (template / "V4__audit.sql").write_text("CREATE TABLE audit (id bigint);\n")

        assert ameide("approve", str(run_id), "--reason", "CHG-8").returncode == 0
        wait_for("second plan", lambda: artifact("fleet-local-tenants-plan", run_id) != first_plan)
        second_plan = artifact("fleet-local-tenants-plan", run_id)
        assert f"since plan {approved.group(1)} was approved, the files it listed" in second_plan
        assert "- edited: V3__accounts_email_index.sql" in second_plan
        assert "- added: V4__audit.sql" in second_plan
        wait_for("paused again", paused_run)
        # Under the old approval no target got anything: no history, no table.
        assert all(versions == [] for versions in histories(platform, four).values())
        assert all(found == [] for found in relations(platform, four, "accounts").values())

        assert ameide("approve", str(run_id), "--reason", "CHG-8 with V4").returncode == 0
        runner.join(timeout=300)
        (done,) = ended
        assert done.failure is None, done.failure
        assert all(v == ["1", "2", "3", "4"] for v in histories(platform, four).values())
        held = relations(platform, four, "accounts_name_idx", "accounts_email_idx", "audit")
        assert all(found == ["accounts_name_idx", "audit"] for found in held.values()), held
    finally:
        if runner is not None and runner.is_alive():  # a failed check: no run left waiting
            waiting = paused_run()
            if waiting is not None:
                ameide("approve", str(waiting), "--reject", "--reason", "the test failed")
            runner.join(timeout=120)
        drop_owners(platform.admin, {t: tenant(platform, t) for t in four})


def test_a_shard_migrates_only_the_files_its_fleets_plan_was_approved_on(
    platform: Platform,
) -> None:
    """A shard run reads its own template (on a deployment, its image's): given the files the
    fleet's plan was approved on, it migrates a copy of them, and nothing when its own files
    differ, naming them."""
    from ameide_migrate.flows.fleet import fleet_shard_flow

    two = TARGETS[:2]
    add_fleet(platform, two)
    template = platform.sql_dir / "tenant"
    settings = get_settings()
    seed_local(settings, [f"tenant_{t}" for t in two])
    try:
        declared = environments.fleet("tenants", settings)
        shown = environments.fleet_template("local", declared, settings)
        approved = {m.script: m.sha256 for m in shown.migrations}
        v3 = template / "V3__accounts_email_index.sql"
        v3.write_text(
            "CREATE INDEX CONCURRENTLY IF NOT EXISTS accounts_name_idx ON accounts (name);\n"
        )
        (template / "V4__audit.sql").write_text("CREATE TABLE audit (id bigint);\n")

        state = fleet_shard_flow(
            environment="local",
            name="tenants",
            targets=two,
            approved_files=approved,
            return_state=True,
        )
        assert state.is_failed()
        assert "not those the fleet's plan was approved on" in (state.message or "")
        assert "edited V3__accounts_email_index.sql; added V4__audit.sql" in (state.message or "")
        assert all(versions == [] for versions in histories(platform, two).values())

        v3.write_text(TENANT_MIGRATIONS["V3__accounts_email_index.sql"])
        (template / "V4__audit.sql").unlink()
        state = fleet_shard_flow(
            environment="local",
            name="tenants",
            targets=two,
            approved_files=approved,
            return_state=True,
        )
        assert state.is_completed(), state.message
        assert all(v == ["1", "2", "3"] for v in histories(platform, two).values())
    finally:
        drop_owners(platform.admin, {t: tenant(platform, t) for t in two})


QA_ENVIRONMENT = """
[environments.qa]
work_pool = "{pool}"
pool_type = "process"
"""


def tenants_vault_path(platform: Platform) -> str:
    """Where a fleet finds each target's secret: by the target's name (targets_in_vault)."""
    return f"{platform.prefix}{{environment}}/tenants/{{target}}"


@pytest.mark.slow
def test_a_deployments_fleet_runs_each_shard_as_a_run_of_the_shard_deployment_at_once(
    platform: Platform, vault: Vault, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """qa, an environment on a work pool (a process one here, Kubernetes in the k8s tier), its
    credentials in Vault: the fleet's deployment starts a wave's three shards as runs of
    `fleet-shard/qa` on that pool, all at once, and collects what they did."""
    nine = TARGETS[:9]
    pool = f"{platform.prefix}fleet-qa".replace("_", "-")
    # Each target takes a few seconds, so that the shards' runs overlap however slowly the
    # worker starts them.
    slow = {"V4__settle.sql": "SELECT pg_sleep(6);\n"}
    add_fleet(
        platform,
        nine,
        "canary = 1\ngrowth = 8\nshards = 3\nparallel = 2\n",
        slow,
        vault_path=tenants_vault_path(platform),
        environments=QA_ENVIRONMENT.format(pool=pool),
    )
    owners = targets_in_vault(platform, vault, monkeypatch, nine)
    log = (tmp_path / "worker.log").open("w")
    worker = None
    try:
        deployed = ameide("deploy", "--env", "qa")
        assert deployed.returncode == 0, deployed.stdout + deployed.stderr
        assert "fleet-shard/qa" in deployed.stdout
        worker = start_worker(pool, "process", log, REPO)

        # A shard started alone, past the fleet's waves and halt rules, is refused.
        alone = following.start_deployment(
            "fleet-shard/qa", {"name": "tenants", "targets": ["t000"]}
        )
        refused = follow(alone, 300, on_line=lambda _line: None)
        assert refused.state == "Failed", refused
        assert "runs a shard of a running fleet run only" in refused.message
        assert histories(platform, ["t000"]) == {"t000": []}

        done = ameide(
            "trigger",
            "--env",
            "qa",
            "--flow",
            "fleet",
            "--fleet",
            "tenants",
            "--wait",
            "--timeout",
            "900",
        )

        report = (
            done.stdout[-6000:]
            + done.stderr[-3000:]
            + (tmp_path / "worker.log").read_text()[-6000:]
        )
        assert done.returncode == 0, report
        assert done.stdout.strip().splitlines()[-1].startswith("Completed"), report
        assert "wave 2 of 2: 8 target(s) in 3 shard(s), 0 failed" in done.stdout, report
        assert all(v == ["1", "2", "3", "4"] for v in histories(platform, nine).values())
        shards = shard_runs("fleet-shard/qa", since=_flow_run_id(done.stdout))
        assert sorted(r.name for r in shards) == [
            "tenants wave 1 shard 1 of 1",
            *(f"tenants wave 2 shard {n} of 3" for n in (1, 2, 3)),
        ]
        assert all(r.state is not None and r.state.is_completed() for r in shards)
        assert all(r.parent_task_run_id is not None for r in shards), "a shard is no subflow"
        wave_two = [r for r in shards if "wave 2" in r.name]
        assert max(r.start_time for r in wave_two) < min(r.end_time for r in wave_two), (
            "the wave's shards did not run at once"
        )
    finally:
        if worker is not None:
            stop_worker(worker)
        log.close()
        drop_owners(platform.admin, owners)


def refuse_connect(platform: Platform, target: str) -> None:
    """The tenant's database closed to its own login (and everyone's but a superuser's), as an
    administrator isolating a tenant does."""
    creds = tenant(platform, target)
    revoke = sql.SQL("REVOKE CONNECT ON DATABASE {} FROM PUBLIC, {}").format(
        sql.Identifier(creds.database), sql.Identifier(creds.user)
    )
    postgres_admin(platform, revoke.as_string(None))


def versions_as_admin(platform: Platform, target: str) -> list[str] | None:
    """The target's applied versions read as the superuser, past a refused CONNECT."""
    on = platform.admin.with_database(tenant(platform, target).database)
    rows = read_history(on, "flyway_schema_history")
    return None if rows is None else [r.version for r in rows if r.version and r.success]


@pytest.mark.slow
def test_a_target_refusing_connect_is_quarantined_and_more_than_the_limit_touches_nothing(
    platform: Platform, vault: Vault, monkeypatch: pytest.MonkeyPatch
) -> None:
    five = TARGETS[:5]
    add_fleet(platform, five, "canary = 1\ngrowth = 4\n", vault_path=tenants_vault_path(platform))
    vault.set_for_runs(monkeypatch)
    owners = seed_local(get_settings(), [f"tenant_{t}" for t in five])[0].owners
    try:
        refuse_connect(platform, "t002")

        went_on = ameide("fleet", "run", "--env", "local", "--fleet", "tenants", timeout=600)

        out = went_on.stdout + went_on.stderr
        assert went_on.returncode == 1, out
        assert "Traceback" not in out
        # The gate names where it reads the targets' secrets: the fleet's vault_path.
        assert f"secret/{platform.prefix}local/tenants/<target>" in went_on.stderr, out
        assert "/databases/" not in out
        assert "FAILED: fleet tenants in local: 4 migrated in 2 wave(s), 1 quarantined" in (
            went_on.stderr
        )
        assert "tenant_t002 quarantined: " in went_on.stdout
        assert "lacks the CONNECT privilege" in went_on.stdout
        assert "seed-local" not in out
        assert "credentials do not work" not in out
        fix = re.search(
            r"next: run `(GRANT CONNECT ON DATABASE [^`]+)` as its owner or an administrator, then",
            out,
        )
        assert fix is not None, out
        assert "`ameide-migrate fleet run --env local --fleet tenants --target t002`" in out
        assert histories(platform, [t for t in five if t != "t002"]) == {
            t: ["1", "2", "3"] for t in five if t != "t002"
        }
        assert versions_as_admin(platform, "t002") is None

        # The printed fix lets it in; the printed command migrates it alone.
        postgres_admin(platform, fix.group(1))
        alone = ameide("fleet", "run", "--env", "local", "--fleet", "tenants", "--target", "t002")
        assert alone.returncode == 0, alone.stdout + alone.stderr
        assert histories(platform, ["t002"]) == {"t002": ["1", "2", "3"]}

        # Two targets closed, one more than quarantine_max: the fleet stops before any wave.
        (platform.sql_dir / "tenant" / "V4__notes.sql").write_text(
            "ALTER TABLE accounts ADD COLUMN notes text;\n"
        )
        refuse_connect(platform, "t000")
        refuse_connect(platform, "t001")
        stopped = ameide("fleet", "run", "--env", "local", "--fleet", "tenants", timeout=600)

        out = stopped.stdout + stopped.stderr
        assert stopped.returncode == 1, out
        assert (
            "halted before its first wave: quarantine_max = 1: 2 target(s) unreachable at the "
            "gate: tenant_t000, tenant_t001; no target was touched"
        ) in stopped.stdout, out
        assert "3 target(s) not started" in stopped.stdout
        assert "failed targets" not in out
        assert histories(platform, ["t002", "t003", "t004"]) == {
            t: ["1", "2", "3"] for t in ("t002", "t003", "t004")
        }
        assert [versions_as_admin(platform, t) for t in ("t000", "t001")] == [["1", "2", "3"]] * 2

        status = ameide("fleet", "status", "--env", "local", "--fleet", "tenants")
        assert status.returncode == 0, status.stdout + status.stderr
        assert status.stdout.strip().splitlines()[-1] == "3 not started, 2 unreachable"

        # Let them in, and fail the canary of a run of two: one failed, one never started, and
        # the three the run was not asked for stay behind.
        for target in ("t000", "t001"):
            creds = tenant(platform, target)
            grant = sql.SQL("GRANT CONNECT ON DATABASE {} TO PUBLIC, {}").format(
                sql.Identifier(creds.database), sql.Identifier(creds.user)
            )
            postgres_admin(platform, grant.as_string(None))
        postgres_admin(
            platform,
            f"ALTER DATABASE {tenant(platform, 't000').database} "
            "SET default_transaction_read_only = on",
        )
        halted = ameide(
            "fleet", "run", "--env", "local", "--fleet", "tenants", "-t", "t000", "-t", "t001"
        )
        assert halted.returncode == 1, halted.stdout + halted.stderr
        assert "Fix the failed targets as each says" in halted.stdout

        status = ameide("fleet", "status", "--env", "local", "--fleet", "tenants")
        assert status.returncode == 0, status.stdout + status.stderr
        assert status.stdout.strip().splitlines()[-1] == "1 failed, 1 not started, 3 behind"
        assert all(v == ["1", "2", "3"] for v in histories(platform, five).values())
    finally:
        drop_owners(platform.admin, owners)


def in_process_shards(name_like: str) -> list[Any]:
    """The shard subflows whose names begin so, oldest first."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(name=FlowRunFilterName(like_=name_like))
        )
    shards = [r for r in runs if r.parent_task_run_id is not None and r.deployment_id is None]
    return sorted(shards, key=lambda r: str(r.created))


def _flow_run_id(output: str) -> str:
    """`trigger` prints `flow run <id>: <UI address>` first."""
    return output.splitlines()[0].split()[2].rstrip(":")


def shard_runs(deployment: str, since: str) -> list[Any]:
    """The runs of the shard deployment the fleet run `since` started, directly or not."""
    from uuid import UUID

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterDeploymentId

    with get_client(sync_client=True) as client:
        parent = client.read_flow_run(UUID(since))
        shard = client.read_deployment_by_name(deployment)
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(deployment_id=FlowRunFilterDeploymentId(any_=[shard.id]))
        )
    return [r for r in runs if r.created and parent.created and r.created > parent.created]


# --- One run of a fleet at a time ----------------------------------------------------------------

SETTLING_WAVES = "canary = 1\ngrowth = 4\n"


def start_fleet_run(log: Path, *args: str) -> subprocess.Popen[bytes]:
    """`fleet run --env local --fleet tenants` in a process of its own, its output in `log`."""
    command = ["fleet", "run", "--env", "local", "--fleet", "tenants", *args]
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "ameide_migrate.cli.main", *command],
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def fleet_runs() -> dict[str, Any]:
    """Every run of the `fleet` flow on the server, by id."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=["fleet"])))
    return {str(r.id): r for r in runs}


def the_running_fleet_run() -> Any:
    (running,) = [r for r in fleet_runs().values() if r.state and r.state.is_running()]
    return running


def run_named_in(output: str) -> str:
    """The flow run id of the `Flow run: <UI address>` line a fleet run prints."""
    (address,) = re.findall(r"Flow run: \S+/runs/flow-run/([0-9a-f-]{36})", output)
    return str(address)


def applied_counts(platform: Platform, targets: list[str]) -> dict[str, dict[str, int]]:
    """Per target, how often each version was applied (a version twice: two runs raced)."""

    def counts(target: str) -> dict[str, int]:
        found: dict[str, int] = {}
        for row in read_history(tenant(platform, target), "flyway_schema_history") or []:
            if row.version and row.success:
                found[row.version] = found.get(row.version, 0) + 1
        return found

    return {t: counts(t) for t in targets}


SETTLED = ["acme", "globex", "initech"]
"""The targets of a fleet run whose canary settles."""


@contextmanager
def a_fleet_run_settling(
    platform: Platform, log: Path, seconds: int
) -> Iterator[tuple[subprocess.Popen[bytes], Any]]:
    """A fleet run of three tenants started in a process of its own, its canary's V4 sleeping
    `seconds`: the process and its flow run, once the canary sleeps. However the test ends, the
    process is gone and the tenants' databases dropped."""
    add_fleet(
        platform, SETTLED, SETTLING_WAVES, {"V4__settle.sql": f"SELECT pg_sleep({seconds});\n"}
    )
    first = start_fleet_run(log)
    try:
        wait_for(
            "the first run's canary to migrate",
            lambda: sleeping(platform.admin, platform.prefix),
            timeout=300,
        )
        yield first, the_running_fleet_run()
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
        drop_owners(platform.admin, {t: tenant(platform, t) for t in SETTLED})


@pytest.mark.slow
def test_a_second_run_of_a_running_fleet_is_refused_naming_it_or_waits_for_its_end(
    platform: Platform, tmp_path: Path
) -> None:
    with a_fleet_run_settling(platform, tmp_path / "first.log", 12) as (first, holder):
        made = made_so_far(platform)
        runs = set(fleet_runs())

        refused = ameide("fleet", "run", "--env", "local", "--fleet", "tenants")

        assert refused.returncode == 2, refused.stdout + refused.stderr
        assert "Traceback" not in refused.stdout + refused.stderr
        assert (
            f"FAILED: fleet tenants in local is being migrated by another run, {holder.name} "
            "(Running): " in refused.stderr
        ), refused.stderr
        assert f"/runs/flow-run/{holder.id} " in refused.stderr, refused.stderr
        assert "--wait-for-lock" in refused.stderr
        # Refused before it made a run, a database, a role or a secret of its own.
        assert set(fleet_runs()) == runs
        assert {k: v for k, v in made_so_far(platform).items() if k != "flow runs"} == {
            k: v for k, v in made.items() if k != "flow runs"
        }

        # A run that got past the command's check (a deployment's, or one started at the same
        # moment) is refused by the flow itself, before it reads a target.
        from ameide_migrate.flows.fleet import fleet_flow

        raced = fleet_flow(environment="local", name="tenants", return_state=True)
        assert raced.is_failed(), raced
        assert f"/runs/flow-run/{holder.id} " in (raced.message or ""), raced.message

        waited = ameide(
            "fleet", "run", "--env", "local", "--fleet", "tenants", "--wait-for-lock", timeout=600
        )

        assert first.wait(timeout=600) == 0, (tmp_path / "first.log").read_text()
        assert waited.returncode == 0, waited.stdout + waited.stderr
        assert f"waiting for {holder.name} (Running) to end" in waited.stderr, waited.stderr
        # It started once the first had ended, and found every target up to date: each
        # version applied once, by the first run.
        ended = fleet_runs()
        second = ended[run_named_in(waited.stderr)]
        assert ended[str(holder.id)].end_time <= second.start_time
        assert applied_counts(platform, SETTLED) == {t: dict.fromkeys("1234", 1) for t in SETTLED}
        assert "up to date already: in no wave" in waited.stdout, waited.stdout


@pytest.mark.slow
def test_a_killed_fleet_run_holds_the_fleet_until_it_is_crashed_then_the_next_one_runs(
    platform: Platform, tmp_path: Path
) -> None:
    with a_fleet_run_settling(platform, tmp_path / "first.log", 15) as (first, holder):
        first.send_signal(signal.SIGKILL)
        first.wait()
        # Its process is gone, but nothing has told Prefect yet: the fleet is still its.
        refused = ameide("fleet", "run", "--env", "local", "--fleet", "tenants")
        assert refused.returncode == 2, refused.stdout + refused.stderr
        assert f"/runs/flow-run/{holder.id} " in refused.stderr, refused.stderr
        assert "marks it Crashed" in refused.stderr

        waited = ameide(
            "fleet", "run", "--env", "local", "--fleet", "tenants", "--wait-for-lock", timeout=600
        )

        assert waited.returncode == 0, waited.stdout + waited.stderr
        ended = fleet_runs()
        killed = ended[str(holder.id)]
        assert killed.state is not None
        assert killed.state.name == "Crashed", killed.state
        second = ended[run_named_in(waited.stderr)]
        assert killed.state.timestamp <= second.start_time
        assert applied_counts(platform, SETTLED) == {t: dict.fromkeys("1234", 1) for t in SETTLED}
