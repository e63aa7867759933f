"""A throw-away PostgreSQL with the demo's role and one database, for benchmarks."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from collections.abc import Iterator

from branching_ops.demo.project import APP_ROLE
from branching_ops.testing.postgres import PostgresServer
from branching_ops.testing.postgres import running_postgres

DBNAME = "bench"


@contextlib.contextmanager
def bench_database(branches: Iterable[str], max_connections: int = 40) -> Iterator[PostgresServer]:
    """A running server with role ``demo`` owning database ``bench`` and a schema per branch.

    Branch connections refuse a branch whose schema does not exist, so the
    benchmarks measure that check as every project runs it: on.
    """
    with running_postgres(max_connections=max_connections) as server:
        with server.connect() as admin:
            admin.execute(f"CREATE ROLE {APP_ROLE} LOGIN")
            admin.execute(f"CREATE DATABASE {DBNAME} OWNER {APP_ROLE}")
        server.create_schemas(DBNAME, branches, owner=APP_ROLE)
        yield server


def rss_mb() -> float:
    """This process's resident memory (Linux ``/proc``)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("No VmRSS in /proc/self/status")
