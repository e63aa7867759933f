"""The soak: the same workload against one WSGI server process per mode.

One throw-away PostgreSQL serves every mode, each in a fresh database, and
the next mode starts only once the previous mode's backends are gone. A
sampler reads the mode's branch backends from ``pg_stat_activity`` while
client threads drive the requests.
"""

from __future__ import annotations

import contextlib
import http.client
import itertools
import json
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from collections.abc import Iterator
from dataclasses import dataclass
from dataclasses import field

from branching_ops import activity
from branching_ops.demo.project import MODES
from branching_ops.demo.project import Mode
from branching_ops.testing._process import free_port
from branching_ops.testing._process import stop_process
from branching_ops.testing._process import wait_until
from branching_ops.testing.postgres import PostgresServer
from branching_ops.testing.postgres import running_postgres

APP_ROLE = "demo"
SAMPLE_EVERY = 0.05
REQUEST_TIMEOUT = 30.0
# What PostgreSQL answers when it has no slot left for an ordinary role: the
# second once only the superuser-reserved slots are free.
OUT_OF_SLOTS = (
    "sorry, too many clients already",
    "remaining connection slots are reserved for non-replication superuser connections",
    "remaining connection slots are reserved for roles with the SUPERUSER attribute",
)


@dataclass(frozen=True)
class SoakParams:
    threads: int = 8
    branches: int = 500
    requests: int = 2000
    max_connections: int = 30
    conn_max_age: int = 0
    modes: tuple[str, ...] = tuple(MODES)


@dataclass
class ModeResult:
    mode: str
    label: str
    requests: int
    ok: int = 0
    failed: int = 0
    too_many_clients: int = 0
    peak_backends: int = 0
    final_backends: int = 0
    tracked_aliases: int | None = None
    rss_mb: float | None = None
    seconds: float = 0.0
    errors: dict[str, int] = field(default_factory=dict)
    timeline: list[tuple[float, int]] = field(default_factory=list)


# Called as the soak goes: (result so far, open branch backends right now).
Progress = Callable[[ModeResult, int], None]


def run_soak(params: SoakParams, progress: Progress | None = None) -> list[ModeResult]:
    """Start a PostgreSQL, run every mode in turn, stop it; clean up on any exit."""
    with running_postgres(max_connections=params.max_connections) as server:
        with server.connect() as admin:
            admin.execute(f"CREATE ROLE {APP_ROLE} LOGIN")
        results = []
        for name in params.modes:
            dbname = f"demo_{name}"
            with server.connect() as admin:
                admin.execute(f"CREATE DATABASE {dbname} OWNER {APP_ROLE}")
            # A branch connection refuses a schema that does not exist.
            branches = [f"b{number}" for number in range(params.branches)]
            server.create_schemas(dbname, branches, owner=APP_ROLE)
            results.append(_run_mode(server, dbname, MODES[name], params, progress))
        return results


class _Backends:
    """Counts a database's branch backends; samples them in a thread while asked.

    One superuser connection does it all (the sampler thread while it runs,
    the caller after): each monitoring connection takes an ordinary slot
    while there is one.
    """

    def __init__(self, server: PostgresServer, dbname: str) -> None:
        self.server = server
        self.dbname = dbname
        self.monitor = server.connect()
        self.timeline: list[tuple[float, int]] = []
        self.latest = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def count(self) -> int:
        return len(activity.branch_backends(self.monitor, database=self.dbname, include_own=True))

    def _sample(self) -> None:
        start = time.monotonic()
        while not self._stop.is_set():
            self.latest = self.count()
            self.timeline.append((round(time.monotonic() - start, 3), self.latest))
            self._stop.wait(SAMPLE_EVERY)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def settled(self, timeout: float) -> int:
        """The count once it reaches 0 or stops changing for a second."""
        deadline = time.monotonic() + timeout
        last, since = self.count(), time.monotonic()
        while last and time.monotonic() < deadline and time.monotonic() - since < 1:
            time.sleep(SAMPLE_EVERY)
            if (current := self.count()) != last:
                last, since = current, time.monotonic()
        return last

    def close(self) -> None:
        self.monitor.close()


