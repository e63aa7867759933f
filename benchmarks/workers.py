"""Jobs/s of this package's RQ workers against rq's own, measured in one run.

    python -m benchmarks.workers [--jobs 2000] [--chunk 100] [--branches 20]
                                 [--only {forking,in-process}]

Starts a throw-away PostgreSQL and redis-server, then for each pair
(``BranchWorker`` vs ``rq.Worker``, ``BranchSimpleWorker`` vs
``rq.SimpleWorker``) runs ``--jobs`` trivial branch-touching jobs through
each worker in burst mode, in this process, in chunks of ``--chunk`` jobs
that alternate between the two workers (ABBA...), so that a busy machine
slows both alike. Each job returns the time it ended; a burst's figure is
the steady state, from the end of the job that first used the last branch
to the end of the last job, over the jobs in between: a worker's start-up
and teardown (the same rq code on both sides; rq's teardown waits up to a
second for its pub/sub thread, at random) and each branch's first
connection of the burst (which only ours reopens, having closed everything
at the previous teardown, as a worker must) stay out of it. It prints jobs/s
over all chunks and the median of the ratios ours/rq's per ABBA quad (two
rounds, each side once first, once second; a load spike from elsewhere
skews one quad, not the median).

The job opens (or reuses) a branch connection and runs one query. The
in-process pairs run with ``CONN_MAX_AGE=60``, so that both workers reuse
their connections and the ratio measures the per-job hooks, with the jobs
cycling over ``--branches`` branches (that many connections held) and over
one (target >= 0.95 and >= 0.98; the forking pair: >= 0.98); with
``CONN_MAX_AGE=0`` ``BranchSimpleWorker`` reconnects for every job (as
Django does for every request) while ``rq.SimpleWorker`` never closes
anything, and that figure is printed too, as what correctness costs. Then
the same worker with the metrics of ``branching_ops.metrics`` off and on,
at ``CONN_MAX_AGE=0`` (each job opens and closes a connection: the signals
and the files' writes; a forked job process also creates its own files), in
multiprocess mode (a temporary ``PROMETHEUS_MULTIPROC_DIR`` unless one is
set). Last, the cost of the hooks themselves, with one and with
``--branches`` branch connections held.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from dataclasses import dataclass
from typing import cast

import django
from redis import Redis

from branching_ops.testing.postgres import running_postgres
from branching_ops.testing.redis import running_redis

DBNAME = "branching_ops_bench"


@dataclass
class Pair:
    label: str
    baseline: str
    ours: str
    conn_max_age: int
    target: float | None
    metrics: bool = False  # the same worker both sides: metrics off (baseline), on (ours)
    branches: int | None = None  # the jobs cycle over this many; None: --branches


PAIRS = [
    Pair("forking", "rq.Worker", "branching_ops.workers.BranchWorker", 0, 0.98),
    Pair("in-process", "rq.SimpleWorker", "branching_ops.workers.BranchSimpleWorker", 60, 0.95),
    Pair(
        "in-process, 1 branch",
        "rq.SimpleWorker",
        "branching_ops.workers.BranchSimpleWorker",
        60,
        0.98,
        branches=1,
    ),
    Pair(
        "in-process, CONN_MAX_AGE=0",
        "rq.SimpleWorker",
        "branching_ops.workers.BranchSimpleWorker",
        0,
        None,
    ),
    Pair(
        "forking, metrics",
        "branching_ops.workers.BranchWorker",
        "branching_ops.workers.BranchWorker",
        0,
        None,
        metrics=True,
    ),
    Pair(
        "in-process, metrics",
        "branching_ops.workers.BranchSimpleWorker",
        "branching_ops.workers.BranchSimpleWorker",
        0,
        None,
        metrics=True,
    ),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2000, help="jobs per worker class")
    parser.add_argument("--chunk", type=int, default=100, help="jobs per burst run")
    parser.add_argument("--branches", type=int, default=20, help="branches the jobs cycle over")
    parser.add_argument(
        "--only", choices=["forking", "in-process"], help="measure one kind of worker only"
    )
    args = parser.parse_args()
    if args.jobs < 2 * args.chunk:
        parser.error("--jobs must be at least twice --chunk: a ratio needs an ABBA quad")
    if args.chunk <= args.branches:
        parser.error(
            "--chunk must be larger than --branches: "
            "the steady state starts once every branch has had its first job"
        )

    with (
        running_postgres(max_connections=args.branches + 20) as postgres,
        running_redis() as redis,
        tempfile.TemporaryDirectory() as multiproc_dir,
    ):
        os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", multiproc_dir)
        with postgres.connect() as setup:
            setup.execute("CREATE ROLE app LOGIN")
            setup.execute(f"CREATE DATABASE {DBNAME} OWNER app")
        postgres.create_schemas(DBNAME, [f"bench{i}" for i in range(args.branches)], owner="app")
        os.environ.update(
            DJANGO_SETTINGS_MODULE="tests.project.settings",
            BRANCHING_OPS_TEST_PGHOST=postgres.host,
            BRANCHING_OPS_TEST_PGPORT=str(postgres.port),
            BRANCHING_OPS_TEST_DBNAME=DBNAME,
            BRANCHING_OPS_TEST_REDIS_URL=redis.url,
        )
        django.setup()
        print(
            f"{args.jobs} jobs per worker class over {args.branches} branches, "
            f"in burst runs of {args.chunk}"
        )
        for pair in PAIRS:
            if args.only and not pair.label.startswith(args.only):
                continue
            branches = pair.branches or args.branches
            rates, ratio = measure(pair, redis.client(), args.jobs, args.chunk, branches)
            target = f" (target >= {pair.target})" if pair.target else ""
            baseline, ours = pair.baseline.rsplit(".", 1)[-1], pair.ours.rsplit(".", 1)[-1]
            if pair.metrics:
                baseline, ours = "metrics off", "metrics on"
            print(
                f"{pair.label:28} {baseline:18} {rates['baseline']:7.1f} jobs/s   "
                f"{ours:18} {rates['ours']:7.1f} jobs/s   "
                f"median ratio {ratio:.3f}{target}"
            )
        for held in (1, args.branches):
            print(f"hooks of one job, {held:3} branch connections held: {hook_cost(held):6.1f} us")
        in_worker, in_job_process, mark_dead = metrics_cost()
        print(
            "metrics of one job's connection (median): "
            f"{in_worker:.1f} us in a worker process, {in_job_process:.1f} us in a new job "
            f"process (its files created), {mark_dead:.1f} us to mark that process dead"
        )


def measure(
    pair: Pair, connection: Redis[bytes], jobs: int, chunk: int, branches: int
) -> tuple[dict[str, float], float]:
    """Steady-state jobs/s of each worker over all rounds, and the median ratio per ABBA quad.

    A burst run right after the other worker's can be faster or slower than
    one run first (flushed Redis, caches): the ratio of a single round would
    swing by that much either way with the order, and their median with it.
    """
    from django.conf import settings
    from rq import Queue
    from rq.registry import FailedJobRegistry
    from rq.utils import import_attribute

    settings.DATABASES["default"]["CONN_MAX_AGE"] = pair.conn_max_age
    queue = Queue("bench", connection=connection)
    elapsed = dict.fromkeys(["baseline", "ours"], 0.0)
    ratios = []
    seconds = dict.fromkeys(["baseline", "ours"], 0.0)
    for round_ in range(jobs // chunk):
        order = ["baseline", "ours"] if round_ % 2 == 0 else ["ours", "baseline"]
        for side in order:
            path = pair.baseline if side == "baseline" else pair.ours
            if pair.metrics:
                switch_metrics(on=side == "ours")
            connection.flushdb()
            enqueued = [
                queue.enqueue("benchmarks._jobs.touch_branch_timed", f"bench{i % branches}")
                for i in range(chunk)
            ]
            worker = import_attribute(path)([queue], connection=connection)
            worker.work(burst=True, logging_level="WARNING")
            # Every job finished: none failed, none left.
            failed = FailedJobRegistry(queue=queue).count
            if failed or queue.count:
                raise SystemExit(f"{path}: {failed} jobs failed, {queue.count} left")
            ended = sorted(cast(float, job.return_value()) for job in enqueued)
            steady = ended[-1] - ended[branches - 1]
            seconds[side] += steady
            elapsed[side] += steady
        if round_ % 2 == 1:  # an ABBA quad: whichever side runs second gains nothing
            ratios.append(seconds["baseline"] / seconds["ours"])
            seconds = dict.fromkeys(seconds, 0.0)
    if pair.metrics:
        switch_metrics(on=False)
    rates = {side: (chunk - branches) * (jobs // chunk) / total for side, total in elapsed.items()}
    return rates, statistics.median(ratios)


def metrics_cost(forks: int = 200) -> tuple[float, float, float]:
    """Microseconds the 4 signals of one connection cost with the metrics on (medians).

    In a long-lived worker process they update its files; in a job process
    just forked, the first one creates the process's own files first. The
    child first touches its whole heap (``gc.collect()``), so the
    copy-on-write faults any job pays are not counted.
    """
    import gc

    from branching_ops import signals
    from branching_ops.metrics import exporter

    def one_connection() -> float:
        alias = "schema_bench_events"
        start = time.perf_counter()
        signals.branch_alias_tracked.send_robust(sender=None, alias=alias)
        signals.branch_connection_opened.send_robust(sender=None, alias=alias)
        signals.branch_connection_closed.send_robust(sender=None, alias=alias, reason="obsolete")
        signals.branch_alias_untracked.send_robust(sender=None, alias=alias)
        return (time.perf_counter() - start) * 1e6

    exporter.connect()

    in_worker = statistics.median(one_connection() for _ in range(forks))
    in_job_process, mark_dead = [], []
    for _ in range(forks):
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:
            gc.collect()
            os.write(write_end, str(one_connection()).encode())
            os._exit(0)
        os.close(write_end)
        in_job_process.append(float(os.read(read_end, 64)))
        os.close(read_end)
        os.waitpid(pid, 0)
        start = time.perf_counter()
        signals.job_process_exited.send_robust(sender=None, pid=pid)
        mark_dead.append((time.perf_counter() - start) * 1e6)
    exporter.disconnect()
    return in_worker, statistics.median(in_job_process), statistics.median(mark_dead)


def switch_metrics(*, on: bool) -> None:
    """Connect or disconnect the receivers of ``branching_ops.metrics``."""
    from branching_ops.metrics import exporter

    if on:
        exporter.connect()
    else:
        exporter.disconnect()


def hook_cost(held: int) -> float:
    """Microseconds the before- and after-job hooks of BranchSimpleWorker take."""
    from django.conf import settings

    from branching_ops.workers import close_all_connections
    from branching_ops.workers import close_job_leftovers
    from branching_ops.workers import close_old_job_connections
    from tests.project.jobs import touch_branch

    settings.DATABASES["default"]["CONN_MAX_AGE"] = 60
    for i in range(held):
        touch_branch(f"bench{i}")
    rounds = 2000
    start = time.perf_counter()
    for _ in range(rounds):
        close_old_job_connections()
        close_job_leftovers()
    seconds = time.perf_counter() - start
    close_all_connections()
    return seconds / rounds * 1e6


if __name__ == "__main__":
    main()
