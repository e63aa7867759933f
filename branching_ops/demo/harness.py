"""The demo's plumbing: parameters, results, the backend sampler, child processes."""

from __future__ import annotations

import contextlib
import json
import queue
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
from typing import IO
from typing import Any

from branching_ops import activity
from branching_ops.demo.project import Mode
from branching_ops.testing.postgres import SUPERUSER_RESERVED_CONNECTIONS
from branching_ops.testing.postgres import PostgresServer
from branching_ops.testing.processes import stop_process

DBNAME = "demo"
# The demo's own connection to its server (Backends' monitor), a superuser's:
# it takes an ordinary slot while one is free.
MONITOR_CONNECTIONS = 1
SAMPLE_EVERY = 0.05
# What PostgreSQL answers when it has no slot left for an ordinary role: the
# second once only the superuser-reserved slots are free.
OUT_OF_SLOTS = (
    "sorry, too many clients already",
    "remaining connection slots are reserved for non-replication superuser connections",
    "remaining connection slots are reserved for roles with the SUPERUSER attribute",
)


@dataclass(frozen=True)
class DemoParams:
    """Every knob of the demo; the defaults are the documented run (docs/demo.md)."""

    scenarios: tuple[str, ...] = ("http", "persistent", "worker", "command")
    max_connections: int = 40
    branches: int = 40
    threads: int = 4
    requests: int = 240
    conn_max_age: int = 300
    jobs: int = 80
    runs: int = 4


@dataclass
class RunResult:
    """One scenario in one mode. Times are seconds since its sampler started."""

    scenario: str
    mode: str
    label: str
    unit: str
    total: int
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
    failures: list[float] = field(default_factory=list)

    @property
    def done(self) -> int:
        return self.ok + self.failed

    def record(self, error: str | None, at: float) -> None:
        """Count one request, job or run: ``error`` is ``None`` if it succeeded."""
        self.seconds = at
        if error is None:
            self.ok += 1
            return
        self.failed += 1
        self.failures.append(at)
        kind = error_kind(error)
        self.errors[kind] = self.errors.get(kind, 0) + 1
        self.too_many_clients += kind in OUT_OF_SLOTS


def usable_slots(max_connections: int) -> int:
    """The connections a server with ``max_connections`` leaves to the demo's processes."""
    return max_connections - SUPERUSER_RESERVED_CONNECTIONS - MONITOR_CONNECTIONS


def error_kind(text: str) -> str:
    """The server's message without the per-connection details (host, port)."""
    text = text.strip()
    _, fatal, message = text.rpartition("FATAL:")
    return (message if fatal else text).strip().splitlines()[0][:200] if text else "(empty)"


# Called as the demo goes: (result so far, open branch backends right now,
# False); once more when the run is over: (result, backends it left open, True).
Progress = Callable[[RunResult, int, bool], None]


