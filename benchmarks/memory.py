"""One thread visits many distinct branches: memory and time per visit, per mode.

Each visit is what a request to a new branch does: request_started, connect
and run a tiny query on the branch, request_finished (``CONN_MAX_AGE=0``, so
the mode's receivers close the connection). Each mode runs in a fresh
process, so its RSS growth is its own; growth is measured from after a
warm-up of 100 visits, after a ``gc.collect()``.

The never-untrack approach walks every alias it ever saw at every request
boundary, so its run time grows with the square of the branches visited: it
gets its own, smaller, count.

    python -m benchmarks.memory [--branches 100000] [--never-untrack-branches 5000]
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import time

from benchmarks._database import DBNAME
from benchmarks._database import bench_database
from benchmarks._database import rss_mb
from branching_ops.demo import project
from branching_ops.demo.project import APP_ROLE
from branching_ops.demo.project import BRANCHING_OPS
from branching_ops.demo.project import UPSTREAM

TARGET_MB = 10.0
WARM_UP = 100
CHECKPOINTS = (1_000, 5_000, 10_000, 20_000, 50_000, 100_000, 200_000)


def visit(name: str) -> None:
    from django.core.signals import request_finished
    from django.core.signals import request_started
    from django.db import connections

    request_started.send(sender=None)
    with connections[f"schema_{name}"].cursor() as cursor:
        cursor.execute("SELECT 1")
    request_finished.send(sender=None)


def child(mode_name: str, count: int, host: str, port: int) -> None:
    """Visit ``count`` branches; print a JSON line at every checkpoint."""
    mode = project.MODES[mode_name]
    project.configure(mode, host=host, port=port, dbname=DBNAME, user=APP_ROLE, conn_max_age=0)
    for number in range(WARM_UP):
        visit(f"warm_up_{number}")
    gc.collect()
    baseline = rss_mb()
    checkpoints = [c for c in CHECKPOINTS if c < count] + [count]
    visited, chunk_start = 0, time.perf_counter()
    for checkpoint in checkpoints:
        for number in range(visited, checkpoint):
            visit(f"b{number}")
        chunk_micros = (time.perf_counter() - chunk_start) / (checkpoint - visited) * 1e6
        gc.collect()
        line = {
            "visited": checkpoint,
            "rss_growth_mb": rss_mb() - baseline,
            "tracked": mode.tracked(),
            "micros_per_visit": chunk_micros,
        }
        print(json.dumps(line), flush=True)
        visited, chunk_start = checkpoint, time.perf_counter()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--branches", type=int, default=100_000, help="default: %(default)s")
    parser.add_argument(
        "--never-untrack-branches", type=int, default=5_000, help="default: %(default)s"
    )
    parser.add_argument("--child", nargs=4, metavar=("MODE", "COUNT", "HOST", "PORT"))
    args = parser.parse_args()
    if args.child:
        mode, count, host, port = args.child
        child(mode, int(count), host, int(port))
        return 0

    verdict = True
    header = f"{'mode':<34} {'visited':>9} {'RSS growth MB':>14} {'tracked':>8} {'µs/visit':>9}"
    visited = max(args.branches, args.never_untrack_branches)
    names = [*(f"warm_up_{n}" for n in range(WARM_UP)), *(f"b{n}" for n in range(visited))]
    with bench_database(names) as server:
        print(header)
        for mode, count in (
            (BRANCHING_OPS, args.branches),
            (UPSTREAM, args.never_untrack_branches),
        ):
            command = [sys.executable, "-m", "benchmarks.memory", "--child", mode.name,
                       str(count), server.host, str(server.port)]  # fmt: skip
            with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as process:
                assert process.stdout is not None
                for text in process.stdout:
                    line = json.loads(text)
                    print(
                        f"{mode.label:<34} {line['visited']:>9,} {line['rss_growth_mb']:>14.1f} "
                        f"{line['tracked']:>8,} {line['micros_per_visit']:>9,.0f}",
                        flush=True,
                    )
            if process.returncode:
                raise SystemExit(f"{mode.name} failed with exit status {process.returncode}")
            if mode is BRANCHING_OPS:
                verdict = line["rss_growth_mb"] < TARGET_MB
                print(
                    f"  target for branching_ops: < {TARGET_MB:g} MB growth over {count:,} "
                    f"branches: {'PASS' if verdict else 'MISS'}"
                )
    return 0 if verdict else 1


if __name__ == "__main__":
    raise SystemExit(main())
