"""The Kubernetes tier's figures: the cluster harness's build and start, and trigger-to-done of
the staging deployment on the node against the local default on the same eight databases.

    uv run python -m bench.cluster_bench [--rounds 3] [--cold] [--skip-chain]

--cold builds the cluster from an empty Go build cache into a scratch folder (about 11 minutes on
2 cores); without it the figure of the last cold build in .cache/k8s/build.log is shown. The
chain figures come from the k8s chain test, run with AMEIDE_BENCH_RESULTS pointing at a file it
fills: the real Prefect server, registry, OpenBao, PostgreSQL and worker of that test.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from tests.k8s_cluster import DEFAULT_CACHE, Cluster, build

ROOT = Path(__file__).resolve().parent.parent


COLD_RECORD = DEFAULT_CACHE / "cold-build.json"


def _last_cold_build() -> float | None:
    if not COLD_RECORD.is_file():
        return None
    return float(json.loads(COLD_RECORD.read_text())["seconds"])


def _cold_build() -> float:
    """From nothing: an empty Go build cache and an empty binaries folder (the module cache
    stays: its downloads are not what a developer waits for twice)."""
    with tempfile.TemporaryDirectory(prefix="k8s-cold-") as scratch:
        os.environ["GOCACHE"] = str(Path(scratch) / "gocache")
        started = time.monotonic()
        build(Path(scratch) / "k8s")
        seconds = time.monotonic() - started
    del os.environ["GOCACHE"]
    COLD_RECORD.parent.mkdir(parents=True, exist_ok=True)
    COLD_RECORD.write_text(json.dumps({"seconds": seconds}))
    return seconds


def _starts(rounds: int) -> list[dict[str, float]]:
    binaries = build()
    timings = []
    for _ in range(rounds):
        cluster = Cluster(binaries)
        with cluster:
            pass
        timings.append(dict(cluster.timings))  # after the stop, which it times too
    return timings


def _chain() -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="chain-bench-") as scratch:
        results = Path(scratch) / "results.json"
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "-q",
                "-p",
                "no:cacheprovider",
                "tests/test_k8s_chain.py",
                "-k",
                "trigger_runs_the_staging_deployment",
            ],
            cwd=ROOT,
            env={**os.environ, "AMEIDE_BENCH_RESULTS": str(results)},
            check=False,
        )
        if done.returncode != 0 or not results.is_file():
            raise SystemExit("the chain test failed: no figures")
        return dict(json.loads(results.read_text()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cold", action="store_true", help="build from an empty Go cache too")
    parser.add_argument("--skip-chain", action="store_true")
    args = parser.parse_args()

    console = Console()
    table = Table(title="Kubernetes tier (2 cores)", title_justify="left")
    table.add_column("figure")
    table.add_column("seconds", justify="right")

    cold = _cold_build() if args.cold else _last_cold_build()
    table.add_row(
        "cluster build, cold (empty Go cache)" + ("" if args.cold else ", last recorded"),
        f"{cold:.0f}" if cold is not None else "n/a",
    )
    started = time.monotonic()
    build()
    table.add_row("cluster build, warm (binaries cached)", f"{time.monotonic() - started:.2f}")
    starts = _starts(args.rounds)
    ready = [t["start_to_ready"] for t in starts]
    table.add_row("cluster start to node Ready, first start", f"{ready[0]:.1f}")
    table.add_row(
        f"cluster start to node Ready, median of {len(ready)}", f"{statistics.median(ready):.1f}"
    )
    table.add_row("cluster stop", f"{statistics.median(t['stop'] for t in starts):.1f}")

    if not args.skip_chain:
        chain = _chain()
        staging, local = chain["staging_trigger_to_done"], chain["local_run"]
        table.add_row("staging: trigger to done on the node, 8 databases", f"{staging:.1f}")
        table.add_row("local default: run, the same 8 databases", f"{local:.1f}")
        table.add_row("staging / local", f"{staging / local:.2f}")
    console.print(table)


if __name__ == "__main__":
    main()
