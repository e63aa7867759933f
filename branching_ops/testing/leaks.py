"""Leak assertions for a project's own tests, read from the server.

The server (``pg_stat_activity``) is the only witness that sees connections
of every thread and process a test started, and the only one a leak cannot
fool: a forgotten wrapper, a thread that never closed its connections, a
subprocess. Which backends serve a branch is :mod:`branching_ops.activity`'s
answer, the same as the operations commands'.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

from django.db import connections

from branching_ops import activity

__all__ = [
    "assert_no_branch_connections",
    "branch_connection_count",
]


def branch_backends(using: str = "default") -> dict[int, str]:
    """Every branch backend on the database of ``using``: server pid to branch name.

    Reads through a connection of its own (not ``connections[using]``), so the
    state of the test's transaction cannot hide or stale what the server sees;
    this thread's own connections count like any other.
    """
    monitor = connections.create_connection(using)
    try:
        backends = activity.branch_backends(monitor, include_own=True)
    finally:
        monitor.close()
    return {backend.pid: backend.branch for backend in backends}


def branch_connection_count(using: str = "default") -> int:
    """How many branch connections the server holds on the database of ``using``."""
    return len(branch_backends(using))


class BranchConnectionGuard:
    """Remember the branch backends now; later, fail if new ones are still open.

    :func:`assert_no_branch_connections` and the pytest fixture of the same
    name are built on it.
    """

    def __init__(self, using: str = "default", timeout: float = 2.0) -> None:
        self.using = using
        self.timeout = timeout
        self.before: set[int] = set()

    def start(self) -> None:
        self.before = set(branch_backends(self.using))

    def check(self) -> None:
        """Raise ``AssertionError`` naming the branches whose new connections stayed open.

        A closed connection's backend leaves ``pg_stat_activity`` a moment
        after the client closed it, so this polls up to ``timeout`` seconds.
        """
        __tracebackhide__ = True  # pytest: show the test, not this loop
        deadline = time.monotonic() + self.timeout
        while leaked := {
            pid: branch
            for pid, branch in branch_backends(self.using).items()
            if pid not in self.before
        }:
            if time.monotonic() > deadline:
                counts = Counter(leaked.values())
                raise AssertionError(
                    f"{len(leaked)} branch connection(s) opened here are still open: "
                    + ", ".join(f"{branch} ({n})" for branch, n in sorted(counts.items()))
                )
            time.sleep(0.02)


@contextmanager
def assert_no_branch_connections(using: str = "default", timeout: float = 2.0) -> Iterator[None]:
    """Fail if a branch connection opened inside the block is still open at its end.

    Checked only when the block ends normally: an exception from the block
    says more than a leak it may have caused.
    """
    guard = BranchConnectionGuard(using, timeout)
    guard.start()
    yield
    __tracebackhide__ = True
    guard.check()
