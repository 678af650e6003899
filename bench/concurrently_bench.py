"""Time a CREATE INDEX CONCURRENTLY migration under each of Flyway's PostgreSQL lock settings.

Flyway 10's default `postgresql.transactional.lock=true` holds its advisory lock in a transaction
on a second connection; a CREATE INDEX CONCURRENTLY waits for every older transaction, that one
included. Each case migrates a fresh database (a table of ROWS rows, then two CONCURRENTLY index
migrations) with Flyway's own command line, and with the project's engine, which sets nothing but
what it always sets. A case still running after --timeout seconds is a hang, stopped there.

    uv run python -m bench.concurrently_bench [--rows N] [--timeout S] [--rounds N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import psycopg
from psycopg import sql

from ameide_migrate.adapters import flyway
from ameide_migrate.adapters.postgres.connection import Credentials
from ameide_migrate.core.errors import MigrateError
from bench.common import pinned_flyway, throwaway_cluster

MIGRATIONS = {
    "V1__items.sql": (
        "CREATE TABLE items (id bigint PRIMARY KEY, tenant int NOT NULL, code text NOT NULL);\n"
        "INSERT INTO items SELECT g, g % 97, 'c' || g FROM generate_series(1, {rows}) g;\n"
    ),
    "V2__items_tenant_idx.sql": "CREATE INDEX CONCURRENTLY items_tenant_idx ON items (tenant);\n",
    "V3__items_code_key.sql": (
        "CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS items_code_key ON items (code);\n"
    ),
}


def fresh_database(admin: Credentials, name: str) -> Credentials:
    with psycopg.connect(**admin.conninfo(5), autocommit=True) as conn:  # type: ignore[arg-type]
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return admin.with_database(name)


def command_line(
    inst: flyway.Installation, db: Credentials, locations: Path, lock: str, timeout: float
) -> float | None:
    """Seconds `flyway migrate` took, None when it was still waiting at `timeout`."""
    env = {
        **os.environ,
        "FLYWAY_URL": db.jdbc_url,
        "FLYWAY_USER": db.user,
        "FLYWAY_PASSWORD": db.password.get_secret_value(),
        "FLYWAY_LOCATIONS": f"filesystem:{locations}",
    }
    started = time.perf_counter()
    try:
        done = subprocess.run(
            [*flyway.command_line(inst), f"-postgresql.transactional.lock={lock}", "migrate"],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return None
    if done.returncode != 0:
        sys.exit(f"FAILED: flyway migrate (lock={lock}):\n{done.stdout}{done.stderr}")
    return time.perf_counter() - started


def engine(inst: flyway.Installation, db: Credentials, locations: Path, timeout: float) -> float:
    """Seconds the project's engine took, JVM start included, with no setting given."""
    started = time.perf_counter()
    target = flyway.Target(db.jdbc_url, db.user, db.password)
    running = flyway.FlywayEngine(inst, {"bench": target})
    try:
        request = flyway.Request(
            "migrate", "bench", (f"filesystem:{locations}",), {}, "flyway_schema_history"
        )
        running.run(request)
    except MigrateError as e:
        sys.exit(f"FAILED: the engine's migrate: {e}")
    finally:
        running.close()
    elapsed = time.perf_counter() - started
    if elapsed > timeout:
        sys.exit(f"FAILED: the engine took {elapsed:.1f} s, beyond the {timeout} s bound")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds that count as a hang")
    parser.add_argument("--rounds", type=int, default=3, help="repetitions; medians are quoted")
    args = parser.parse_args()

    inst = pinned_flyway()
    cases = {
        "cli_lock_true": "flyway CLI, postgresql.transactional.lock=true (Flyway 10's default)",
        "cli_lock_false": "flyway CLI, postgresql.transactional.lock=false",
        "engine": "ameide-migrate's engine, nothing set",
    }
    times: dict[str, list[float | None]] = {k: [] for k in cases}
    with throwaway_cluster() as (cluster, scratch):
        locations = scratch / "sql"
        locations.mkdir()
        for script, text in MIGRATIONS.items():
            (locations / script).write_text(text.format(rows=args.rows))
        admin = cluster.admin
        for r in range(args.rounds):
            print(f"round {r + 1}/{args.rounds}", file=sys.stderr)
            for key in cases:
                db = fresh_database(admin, f"bench_{key}_{r}")
                if key == "engine":
                    times[key].append(engine(inst, db, locations, args.timeout))
                else:
                    lock = "true" if key == "cli_lock_true" else "false"
                    times[key].append(command_line(inst, db, locations, lock, args.timeout))
                    if times[key][-1] is None:
                        # The hung command left its backends waiting: end them with the database.
                        with psycopg.connect(**admin.conninfo(5), autocommit=True) as conn:  # type: ignore[arg-type]
                            conn.execute(
                                sql.SQL("DROP DATABASE {} WITH (FORCE)").format(
                                    sql.Identifier(db.database)
                                )
                            )

    print(
        f"\nThree migrations (a table of {args.rows} rows, then two CREATE INDEX CONCURRENTLY), "
        f"Flyway {inst.version}, {args.rounds} rounds, a hang bounded at {args.timeout:.0f} s:"
    )
    for key, label in cases.items():
        finished = [t for t in times[key] if t is not None]
        hung = len(times[key]) - len(finished)
        median = f"{statistics.median(finished):7.2f} s median" if finished else ""
        figure = median or "    never finished"
        print(f"  {key:15} {figure}  ({hung}/{len(times[key])} hung)  {label}")


if __name__ == "__main__":
    main()
