"""Django's client connections behind PgBouncer, per branch: ``SHOW CLIENTS`` on its console.

Behind transaction pooling ``pg_stat_activity`` shows only PgBouncer's few
server connections; the clients, and those waiting for a server connection,
are known to PgBouncer alone. They carry the branch in their
``application_name``, as backends do (:mod:`branching_ops.names`).
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg.conninfo import make_conninfo

from branching_ops.names import branch_from_application_name

ADMIN_DATABASE = "pgbouncer"
# Seconds, unless the conninfo sets connect_timeout: an unreachable host must not hang.
CONNECT_TIMEOUT = 5
# SHOW CLIENTS also lists clients still logging in and cancel requests: neither is a session.
CLIENT_STATES = ("active", "waiting")


class ConsoleError(Exception):
    """PgBouncer's admin console could not be reached, or refused ``SHOW CLIENTS``."""


@dataclass(frozen=True)
class PoolerClients:
    """One branch's client connections on PgBouncer; ``waiting`` of them for a server one."""

    clients: int = 0
    waiting: int = 0


def conninfo_error(value: object) -> str | None:
    """Say why ``value`` is not a libpq conninfo of PgBouncer's admin console, or ``None``."""
    if not isinstance(value, str):
        return f"must be a libpq connection string or URL, not {type(value).__name__}"
    try:
        params = conninfo_to_dict(value)
    except psycopg.ProgrammingError as exc:
        return f"is not a libpq connection string or URL: {' '.join(str(exc).split())}"
    if params.get("dbname") != ADMIN_DATABASE:
        return f"must name the admin console's database: dbname={ADMIN_DATABASE}"
    return None


def show(conninfo: str, what: str) -> list[dict[str, object]]:
    """``SHOW <what>`` on PgBouncer's admin console, one dict per row; ``psycopg.Error`` if not."""
    params = {"connect_timeout": CONNECT_TIMEOUT, **conninfo_to_dict(conninfo)}
    with psycopg.connect(make_conninfo("", **params), autocommit=True) as console:
        # No parameters and not prepared: the simple query protocol, the only
        # one the console speaks (PgBouncer 1.18 and 1.24 alike).
        cursor = console.execute(f"SHOW {what}", prepare=False)
        names = [column.name for column in cursor.description or []]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def branch_clients(conninfo: str, database: str) -> dict[str, PoolerClients]:
    """The client connections to ``database`` on PgBouncer, per branch; else ``ConsoleError``."""
    try:
        clients = show(conninfo, "CLIENTS")
    except psycopg.Error as exc:  # with libpq's or PgBouncer's words
        raise ConsoleError(" ".join(str(exc).split())) from exc
    counts: dict[str, PoolerClients] = {}
    for client in clients:
        state = client.get("state")
        branch = branch_from_application_name(str(client.get("application_name") or ""))
        if client.get("database") != database or state not in CLIENT_STATES or branch is None:
            continue
        seen = counts.get(branch, PoolerClients())
        counts[branch] = PoolerClients(seen.clients + 1, seen.waiting + (state == "waiting"))
    return dict(sorted(counts.items()))
