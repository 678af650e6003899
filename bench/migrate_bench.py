"""Times the migrate run against the seed's way and the floor, on the eight-database platform.

    uv run python -m bench.migrate_bench [--rounds 3]

In one run, on one throwaway PostgreSQL and the same Flyway:
  (a) `ameide-migrate run --env local`, from empty and again as a no-op;
  (b) the seed's way: per database, in sequence, Flyway's command line as shipped
      (`flyway validate`, `flyway migrate`, `flyway info`), from empty and again;
  (c) the floor: every SQL file applied once with `psql -f`;
  (d) Prefect's floor: a bare flow of one task that does nothing (`bench/bare_flow.py`), run the
      same way against the same server and environment, in pairs with the no-op, interleaved
      (no-op, bare, no-op, bare ...: `--pairs` per round), so each ratio compares neighbours.
It prints the median of each, the ratios a/b, a/c and (pair by pair) no-op/d, and the peak memory
of each whole process tree (the CLI and the Flyway JVM it starts; the PostgreSQL and Prefect servers
are shared by all and not counted): the sum of its processes' proportional set sizes, read from
/proc every 20 ms. Databases are created before each timed step, so no step pays for CREATE
DATABASE. `--skip-seed` leaves (b) and (c) out.
Python's bytecode is compiled first (the project's and its packages', as `./dev` and the image's pip
install do): where PYTHONDONTWRITEBYTECODE is set, each start would otherwise compile Prefect again,
seconds that neither a user nor a pod pays, and more for the side that imports more.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import sysconfig
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from ameide_migrate.adapters import flyway
from ameide_migrate.adapters.pg_cluster import Cluster
from ameide_migrate.adapters.postgres.connection import Credentials
from ameide_migrate.adapters.prefect import local_server
from ameide_migrate.config import environments
from ameide_migrate.config.settings import Settings
from ameide_migrate.core.catalog import PLATFORM_DATABASES, load_catalog
from ameide_migrate.services import local
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
    "d_bare": "a bare one-task Prefect flow, same server",
}
BARE_FLOW = [sys.executable, "-m", "bench.bare_flow"]


def _tree_pss_bytes(root: int) -> int:
    """Resident memory of a process and all its descendants, each page once: the sum of their
    proportional set sizes (a page shared by n of them counts 1/n to each). Their VmRSS summed
    would count twice the pages a child forked to start the JVM shares with the CLI until it
    executes java, and the CLI's 120 MiB with them. A library page shared with a process outside
    the tree (another JVM's libjvm) counts in part: a few MiB at most."""
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        try:
            rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
            for task in Path(f"/proc/{pid}/task").iterdir():
                stack += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        for line in rollup.splitlines():
            if line.startswith("Pss:"):
                total += int(line.split()[1]) * 1024
    return total


def run_measured(command: list[str], env: dict[str, str]) -> tuple[float, int]:
    """(wall seconds, peak memory of the process tree as _tree_pss_bytes reads it); fails
    loudly on a non-zero exit."""
    started = time.perf_counter()
    process = subprocess.Popen(
        command, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _tree_pss_bytes(process.pid))
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
    parser.add_argument(
        "--pairs", type=int, default=2, help="no-op and bare-flow pairs per round, interleaved"
    )
    parser.add_argument(
        "--skip-seed", action="store_true", help="leave out the seed loop (b) and psql (c)"
    )
    args = parser.parse_args()

    inst = pinned_flyway()
    compiled_bytecode()
    with throwaway_cluster() as (cluster, scratch):
        measured = run_rounds(args.rounds, args.pairs, inst, cluster, scratch, args.skip_seed)
    report(args.rounds, inst, measured)


def compiled_bytecode() -> None:
    """Every module either side may import compiled to bytecode beforehand (quick when done)."""
    packages = sysconfig.get_paths()["purelib"]
    # Not checked: packages ship modules for newer Pythons that are never imported here
    # (whenever's _typing_312), which compileall counts as failures; the rest is compiled.
    subprocess.run(
        [
            sys.executable,
            "-m",
            "compileall",
            "-q",
            packages,
            str(REPO / "src"),
            str(REPO / "bench"),
        ],
        check=False,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


@dataclass
class Measured:
    times: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in TARGETS})
    peaks: dict[str, list[int]] = field(default_factory=lambda: {k: [] for k in TARGETS})
    noop_over_bare: list[float] = field(default_factory=list)
    """Each pair's no-op time over its bare flow's, the two run one after the other."""

    def add(self, key: str, wall: float, peak: int = 0) -> None:
        self.times[key].append(wall)
        self.peaks[key].append(peak)


