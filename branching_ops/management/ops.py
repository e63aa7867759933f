"""What the operations commands share: arguments, validation, server queries, tables.

Every name a user types is checked before any connection is made, and every
identifier reaches SQL through :class:`psycopg.sql.Identifier` or a query
parameter, never through string formatting.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from collections.abc import Iterator
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import psycopg.errors
from django.core.management.base import CommandError
from django.core.management.base import CommandParser
from django.db import DEFAULT_DB_ALIAS
from django.db import DatabaseError
from django.db import OperationalError
from django.db import connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.utils.connection import ConnectionDoesNotExist

from branching_ops import tracking
from branching_ops.conf import conf
from branching_ops.databases import APPLICATION_NAME_MARKER
from branching_ops.databases import branch_from_application_name
from branching_ops.databases import branch_name_error

IDLE_STATES = ("idle", "idle in transaction", "idle in transaction (aborted)")
STATES = ("active", *IDLE_STATES)
# pg_terminate_backend(pid, timeout) waits for the backend to exit (PostgreSQL 14+).
TERMINATE_TIMEOUT_MS = 5000


def add_database_argument(parser: CommandParser) -> None:
    parser.add_argument(
        "--database",
        default=DEFAULT_DB_ALIAS,
        help='The database alias to act on. Defaults to the "default" database.',
    )


def database_connection(alias: str) -> BaseDatabaseWrapper:
    """The connected wrapper of ``alias``.

    ``CommandError`` (exit status 1, no traceback) for an unknown alias or a
    server that cannot be reached: an operator's mistake or an outage, not a
    bug, and nothing has been done yet.
    """
    try:
        connection = connections[alias]
    except ConnectionDoesNotExist as exc:
        raise CommandError(str(exc)) from None
    try:
        connection.ensure_connection()
    except OperationalError as exc:
        said = " ".join(str(exc).split())  # libpq's message spans lines
        raise CommandError(
            f"Cannot connect to database {alias!r}; nothing was changed. {said}"
        ) from exc
    return connection


def check_branch_name(name: str, *, argument: str = "") -> str:
    """Return ``name`` if it is a valid branch name, else raise ``CommandError``."""
    error = branch_name_error(name)
    if error is not None:
        raise CommandError(f"{argument}{error}" if argument else error)
    return name


def check_branch_schema(name: str) -> str:
    """``name`` if it can be a branch: valid, not a schema of the system or of every branch."""
    check_branch_name(name)
    if (
        name.startswith("pg_")
        or name in ("public", "information_schema")
        or name in conf.SEARCH_PATH_TAIL
    ):
        raise CommandError(f"{name!r} is a reserved schema, not a branch.")
    return name


@contextmanager
def privilege_errors() -> Iterator[None]:
    """Turn the server's "permission denied" into a ``CommandError`` (exit status 1)."""
    try:
        yield
    except DatabaseError as exc:
        if isinstance(exc.__cause__, psycopg.errors.InsufficientPrivilege):
            raise CommandError(f"The server refused: {exc.__cause__}".rstrip()) from exc
        raise


def schema_exists(connection: BaseDatabaseWrapper, name: str) -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", [name])
        return cursor.fetchone() is not None


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

    def as_json(self) -> dict[str, Any]:
        return {
            "pid": self.pid,
            "branch": self.branch,
            "application_name": self.application_name,
            "user": self.user,
            "state": self.state,
            "client": self.client,
            "age_seconds": seconds(self.age),
            "idle_seconds": seconds(self.idle),
        }


def seconds(duration: timedelta | None) -> float | None:
    return None if duration is None else round(duration.total_seconds(), 3)


# Without pg_read_all_stats a role sees only the pid, role, database and
# application_name of other roles' backends: state, times, address and
# backend_type are NULL there. Such a backend is still listed, with what is known
# (``-`` in tables, ``null`` in JSON).
# The privilege test mirrors the server's own for pg_terminate_backend(): a
# superuser may signal anyone; others only non-superuser backends of a role
# whose privileges they have, or any non-superuser with pg_signal_backend.
BACKENDS_SQL = """
SELECT a.pid, a.application_name, coalesce(a.usename, ''), a.state,
       coalesce(host(a.client_addr), CASE WHEN a.backend_start IS NOT NULL THEN 'local' END),
       now() - a.backend_start,
       CASE WHEN a.state = ANY(%s) THEN now() - a.state_change END,
       coalesce((SELECT rolsuper FROM pg_roles WHERE rolname = current_user), false)
       OR (NOT coalesce((SELECT rolsuper FROM pg_roles WHERE oid = a.usesysid), false)
           AND (pg_has_role(a.usesysid, 'USAGE') OR pg_has_role('pg_signal_backend', 'USAGE')))
FROM pg_stat_activity a
WHERE a.datname = current_database()
  AND coalesce(a.backend_type, 'client backend') = 'client backend'
  AND a.pid <> pg_backend_pid() AND position(%s in a.application_name) > 0
ORDER BY a.backend_start, a.pid
"""


