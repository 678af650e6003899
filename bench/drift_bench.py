"""Times the native drift check against a loop of `flyway info` over the same databases.

    uv run python -m bench.drift_bench [--sizes 8 100]

For each N it creates N databases migrated to the latest `threads` schema (one migrated by
Flyway, the others cloned from it with CREATE DATABASE ... TEMPLATE, history included), then times
in one run: the native check of all N (history read with psycopg, concurrently, compared with the
catalog; no JVM) and the seed's way, `flyway info` with Flyway's command line as shipped, once per
database in sequence. It prints both, the ratio, and whether every verdict was "in sync".
Targets: 100 databases in under 3 s wall, at least 20 times faster than the loop.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from psycopg import sql

from ameide_migrate.adapters import flyway
from ameide_migrate.adapters.flyway import FlywayEngine, Request, Target
from ameide_migrate.adapters.postgres.connection import Credentials, connect
from ameide_migrate.adapters.postgres.fingerprint import read_schema_state, record_fingerprint
from ameide_migrate.config import environments
from ameide_migrate.config.settings import Settings
from ameide_migrate.core import recovery
from ameide_migrate.core.catalog import DatabaseCatalog, load_catalog
from ameide_migrate.services import drift
from bench.common import pinned_flyway, throwaway_cluster

REPO = Path(__file__).resolve().parent.parent
LOCAL_PLACEHOLDERS = environments.get(
    "local", Settings(sql_dir=REPO / "db/flyway/sql")
).flyway_placeholders()
TABLE = "flyway_schema_history"


def create_databases(
    admin: Credentials, db: DatabaseCatalog, inst: flyway.Installation, n: int
) -> list[Credentials]:
    template = admin.with_database(f"bench_{n}_template")
    with connect(admin) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(template.database)))
    engine = FlywayEngine(inst, {"t": Target(template.jdbc_url, admin.user, admin.password)})
    try:
        engine.run(
            Request(
                "migrate",
                "t",
                (f"filesystem:{db.directory}",),
                LOCAL_PLACEHOLDERS,
                TABLE,
            )
        )
    finally:
        engine.close()
    # As after a migrate by the flow: the clones carry the fingerprint the drift check compares.
    record_fingerprint(template, str(db.latest_version), TABLE)
    targets = [admin.with_database(f"bench_{n}_{i}") for i in range(n)]
    with connect(admin) as conn:
        for target in targets:
            conn.execute(
                sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                    sql.Identifier(target.database), sql.Identifier(template.database)
                )
            )
    return targets


def native_check(db: DatabaseCatalog, targets: list[Credentials]) -> tuple[float, set[str]]:
    started = time.perf_counter()

    def one(creds: Credentials) -> drift.DatabaseDrift:
        # What the drift flow does per database: the history, and the schema's fingerprint.
        state = read_schema_state(creds, TABLE)
        subject = recovery.Subject("bench", creds.database)
        return drift.check(subject, db, state.history, state.recorded, state.live)

    with ThreadPoolExecutor(max_workers=16) as pool:
        reports = list(pool.map(one, targets))
    return time.perf_counter() - started, {r.verdict.value for r in reports}


def flyway_info_loop(
    inst: flyway.Installation, db: DatabaseCatalog, targets: list[Credentials]
) -> float:
    stock = [inst.java, "-cp", f"{inst.home / 'lib'}/*", flyway.CLI_CLASS, "-skipCheckForUpdate"]
    started = time.perf_counter()
    for creds in targets:
        env = {
            **os.environ,
            "FLYWAY_URL": creds.jdbc_url,
            "FLYWAY_USER": creds.user,
            "FLYWAY_PASSWORD": creds.password.get_secret_value(),
            "FLYWAY_LOCATIONS": f"filesystem:{db.directory}",
            "FLYWAY_PLACEHOLDERS_ENVIRONMENT": "local",
        }
        subprocess.run(
            [*stock, "info", "-outputType=json"], env=env, check=True, capture_output=True
        )
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[8, 100])
    sizes = parser.parse_args().sizes

    inst = pinned_flyway()
    catalog = load_catalog(
        REPO / "db/flyway/sql",
        placeholders=LOCAL_PLACEHOLDERS,
    )
    db = catalog.databases["threads"]
    rows = []
    with throwaway_cluster() as (cluster, _):
        for n in sizes:
            print(f"creating {n} databases", file=sys.stderr)
            targets = create_databases(cluster.admin, db, inst, n)
            native_check(db, targets[:2])  # warm the imports and the server's caches
            native, verdicts = native_check(db, targets)
            print(f"flyway info over {n} databases", file=sys.stderr)
            loop = flyway_info_loop(inst, db, targets)
            rows.append((n, native, loop, verdicts))

    print(f"\nDrift check, Flyway {inst.version}, one run:")
    print(f"  {'databases':>9}  {'native':>9}  {'flyway info loop':>16}  {'ratio':>6}  verdicts")
    for n, native, loop, verdicts in rows:
        seen = ", ".join(sorted(verdicts))
        print(f"  {n:>9}  {native:8.2f}s  {loop:15.2f}s  {loop / native:5.0f}x  {seen}")
    print("\nTargets: 100 databases under 3 s; at least 20x faster than the loop.")


if __name__ == "__main__":
    main()
