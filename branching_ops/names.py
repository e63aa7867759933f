"""Branch names: which are valid, the alias of each, the ``application_name`` of its connections.

Pure rules with no Django in them, shared by the ``DATABASES`` mapping, the
router, the system checks, the operations commands and
:mod:`branching_ops.activity`, which tells branch backends apart by the
``application_name`` built here.
"""

from __future__ import annotations

import re
from collections.abc import Callable

__all__ = [
    "ALIAS_PREFIX",
    "branch_alias",
    "branch_application_name",
    "branch_from_application_name",
    "branch_name_error",
    "check_branch_name",
]

ALIAS_PREFIX = "schema_"
APPLICATION_NAME_MARKER = "branch:"
BRANCH_NAME_RE = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_PGBOUNCER_ADDED_HOST_RE = re.compile(r" (?:- ?\S*)?$")


def branch_name_error(name: str) -> str | None:
    """Say why ``name`` is not a valid branch name, or return ``None``.

    Branch names end up in libpq options and in SQL identifiers; only this
    conservative alphabet is accepted, so nothing is ever spliced unchecked.
    """
    return None if BRANCH_NAME_RE.fullmatch(name) else _not_a_branch_name(name)


def check_branch_name(name: str, exception: Callable[[str], Exception] = ValueError) -> str:
    """Return ``name`` if it is a valid branch name, else raise ``exception`` saying why."""
    if BRANCH_NAME_RE.fullmatch(name) is None:
        raise exception(_not_a_branch_name(name))
    return name


def _not_a_branch_name(name: str) -> str:
    return (
        f"{name!r} is not a valid branch name: it must be 1 to 63 characters "
        "of lowercase ASCII letters, digits and underscores, not starting "
        "with a digit."
    )


def branch_alias(name: str) -> str:
    """Return the connection alias of branch ``name``; ``ValueError`` if invalid."""
    return ALIAS_PREFIX + check_branch_name(name)


def branch_application_name(name: str, project_name: str | None) -> str:
    """The ``application_name`` a branch connection shows in ``pg_stat_activity``."""
    label = APPLICATION_NAME_MARKER + name
    return f"{project_name}/{label}" if project_name else label


def branch_from_application_name(application_name: str) -> str | None:
    """The branch a backend serves, from its ``application_name``, or ``None``.

    The name may be cut short where the server truncated a long
    ``application_name`` to 63 bytes. The `` - host:port`` that PgBouncer's
    ``application_name_add_host`` appends (whole or cut short) is ignored.
    """
    application_name = _PGBOUNCER_ADDED_HOST_RE.sub("", application_name)
    head, marker, name = application_name.rpartition(APPLICATION_NAME_MARKER)
    if not marker or (head and not head.endswith("/")):
        return None
    return name if BRANCH_NAME_RE.fullmatch(name) else None
