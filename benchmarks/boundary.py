"""One boundary pass against Django's own, as a function of the connections held.

At every request boundary Django runs ``close_old_connections()`` over its
static aliases and this package runs ``close_old_branch_connections()`` over
the thread's branch aliases. This prints what one call of each costs with 0,
1, 10 and 100 persistent connections open (``CONN_MAX_AGE=600``): Django's
with that many static aliases configured and open, ours with that many
branch connections open on the same thread.

    python -m benchmarks.boundary [--held 0 1 10 100] [--rounds 101]

Each count runs in a process of its own, because Django's pass walks every
configured alias and settings are configured once per process. In that
process the two passes alternate in chunks (the order flips every round),
each chunk timing many calls in a row; the figures are the medians over the
chunks, and the ratio is the median of the per-round ratios ours/Django's,
so load from other processes on the machine hits both alike.

Targets: ours within 1.2x of Django's for 1, 10 and 100 connections, and
linear: per connection held, 100 cost at most 1.2x what 10 cost.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

from benchmarks._database import DBNAME
from benchmarks._database import bench_database
from branching_ops.demo.project import APP_ROLE

TARGET_RATIO = 1.2
TARGET_LINEAR = 1.2
PERSISTENT = 600


def passes_per_chunk(held: int) -> int:
    """About the same time per chunk at every count."""
    return max(20, 2000 // max(held, 1))


def child(held: int, rounds: int, host: str, port: int) -> dict[str, float]:
    """Configure Django with ``held`` static aliases, open them and as many branches; time."""
    import django
    from django.conf import settings

    from branching_ops.databases import BranchDatabases

    database = {
        "ENGINE": "django.db.backends.postgresql",
        "HOST": host,
        "PORT": str(port),
        "NAME": DBNAME,
        "USER": APP_ROLE,
        "CONN_MAX_AGE": PERSISTENT,
    }
    static = {"default": database} | {f"static_{i}": dict(database) for i in range(1, held)}
    settings.configure(
        INSTALLED_APPS=["branching_ops"], DATABASES=BranchDatabases(static), USE_TZ=True
    )
    django.setup()

    from django.db import close_old_connections
    from django.db import connections

    from branching_ops.tracking import close_old_branch_connections
    from branching_ops.tracking import tracked_aliases

    if held:
        for alias in static:
            connections[alias].ensure_connection()
    for i in range(held):
        connections[f"schema_held_{i}"].ensure_connection()
    assert len(tracked_aliases()) == held
    assert len(connections.all(initialized_only=True)) == held

    number = passes_per_chunk(held)

    def time_chunk(function: Callable[[], object]) -> float:
        start = time.perf_counter()
        for _ in range(number):
            function()
        return (time.perf_counter() - start) / number * 1e6

    django_times: list[float] = []
    ours_times: list[float] = []
    ratios = []
    for round_ in range(rounds):
        if round_ % 2 == 0:
            theirs = time_chunk(close_old_connections)
            ours = time_chunk(close_old_branch_connections)
        else:
            ours = time_chunk(close_old_branch_connections)
            theirs = time_chunk(close_old_connections)
        django_times.append(theirs)
        ours_times.append(ours)
        ratios.append(ours / theirs)
    # Nothing was closed: every connection is still open and tracked.
    assert len(tracked_aliases()) == held
    assert len(connections.all(initialized_only=True)) == held
    return {
        "django": statistics.median(django_times),
        "ours": statistics.median(ours_times),
        "ratio": statistics.median(ratios),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--held", type=int, nargs="+", default=[0, 1, 10, 100])
    parser.add_argument("--rounds", type=int, default=101, help="chunks of each pass")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--host", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(child(args.child, args.rounds, args.host, args.port)))
        return 0

    most = max(args.held)
    branches = [f"held_{i}" for i in range(most)]
    with bench_database(branches, max_connections=2 * most + 20) as server:
        print(
            f"one pass, persistent connections (CONN_MAX_AGE={PERSISTENT}); medians over "
            f"{args.rounds} alternating chunks"
        )
        print(f"{'held':>5} {'Django µs':>10} {'ours µs':>9} {'ours/Django':>12} {'µs/held':>8}")
        results = {}
        for held in args.held:
            command = [sys.executable, "-m", "benchmarks.boundary", "--child", str(held)]
            command += ["--rounds", str(args.rounds), "--host", server.host]
            output = subprocess.run(
                [*command, "--port", str(server.port)],
                check=True,
                capture_output=True,
                text=True,
                env=os.environ,
            ).stdout
            result = results[held] = json.loads(output.splitlines()[-1])
            per_held = f"{result['ours'] / held:8.2f}" if held else f"{'-':>8}"
            verdict = ""
            if held:
                ok = result["ratio"] <= TARGET_RATIO
                verdict = f"  (target ≤ {TARGET_RATIO}: {'PASS' if ok else 'MISS'})"
            print(
                f"{held:5} {result['django']:10.2f} {result['ours']:9.2f} "
                f"{result['ratio']:12.2f} {per_held}{verdict}"
            )
    verdicts = [results[held]["ratio"] <= TARGET_RATIO for held in results if held]
    if 10 in results and 100 in results:
        growth = (results[100]["ours"] / 100) / (results[10]["ours"] / 10)
        ok = growth <= TARGET_LINEAR
        verdicts.append(ok)
        print(
            f"per connection held, 100 vs 10: {growth:.2f}x "
            f"(target ≤ {TARGET_LINEAR}: {'PASS' if ok else 'MISS'})"
        )
    return 0 if all(verdicts) else 1


if __name__ == "__main__":
    raise SystemExit(main())
