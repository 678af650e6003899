"""A fleet of tenant databases spread over PostgreSQL servers: from empty, as a no-op, and the
honest psql floor.

    uv run python -m bench.fleet_bench [--targets 250,2000] [--servers 3]

In one run: `--servers` throwaway PostgreSQL clusters, a dev OpenBao and a Prefect server. For
each size N: N tenant databases are made, round-robin over the servers (not timed), each
target's credentials (its server's host and port) in OpenBao at the fleet's `vault_path`, as an
environment that is not local reads them; then (c) the floor: one `psql -1` session a target
applying every migration of the template (`cat V*.sql | psql -1`), 8 targets at once; the
databases emptied again (`DROP SCHEMA public CASCADE`, not timed); then (a) `ameide-migrate fleet
run --env bench` from empty (waves from a canary of 1, growing fourfold, 8 at once), and (b) the
same again, a no-op. It prints the times, a/c, and the peak memory of (a)'s and (b)'s process
trees (the CLI and its Flyway JVM), against the issue's targets: from empty within 1.5x the floor,
a no-op under 20 s, memory flat in N.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

from ameide_migrate.adapters import secret_sources, vault
from ameide_migrate.adapters.pg_cluster import Cluster
from ameide_migrate.adapters.postgres.connection import Credentials, connect
from ameide_migrate.adapters.postgres.schema_history import read_history
from ameide_migrate.adapters.prefect import local_server
from ameide_migrate.config.vault_settings import VaultSettings
from ameide_migrate.core.history import current_version
from ameide_migrate.services import local
from bench.common import admin_url, cli_environment, pinned_flyway, throwaway_cluster
from bench.migrate_bench import run_measured
from tests.fix_vault import start_dev_server

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
VAULT_PATH = "bench/{environment}/tenants/{target}"
FLEET = f"""
[environments.local]
local = true

[environments.bench]
work_pool = "bench"
pool_type = "process"

[fleets.tenants]
template = "tenant"
targets_file = "tenants.txt"
vault_path = "{VAULT_PATH}"

[fleets.tenants.waves]
canary = 1
growth = 4
parallel = 8
"""


def tenants(count: int) -> list[str]:
    return [f"t{n:04d}" for n in range(count)]


def psql_floor(owners: list[Credentials], tree: Path) -> None:
    """Every template migration applied to each database in one psql session, in one
    transaction (`cat V*.sql | psql -1`), 8 databases at once."""
    script = b"".join((tree / "tenant" / name).read_bytes() for name in TEMPLATE)

    def apply(owner: Credentials) -> None:
        env = {**os.environ, "PGPASSWORD": owner.password.get_secret_value()}
        subprocess.run(
            [
                *("psql", "-q", "-X", "-1", "-v", "ON_ERROR_STOP=1"),
                *("-h", owner.host, "-p", str(owner.port), "-U", owner.user, "-d", owner.database),
            ],
            input=script,
            env=env,
            check=True,
            capture_output=True,
        )

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(apply, owners))


def made_on_servers(
    clusters: list[Cluster], state: Path, targets: list[str], prefix: str
) -> dict[str, Credentials]:
    """The targets' databases and owners, round-robin over the clusters: target -> owner."""
    owners: dict[str, Credentials] = {}
    for index, cluster in enumerate(clusters):
        mine = targets[index :: len(clusters)]
        made = local.up(
            state,
            [f"tenant_{t}" for t in mine],
            admin_url=admin_url(cluster),
            database_prefix=prefix,
        )
        owners |= {t: made.owners[f"tenant_{t}"] for t in mine}
    return owners


def stored_in_vault(conn: VaultSettings, owners: dict[str, Credentials]) -> None:
    """Each target's secret where the fleet's vault_path has the bench environment read it."""
    with vault.session(conn) as client:

        def write(target: str) -> None:
            path = VAULT_PATH.format(environment="bench", target=target)
            secret = secret_sources.secret_of(f"tenant_{target}", owners[target])
            vault.write_secret(client, conn, path, secret)

        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(write, owners))