def branch_backends(
    connection: BaseDatabaseWrapper,
    *,
    branches: Sequence[str] = (),
    states: Sequence[str] = (),
    idle_longer_than: float | None = None,
) -> list[Backend]:
    """This database's branch backends matching every filter given.

    Leaves out backends of other databases and applications, and this
    thread's own connections (the one that runs the query and any branch
    connection the caller holds): a command must not cut the ground under
    the code that called it.
    """
    with connection.cursor() as cursor:
        cursor.execute(BACKENDS_SQL, [list(IDLE_STATES), APPLICATION_NAME_MARKER])
        rows = cursor.fetchall()
    own = _own_backend_pids()
    backends = []
    for pid, application_name, user, state, client, age, idle, can_signal in rows:
        branch = branch_from_application_name(application_name)
        if (
            branch is None
            or pid in own
            or (branches and branch not in branches)
            or (states and state not in states)
            or (
                idle_longer_than is not None
                and (idle is None or idle.total_seconds() <= idle_longer_than)
            )
        ):
            continue
        backends.append(
            Backend(pid, branch, application_name, user, state, client, age, idle, can_signal)
        )
    return sorted(backends, key=lambda backend: backend.branch)


def _own_backend_pids() -> set[int]:
    wrappers: list[BaseDatabaseWrapper | None] = list(connections.all(initialized_only=True))
    wrappers += [tracking.stored_wrapper(alias) for alias in tracking.tracked_aliases()]
    return {
        wrapper.connection.info.backend_pid
        for wrapper in wrappers
        if wrapper is not None and wrapper.connection is not None and not wrapper.connection.closed
    }


def check_can_terminate(connection: BaseDatabaseWrapper, backends: Sequence[Backend]) -> None:
    """``CommandError`` naming the backends this role may not signal; checked before acting."""
    denied = [backend for backend in backends if not backend.can_signal]
    if denied:
        roles = ", ".join(sorted({repr(backend.user) for backend in denied}))
        pids = ", ".join(str(backend.pid) for backend in denied)
        raise CommandError(
            f"Role {connection.settings_dict['USER']!r} may not terminate {len(denied)} "
            f"of {len(backends)} branch backend(s) (pid {pids}, role {roles}); nothing was "
            "terminated. Connect as a superuser, as the backends' role, or as a member "
            "of pg_signal_backend."
        )


def terminate(connection: BaseDatabaseWrapper, backends: Sequence[Backend]) -> list[int]:
    """Terminate ``backends``; return the pids that ended (the others had already gone)."""
    if not backends:
        return []
    pids = [backend.pid for backend in backends]
    with privilege_errors(), connection.cursor() as cursor:
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


def format_duration(duration: timedelta | None) -> str:
    if duration is None:
        return "-"
    minutes, seconds = divmod(int(duration.total_seconds()), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02}:{seconds:02}"


def format_table(headers: Sequence[str], rows: Iterable[Sequence[str | int]]) -> str:
    """Columns aligned for people: numbers to the right, text to the left."""
    rows = [list(row) for row in rows]
    numeric = [
        bool(rows) and all(isinstance(row[i], int) for row in rows) for i in range(len(headers))
    ]
    cells = [list(headers), *([str(cell) for cell in row] for row in rows)]
    widths = [max(len(line[i]) for line in cells) for i in range(len(headers))]
    return "\n".join(
        "  ".join(
            cell.rjust(width) if right else cell.ljust(width)
            for cell, width, right in zip(line, widths, numeric, strict=True)
        ).rstrip()
        for line in cells
    )


BACKEND_HEADERS = ("BRANCH", "PID", "USER", "STATE", "AGE", "IDLE", "CLIENT")


def backend_table(backends: Iterable[Backend]) -> str:
    return format_table(
        BACKEND_HEADERS,
        [
            (
                backend.branch,
                backend.pid,
                backend.user,
                backend.state or "-",
                format_duration(backend.age),
                format_duration(backend.idle),
                backend.client or "-",
            )
            for backend in backends
        ],
    )


def to_json(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=2)


def add_filter_arguments(parser: CommandParser) -> None:
    """``--branch``, ``--state``, ``--idle-longer-than``: shared by inspect and terminate."""
    parser.add_argument(
        "--branch",
        action="append",
        default=[],
        metavar="NAME",
        help="Only this branch (repeat for several).",
    )
    parser.add_argument(
        "--state",
        action="append",
        default=[],
        choices=STATES,
        help="Only backends in this state (repeat for several).",
    )
    parser.add_argument(
        "--idle-longer-than",
        type=float,
        metavar="SECONDS",
        help="Only backends idle for longer than SECONDS.",
    )
    add_database_argument(parser)
    parser.add_argument("--json", action="store_true", help="Output JSON for machines.")


def filtered_backends(
    database: str, branch: Sequence[str], state: Sequence[str], idle_longer_than: float | None
) -> tuple[BaseDatabaseWrapper, list[Backend]]:
    """The connection of ``database`` and its branch backends that match the filters.

    The filters of :func:`add_filter_arguments` are checked first, before any
    connection: ``call_command()`` skips argparse's own checks.
    """
    for name in branch:
        check_branch_name(name, argument="--branch: ")
    for value in state:
        if value not in STATES:
            raise CommandError(
                f"--state: {value!r} is not one of {', '.join(repr(s) for s in STATES)}."
            )
    if idle_longer_than is not None and idle_longer_than < 0:
        raise CommandError(f"--idle-longer-than: {idle_longer_than:g} is negative.")
    connection = database_connection(database)
    backends = branch_backends(
        connection, branches=branch, states=state, idle_longer_than=idle_longer_than
    )
    return connection, backends
