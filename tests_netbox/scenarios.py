"""The measured scenarios: each runs NetBox one way and returns what the server saw.

Every count comes from PostgreSQL (``pg_stat_activity``, its DEBUG1 log),
never from inside NetBox. A scenario starts on an empty server (every NetBox
backend terminated) and leaves it empty.
"""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from dataclasses import field

import psycopg
from rq.job import Job
from rq.job import JobStatus

from branching_ops.names import APPLICATION_NAME_MARKER
from branching_ops.testing.postgres import authorized_connections
from branching_ops.testing.processes import free_port
from branching_ops.testing.processes import stop_process
from branching_ops.testing.processes import wait_until
from tests_netbox.instance import BIN
from tests_netbox.instance import BRANCH_BACKENDS_SQL
from tests_netbox.instance import BRANCHES
from tests_netbox.instance import SETTLE_SECONDS
from tests_netbox.instance import NetBox
from tests_netbox.instance import Setting
from tests_netbox.instance import settled

# The server the scenarios run against: 3 of these are reserved for
# superusers (the monitor), the rest is NetBox's. Stock, at CONN_MAX_AGE 300,
# keeps THREADS x BRANCHES (40) branch connections: more than the 27 slots.
MAX_CONNECTIONS = 30
THREADS = 4  # gunicorn gthread threads, one worker process
CLIENTS = 8
REQUESTS = 120  # at CONN_MAX_AGE 300: stock runs out of slots after about 50
CLOSED_REQUESTS = 4 * BRANCHES  # at CONN_MAX_AGE 0: each closes what it opened
JOBS = 2 * BRANCHES  # in-process, round robin: each branch twice
FORKED_JOBS = BRANCHES  # forking: one process per job
COMMAND_RUNS = 2  # a second run shows what the first left does not add up
EOF_LINE = "unexpected EOF on client connection"

STOCK_WORKERS = {"forking": "utilities.rqworker.NetBoxRQWorker", "in-process": "rq.SimpleWorker"}
ADAPTER_WORKERS = {
    "forking": "branching_ops.contrib.netbox.workers.NetBoxBranchWorker",
    "in-process": "branching_ops.contrib.netbox.workers.NetBoxBranchSimpleWorker",
}


@dataclass
class Figures:
    """What one scenario did to the server."""

    total: int = 0
    failed: int = 0
    left: int = 0  # branch backends still open when the work was done
    peak: int = 0  # most branch backends open at once (sampled: may miss short ones)
    opened: int = 0  # branch connections the server authorized (its log: never missed)
    eof: int = 0  # "unexpected EOF on client connection" in the server log
    notes: list[str] = field(default_factory=list)

    def cell(self) -> str:
        text = f"{self.failed}/{self.total} failed, {self.left} left, peak {self.peak}"
        return ", ".join([text, f"{self.eof} EOF", *self.notes])


# (scenario, CONN_MAX_AGE) -> (stock, adapter), printed at the end; no stock
# where it was not run.
FIGURES: dict[tuple[str, int], tuple[Figures | None, Figures]] = {}


def record(scenario: str, max_age: int, stock: Figures | None, adapter: Figures) -> None:
    FIGURES[scenario, max_age] = (stock, adapter)


def figures_table() -> str:
    lines = ["scenario | CONN_MAX_AGE | stock | adapter", "---|---|---|---"]
    for (scenario, max_age), (stock, adapter) in FIGURES.items():
        stock_cell = "not run" if stock is None else stock.cell()
        lines.append(f"{scenario} | {max_age} | {stock_cell} | {adapter.cell()}")
    return "\n".join(lines)


class Sampler:
    """Polls the number of branch backends in a thread; remembers the peak."""

    def __init__(self, netbox: NetBox) -> None:
        self.netbox = netbox
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with self.netbox.monitor() as monitor:
            while not self._stop.wait(0.05):
                self.peak = max(self.peak, _branch_count(monitor))

    @contextmanager
    def running(self) -> Iterator[Sampler]:
        self._thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            self._thread.join()


def _branch_count(monitor: psycopg.Connection[tuple[object, ...]]) -> int:
    return len(monitor.execute(BRANCH_BACKENDS_SQL).fetchall())


