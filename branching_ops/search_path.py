"""Deliver a branch's ``search_path`` and check that the server really uses it.

A pooler that drops it, or a missing schema, silently leaves ``public`` to
answer; the docs' How it works page says when the backend calls in here.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from typing import ClassVar

from django.core.exceptions import ImproperlyConfigured
from django.db import OperationalError

__all__ = [
    "BranchDoesNotExist",
    "BranchSearchPath",
    "SearchPathError",
    "SearchPathRefused",
]

logger = logging.getLogger("branching_ops")

_DOCS_SECTION = (
    "see 'Behind PgBouncer' (docs/pgbouncer.md) in the django-branching-ops documentation"
)


@dataclass(frozen=True)
class BranchSearchPath:
    """How a branch connection gets its ``search_path``, and whether it is checked.

    Carried in ``OPTIONS`` as plain keys (plain data a project's own mapping
    can write too), which the backend removes before libpq sees them.
    """

    path: str
    """The whole ``search_path``, the branch first: ``"feature_x,public"``."""
    set_after_connecting: bool
    """``SET`` it right after connecting (``"session"`` mode), not as a startup option."""
    verify: bool
    """Check on every new connection that the server searches the branch."""
    per_transaction: bool = False
    """Send it with the first statement of every transaction (``"transaction"`` mode)."""

    KEYS: ClassVar[tuple[str, ...]] = (
        "search_path",
        "set_search_path",
        "verify_search_path",
        "search_path_per_transaction",
    )

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> BranchSearchPath | None:
        """Read from ``OPTIONS``; ``None`` when they carry no branch ``search_path``."""
        path, set_after_connecting, verify, per_transaction = (
            options.get(key) for key in cls.KEYS
        )
        if path is None:
            return None
        return cls(str(path), bool(set_after_connecting), bool(verify), bool(per_transaction))

    def options(self) -> dict[str, object]:
        """The ``OPTIONS`` entries that carry it."""
        values = (self.path, self.set_after_connecting, self.verify, self.per_transaction)
        return dict(zip(self.KEYS, values, strict=True))

    @property
    def at_startup(self) -> bool:
        """Passed in libpq's ``options`` startup parameter (``"startup"`` mode)."""
        return not (self.set_after_connecting or self.per_transaction)

    @property
    def schemas(self) -> list[str]:
        return _schemas(self.path)

    @property
    def branch(self) -> str:
        return self.schemas[0]


class SearchPathError(ImproperlyConfigured):
    """A branch connection does not (or cannot) use its branch's ``search_path``.

    The connection is closed before this is raised: no query of the caller
    ever runs on the wrong schema.
    """

    kind = "search_path_mismatch"
    """Names the failure for ``branch_connection_failed`` and metrics; subclasses set theirs."""


class SearchPathRefused(SearchPathError):
    """A connection pooler refused the branch's ``search_path`` startup option."""

    kind = "pooler_refused"


class BranchDoesNotExist(SearchPathError, OperationalError):
    """The branch's schema does not exist on the database the connection reached.

    Also an ``OperationalError``, as for a missing database: code that answers
    ``except DatabaseError`` answers a missing branch the same way.
    """

    kind = "missing_schema"


def _schemas(search_path: str) -> list[str]:
    return [schema.strip() for schema in search_path.split(",")]


# One round trip: the session's path, the schemas really searched, whether
# the branch exists. OFFSET 0 runs the SET before current_schemas() reads it.
_SCHEMA_EXISTS = "pg_catalog.to_regnamespace(%s) IS NOT NULL"
SET_AND_CHECK_SQL = (
    f"SELECT path, pg_catalog.current_schemas(false), {_SCHEMA_EXISTS} "
    "FROM (SELECT pg_catalog.set_config('search_path', %s, false) AS path OFFSET 0) AS s"
)
CHECK_SQL = (
    "SELECT pg_catalog.current_setting('search_path'), "
    f"pg_catalog.current_schemas(false), {_SCHEMA_EXISTS}"
)
_HEALTH_CHECK_SQL = "SELECT %s = ANY(pg_catalog.current_schemas(false))"

# "transaction" mode: the path for this transaction only, and an error (3F000
# missing schema, 42501 no USAGE) that skips the statement queued behind it.
TRANSACTION_SQL = (
    "SELECT pg_catalog.set_config(CASE WHEN pg_catalog.has_schema_privilege(%(branch)s, "
    "'USAGE') THEN 'search_path' ELSE CAST(CAST(%(branch)s || '.search_path' AS "
    "pg_catalog.regclass) AS text) END, %(path)s, true)"
)
_MISSING_SCHEMA = "3F000"
_NO_USAGE = "42501"


