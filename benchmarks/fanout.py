"""``branch_run``'s cost per branch beyond the command itself, and each worker's RSS growth.

A trivial command (one ``SELECT 1`` on its branch, through ``call_command``)
over ``--branches`` branches: timed in a plain loop in one process (the
baseline: the command itself, its branch activated and closed as a worker
does), then with ``run_branches(parallel=2)``; each worker reports its RSS
after every branch; then over two ``BranchWorker``s with ``--via-rq``, one
job per branch and one per batch. ``python -m benchmarks.fanout [--branches 1000]``.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from typing import TextIO

import django

from benchmarks._database import rss_mb
from branching_ops.testing.postgres import running_postgres
from branching_ops.testing.redis import running_redis

TARGET_MS = 5.0
TARGET_RSS_MB = 10.0
PARALLEL = 2
BATCH_SIZE = 50  # --via-rq --batch-size: 20 jobs of 1,000 branches


@dataclass(frozen=True)
class RssTask:
    """The trivial command, then this worker's pid and RSS into the branch's log."""

    def __call__(self, branch: str, stdout: TextIO, stderr: TextIO) -> None:
        from django.core.management import call_command

        call_command("touch_branches", "--count", "0", stdout=io.StringIO())
        from django.db import connections

        with connections[f"schema_{branch}"].cursor() as cursor:
            cursor.execute("SELECT 1")
        stdout.write(f"{os.getpid()} {rss_mb():.2f}\n")


def worker_rss(log_dir: Path, branches: list[Any]) -> dict[str, list[float]]:
    """Each worker's RSS after each of its branches, from the branches' logs."""
    per_worker: dict[str, list[float]] = defaultdict(list)
    for branch in branches:
        pid, rss = (log_dir / f"{branch.schema}.log").read_text().split()
        per_worker[pid].append(float(rss))
    return per_worker


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--branches", type=int, default=1000)
    count = parser.parse_args().branches
    names = [f"f{i}" for i in range(count)]
    with running_postgres(max_connections=20) as server, running_redis() as redis:
        with server.connect() as admin:
            admin.execute("CREATE ROLE app LOGIN")
            admin.execute("CREATE DATABASE bench OWNER app")
        server.create_schemas("bench", names, owner="app")
        os.environ.update(
            DJANGO_SETTINGS_MODULE="tests.project.settings",
            BRANCHING_OPS_TEST_PGHOST=server.host,
            BRANCHING_OPS_TEST_PGPORT=str(server.port),
            BRANCHING_OPS_TEST_DBNAME="bench",
            BRANCHING_OPS_TEST_REDIS_URL=redis.url,
        )
        django.setup()
        from benchmarks.fanout import RssTask as Importable  # not __main__'s: RQ pickles it
        from branching_ops.fanout import run_branch
        from branching_ops.fanout import run_branches
        from branching_ops.fanout.local import close_all_connections
        from branching_ops.fanout.selection import Branch

        task = Importable()
        branches = [Branch(name, name) for name in names]
        started = time.perf_counter()
        for branch in branches:
            run_branch(task, branch, io.StringIO())
        loop = time.perf_counter() - started
        close_all_connections()

        log_dir = Path(f"/tmp/branch_run-bench-{os.getpid()}")
        started = time.perf_counter()
        report = run_branches(branches, task, parallel=PARALLEL, log_dir=log_dir)
        fanned = time.perf_counter() - started
        assert report.exit_status == 0, report.table()
        rss = worker_rss(log_dir, branches)

        workers = [
            subprocess.Popen(
                [
                    sys.executable,
                    "manage.py",
                    "rqworker",
                    "--worker-class",
                    "branching_ops.workers.BranchWorker",
                    "default",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for _ in range(PARALLEL)
        ]
        try:
            started = time.perf_counter()
            report = run_branches(branches, task, parallel=PARALLEL, via_rq="default")
            via_rq = time.perf_counter() - started
            assert report.exit_status == 0, report.table()
            started = time.perf_counter()
            report = run_branches(
                branches, task, parallel=PARALLEL, via_rq="default", batch_size=BATCH_SIZE
            )
            batched = time.perf_counter() - started
        finally:
            for worker in workers:
                worker.terminate()
                worker.wait()
        shutil.rmtree(log_dir)
    assert report.exit_status == 0, report.table()
    loop_ms = loop / count * 1000
    # Worker time per branch (wall x workers / branches) beyond the command's own.
    beyond_ms = fanned * PARALLEL / count * 1000 - loop_ms
    print(f"{count} branches, --parallel {PARALLEL}")
    print(f"loop in one process: {loop:.2f} s ({loop_ms:.2f} ms per branch)")
    print(f"run_branches:        {fanned:.2f} s wall ({fanned / count * 1000:.2f} ms per branch)")
    print(f"beyond the command:  {beyond_ms:.2f} ms per branch per worker (target <= {TARGET_MS})")
    print(f"--via-rq, {PARALLEL} BranchWorkers: {via_rq:.2f} s wall, {via_rq / fanned:.1f}x local")
    print(
        f"--via-rq --batch-size {BATCH_SIZE}:    {batched:.2f} s wall, "
        f"{batched / fanned:.1f}x local, {via_rq / batched:.1f}x faster than one job per branch"
    )
    growths = []
    for pid, samples in rss.items():
        growth = samples[-1] - samples[0]
        growths.append(growth)
        print(
            f"worker {pid}: {len(samples)} branches, RSS {samples[0]:.1f} -> {samples[-1]:.1f} MB"
        )
    ok = beyond_ms <= TARGET_MS and max(growths) <= TARGET_RSS_MB
    print("PASS" if ok else "MISS")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