def settled_left(netbox: NetBox, allowance: int) -> int:
    return settled(lambda: len(netbox.branch_backends()), allowance)


@contextmanager
def clean_server(netbox: NetBox) -> Iterator[None]:
    """Start on a server without NetBox backends; leave it without any."""
    netbox.terminate_backends()
    try:
        yield
    finally:
        netbox.terminate_backends()


@contextmanager
def window(netbox: NetBox, figures: Figures) -> Iterator[None]:
    """Measure the block: the peak of branch backends; from the server's log, the branch
    connections it opened and the EOFs."""
    offset = netbox.log_offset()
    try:
        with Sampler(netbox).running() as sampler:
            yield
        figures.peak = sampler.peak
    finally:
        log = netbox.log_since(offset)
        figures.opened = authorized_connections(log, APPLICATION_NAME_MARKER)
        figures.eof = log.count(EOF_LINE)


def http(netbox: NetBox, setting: Setting, allowance: int, requests: int) -> Figures:
    """REST API requests through gunicorn gthread, round robin over every branch."""
    figures = Figures(total=requests)
    port = free_port()
    with clean_server(netbox), window(netbox, figures):
        server = netbox.popen(
            setting,
            str(BIN / "gunicorn"),
            "netbox.wsgi",
            "--workers=1",
            f"--threads={THREADS}",
            "--worker-class=gthread",
            f"--bind=127.0.0.1:{port}",
            "--no-control-socket",
            "--timeout=120",
        )
        try:
            wait_until(
                lambda: _error(port, netbox.token, None, server) is None,
                timeout=180,
                what="gunicorn to serve NetBox",
            )
            schema_ids = [netbox.branches[i % len(netbox.branches)] for i in range(requests)]
            with ThreadPoolExecutor(CLIENTS) as clients:
                errors = [
                    error
                    for error in clients.map(
                        lambda s: _error(port, netbox.token, s, server), schema_ids
                    )
                    if error is not None
                ]
            figures.failed = len(errors)
            figures.notes += _most_common(errors)
            figures.left = settled_left(netbox, allowance)
        finally:
            stop_process(server, signal.SIGTERM, timeout=30)
    return figures


