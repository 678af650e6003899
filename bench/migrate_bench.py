"""Times the migrate run against the seed's way and the floor, on the eight-database platform.

    uv run python -m bench.migrate_bench [--rounds 3]

In one run, on one throwaway PostgreSQL and the same Flyway:
  (a) `ameide-migrate run --env local`, from empty and again as a no-op;
  (b) the seed's way: per database, in sequence, Flyway's command line as shipped
      (`flyway validate`, `flyway migrate`, `flyway info`), from empty and again;
  (c) the floor: every SQL file applied once with `psql -f`.
It prints the median of each, the ratios a/b and a/c, and the peak memory of (a)'s whole process
tree (the CLI and the Flyway JVM it starts; the PostgreSQL and Prefect servers are shared by all and
not counted). Databases are created before each timed step, so no step pays for CREATE DATABASE.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

from ameide_migrate import flyway, local, prefect_api
from ameide_migrate.config import environments
from ameide_migrate.config.settings import Settings
from ameide_migrate.core.catalog import PLATFORM_DATABASES, load_catalog
from ameide_migrate.pg_cluster import Cluster
from ameide_migrate.postgres import Credentials
from bench.common import RUN_LOCAL, admin_url, cli_environment, pinned_flyway, throwaway_cluster

REPO = Path(__file__).resolve().parent.parent
LOCAL_PLACEHOLDERS = environments.get(
    "local", Settings(sql_dir=REPO / "db/flyway/sql")
).flyway_placeholders()
SQL = REPO / "db" / "flyway" / "sql"
TARGETS = {
    "a_empty": "ameide-migrate run, from empty",
    "a_noop": "ameide-migrate run, no-op",
    "b_empty": "seed loop (validate, migrate, info), from empty",
    "b_noop": "seed loop, no-op",
    "c_floor": "psql -f every file once",
}


def _tree_rss_bytes(root: int) -> int:
    """Resident memory of a process and all its descendants."""
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        try:
            status = Path(f"/proc/{pid}/status").read_text()
            for task in Path(f"/proc/{pid}/task").iterdir():
                stack += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1]) * 1024
    return total


def run_measured(command: list[str], env: dict[str, str]) -> tuple[float, int]:
    """(wall seconds, peak resident bytes of the process tree); fails loudly on a non-zero exit."""
    started = time.perf_counter()
    process = subprocess.Popen(
        command, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _tree_rss_bytes(process.pid))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample)
    sampler.start()
    output, _ = process.communicate()
    wall = time.perf_counter() - started
    done.set()
    sampler.join()
    if process.returncode != 0:
        sys.exit(
            f"FAILED: {' '.join(command[:4])}... exited {process.returncode}:\n{output.decode()}"
        )
    return wall, peak


def timed(step: Callable[[], None]) -> float:
    started = time.perf_counter()
    step()
    return time.perf_counter() - started


def seed_loop(inst: flyway.Installation, owners: dict[str, Credentials]) -> None:
    """The seed's Job: validate, migrate and info per database, one Flyway CLI start each, as
    shipped (`java -cp ... Main`, no JVM tuning), with the update check off as pods need."""
    stock = [inst.java, "-cp", f"{inst.home / 'lib'}/*", flyway.CLI_CLASS, "-skipCheckForUpdate"]
    for database, owner in owners.items():
        env = {
            **os.environ,
            "FLYWAY_URL": owner.jdbc_url,
            "FLYWAY_USER": owner.user,
            "FLYWAY_PASSWORD": owner.password.get_secret_value(),
            "FLYWAY_LOCATIONS": f"filesystem:{SQL / database}",
            "FLYWAY_PLACEHOLDERS_ENVIRONMENT": "local",
        }
        for verb in (["validate", "-ignoreMigrationPatterns=*:pending"], ["migrate"], ["info"]):
            subprocess.run([*stock, *verb], env=env, check=True, capture_output=True)


def psql_floor(owners: dict[str, Credentials], scratch: Path) -> None:
    catalog = load_catalog(SQL, placeholders=LOCAL_PLACEHOLDERS)
    for database, owner in owners.items():
        env = {**os.environ, "PGPASSWORD": owner.password.get_secret_value()}
        for migration in catalog.databases[database].migrations:
            script = scratch / migration.script
            script.write_text(migration.path.read_text().replace("${environment}", "local"))
            subprocess.run(
                [
                    "psql",
                    "-q",
                    "-X",
                    "-v",
                    "ON_ERROR_STOP=1",
                    "-1",
                    "-h",
                    owner.host,
                    "-p",
                    str(owner.port),
                    "-U",
                    owner.user,
                    "-d",
                    owner.database,
                    "-f",
                    str(script),
                ],
                env=env,
                check=True,
                capture_output=True,
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="repetitions; medians are quoted")
    rounds = parser.parse_args().rounds

    inst = pinned_flyway()
    with throwaway_cluster() as (cluster, scratch):
        times, peaks = run_rounds(rounds, inst, cluster, scratch)
    report(rounds, inst, times, peaks)


def run_rounds(
    rounds: int, inst: flyway.Installation, cluster: Cluster, scratch: Path
) -> tuple[dict[str, list[float]], list[int]]:
    admin = admin_url(cluster)
    state = scratch / "state"
    server = prefect_api.ensure_server(scratch / "prefect")
    env = cli_environment(scratch, cluster, server.api_url)
    cli = RUN_LOCAL
    times: dict[str, list[float]] = {k: [] for k in TARGETS}
    peaks: list[int] = []

    def fresh(prefix: str) -> dict[str, Credentials]:
        return local.up(state, PLATFORM_DATABASES, admin_url=admin, database_prefix=prefix).owners

    try:
        for r in range(rounds):
            print(f"round {r + 1}/{rounds}", file=sys.stderr)
            prefix = f"bench_a{r}_"
            fresh(prefix)
            for key in ("a_empty", "a_noop"):
                wall, peak = run_measured(cli, {**env, "AMEIDE_LOCAL_DATABASE_PREFIX": prefix})
                times[key].append(wall)
                peaks.append(peak)
            owners = fresh(f"bench_b{r}_")
            times["b_empty"].append(timed(partial(seed_loop, inst, owners)))
            times["b_noop"].append(timed(partial(seed_loop, inst, owners)))
            owners = fresh(f"bench_c{r}_")
            floor_dir = scratch / f"floor{r}"
            floor_dir.mkdir()
            times["c_floor"].append(timed(partial(psql_floor, owners, floor_dir)))
    finally:
        prefect_api.stop_server(scratch / "prefect")
    return times, peaks


def report(
    rounds: int, inst: flyway.Installation, times: dict[str, list[float]], peaks: list[int]
) -> None:
    median = {k: statistics.median(v) for k, v in times.items()}
    print(f"\nEight databases, {rounds} rounds, Flyway {inst.version}, medians (min-max):")
    for key, label in TARGETS.items():
        print(
            f"  {key:8} {median[key]:7.2f} s  "
            f"({min(times[key]):.2f}-{max(times[key]):.2f})  {label}"
        )
    print("\nRatios (target):")
    print(f"  from empty  a/b = {median['a_empty'] / median['b_empty']:.2f}  (<= 0.35)")
    print(f"  no-op       a/b = {median['a_noop'] / median['b_noop']:.2f}  (<= 0.20)")
    print(f"  from empty  a/c = {median['a_empty'] / median['c_floor']:.2f}")
    print(f"  no-op       a/c = {median['a_noop'] / median['c_floor']:.2f}")
    print(f"\nPeak memory of a run's process tree: {max(peaks) / 2**20:.0f} MiB  (< 1536 MiB)")


if __name__ == "__main__":
    main()
