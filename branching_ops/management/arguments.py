"""What the operations commands share on the way in: arguments, names, connection, privileges.

Every name a user types is checked before any connection is made; every
mistake or refusal is a ``CommandError`` (exit status 1, no traceback) that
says what was left unchanged.
"""

from __future__ import annotations

from collections.abc import Iterator
from collections.abc import Sequence
from contextlib import contextmanager

import psycopg.errors
from django.core.management.base import CommandError
from django.core.management.base import CommandParser
from django.db import DEFAULT_DB_ALIAS
from django.db import DatabaseError
from django.db import OperationalError
from django.db import connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.utils.connection import ConnectionDoesNotExist

from branching_ops import activity
from branching_ops import names
from branching_ops.conf import conf


def add_database_argument(parser: CommandParser) -> None:
    parser.add_argument(
        "--database",
        default=DEFAULT_DB_ALIAS,
        help='The database alias to act on. Defaults to the "default" database.',
    )


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
        choices=activity.STATES,
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
) -> tuple[BaseDatabaseWrapper, list[activity.Backend]]:
    """The connection of ``database`` and its branch backends that match the filters.

    The filters of :func:`add_filter_arguments` are checked first, before any
    connection: ``call_command()`` skips argparse's own checks.
    """
    for name in branch:
        check_branch_name(name, argument="--branch: ")
    for value in state:
        if value not in activity.STATES:
            raise CommandError(
                f"--state: {value!r} is not one of {', '.join(repr(s) for s in activity.STATES)}."
            )
    if idle_longer_than is not None and idle_longer_than < 0:
        raise CommandError(f"--idle-longer-than: {idle_longer_than:g} is negative.")
    connection = database_connection(database)
    backends = activity.branch_backends(
        connection, branches=branch, states=state, idle_longer_than=idle_longer_than
    )
    return connection, backends


def database_connection(alias: str) -> BaseDatabaseWrapper:
    """The connected wrapper of ``alias``.

    ``CommandError`` for an unknown alias or a server that cannot be reached:
    an operator's mistake or an outage, not a bug, and nothing has been done yet.
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
    return names.check_branch_name(name, lambda error: CommandError(f"{argument}{error}"))


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
    """Turn the server's "permission denied" into a ``CommandError``."""
    try:
        yield
    except DatabaseError as exc:
        if isinstance(exc.__cause__, psycopg.errors.InsufficientPrivilege):
            raise CommandError(f"The server refused: {exc.__cause__}".rstrip()) from exc
        raise


def check_can_terminate(
    connection: BaseDatabaseWrapper, backends: Sequence[activity.Backend]
) -> None:
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