def _error(
    port: int, token: str, schema_id: str | None, server: subprocess.Popen[bytes]
) -> str | None:
    """GET the sites (of branch ``schema_id``); ``None``, or what went wrong.

    A branch has one site, named after its schema; ``public`` has none.
    """
    if server.poll() is not None:
        raise RuntimeError(f"gunicorn exited with status {server.returncode}")
    headers = {"Authorization": f"Token {token}", "Accept": "application/json"}
    if schema_id is not None:
        headers["X-NetBox-Branch"] = schema_id
    request = urllib.request.Request(f"http://127.0.0.1:{port}/api/dcim/sites/", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            sites = [site["name"] for site in json.load(response)["results"]]
    except urllib.error.HTTPError as error:
        try:  # NetBox's REST API says what failed
            return str(json.loads(error.read())["error"])
        except (ValueError, KeyError, TypeError):
            return f"HTTP {error.code}"
    except OSError as error:
        return str(error)
    if sites == ([] if schema_id is None else [schema_id]):
        return None
    return f"wrong schema: branch {schema_id} read the sites {sites}"


def _most_common(errors: list[str]) -> list[str]:
    """The two most common errors, each on one line (the server's own words), as notes."""
    lines = [" ".join(error.split()) for error in errors]
    lines = [line[line.find("FATAL:") :] if "FATAL:" in line else line for line in lines]
    return [f"{count}x {line[:90]!r}" for line, count in Counter(lines).most_common(2)]


class Worker:
    """A ``netbox rqworker`` on the ``default`` queue, with the class of ``kind``."""

    def __init__(self, netbox: NetBox, setting: Setting, kind: str) -> None:
        self.netbox = netbox
        self.kind = kind
        worker_class = (ADAPTER_WORKERS if setting.adapter else STOCK_WORKERS)[kind]
        self.process = netbox.popen(
            setting, str(BIN / "netbox"), "rqworker", "default", f"--worker-class={worker_class}"
        )

    def stop(self) -> None:
        stop_process(self.process, signal.SIGTERM, timeout=60)

    def run(self, jobs: dict[str, list[str]], figures: Figures, allowance: int) -> None:
        """Wait for ``jobs`` (their "expected_failures" may fail); count failures, what is left."""
        redis = self.netbox.redis.client()
        checked = [*jobs["rq"], *jobs["netbox_rq"]]
        waited = [*checked, *jobs["expected_failures"]]

        def all_done() -> bool:
            if self.process.poll() is not None:
                raise RuntimeError(f"rqworker exited with status {self.process.returncode}")
            return all(
                job is not None and job.get_status() in (JobStatus.FINISHED, JobStatus.FAILED)
                for job in Job.fetch_many(waited, redis)
            )

        wait_until(all_done, timeout=300, what=f"the {self.kind} worker to run {len(waited)} jobs")
        figures.total = len(jobs["rq"]) + len(jobs["netbox"])
        errors = [
            _job_error(job)
            for job in Job.fetch_many(jobs["rq"], redis)
            if job is None or job.get_status() != JobStatus.FINISHED
        ]
        figures.failed = len(errors) + self.netbox.errored_netbox_jobs(jobs["netbox"])
        figures.notes += _most_common(errors)
        figures.left = settled_left(self.netbox, allowance)


def _job_error(job: Job | None) -> str:
    """The last line of the exception that failed ``job``."""
    result = job.latest_result() if job is not None else None
    if result is None or not result.exc_string:
        return "no result"
    return result.exc_string.strip().splitlines()[-1]


def forking_worker(netbox: NetBox, setting: Setting) -> Figures:
    """``FORKED_JOBS`` branch jobs and netbox-branching's sync of a branch, a process each."""
    from tests_netbox.driver import enqueue

    figures = Figures()
    with clean_server(netbox), window(netbox, figures):
        worker = Worker(netbox, setting, "forking")
        try:
            worker.run(enqueue(FORKED_JOBS), figures, allowance=0)
        finally:
            worker.stop()
    return figures


def in_process_worker(netbox: NetBox, setting: Setting, allowance: int) -> tuple[Figures, Figures]:
    """In one worker process: the jobs of :func:`forking_worker`, then a ``job_timeout``.

    The second batch: a job stopped by ``job_timeout`` while its query runs,
    then jobs on the same branch and on another.
    """
    from tests_netbox.driver import enqueue
    from tests_netbox.driver import enqueue_timeout

    jobs, timeout = Figures(), Figures()
    with clean_server(netbox):
        worker = Worker(netbox, setting, "in-process")
        try:
            with window(netbox, jobs):
                worker.run(enqueue(JOBS), jobs, allowance)
            with window(netbox, timeout):
                worker.run(enqueue_timeout(), timeout, allowance)
                timeout.notes.append(f"{_sleeping(netbox)} query left running")
                worker.stop()
        finally:
            worker.stop()
    return jobs, timeout


def _sleeping(netbox: NetBox) -> int:
    """Backends still running the timed-out job's query, a moment after it was stopped."""
    deadline = time.monotonic() + SETTLE_SECONDS
    while (
        running := sum(
            "pg_sleep" in query and state == "active"
            for *_, state, query in netbox.branch_backends()
        )
    ) and time.monotonic() < deadline:
        time.sleep(0.05)
    return running


def commands(netbox: NetBox, setting: Setting) -> dict[str, Figures]:
    """``call_command()`` of commands touching every branch, ``COMMAND_RUNS`` times."""
    results: dict[str, Figures] = {}
    with clean_server(netbox):
        report = netbox.driver(setting, "commands", str(COMMAND_RUNS))
    for name, runs in report.items():
        errors = [run["error"] for run in runs if run["error"] is not None]
        results[name] = Figures(
            total=len(runs),
            failed=len(errors),
            left=runs[-1]["left"],
            peak=max(run["left"] for run in runs),
            notes=[
                "left after each run: " + " -> ".join(str(run["left"]) for run in runs),
                *_most_common(errors),
            ],
        )
    return results
