"""Deliver a branch's ``search_path`` and check that the server really uses it.

A branch is only as good as its ``search_path``: a connection that silently
falls back to ``"$user", public`` reads and writes the wrong schema with no
error. That is exactly what a pooler does when it drops the libpq ``options``
startup parameter (PgBouncer with ``ignore_startup_parameters = options``).

The same happens when the path is right but names a schema that does not
exist (a typo, a branch not created yet or already dropped): PostgreSQL
skips it without a word, and ``public`` answers in its place.

The branch backend (:mod:`branching_ops.backend.base`) calls in here at three
moments: when the server refuses a new connection, right after it is opened,
before any query of the caller runs on it, and in Django's health check.
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

logger = logging.getLogger("branching_ops")

DOCS_SECTION = (
    "see 'Behind PgBouncer' (docs/pgbouncer.md) in the django-branching-ops documentation"
)


@dataclass(frozen=True)
class BranchSearchPath:
    """How a branch connection gets its ``search_path``, and whether it is checked.

    :func:`~branching_ops.databases.build_branch_settings` writes it into the
    alias' ``OPTIONS`` (:meth:`options`) and the branch backend reads it back
    (:meth:`from_options`): three plain keys, so that settings stay plain data
    a project's own mapping can write too, and that the backend removes
    before libpq sees ``OPTIONS``, as Django does with ``pool``.
    """

    path: str
    """The whole ``search_path``, the branch first: ``"feature_x,public"``."""
    set_after_connecting: bool
    """``SET`` it right after connecting (``"session"`` mode), not as a startup option."""
    verify: bool
    """Check on every new connection that the server searches the branch."""

    KEYS: ClassVar[tuple[str, str, str]] = ("search_path", "set_search_path", "verify_search_path")

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> BranchSearchPath | None:
        """Read from ``OPTIONS``; ``None`` when they carry no branch ``search_path``."""
        path, set_after_connecting, verify = (options.get(key) for key in cls.KEYS)
        if path is None:
            return None
        return cls(str(path), bool(set_after_connecting), bool(verify))

    def options(self) -> dict[str, object]:
        """The ``OPTIONS`` entries that carry it."""
        values = (self.path, self.set_after_connecting, self.verify)
        return dict(zip(self.KEYS, values, strict=True))

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

    PostgreSQL leaves a missing schema out of the effective ``search_path``
    without an error, so every query would run on the schemas after it
    (``public``). The connection is closed before this is raised.

    A :class:`SearchPathError`, and an ``OperationalError`` as Django raises
    when the *database* named in ``DATABASES`` does not exist: code that
    answers "database unavailable" (``except DatabaseError``) answers a
    missing branch the same way.
    """

    kind = "missing_schema"


def _schemas(search_path: str) -> list[str]:
    return [schema.strip() for schema in search_path.split(",")]


# One round trip answers the path the session has, the schemas PostgreSQL
# really searches (current_schemas() leaves out those that do not exist or
# that the role may not use), and whether the branch's schema exists at all
# (to_regnamespace() reads the catalog cache: no query on pg_namespace to
# plan on a new backend). In session mode the SET runs in the same
# statement; OFFSET 0 keeps it in a subquery that runs before
# current_schemas() reads the new path.
_SCHEMA_EXISTS = "pg_catalog.to_regnamespace(%s) IS NOT NULL"
SET_AND_CHECK_SQL = (
    f"SELECT path, pg_catalog.current_schemas(false), {_SCHEMA_EXISTS} "
    "FROM (SELECT pg_catalog.set_config('search_path', %s, false) AS path OFFSET 0) AS s"
)
CHECK_SQL = (
    "SELECT pg_catalog.current_setting('search_path'), "
    f"pg_catalog.current_schemas(false), {_SCHEMA_EXISTS}"
)
HEALTH_CHECK_SQL = "SELECT %s = ANY(pg_catalog.current_schemas(false))"


def apply_search_path(connection: Any, alias: str, search_path: BranchSearchPath | None) -> None:
    """``SET`` (session mode) and/or check (``verify_search_path``) on a new connection.

    ``connection`` is the raw DB-API connection: the query runs outside
    Django's cursor wrappers, so it never shows in ``connection.queries`` or
    ``assertNumQueries()``, like Django's own time zone setup. Setting and
    checking share one round trip: ``set_config()`` answers the value the
    session now has, and the same statement says whether the branch's schema
    is really searched (:func:`check_schema_searched`).
    """
    if search_path is None or not (search_path.set_after_connecting or search_path.verify):
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
            f"ran on it; {DOCS_SECTION}."
        )
    check_schema_searched(connection, alias, branch, searched, exists)


def check_schema_searched(
    connection: Any, alias: str, branch: str, searched: list[str], exists: bool
) -> None:
    """Raise unless ``branch`` is among the schemas the server really searches."""
    if branch in searched:
        return
    database = connection.info.dbname
    if not exists:
        raise BranchDoesNotExist(
            f"Branch {branch!r} does not exist: database {database!r} has no schema "
            f"{branch!r}, so connection {alias!r} would read and write "
            f"{', '.join(searched) or 'nothing'} instead. The connection was closed before "
            f"any query ran on it. Create the branch first (manage.py branch_create "
            f"{branch}) or correct its name."
        )
    role = connection.info.user
    raise SearchPathError(
        f"Branch connection {alias!r} may not use schema {branch!r} on database "
        f"{database!r}: role {role!r} has no USAGE privilege on it, so its queries would "
        f"run on {', '.join(searched) or 'nothing'} instead. The connection was closed "
        f"before any query ran on it; GRANT USAGE ON SCHEMA {branch} TO {role}."
    )


def branch_schema_searched(connection: Any, alias: str, branch: str) -> bool:
    """Whether the branch's schema is still searched on an open connection.

    Django's health check (``CONN_HEALTH_CHECKS``) runs a query before
    reusing a persistent connection: this is that query, asking one thing
    more, so a branch dropped under an open connection makes it unusable
    instead of silently falling through to ``public``.
    """
    with connection.cursor() as cursor:
        cursor.execute(HEALTH_CHECK_SQL, [branch])
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
    """Our explanation when a pooler refuses the ``search_path`` startup option, else ``exc``.

    PgBouncer before 1.20 refuses the ``options`` startup parameter outright;
    later versions refuse a ``-c search_path`` inside it unless
    ``track_extra_parameters`` includes ``search_path``.
    """
    message = str(exc)
    at_startup = search_path is not None and not search_path.set_after_connecting
    if not at_startup or "unsupported startup parameter" not in message:
        return exc
    match = _SERVER_MESSAGE_RE.search(message)
    said = match[1].strip() if match else message.strip()
    return SearchPathRefused(
        f"Branch connection {alias!r} was refused: the server said {said!r}. A connection "
        "pooler in front of PostgreSQL does not accept the branch's search_path as a "
        "startup option (PgBouncer before 1.20, or without track_extra_parameters = "
        "search_path). Set BRANCHING_OPS['SEARCH_PATH'] = 'session' and use session "
        f"pooling; {DOCS_SECTION}."
    )