def run_rounds(
    rounds: int,
    pairs: int,
    inst: flyway.Installation,
    cluster: Cluster,
    scratch: Path,
    skip_seed: bool,
) -> Measured:
    admin = admin_url(cluster)
    state = scratch / "state"
    server = local_server.ensure_server(scratch / "prefect")
    env = cli_environment(scratch, cluster, server.api_url)
    cli = RUN_LOCAL
    measured = Measured()

    def fresh(prefix: str) -> dict[str, Credentials]:
        return local.up(state, PLATFORM_DATABASES, admin_url=admin, database_prefix=prefix).owners

    try:
        for r in range(rounds):
            print(f"round {r + 1}/{rounds}", file=sys.stderr)
            prefix = f"bench_a{r}_"
            fresh(prefix)
            run_env = {**env, "AMEIDE_LOCAL_DATABASE_PREFIX": prefix}
            measured.add("a_empty", *run_measured(cli, run_env))
            for _ in range(pairs):
                noop = run_measured(cli, run_env)
                bare = run_measured(BARE_FLOW, run_env)
                measured.add("a_noop", *noop)
                measured.add("d_bare", *bare)
                measured.noop_over_bare.append(noop[0] / bare[0])
            if skip_seed:
                continue
            owners = fresh(f"bench_b{r}_")
            measured.add("b_empty", timed(partial(seed_loop, inst, owners)))
            measured.add("b_noop", timed(partial(seed_loop, inst, owners)))
            owners = fresh(f"bench_c{r}_")
            floor_dir = scratch / f"floor{r}"
            floor_dir.mkdir()
            measured.add("c_floor", timed(partial(psql_floor, owners, floor_dir)))
    finally:
        local_server.stop_server(scratch / "prefect")
    return measured


def report(rounds: int, inst: flyway.Installation, measured: Measured) -> None:
    times = {k: v for k, v in measured.times.items() if v}
    median = {k: statistics.median(v) for k, v in times.items()}
    print(f"\nEight databases, {rounds} rounds, Flyway {inst.version}, medians (min-max):")
    for key, values in times.items():
        print(
            f"  {key:8} {median[key]:7.2f} s  ({min(values):.2f}-{max(values):.2f})  {TARGETS[key]}"
        )
    print("\nRatios (target):")
    if "b_empty" in median:
        print(f"  from empty  a/b = {median['a_empty'] / median['b_empty']:.2f}  (<= 0.35)")
        print(f"  no-op       a/b = {median['a_noop'] / median['b_noop']:.2f}  (<= 0.20)")
        print(f"  from empty  a/c = {median['a_empty'] / median['c_floor']:.2f}")
        print(f"  no-op       a/c = {median['a_noop'] / median['c_floor']:.2f}")
    pairs = measured.noop_over_bare
    print(
        f"  no-op       a/d = {statistics.median(pairs):.2f}  (<= 1.2; median of "
        f"{len(pairs)} side-by-side pairs, {min(pairs):.2f}-{max(pairs):.2f})"
    )
    print("\nPeak memory of each process tree (CLI and its Flyway JVM), the largest (target):")
    for key in ("a_empty", "a_noop", "d_bare"):
        print(f"  {key:8} {max(measured.peaks[key]) / 2**20:5.0f} MiB  (< 300 MiB)")


if __name__ == "__main__":
    main()
