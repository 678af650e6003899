"""Times a large migration through the lint and the plan, next to squawk alone on the same file.

    uv run python -m bench.bigfile_bench [--sizes 1 4 20]

One database folder of a SQL tree holds V1 (a table) and V2, a seed file of each size in turn
(MB): INSERTs of two rows with non-ASCII text, doubled quotes, E'' strings with backslash
escapes, dollar-quoted bodies and comments holding `;`. On a throwaway PostgreSQL and Prefect
server, nothing applied, four timings a size:
  (a) `ameide-migrate lint` of the database's folder: the command line, no database;
  (b) the plan `run --dry-run` builds before any Flyway (`plan.plan_database`: the tree read and
      checksummed, the history, the drift check, the lint with the target's facts, the locks),
      in this process;
  (c) `ameide-migrate run --env local --dry-run`, the whole command: (b) in a Prefect flow, with
      the flow's own cost;
  (d) the floor: squawk alone (`squawk --reporter json FILE`) on V2.
It prints the commands' own cost (on a seed file of a few rows), a table of each time and its
ratio to squawk's, then the growth from a size to the next (linear time grows as the file does).
"""

from __future__ import annotations

import argparse
import itertools
import subprocess
import sys
import time
from pathlib import Path

from ameide_migrate.adapters.prefect import local_server
from ameide_migrate.config import environments
from ameide_migrate.config.settings import Settings
from ameide_migrate.services import local, plan
from ameide_migrate.services.context import RunContext
from ameide_migrate.services.lint import squawk_binary
from bench.common import RUN_LOCAL, admin_url, cli_environment, throwaway_cluster

DATABASE = "seed"
LINT = [str(Path(sys.executable).parent / "ameide-migrate"), "lint"]
TABLE = "CREATE TABLE seed_items (id bigint PRIMARY KEY, name text, note text, body text);\n"


def seed_file(megabytes: float) -> str:
    """INSERTs up to `megabytes` of UTF-8, with everything a lexer can trip on."""
    limit = int(megabytes * 1024 * 1024)
    parts: list[str] = []
    size, row = 0, 0
    while size < limit:
        row += 1
        statement = (
            f"-- row {row}: Zoë's café; naïve résumé\n"
            "INSERT INTO seed_items (id, name, note, body) VALUES\n"
            f"  ({row}, 'Ærøskøbing ''{row}'' — 東京; ok', E'tab\\there \\'quoted\\' ; {row}', "
            f"$body${row}; it''s a $dollar$ body /* not a comment */ -- nor this$body$),\n"
            f"  (-{row}, /* a comment; */ 'Ünïcødé ☃ \"x\"', NULL, $$x;y$$);\n"
        )
        parts.append(statement)
        size += len(statement.encode())
    return "".join(parts)


def write_tree(root: Path, megabytes: float) -> Path:
    """A SQL tree whose one database holds the table and a seed file of `megabytes`; the seed
    file."""
    folder = root / DATABASE
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "V1__table.sql").write_text(TABLE, encoding="utf-8")
    seed = folder / "V2__seed.sql"
    seed.write_text(seed_file(megabytes), encoding="utf-8")
    return seed


def timed(
    command: list[str], env: dict[str, str] | None = None, ok: tuple[int, ...] = (0,)
) -> float:
    """The command's wall time; fails loudly on an exit not in `ok` (squawk exits 1 on a
    finding)."""
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, check=False)
    seconds = time.perf_counter() - started
    if done.returncode not in ok:
        raise SystemExit(f"{command[0]} exited {done.returncode}: {done.stderr.decode()[-2000:]}")
    return seconds


def timed_plan(tree: Path, owner: local.LocalEnvironment) -> float:
    """The plan of the database, from reading the tree on."""
    started = time.perf_counter()
    settings = Settings(sql_dir=tree)
    catalog = environments.catalog("local", settings)
    ctx = RunContext.create(
        "local", list(catalog.databases.values()), {DATABASE: owner.owners[DATABASE]}, settings
    )
    try:
        planned = plan.plan_database(ctx, DATABASE)
    finally:
        ctx.close()
    seconds = time.perf_counter() - started
    if planned.outcome.pending != ["V1__table.sql", "V2__seed.sql"]:
        raise SystemExit(f"the plan did not see the two migrations: {planned.outcome}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=float, nargs="+", default=[1, 4, 20], help="MB each")
    sizes = parser.parse_args().sizes
    squawk = str(squawk_binary())
    rows: list[tuple[float, float, float, float, float]] = []
    with throwaway_cluster() as (cluster, scratch):
        made = local.up(
            scratch / "state", [DATABASE], admin_url=admin_url(cluster), database_prefix="big_"
        )
        server = local_server.ensure_server(scratch / "prefect")
        tree = scratch / "sql"
        env = {
            **cli_environment(scratch, cluster, server.api_url),
            "AMEIDE_LOCAL_DATABASE_PREFIX": "big_",
            "AMEIDE_SQL_DIR": str(tree),
        }
        try:
            # The tree's deployments are registered by this first run.
            write_tree(tree, 0.001)
            timed([*RUN_LOCAL, "--dry-run"], env)
            flow_cost = timed([*RUN_LOCAL, "--dry-run"], env)
            lint_cost = timed([*LINT, str(tree / DATABASE)], env)
            print(f"a few rows: lint {lint_cost:.2f} s, dry run {flow_cost:.2f} s", file=sys.stderr)
            for megabytes in sizes:
                print(f"{megabytes:g} MB ...", file=sys.stderr)
                seed = write_tree(tree, megabytes)
                floor = timed([squawk, "--reporter", "json", str(seed)], ok=(0, 1))
                linted = timed([*LINT, str(tree / DATABASE)], env)
                planned = timed_plan(tree, made)
                dry_run = timed([*RUN_LOCAL, "--dry-run"], env)
                rows.append((megabytes, floor, linted, planned, dry_run))
                print(
                    f"  squawk {floor:.2f} s, lint {linted:.2f} s, plan {planned:.2f} s, "
                    f"run --dry-run {dry_run:.2f} s",
                    file=sys.stderr,
                )
        finally:
            local_server.stop_server(scratch / "prefect")
    print("\nOne seed file of INSERTs a size; x: the time over squawk's on the same file.")
    print(
        f"A seed file of a few rows (the command's own cost): lint {lint_cost:.2f} s, "
        f"run --dry-run {flow_cost:.2f} s"
    )
    print(
        f"\n{'size':>6} {'squawk':>8} {'lint':>8} {'x':>5} {'plan':>8} {'x':>5} "
        f"{'dry run':>8} {'x':>5}"
    )
    for megabytes, floor, linted, planned, dry_run in rows:
        print(
            f"{megabytes:>3g} MB {floor:>6.2f} s {linted:>6.2f} s {linted / floor:>5.1f} "
            f"{planned:>6.2f} s {planned / floor:>5.1f} {dry_run:>6.2f} s {dry_run / floor:>5.1f}"
        )
    print("\nGrowth from a size to the next:")
    for before, after in itertools.pairwise(rows):
        print(
            f"  {before[0]:g} -> {after[0]:g} MB (x{after[0] / before[0]:g}): "
            f"squawk x{after[1] / before[1]:.1f}, lint x{after[2] / before[2]:.1f}, "
            f"plan x{after[3] / before[3]:.1f}, dry run x{after[4] / before[4]:.1f}"
        )


if __name__ == "__main__":
    main()