class Backends:
    """Counts the demo database's branch backends; samples them in a thread while asked.

    One superuser connection does it all (the sampler thread while it runs,
    the caller after): superusers get in even when the applications have
    taken every ordinary slot.
    """

    def __init__(self, server: PostgresServer) -> None:
        self.server = server
        self.monitor = server.connect()
        self.timeline: list[tuple[float, int]] = []
        self.latest = 0
        self.started = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def count(self) -> int:
        return len(activity.branch_backends(self.monitor, database=DBNAME, include_own=True))

    def elapsed(self) -> float:
        return round(time.monotonic() - self.started, 3)

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.latest = self.count()
            self.timeline.append((self.elapsed(), self.latest))
            self._stop.wait(SAMPLE_EVERY)

    def start(self) -> None:
        self.started = time.monotonic()
        self._thread.start()

    def stop(self) -> None:
        """Stop sampling (if it started); safe to call more than once."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def settle(self, timeout: float = 5, steady: float = 0.5) -> int:
        """Sample on until the count is 0 or stays the same for ``steady`` seconds.

        Then stop sampling, and return that count: what the run left open.
        """
        deadline = time.monotonic() + timeout
        # A sample taken after the work: the last one may predate it (a short run).
        taken = len(self.timeline)
        while len(self.timeline) == taken and self._thread.is_alive():
            time.sleep(SAMPLE_EVERY / 5)
        last, since = self.latest, time.monotonic()
        while last and time.monotonic() < deadline and time.monotonic() - since < steady:
            time.sleep(SAMPLE_EVERY)
            if self.latest != last:
                last, since = self.latest, time.monotonic()
        self.stop()
        return last

    def close(self) -> None:
        self.monitor.close()


class Child:
    """A child process of the demo, in its own session (Ctrl-C reaches only us).

    Its stdout lines are JSON events, read by a thread; its stderr goes to an
    anonymous temporary file, shown if it dies.
    """

    def __init__(self, process: subprocess.Popen[bytes], log: IO[bytes]) -> None:
        self.process = process
        self.log = log
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        assert process.stdout is not None
        self._reader = threading.Thread(target=self._read, args=(process.stdout,), daemon=True)
        self._reader.start()

    def _read(self, stdout: IO[bytes]) -> None:
        for line in stdout:
            self.events.put(json.loads(line))

    def next_event(self, timeout: float) -> dict[str, Any] | None:
        """The next event, ``None`` after ``timeout``; ``RuntimeError`` once it died
        and every event it sent has been read."""
        try:
            return self.events.get(timeout=timeout)
        except queue.Empty:
            if self.process.poll() is not None and not self._reader.is_alive():
                self.log.seek(0)
                output = self.log.read().decode(errors="replace")[-3000:]
                raise RuntimeError(
                    f"A demo process exited with status {self.process.returncode}:\n{output}"
                ) from None
            return None

    def wait_for_ready(self, timeout: float = 120) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while (event := self.next_event(0.1)) is None or not event.get("ready"):
            if time.monotonic() > deadline:
                raise TimeoutError(f"Timed out after {timeout:g} s waiting for a demo process.")
        return event

    def send(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line.encode() + b"\n")
        self.process.stdin.flush()

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it is still there after 10 seconds."""
        stop_process(self.process, signal.SIGTERM, timeout=10)


@contextlib.contextmanager
def child_process(module: str, arguments: list[str]) -> Iterator[Child]:
    """Start ``python -m module``; stop it on the way out, if it still runs."""
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(
            [sys.executable, "-m", module, *arguments],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            start_new_session=True,
        )
        child = Child(process, log)
        try:
            yield child
        finally:
            child.stop()
            for stream in (process.stdin, process.stdout):
                if stream is not None:
                    stream.close()


@dataclass
class Run:
    """What a scenario's driver gets: its child process (ready), the mode, the result."""

    child: Child
    ready: dict[str, Any]
    redis_url: str | None
    params: DemoParams
    mode: Mode
    result: RunResult
    backends: Backends
    progress: Progress | None

    def show_progress(self) -> None:
        if self.progress is not None:
            self.progress(self.result, self.backends.latest, False)

    def collect_outcomes(self, silence: float = 120) -> None:
        """Record each outcome the child reports until the run's total is reached.

        ``TimeoutError`` if the child says nothing for ``silence`` seconds.
        """
        last_news = time.monotonic()
        while self.result.done < self.result.total:
            event = self.child.next_event(0.1)
            if event is not None:
                self.result.record(event["error"], self.backends.elapsed())
                self.result.tracked_aliases = event["tracked"]
                last_news = time.monotonic()
            elif time.monotonic() - last_news > silence:
                raise TimeoutError(f"A demo process reported nothing for {silence:g} s.")
            self.show_progress()

    def finish(self) -> None:
        """The work is over: count what is left open, and the process's memory."""
        self.result.final_backends = self.backends.settle()
        self.result.rss_mb = _rss_mb(self.child.process.pid)
        if self.progress is not None:
            self.progress(self.result, self.result.final_backends, True)


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
