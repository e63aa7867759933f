"""What MAX_CONNECTIONS_PER_THREAD costs: per query, and per branch visited.

With a cap set, every query on a branch connection passes through one more
execute wrapper (it records use for the least-recently-used order). This
prints the time per query with and without it, and the time per branch of a
long walk over branches on one thread, capped vs closing each branch after
use, all measured in the same run against a throw-away PostgreSQL.

    python -m benchmarks.cap [--queries 1000] [--branches 500] [--repeat 5]

Queries run in 20 * ``--repeat`` alternating batches of ``--queries``; the
fastest batch of each kind counts, so bursts of load from other processes
fall out of the ratio.
"""

from __future__ import annotations

import argparse
import functools
import os
import time
import timeit
from collections.abc import Callable

import django


def interleaved(
    repeat: int, first: Callable[[], None], second: Callable[[], None]
) -> tuple[float, float]:
    """Fastest of ``repeat`` runs of each, alternating, in seconds.

    Alternating and keeping the fastest run makes the ratio robust to load
    that other processes put on the machine while this runs.
    """
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeat):
        for run, sink in ((first, times[0]), (second, times[1])):
            start = time.perf_counter()
            run()
            sink.append(time.perf_counter() - start)
    return min(times[0]), min(times[1])


def recorder_call_overhead(calls: int = 1_000_000) -> float:
    """Seconds per query that the use recorder adds, measured without a server.

    Reproduces what Django does per execute wrapper (``functools.partial``
    and one more call) around a no-op in place of the real execute.
    """
    from branching_ops.tracking import _UseRecorder

    def execute(sql: str, params: object, many: bool, context: object) -> None:
        return None

    recorder = _UseRecorder({"schema_a": None, "schema_b": None}, "schema_a")
    bare = timeit.timeit(lambda: execute("SELECT 1", None, False, None), number=calls)
    wrapped = timeit.timeit(
        lambda: functools.partial(recorder, execute)("SELECT 1", None, False, None), number=calls
    )
    return (wrapped - bare) / calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=1_000)
    parser.add_argument("--branches", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    from branching_ops.testing.postgres import running_postgres

    with running_postgres(max_connections=20) as server:
        with server.connect() as setup:
            setup.execute("CREATE ROLE app LOGIN")
            setup.execute("CREATE DATABASE branching_ops OWNER app")
        names = ["plain", "recorded", *(f"walk_{i}" for i in range(args.branches))]
        server.create_schemas("branching_ops", names, owner="app")
        os.environ["BRANCHING_OPS_TEST_PGHOST"] = server.host
        os.environ["BRANCHING_OPS_TEST_PGPORT"] = str(server.port)
        os.environ["DJANGO_SETTINGS_MODULE"] = "tests.project.settings"
        django.setup()
        measure(args.queries, args.branches, args.repeat)


def measure(queries: int, branches: int, repeat: int) -> None:
    from django.db import connections
    from django.test import override_settings

    from branching_ops.tracking import close_branch_connections

    def query_loop(alias: str) -> Callable[[], None]:
        def run() -> None:
            with connections[alias].cursor() as cursor:
                for _ in range(queries):
                    cursor.execute("SELECT 1")

        return run

    def walk(close_each: bool) -> Callable[[], None]:
        def run() -> None:
            for i in range(branches):
                with connections[f"schema_walk_{i}"].cursor() as cursor:
                    cursor.execute("SELECT 1")
                if close_each:
                    close_branch_connections()
            close_branch_connections()

        return run

    capped = override_settings(BRANCHING_OPS={"MAX_CONNECTIONS_PER_THREAD": 3})
    connections["schema_plain"].ensure_connection()
    with capped:  # connects with the use recorder installed; later queries keep it
        connections["schema_recorded"].ensure_connection()
    plain, recorded = interleaved(
        repeat * 20, query_loop("schema_plain"), query_loop("schema_recorded")
    )
    close_branch_connections()
    closing = walk(close_each=True)
    walk_capped = walk(close_each=False)

    def capped_walk() -> None:
        with capped:
            walk_capped()

    walk_closing, walk_capped_time = interleaved(repeat, closing, capped_walk)

    print(f"use recorder, per call (no server): {recorder_call_overhead() * 1e9:8.0f} ns")
    print(f"per query, no cap:                  {plain / queries * 1e6:8.2f} us")
    print(f"per query, cap (recorder on):       {recorded / queries * 1e6:8.2f} us")
    print(f"  ratio capped / plain:             {recorded / plain:8.3f}")
    print(f"per branch, closing each after use: {walk_closing / branches * 1e3:8.2f} ms")
    print(f"per branch, cap 3 evicting LRU:     {walk_capped_time / branches * 1e3:8.2f} ms")
    print(f"  ratio capped / closing:           {walk_capped_time / walk_closing:8.3f}")


if __name__ == "__main__":
    main()
