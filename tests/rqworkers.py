"""Run ``manage.py rqworker`` as a real subprocess and watch the server meanwhile."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path

import psycopg
from django.db import connections
from rq.job import Job
from rq.results import Result

from branching_ops.names import APPLICATION_NAME_MARKER
from branching_ops.testing.postgres import authorized_connections
from tests.backends import BranchBackends

ROOT = Path(__file__).resolve().parent.parent
JOBS = "tests.project.jobs"
UNEXPECTED_EOF = "unexpected EOF on client connection"


@dataclass
class WorkerRun:
    """A running (then finished) worker command, and what the server saw meanwhile."""

    process: subprocess.Popen[bytes]
    peak: int = 0
    peak_backends: list[str] = field(default_factory=list)  # the backends at the peak
    output: str = ""  # stdout and stderr, once it has exited
    server_log: str = ""  # what PostgreSQL logged while the command ran
    _done: threading.Event = field(default_factory=threading.Event)

    @property
    def returncode(self) -> int | None:
        return self.process.returncode

    def wait(self, timeout: float = 120) -> int:
        return self.process.wait(timeout=timeout)

    def unexpected_eofs(self) -> int:
        return self.server_log.count(UNEXPECTED_EOF)

    def opened(self) -> int:
        """Branch connections the server authorized meanwhile (``peak`` is sampled)."""
        return authorized_connections(self.server_log, APPLICATION_NAME_MARKER)


@contextlib.contextmanager
def rqworker(
    backends: BranchBackends, *args: str, command: str = "rqworker", **env: str
) -> Iterator[WorkerRun]:
    """Start ``manage.py <command> <args>``; on exit stop it (SIGTERM) if still running.

    The subprocess uses the test database and the servers the session
    fixtures exported; ``env`` adds variables. While it runs, a thread reads
    the peak number of branch backends from ``pg_stat_activity``.
    """
    environment = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.project.settings",
        "BRANCHING_OPS_TEST_DBNAME": connections["default"].settings_dict["NAME"],
        **env,
    }
    log_start = backends.server.log_path.stat().st_size
    with tempfile.TemporaryFile() as output:
        process = subprocess.Popen(
            [sys.executable, "manage.py", command, *args],
            cwd=ROOT,
            env=environment,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
        run = WorkerRun(process)
        watcher_backends = BranchBackends(backends.server, backends.dbname)

        def watch() -> None:
            while not run._done.is_set():
                try:
                    names = watcher_backends()
                except psycopg.OperationalError:  # the server restarted: reconnect
                    names = []
                    with contextlib.suppress(psycopg.OperationalError):
                        watcher_backends.monitor = backends.server.connect()
                if len(names) > run.peak:
                    run.peak, run.peak_backends = len(names), names
                time.sleep(0.002)  # a poll rate, not a wait: leave the worker the CPU

        watcher = threading.Thread(target=watch)
        watcher.start()
        try:
            yield run
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
            run.wait()
            run._done.set()
            watcher.join()
            watcher_backends.close()
            output.seek(0)
            run.output = output.read().decode(errors="replace")
    with backends.server.log_path.open("rb") as log:
        log.seek(log_start)
        run.server_log = log.read().decode(errors="replace")


def run_burst(backends: BranchBackends, *args: str, **env: str) -> WorkerRun:
    """Run ``rqworker --burst <args>`` to the end."""
    with rqworker(backends, "--burst", *args, **env) as run:
        run.wait()
    return run


def result(job: Job) -> Result:
    latest = job.latest_result()
    assert latest is not None, f"job {job.id} has no result"
    return latest