@contextlib.contextmanager
def _wsgi_server(
    server: PostgresServer, dbname: str, mode: Mode, params: SoakParams
) -> Iterator[tuple[int, int]]:
    """Run the mode's WSGI server process; yield its port and pid; stop it on exit."""
    port = free_port()
    command = [
        sys.executable, "-m", "branching_ops.demo.server",
        "--mode", mode.name, "--port", str(port), "--threads", str(params.threads),
        "--pg-host", server.host, "--pg-port", str(server.port),
        "--dbname", dbname, "--user", APP_ROLE, "--conn-max-age", str(params.conn_max_age),
    ]  # fmt: skip
    with tempfile.TemporaryFile() as log:
        # Its own session: Ctrl-C reaches only us, and we stop it in order.
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:

            def answers() -> bool:
                if process.poll() is not None:
                    log.seek(0)
                    output = log.read().decode(errors="replace")[-3000:]
                    raise RuntimeError(f"The demo WSGI server exited at start:\n{output}")
                return _get(port, "/ok/") is not None

            wait_until(answers, timeout=60, what="the demo WSGI server to start")
            yield port, process.pid
        finally:
            stop_process(process, signal.SIGTERM, timeout=10)


def _get(port: int, path: str) -> tuple[int, bytes] | None:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=REQUEST_TIMEOUT)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read()
    except OSError:
        return None
    finally:
        connection.close()


def _rss_mb(pid: int) -> float | None:
    """Resident memory of process ``pid`` (Linux ``/proc``; ``None`` elsewhere)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _run_mode(
    server: PostgresServer, dbname: str, mode: Mode, params: SoakParams, progress: Progress | None
) -> ModeResult:
    result = ModeResult(mode.name, mode.label, params.requests)
    backends = _Backends(server, dbname)
    try:
        with _wsgi_server(server, dbname, mode, params) as (port, pid):
            backends.start()
            started = time.monotonic()
            try:
                _drive(port, params, result, backends, progress)
            finally:
                backends.stop()
            result.seconds = time.monotonic() - started
            result.final_backends = backends.settled(timeout=5)
            response = _get(port, "/stats/")
            if response is not None:
                result.tracked_aliases = json.loads(response[1])["tracked"]
            result.rss_mb = _rss_mb(pid)
        result.timeline = backends.timeline
        result.peak_backends = max((n for _, n in result.timeline), default=0)
        # The server process is gone; so must be its backends before the next mode.
        wait_until(lambda: backends.count() == 0, timeout=30, what="the backends to exit")
    finally:
        backends.close()
    return result


def _drive(
    port: int,
    params: SoakParams,
    result: ModeResult,
    backends: _Backends,
    progress: Progress | None,
) -> None:
    """Send ``params.requests`` requests from ``params.threads`` client threads."""
    numbers = itertools.count()
    lock = threading.Lock()
    stop = threading.Event()

    def client() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=REQUEST_TIMEOUT)
        try:
            while not stop.is_set():
                with lock:
                    number = next(numbers)
                if number >= params.requests:
                    return
                status, body = _request(connection, f"/branch/b{number % params.branches}/")
                with lock:
                    if status == 200:
                        result.ok += 1
                    else:
                        result.failed += 1
                        error = _error_kind(body)
                        result.errors[error] = result.errors.get(error, 0) + 1
                        result.too_many_clients += error in OUT_OF_SLOTS
        finally:
            connection.close()

    clients = [threading.Thread(target=client, daemon=True) for _ in range(params.threads)]
    for thread in clients:
        thread.start()
    try:
        while any(thread.is_alive() for thread in clients):
            if progress is not None:
                progress(result, backends.latest)
            time.sleep(0.1)
    finally:
        stop.set()
        for thread in clients:
            thread.join()
    if progress is not None:
        progress(result, backends.latest)


def _request(connection: http.client.HTTPConnection, path: str) -> tuple[int, bytes]:
    """GET ``path`` on a keep-alive connection; status 0 if the exchange failed."""
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read()
    except (OSError, http.client.HTTPException) as exc:
        connection.close()  # the next request reconnects
        return 0, str(exc).encode()


def _error_kind(body: bytes) -> str:
    """The server's message without the per-connection details (host, port)."""
    text = body.decode(errors="replace").strip()
    _, fatal, message = text.rpartition("FATAL:")
    return (message if fatal else text).strip().splitlines()[0][:200] if text else "(empty)"
