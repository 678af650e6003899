"""What the plan of a protected environment adds to a no-op run, on the eight-database platform.

    uv run python -m bench.plan_bench [--rounds 5]

In one run, on one throwaway PostgreSQL and Prefect server, the platform migrated once, then in
turn: (a) `ameide-migrate run --env local` with local protected (`approval.required`: every
run first builds the plan an approver reads, per database its history, invalid indexes, drift
verdict, lint and locks), and (b) the same run unprotected; both no-ops, on the same databases.
It prints the medians, the ratio a/b and what the plan adds, against the target of 10 %.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
from pathlib import Path

from ameide_migrate.adapters.prefect import local_server
from ameide_migrate.core.catalog import PLATFORM_DATABASES
from ameide_migrate.services import local
from bench.common import RUN_LOCAL, admin_url, cli_environment, pinned_flyway, throwaway_cluster
from bench.migrate_bench import run_measured

REPO = Path(__file__).resolve().parent.parent
SQL = REPO / "db" / "flyway" / "sql"
PROTECTED = "\n[environments.local.approval]\nrequired = true\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="pairs timed; medians are quoted")
    rounds = parser.parse_args().rounds
    inst = pinned_flyway()
    with throwaway_cluster() as (cluster, scratch):
        trees = {"unprotected": scratch / "sql", "protected": scratch / "sql-protected"}
        for tree in trees.values():
            shutil.copytree(SQL, tree)
        toml = trees["protected"] / "ameide.toml"
        toml.write_text(toml.read_text() + PROTECTED)
        local.up(
            scratch / "state",
            PLATFORM_DATABASES,
            admin_url=admin_url(cluster),
            database_prefix="plan_",
        )
        server = local_server.ensure_server(scratch / "prefect")
        env = {
            **cli_environment(scratch, cluster, server.api_url),
            "AMEIDE_LOCAL_DATABASE_PREFIX": "plan_",
        }
        cli = RUN_LOCAL
        times: dict[str, list[float]] = {name: [] for name in trees}
        try:
            run_measured(cli, {**env, "AMEIDE_SQL_DIR": str(trees["unprotected"])})
            for tree in trees.values():  # each tree's deployments registered once, untimed
                run_measured(cli, {**env, "AMEIDE_SQL_DIR": str(tree)})
            for r in range(rounds):
                print(f"round {r + 1}/{rounds}", file=sys.stderr)
                for name, tree in trees.items():
                    wall, _ = run_measured(cli, {**env, "AMEIDE_SQL_DIR": str(tree)})
                    times[name].append(wall)
        finally:
            local_server.stop_server(scratch / "prefect")
    median = {name: statistics.median(values) for name, values in times.items()}
    ratio = median["protected"] / median["unprotected"]
    print(f"\nEight databases, no-op runs, {rounds} pairs, Flyway {inst.version}, medians:")
    for name, values in times.items():
        print(f"  {name:12} {median[name]:6.2f} s  ({min(values):.2f}-{max(values):.2f})")
    print(f"\nprotected / unprotected = {ratio:.3f}: the plan adds {100 * (ratio - 1):.1f} %")
    print("  (target: under 10 %)")


if __name__ == "__main__":
    main()
