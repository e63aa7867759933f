"""Read a test database's branch backends from ``pg_stat_activity``."""

from __future__ import annotations

import time

from branching_ops import activity
from branching_ops.testing.postgres import PostgresServer


class BranchBackends:
    """The application names of one database's branch backends, server side.

    A backend leaves ``pg_stat_activity`` a moment *after* its client closed
    the socket (it still holds its slot while it exits), so assertions about
    the count after a close poll with :meth:`wait_for` instead of reading once.
    """

    def __init__(self, server: PostgresServer, dbname: str) -> None:
        self.server = server
        self.dbname = dbname
        self.monitor = server.connect()

    def __call__(self) -> list[str]:
        return sorted(
            backend.application_name
            for backend in activity.branch_backends(
                self.monitor, database=self.dbname, include_own=True
            )
        )

    def wait_for(self, expected: list[str], timeout: float = 10) -> None:
        """Poll until the backends are exactly ``expected``; fail showing the last read."""
        deadline = time.monotonic() + timeout
        while (current := self()) != sorted(expected):
            if time.monotonic() > deadline:
                raise AssertionError(f"branch backends {current} != expected {sorted(expected)}")
            time.sleep(0.01)

    def reconnect(self) -> None:
        """A new monitoring connection, after the server restarted."""
        self.monitor.close()
        self.monitor = self.server.connect()

    def close(self) -> None:
        self.monitor.close()
