"""Deliver a branch's ``search_path`` and check that the server really uses it.

A branch is only as good as its ``search_path``: a connection that silently
falls back to ``"$user", public`` reads and writes the wrong schema with no
error. That is exactly what a pooler does when it drops the libpq ``options``
startup parameter (PgBouncer with ``ignore_startup_parameters = options``).

The branch backend (:mod:`branching_ops.backend.base`) calls in here at two
moments of every new connection: when the server refuses it, and right after
it is opened, before any query of the caller runs on it.
"""

from __future__ import annotations

import re
from typing import Any

from django.core.exceptions import ImproperlyConfigured

# OPTIONS keys BranchDatabases sets for the branch backend, which pops them
# before libpq sees them (as Django does with "pool" or "assume_role").
SEARCH_PATH_OPTIONS = ("search_path", "set_search_path", "verify_search_path")

README_SECTION = "see 'Running behind PgBouncer' in the django-branching-ops README"


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


def _schemas(search_path: str) -> list[str]:
    return [schema.strip() for schema in search_path.split(",")]


def apply_search_path(connection: Any, alias: str, options: dict[str, Any]) -> None:
    """``SET`` (session mode) and/or check (``verify_search_path``) on a new connection.

    ``connection`` is the raw DB-API connection: the query runs outside
    Django's cursor wrappers, so it never shows in ``connection.queries`` or
    ``assertNumQueries()``, like Django's own time zone setup. Setting and
    checking share one round trip: ``set_config()`` answers the value the
    session now has.
    """
    expected = options.get("search_path")
    set_it = options.get("set_search_path", False)
    verify = options.get("verify_search_path", False)
    if expected is None or not (set_it or verify):
        return
    with connection.cursor() as cursor:
        if set_it:
            cursor.execute("SELECT set_config('search_path', %s, false)", [expected])
        else:
            cursor.execute("SELECT current_setting('search_path')")
        row = cursor.fetchone()
    actual = str(row[0])
    if verify and _schemas(actual) != _schemas(expected):
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
            f"ran on it; {README_SECTION}."
        )


_SERVER_MESSAGE_RE = re.compile(r"FATAL:\s+(.*)")


def startup_rejected_error(alias: str, options: dict[str, Any], exc: Exception) -> Exception:
    """Our explanation when a pooler refuses the ``search_path`` startup option, else ``exc``.

    PgBouncer before 1.20 refuses the ``options`` startup parameter outright;
    later versions refuse a ``-c search_path`` inside it unless
    ``track_extra_parameters`` includes ``search_path``.
    """
    message = str(exc)
    at_startup = "search_path" in options and not options.get("set_search_path")
    if not at_startup or "unsupported startup parameter" not in message:
        return exc
    match = _SERVER_MESSAGE_RE.search(message)
    said = match[1].strip() if match else message.strip()
    return SearchPathRefused(
        f"Branch connection {alias!r} was refused: the server said {said!r}. A connection "
        "pooler in front of PostgreSQL does not accept the branch's search_path as a "
        "startup option (PgBouncer before 1.20, or without track_extra_parameters = "
        "search_path). Set BRANCHING_OPS['SEARCH_PATH'] = 'session' and use session "
        f"pooling; {README_SECTION}."
    )
