"""Which server backends serve which branch: read from ``pg_stat_activity``, terminated.

The server is the only witness of every connection, from every thread and
process. A branch backend is recognised by the ``application_name`` that
:class:`~branching_ops.databases.BranchDatabases` gives its connections
(:func:`~branching_ops.names.branch_from_application_name`): one rule for
the operations commands, the leak assertions of :mod:`branching_ops.testing`,
the demo and the test suite.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from datetime import timedelta
from typing import Any
from typing import Protocol

from django.db import connections
from django.db.backends.base.base import BaseDatabaseWrapper

from branching_ops import tracking
from branching_ops.names import APPLICATION_NAME_MARKER
from branching_ops.names import branch_from_application_name

IDLE_STATES = ("idle", "idle in transaction", "idle in transaction (aborted)")
STATES = ("active", *IDLE_STATES)
# pg_terminate_backend(pid, timeout) waits for the backend to exit (PostgreSQL 14+).
TERMINATE_TIMEOUT_MS = 5000


class Connection(Protocol):
    """A Django connection wrapper or a psycopg connection: both open cursors alike."""

    def cursor(self) -> Any: ...


@dataclass(frozen=True)
class Backend:
    """One branch backend, as ``pg_stat_activity`` shows it."""

    pid: int
    branch: str
    application_name: str
    user: str
    state: str | None
    client: str | None
    age: timedelta | None
    idle: timedelta | None
    can_signal: bool
    query_start: datetime | None = None
    # How long the current query has run, while the backend is active.
    active: timedelta | None = None


# Without pg_read_all_stats a role sees only the pid, role, database and
# application_name of other roles' backends: state, times, address and
# backend_type are NULL there. Such a backend is still listed, with what is known.
# The privilege test mirrors the server's own for pg_terminate_backend(): a
# superuser may signal anyone; others only non-superuser backends of a role
# whose privileges they have, or any non-superuser with pg_signal_backend.
# The position() test only narrows the rows; branch_from_application_name()
# decides which are branch backends.
BACKENDS_SQL = """
SELECT a.pid, a.application_name, coalesce(a.usename, ''), a.state,
       coalesce(host(a.client_addr), CASE WHEN a.backend_start IS NOT NULL THEN 'local' END),
       now() - a.backend_start,
       CASE WHEN a.state = ANY(%s) THEN now() - a.state_change END,
       coalesce((SELECT rolsuper FROM pg_roles WHERE rolname = current_user), false)
       OR (NOT coalesce((SELECT rolsuper FROM pg_roles WHERE oid = a.usesysid), false)
           AND (pg_has_role(a.usesysid, 'USAGE') OR pg_has_role('pg_signal_backend', 'USAGE'))),
       a.query_start,
       CASE WHEN a.state = 'active' THEN now() - a.query_start END
FROM pg_stat_activity a
WHERE a.datname = coalesce(%s, current_database())
  AND coalesce(a.backend_type, 'client backend') = 'client backend'
  AND a.pid <> pg_backend_pid() AND position(%s in a.application_name) > 0
ORDER BY a.backend_start, a.pid
"""


def branch_backends(
    connection: Connection,
    *,
    database: str | None = None,
    branches: Sequence[str] = (),
    states: Sequence[str] = (),
    idle_longer_than: float | None = None,
    include_own: bool = False,
) -> list[Backend]:
    """The branch backends of ``database`` (default: the connection's), by branch.

    Only those that match every filter given. ``connection`` itself is never
    listed. Unless ``include_own``, neither is any connection of this thread
    (Django's or a branch's): a command must not cut the ground under the code
    that called it, while a leak assertion wants to see them.
    """
    with connection.cursor() as cursor:
        cursor.execute(BACKENDS_SQL, [list(IDLE_STATES), database, APPLICATION_NAME_MARKER])
        rows = cursor.fetchall()
    own = set() if include_own else _own_backend_pids()
    backends = []
    for pid, application_name, *rest in rows:
        branch = branch_from_application_name(application_name)
        if branch is None or pid in own:
            continue
        backend = Backend(pid, branch, application_name, *rest)
        if (
            (branches and branch not in branches)
            or (states and backend.state not in states)
            or (
                idle_longer_than is not None
                and (backend.idle is None or backend.idle.total_seconds() <= idle_longer_than)
            )
        ):
            continue
        backends.append(backend)
    return sorted(backends, key=lambda backend: backend.branch)


def _own_backend_pids() -> set[int]:
    wrappers = [*connections.all(initialized_only=True), *tracking.branch_wrappers()]
    return {
        wrapper.connection.info.backend_pid
        for wrapper in wrappers
        if wrapper.connection is not None and not wrapper.connection.closed
    }


def terminate(connection: BaseDatabaseWrapper, backends: Sequence[Backend]) -> list[int]:
    """Terminate ``backends``; return the pids that ended (the others had already gone).

    From PostgreSQL 14 on, each termination waits for the backend to exit, up
    to :data:`TERMINATE_TIMEOUT_MS`.
    """
    if not backends:
        return []
    pids = [backend.pid for backend in backends]
    with connection.cursor() as cursor:
        if connection.pg_version >= 140000:  # type: ignore[attr-defined]
            cursor.execute(
                "SELECT pid FROM unnest(%s::int[]) AS pid WHERE pg_terminate_backend(pid, %s)",
                [pids, TERMINATE_TIMEOUT_MS],
            )
        else:  # pragma: no cover - PostgreSQL 13 and older
            cursor.execute(
                "SELECT pid FROM unnest(%s::int[]) AS pid WHERE pg_terminate_backend(pid)", [pids]
            )
        return sorted(pid for (pid,) in cursor.fetchall())


@dataclass(frozen=True)
class Termination:
    """What :func:`terminate_pids` did with each pid it was asked to end."""

    terminated: list[Backend]
    # Branch backends that had exited before the signal, or did not exit in time.
    not_ended: list[Backend]
    # Not a branch backend of the database (any more), or the caller's own: never signalled.
    refused: list[int]
    # Branch backends the role may not signal; when there are any, nothing was signalled.
    denied: list[Backend]


def terminate_pids(
    connection: BaseDatabaseWrapper, pids: Sequence[int], *, branches: Sequence[str] = ()
) -> Termination:
    """Terminate the branch backends among ``pids``, read again now, as ``branch_terminate`` does.

    For callers that got the pids from elsewhere (a form, an API): a pid that is
    not a branch backend of this database (of one of ``branches``, if given) at
    this moment, or is one of this thread's own connections, is refused, never
    signalled.
    """
    wanted = set(pids)
    current = branch_backends(connection, branches=branches)
    chosen = [backend for backend in current if backend.pid in wanted]
    refused = sorted(wanted - {backend.pid for backend in chosen})
    denied = [backend for backend in chosen if not backend.can_signal]
    if denied:
        return Termination([], [], refused, denied)
    ended = set(terminate(connection, chosen))
    return Termination(
        [backend for backend in chosen if backend.pid in ended],
        [backend for backend in chosen if backend.pid not in ended],
        refused,
        [],
    )