def apply_search_path(connection: Any, alias: str, search_path: BranchSearchPath | None) -> None:
    """``SET`` (session mode) and/or check (``verify_search_path``) on a new connection.

    On the raw DB-API connection, so it never shows in ``assertNumQueries()``.
    """
    if search_path is None or search_path.per_transaction:
        return  # per transaction: a pooled server connection proves nothing at connect
    if not (search_path.set_after_connecting or search_path.verify):
        return
    expected, branch = search_path.path, search_path.branch
    set_it = search_path.set_after_connecting
    with connection.cursor() as cursor:
        if not search_path.verify:
            cursor.execute("SELECT pg_catalog.set_config('search_path', %s, false)", [expected])
            return
        if set_it:
            cursor.execute(SET_AND_CHECK_SQL, [branch, expected])
        else:
            cursor.execute(CHECK_SQL, [branch])
        actual, searched, exists = cursor.fetchone()
    if _schemas(actual) != search_path.schemas:
        if set_it:
            cause = "SET search_path did not take effect on the server."
        else:
            cause = (
                "The server ignored the search_path startup option: a connection pooler "
                "that drops startup parameters (PgBouncer with ignore_startup_parameters "
                "= options) is the usual cause. Behind PgBouncer session pooling, set "
                "BRANCHING_OPS['SEARCH_PATH'] = 'session'."
            )
        raise SearchPathError(
            f"Branch connection {alias!r} has search_path {actual!r} on the server, "
            f"not {expected!r}. {cause} The connection was closed before any query "
            f"ran on it; {_DOCS_SECTION}."
        )
    _check_schema_searched(connection, alias, branch, searched, exists)


def transaction_refused_error(
    connection: Any, alias: str, search_path: BranchSearchPath, error: Exception
) -> Exception:
    """Our explanation when the server refused :data:`TRANSACTION_SQL`, else ``error``.

    The same codes from the caller's own statement (another schema) pass as they are.
    """
    sqlstate = getattr(error, "sqlstate", None)
    diag = getattr(error, "diag", None)
    said = getattr(diag, "message_primary", None) or ""
    about_branch = re.search(rf'\bschema "?{re.escape(search_path.branch)}"?(?: |$)', said)
    if sqlstate not in (_MISSING_SCHEMA, _NO_USAGE) or about_branch is None:
        return error
    tail = ", ".join(search_path.schemas[1:]) or "nothing"
    return _not_searched_error(
        connection, alias, search_path.branch, tail, sqlstate == _NO_USAGE, _REFUSED
    )


_CLOSED = "The connection was closed before any query ran on it"
_REFUSED = "The transaction was refused before any statement of it ran"


def _check_schema_searched(
    connection: Any, alias: str, branch: str, searched: list[str], exists: bool
) -> None:
    """Raise unless ``branch`` is among the schemas the server really searches."""
    if branch in searched:
        return
    instead = ", ".join(searched) or "nothing"
    raise _not_searched_error(connection, alias, branch, instead, exists, _CLOSED)


def _not_searched_error(
    connection: Any, alias: str, branch: str, instead: str, exists: bool, outcome: str
) -> SearchPathError:
    database = connection.info.dbname
    if not exists:
        return BranchDoesNotExist(
            f"Branch {branch!r} does not exist: database {database!r} has no schema "
            f"{branch!r}, so connection {alias!r} would read and write {instead} instead. "
            f"{outcome}. Create the branch first (manage.py branch_create {branch}) or "
            f"correct its name."
        )
    role = connection.info.user
    return SearchPathError(
        f"Branch connection {alias!r} may not use schema {branch!r} on database "
        f"{database!r}: role {role!r} has no USAGE privilege on it, so its queries would "
        f"run on {instead} instead. {outcome}; GRANT USAGE ON SCHEMA {branch} TO {role}."
    )


def branch_schema_searched(connection: Any, alias: str, branch: str) -> bool:
    """Whether the branch's schema is still searched on an open connection.

    Django's health check query, asking one thing more: a dropped branch
    makes its connection unusable instead of falling through to ``public``.
    """
    with connection.cursor() as cursor:
        cursor.execute(_HEALTH_CHECK_SQL, [branch])
        (searched,) = cursor.fetchone()
    if not searched:
        logger.warning(
            "Branch connection %s is no longer usable: schema %r has gone from its "
            "search_path (dropped, or its USAGE privilege revoked). Closing it.",
            alias,
            branch,
        )
    return bool(searched)


_SERVER_MESSAGE_RE = re.compile(r"FATAL:\s+(.*)")


def startup_rejected_error(
    alias: str, search_path: BranchSearchPath | None, exc: Exception
) -> Exception:
    """Our explanation when a pooler refuses the ``search_path`` startup option, else ``exc``."""
    message = str(exc)
    at_startup = search_path is not None and search_path.at_startup
    if not at_startup or "unsupported startup parameter" not in message:
        return exc
    match = _SERVER_MESSAGE_RE.search(message)
    said = match[1].strip() if match else message.strip()
    return SearchPathRefused(
        f"Branch connection {alias!r} was refused: the server said {said!r}. A connection "
        "pooler in front of PostgreSQL does not accept the branch's search_path as a "
        "startup option (PgBouncer before 1.20, or without track_extra_parameters = "
        "search_path). Set BRANCHING_OPS['SEARCH_PATH'] = 'session' and use session "
        f"pooling; {_DOCS_SECTION}."
    )
