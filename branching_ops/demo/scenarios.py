"""The demo's scenarios: one per entry point where branch connections leak.

Each runs one child process per mode (see :mod:`branching_ops.demo.child`)
against the same PostgreSQL and records every outcome in a ``RunResult``.
"""

from __future__ import annotations

import http.client
import itertools
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass

from branching_ops.demo.command import run_branches
from branching_ops.demo.harness import DemoParams
from branching_ops.demo.harness import Run

REQUEST_TIMEOUT = 30.0
# branching_ops' cap in the persistent-connections scenario.
CAP = 1
# How long each job works on its branch (see project.work_on_branch).
JOB_SECONDS = 0.02


@dataclass(frozen=True)
class Scenario:
    """A workload, the child process that serves it, and how to drive it.

    ``flags`` are the child's flags beyond the mode and the database (given
    the parameters and the Redis URL); ``drive`` sends the work to the ready
    child and fills the run's result. ``server_threads``: each of
    ``--threads`` server threads needs a connection at once, in any mode.
    """

    name: str
    unit: str
    module: str
    total: Callable[[DemoParams], int]
    title: Callable[[DemoParams], str]
    flags: Callable[[DemoParams, str | None], list[str]]
    drive: Callable[[Run], None]
    needs_redis: bool = False
    server_threads: bool = False


def _send_requests(run: Run) -> None:
    """Send the run's requests over ``--branches`` from ``--threads`` client threads."""
    params, result, port = run.params, run.result, run.ready["port"]
    numbers = itertools.count()
    lock = threading.Lock()
    stop = threading.Event()

    def client() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=REQUEST_TIMEOUT)
        try:
            while not stop.is_set():
                with lock:
                    number = next(numbers)
                if number >= result.total:
                    return
                status, body = _request(connection, f"/branch/b{number % params.branches}/")
                error = None if status == 200 else body.decode(errors="replace")
                with lock:
                    result.record(error, run.backends.elapsed())
        finally:
            connection.close()

    run.backends.start()
    clients = [threading.Thread(target=client, daemon=True) for _ in range(params.threads)]
    for thread in clients:
        thread.start()
    try:
        while any(thread.is_alive() for thread in clients):
            run.show_progress()
            stop.wait(0.1)
    finally:
        stop.set()
        for thread in clients:
            thread.join()
    run.show_progress()
    run.finish()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=REQUEST_TIMEOUT)
    status, body = _request(connection, "/stats/")
    connection.close()
    if status == 200:
        run.result.tracked_aliases = json.loads(body)["tracked"]


def _request(connection: http.client.HTTPConnection, path: str) -> tuple[int, bytes]:
    """GET ``path`` on a keep-alive connection; status 0 if the exchange failed."""
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read()
    except (OSError, http.client.HTTPException) as exc:
        connection.close()  # the next request reconnects
        return 0, str(exc).encode()


def _enqueue_jobs(run: Run) -> None:
    """Queue ``--jobs`` jobs over ``--branches`` for the run's in-process worker."""
    from redis import Redis
    from rq import Queue

    from branching_ops.demo.worker import queue_name

    assert run.redis_url is not None
    jobs = [
        Queue.prepare_data(
            "branching_ops.demo.project.work_on_branch",
            (f"b{number % run.params.branches}", JOB_SECONDS),
        )
        for number in range(run.params.jobs)
    ]
    run.backends.start()
    with Redis.from_url(run.redis_url) as connection:
        Queue(queue_name(run.mode.name), connection=connection).enqueue_many(jobs)
    run.collect_outcomes()
    run.finish()


def _start_runs(run: Run) -> None:
    """Let the run's command loop go."""
    run.backends.start()
    run.child.send("go")
    run.collect_outcomes()
    run.finish()


SCENARIOS = {
    scenario.name: scenario
    for scenario in (
        Scenario(
            "http",
            "requests",
            "branching_ops.demo.server",
            lambda p: p.requests,
            lambda p: (
                f"HTTP, CONN_MAX_AGE=0: {p.requests} requests over {p.branches} branches, "
                f"{p.threads} server threads"
            ),
            lambda p, redis_url: ["--conn-max-age", "0", "--threads", str(p.threads)],
            _send_requests,
            server_threads=True,
        ),
        Scenario(
            "persistent",
            "requests",
            "branching_ops.demo.server",
            lambda p: p.requests,
            lambda p: (
                f"HTTP, CONN_MAX_AGE={p.conn_max_age}: {p.requests} requests over "
                f"{p.branches} branches, {p.threads} server threads\n"
                f"(branching_ops with MAX_CONNECTIONS_PER_THREAD={CAP})"
            ),
            lambda p, redis_url: [
                *("--conn-max-age", str(p.conn_max_age), "--threads", str(p.threads)),
                *("--max-connections-per-thread", str(CAP)),
            ],
            _send_requests,
            server_threads=True,
        ),
        Scenario(
            "worker",
            "jobs",
            "branching_ops.demo.worker",
            lambda p: p.jobs,
            lambda p: f"In-process RQ worker: {p.jobs} jobs over {p.branches} branches",
            lambda p, redis_url: ["--conn-max-age", "0", "--redis-url", str(redis_url)],
            _enqueue_jobs,
            needs_redis=True,
        ),
        Scenario(
            "command",
            "runs",
            "branching_ops.demo.command",
            lambda p: p.runs,
            lambda p: (
                f"call_command() {p.runs} times in one process, "
                f"{len(run_branches(0, p.runs, p.branches))} branches each"
            ),
            lambda p, redis_url: [
                *("--conn-max-age", "0", "--runs", str(p.runs), "--branches", str(p.branches)),
            ],
            _start_runs,
        ),
    )
}
