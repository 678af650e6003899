"""Times a large migration through the lint and the plan, next to squawk alone on the same file.

    uv run python -m bench.bigfile_bench [--sizes 1 4 20]

For each size (MB) one database folder of a SQL tree holds V1 (a table) and V2, a seed file of
that size: INSERTs of several rows with non-ASCII text, doubled quotes, E'' strings with
backslash escapes, dollar-quoted bodies and comments holding `;`. Three timings each:
  (a) `ameide-migrate lint` of the database's folder, the command line with no database;
  (b) the plan `run --dry-run` builds before any Flyway (`plan.plan_database`: the catalog read
      and checksummed, the history, the drift check, the lint with the target's facts, the
      locks), in this process against a throwaway PostgreSQL, nothing applied yet;
  (c) the floor: squawk alone (`squawk --reporter json FILE`) on V2.
It prints a table: each time, its ratio to squawk's, and its ratio to the size before (linear
time doubles with the file).
"""

from __future__ import annotations

import argparse
import itertools
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ameide_migrate import environments, local, plan
from ameide_migrate.context import RunContext
from ameide_migrate.lint import squawk_binary
from ameide_migrate.settings import Settings
from bench.common import admin_url, throwaway_cluster

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


def make_tree(root: Path, megabytes: float) -> Path:
    """A SQL tree whose one database holds the table and the seed file; the seed file."""
    folder = root / DATABASE
    folder.mkdir(parents=True)
    (folder / "V1__table.sql").write_text(TABLE, encoding="utf-8")
    seed = folder / "V2__seed.sql"
    seed.write_text(seed_file(megabytes), encoding="utf-8")
    return seed


def timed(command: list[str], env: dict[str, str] | None = None) -> float:
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, check=False)
    seconds = time.perf_counter() - started
    if done.returncode not in (0, 1):
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
    rows: list[tuple[float, float, float, float]] = []
    with throwaway_cluster() as (cluster, scratch):
        made = local.up(
            scratch / "state", [DATABASE], admin_url=admin_url(cluster), database_prefix="big_"
        )
        for megabytes in sizes:
            print(f"{megabytes:g} MB ...", file=sys.stderr)
            with tempfile.TemporaryDirectory(prefix="ameide-bigfile-") as scratch_tree:
                tree = Path(scratch_tree) / "sql"
                seed = make_tree(tree, megabytes)
                floor = timed([squawk, "--reporter", "json", str(seed)])
                env = {**os.environ, "AMEIDE_SQL_DIR": str(tree)}
                linted = timed([*LINT, str(tree / DATABASE)], env)
                planned = timed_plan(tree, made)
            rows.append((megabytes, floor, linted, planned))
            print(f"  squawk {floor:.2f} s, lint {linted:.2f} s, plan {planned:.2f} s")
    print("\nOne file of INSERTs per size; lint = `ameide-migrate lint` (the whole command);")
    print("plan = what `run --dry-run` builds before Flyway; x squawk = ratio to squawk alone.")
    print(f"\n{'size':>6} {'squawk':>8} {'lint':>8} {'x squawk':>9} {'plan':>8} {'x squawk':>9}")
    for megabytes, floor, linted, planned in rows:
        print(
            f"{megabytes:>4g} MB {floor:>6.2f} s {linted:>6.2f} s {linted / floor:>8.1f}x "
            f"{planned:>6.2f} s {planned / floor:>8.1f}x"
        )
    print("\nGrowth from one size to the next (time ratio, size ratio):")
    for before, after in itertools.pairwise(rows):
        print(
            f"  {before[0]:g} -> {after[0]:g} MB (x{after[0] / before[0]:g}): "
            f"squawk x{after[1] / before[1]:.1f}, lint x{after[2] / before[2]:.1f}, "
            f"plan x{after[3] / before[3]:.1f}"
        )


if __name__ == "__main__":
    main()
