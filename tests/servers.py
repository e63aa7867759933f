"""Run the test project under a real server as a subprocess, and load it.

The server reaches the suite's PostgreSQL through the environment that the
``postgres`` fixture exported, plus the test database's name and the
``CONN_MAX_AGE`` under test (see ``tests/project/settings.py``).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from collections.abc import Iterator
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from typing import Any

from branching_ops.testing.processes import free_port
from branching_ops.testing.processes import stop_process
from branching_ops.testing.processes import wait_until

ROOT = Path(__file__).resolve().parent.parent
THREADS = 4

Command = Callable[[int], list[str]]
"""A server's command line, given the port to listen on."""


def gunicorn(port: int) -> list[str]:
    return [
        sys.executable, "-m", "gunicorn", "tests.project.wsgi:application",
        "--bind", f"127.0.0.1:{port}", "--workers", "1",
        "--worker-class", "gthread", "--threads", str(THREADS),
        "--graceful-timeout", "10", "--log-level", "warning",
    ]  # fmt: skip


def waitress(port: int) -> list[str]:
    return [
        sys.executable, "-m", "waitress", f"--listen=127.0.0.1:{port}",
        f"--threads={THREADS}", "tests.project.wsgi:application",
    ]  # fmt: skip


def uvicorn(port: int) -> list[str]:
    return [
        sys.executable, "-m", "uvicorn", "tests.project.asgi:application",
        "--host", "127.0.0.1", "--port", str(port),
        "--log-level", "warning", "--no-access-log",
    ]  # fmt: skip


@dataclass
class Result:
    path: str
    start: float
    end: float
    status: int
    body: str


@dataclass
class Server:
    """A running server subprocess; :meth:`get` is safe from any thread."""

    port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    results: list[Result] = field(default_factory=list)

    def get(self, path: str) -> tuple[int, str]:
        """One request on a fresh HTTP connection; status 0 if the transport failed."""
        start = time.monotonic()
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            connection.request("GET", path, headers={"Connection": "close"})
            response = connection.getresponse()
            status, body = response.status, response.read().decode(errors="replace")
        except (OSError, http.client.HTTPException) as exc:
            status, body = 0, repr(exc)
        finally:
            connection.close()
        self.results.append(Result(path, start, time.monotonic(), status, body))
        return status, body

    def json(self, path: str) -> Any:
        status, body = self.get(path)
        assert status == 200, (status, body)
        return json.loads(body)

    def load(self, paths: Sequence[str], clients: int) -> list[Result]:
        """GET every path from ``clients`` client threads; the results, in order."""
        first = len(self.results)
        with ThreadPoolExecutor(clients) as pool:
            list(pool.map(self.get, paths))
        return self.results[first:]

    def hold_every_thread(
        self, name: str = "-", view: str = "hold"
    ) -> list[tuple[int, dict[str, Any]]]:
        """One request on each of the server's threads at once (see the ``hold`` views)."""
        with ThreadPoolExecutor(THREADS) as pool:
            responses = list(pool.map(self.get, [f"/{view}/{THREADS}/{name}/"] * THREADS))
        return [(status, json.loads(body)) for status, body in responses]

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def _ready(self) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError(f"The server exited at start; its log:\n{self.log_text()}")
        return self.get("/ok/")[0] == 200

    def stop(self) -> None:
        """Graceful shutdown, as a process manager does it."""
        stop_process(self.process, signal.SIGTERM, timeout=20)


@contextlib.contextmanager
def running_server(command: Command, dbname: str, tmp_path: Path, **env: str) -> Iterator[Server]:
    """Start ``command(port)`` serving the test project; stop it on exit."""
    port = free_port()
    log_path = tmp_path / "server.log"
    environ = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "DJANGO_SETTINGS_MODULE": "tests.project.settings",
        "BRANCHING_OPS_TEST_DBNAME": dbname,
        **env,
    }
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command(port), cwd=ROOT, env=environ, stdout=log, stderr=subprocess.STDOUT
        )
    server = Server(port, process, log_path)
    try:
        wait_until(server._ready, timeout=60, what="the server to answer")
        server.results.clear()
        yield server
    finally:
        server.stop()


class Sampler:
    """Samples a count in a thread while a load runs: ``(time, value)`` pairs."""

    def __init__(self, read: Callable[[], int]) -> None:
        self.read = read
        self.samples: list[tuple[float, int]] = []
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        while not self._done.wait(0.01):
            value = self.read()
            self.samples.append((time.monotonic(), value))

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._done.set()
        self._thread.join()

    @property
    def peak(self) -> int:
        return max((value for _, value in self.samples), default=0)