def at_latest_by_server(owners: list[Credentials]) -> dict[str, int]:
    """How many targets each server holds at the template's last version, read from their
    histories (not from what the fleet said); the bench stops when one is not there."""
    latest = sorted(TEMPLATE)[-1].split("__")[0].removeprefix("V")

    def version(owner: Credentials) -> str | None:
        return current_version(read_history(owner, "flyway_schema_history") or [])

    with ThreadPoolExecutor(max_workers=8) as pool:
        found = list(pool.map(version, owners))
    behind = [o.database for o, v in zip(owners, found, strict=True) if v != latest]
    if behind:
        sys.exit(
            f"FAILED: {len(behind)} target(s) not at V{latest} after the fleet run: {behind[:5]}"
        )
    counts: dict[str, int] = {}
    for owner in owners:
        counts[owner.server] = counts.get(owner.server, 0) + 1
    return counts


def emptied(owners: list[Credentials]) -> None:
    def empty(owner: Credentials) -> None:
        with connect(owner) as conn:
            conn.execute("DROP SCHEMA public CASCADE")
            conn.execute("CREATE SCHEMA public")

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(empty, owners))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", default="250,2000", help="fleet sizes, comma-separated")
    parser.add_argument("--servers", type=int, default=3, help="PostgreSQL servers to spread over")
    arguments = parser.parse_args()
    sizes = [int(n) for n in arguments.targets.split(",")]
    inst = pinned_flyway()
    print(
        f"Fleet of tenant databases over {arguments.servers} PostgreSQL server(s), 5 migrations "
        f"each, Flyway {inst.version}:"
    )
    print(f"  {'targets':>7} {'psql floor':>11} {'from empty':>11} {'a/c':>5} {'no-op':>8}  peak")
    with ExitStack() as stack:
        started = [stack.enter_context(throwaway_cluster()) for _ in range(arguments.servers)]
        clusters = [cluster for cluster, _ in started]
        scratch = started[0][1]
        bao = start_dev_server(scratch)
        stack.callback(bao.stop)
        conn = VaultSettings(address=bao.address, token=bao.root_token)
        server = local_server.ensure_server(scratch / "prefect")
        stack.callback(local_server.stop_server, scratch / "prefect")
        env = {
            **cli_environment(scratch, clusters[0], server.api_url),
            "VAULT_ADDR": bao.address,
            "VAULT_TOKEN": bao.root_token.get_secret_value(),
        }
        cli = [str(Path(sys.executable).parent / "ameide-migrate"), "fleet", "run"]
        for size in sizes:
            tree = scratch / f"sql-{size}"
            (tree / "tenant").mkdir(parents=True)
            for name, text in TEMPLATE.items():
                (tree / "tenant" / name).write_text(text)
            (tree / "ameide.toml").write_text(FLEET)
            (tree / "tenants.txt").write_text("\n".join(tenants(size)) + "\n")
            print(f"{size} targets: making their databases", file=sys.stderr)
            owners = made_on_servers(clusters, scratch / "state", tenants(size), f"n{size}_")
            stored_in_vault(conn, owners)
            print(f"{size} targets: the psql floor", file=sys.stderr)
            began = time.perf_counter()
            psql_floor(list(owners.values()), tree)
            floor = time.perf_counter() - began
            emptied(list(owners.values()))
            run_env = {**env, "AMEIDE_SQL_DIR": str(tree)}
            print(f"{size} targets: fleet run from empty, then a no-op", file=sys.stderr)
            empty_s, empty_peak = run_measured(
                [*cli, "--env", "bench", "--fleet", "tenants"], run_env
            )
            on_servers = at_latest_by_server(list(owners.values()))
            noop_s, noop_peak = run_measured(
                [*cli, "--env", "bench", "--fleet", "tenants"], run_env
            )
            # Each size's row as soon as it is measured: two thousand targets take a while.
            print(
                f"  {size:7d} {floor:10.1f}s {empty_s:10.1f}s {empty_s / floor:5.2f} "
                f"{noop_s:7.1f}s  {max(empty_peak, noop_peak) / 2**20:.0f} MiB",
                flush=True,
            )
            spread = " + ".join(str(n) for n in on_servers.values())
            print(f"  {'':7} at V5 (read from their histories): {spread} on the servers")
            shutil.rmtree(tree)
    print("\nTargets: from empty a/c <= 1.5; no-op under 20 s; peak memory flat in N.")


if __name__ == "__main__":
    main()
