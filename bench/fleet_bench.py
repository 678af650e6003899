"""A fleet of tenant databases on one PostgreSQL: from empty, as a no-op, and the psql floor.

    uv run python -m bench.fleet_bench [--targets 250,1000]

For each size N, in one run on one throwaway PostgreSQL and Prefect server: N tenant databases
are made (not timed), then (c) the floor: every migration of the template applied once to each
with `psql -1 -f`; the databases emptied again (`DROP SCHEMA public CASCADE`, not timed); then
(a) `ameide-migrate fleet run` from empty (waves from a canary of 1, growing fourfold, 8 at
once), and (b) the same again, a no-op. It prints the times, a/c, and the peak memory of (a)'s
and (b)'s process trees (the CLI and its Flyway JVM), against the targets: from empty within
2.5x the floor, a no-op under 15 s, memory flat in N.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ameide_migrate.adapters import postgres, prefect_api
from ameide_migrate.adapters.postgres import Credentials
from ameide_migrate.services import local
from bench.common import admin_url, cli_environment, pinned_flyway, throwaway_cluster
from bench.migrate_bench import run_measured

TEMPLATE = {
    "V1__accounts.sql": (
        "CREATE TABLE accounts (\n"
        "    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,\n"
        "    name text NOT NULL,\n"
        "    created_at timestamptz NOT NULL DEFAULT now()\n"
        ");\n"
    ),
    "V2__invoices.sql": (
        "CREATE TABLE invoices (\n"
        "    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,\n"
        "    account_id bigint NOT NULL REFERENCES accounts (id),\n"
        "    total numeric(12, 2) NOT NULL DEFAULT 0\n"
        ");\n"
        "CREATE INDEX invoices_account_idx ON invoices (account_id);\n"
    ),
    "V3__accounts_email.sql": "ALTER TABLE accounts ADD COLUMN email text;\n",
    "V4__accounts_email_key.sql": (
        "CREATE UNIQUE INDEX accounts_email_key ON accounts (lower(email));\n"
    ),
    "V5__invoice_status.sql": (
        "CREATE TYPE invoice_status AS ENUM ('draft', 'sent', 'paid');\n"
        "ALTER TABLE invoices ADD COLUMN status invoice_status NOT NULL DEFAULT 'draft';\n"
    ),
}
FLEET = """
[environments.local]
local = true

[fleets.tenants]
template = "tenant"
targets_file = "tenants.txt"

[fleets.tenants.waves]
canary = 1
growth = 4
parallel = 8
"""


def tenants(count: int) -> list[str]:
    return [f"t{n:04d}" for n in range(count)]


def psql_floor(owners: list[Credentials], tree: Path) -> None:
    """Every template migration applied once to each database with psql, 8 at once."""

    def apply(owner: Credentials) -> None:
        env = {**os.environ, "PGPASSWORD": owner.password.get_secret_value()}
        for name in TEMPLATE:
            subprocess.run(
                [
                    *("psql", "-q", "-X", "-1", "-v", "ON_ERROR_STOP=1"),
                    *("-h", owner.host, "-p", str(owner.port), "-U", owner.user),
                    *("-d", owner.database, "-f", str(tree / "tenant" / name)),
                ],
                env=env,
                check=True,
                capture_output=True,
            )

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(apply, owners))


def emptied(owners: list[Credentials]) -> None:
    def empty(owner: Credentials) -> None:
        with postgres.connect(owner) as conn:
            conn.execute("DROP SCHEMA public CASCADE")
            conn.execute("CREATE SCHEMA public")

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(empty, owners))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", default="250,1000", help="fleet sizes, comma-separated")
    sizes = [int(n) for n in parser.parse_args().targets.split(",")]
    inst = pinned_flyway()
    print(f"Fleet of tenant databases, 5 migrations each, Flyway {inst.version}:")
    print(f"  {'targets':>7} {'psql floor':>11} {'from empty':>11} {'a/c':>5} {'no-op':>8}  peak")
    with throwaway_cluster() as (cluster, scratch):
        server = prefect_api.ensure_server(scratch / "prefect")
        env = cli_environment(scratch, cluster, server.api_url)
        cli = [str(Path(sys.executable).parent / "ameide-migrate"), "fleet", "run"]
        try:
            for size in sizes:
                tree = scratch / f"sql-{size}"
                (tree / "tenant").mkdir(parents=True)
                for name, text in TEMPLATE.items():
                    (tree / "tenant" / name).write_text(text)
                (tree / "ameide.toml").write_text(FLEET)
                (tree / "tenants.txt").write_text("\n".join(tenants(size)) + "\n")
                prefix = f"n{size}_"
                print(f"{size} targets: making their databases", file=sys.stderr)
                made = local.up(
                    scratch / "state",
                    [f"tenant_{t}" for t in tenants(size)],
                    admin_url=admin_url(cluster),
                    database_prefix=prefix,
                )
                local.seed(scratch / "state", made.owners, None)
                owners = list(made.owners.values())
                print(f"{size} targets: the psql floor", file=sys.stderr)
                started = time.perf_counter()
                psql_floor(owners, tree)
                floor = time.perf_counter() - started
                emptied(owners)
                run_env = {
                    **env,
                    "AMEIDE_SQL_DIR": str(tree),
                    "AMEIDE_LOCAL_DATABASE_PREFIX": prefix,
                }
                print(f"{size} targets: fleet run from empty, then a no-op", file=sys.stderr)
                empty_s, empty_peak = run_measured(
                    [*cli, "--env", "local", "--fleet", "tenants"], run_env
                )
                noop_s, noop_peak = run_measured(
                    [*cli, "--env", "local", "--fleet", "tenants"], run_env
                )
                # Each size's row as soon as it is measured: a thousand targets take a while.
                print(
                    f"  {size:7d} {floor:10.1f}s {empty_s:10.1f}s {empty_s / floor:5.2f} "
                    f"{noop_s:7.1f}s  {max(empty_peak, noop_peak) / 2**20:.0f} MiB",
                    flush=True,
                )
                shutil.rmtree(tree)
        finally:
            prefect_api.stop_server(scratch / "prefect")
    print("\nTargets: from empty a/c <= 2.5; no-op under 15 s; peak memory flat in N.")


if __name__ == "__main__":
    main()
