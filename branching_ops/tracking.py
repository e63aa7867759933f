"""The shared mechanism: per-thread tracking of open branch connections.

Django closes what it can iterate; branch aliases are never iterated, so this
module remembers, per thread, every branch alias whose connection wrapper was
created, and applies Django's own lifetime rules to them at the boundaries
the entry points (HTTP signals, RQ workers, commands) mark.

The storage is ``Local(thread_critical=True)``, exactly like
``django.db.connections``: a tracked alias always names a connection that
the current thread owns. A context-local tracker leaks under ASGI, where the
same context can move between threads.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from collections.abc import Collection

from asgiref.local import Local
from django.db import connections
from django.db.backends.base.base import RAN_DB_VERSION_CHECK
from django.db.backends.base.base import BaseDatabaseWrapper

logger = logging.getLogger("branching_ops")

_state = Local(thread_critical=True)


def _tracked() -> dict[str, None]:
    """This thread's tracked aliases, least recently tracked first."""
    try:
        aliases: dict[str, None] = _state.aliases
    except AttributeError:
        aliases = _state.aliases = {}
    return aliases


def track(alias: str) -> None:
    """Start tracking branch ``alias`` on this thread.

    Call it when a connection wrapper for ``alias`` is created on this thread:
    :class:`~branching_ops.databases.BranchDatabases` does so from
    ``__getitem__``; a project with its own dynamic ``DATABASES`` mapping
    calls it from its own ``__getitem__``.
    """
    aliases = _tracked()
    aliases.pop(alias, None)
    aliases[alias] = None


def tracked_aliases() -> list[str]:
    """The branch aliases tracked on this thread, least recently tracked first."""
    return list(_tracked())


def close_old_branch_connections(aliases: Collection[str] | None = None, **kwargs: object) -> int:
    """Django's ``close_old_connections()``, for this thread's branch aliases.

    Closes connections that are unusable or past ``CONN_MAX_AGE``, never one
    inside an atomic block; limited to ``aliases`` when given. Never raises.
    Returns how many it closed. Accepts and ignores signal arguments so it can
    be a signal receiver.
    """
    return _close_tracked(BaseDatabaseWrapper.close_if_unusable_or_obsolete, "obsolete", aliases)


def close_branch_connections(aliases: Collection[str] | None = None) -> int:
    """Close every branch connection this thread holds, unconditionally.

    For the end of a command, of a job process, or before a fork; limited to
    ``aliases`` when given. Never raises. Returns how many it closed.
    """
    return _close_tracked(BaseDatabaseWrapper.close, "shutdown", aliases)


def stored_wrapper(alias: str) -> BaseDatabaseWrapper | None:
    """The connection wrapper this thread holds for ``alias``, without creating one."""
    wrapper: BaseDatabaseWrapper | None = getattr(
        connections._connections,  # type: ignore[attr-defined]
        alias,
        None,
    )
    return wrapper


def _close_tracked(
    close: Callable[[BaseDatabaseWrapper], None],
    reason: str,
    only: Collection[str] | None = None,
) -> int:
    aliases = _tracked()
    closed = 0
    for alias in [alias for alias in aliases if only is None or alias in only]:
        wrapper = stored_wrapper(alias)
        if wrapper is None:
            # Dropped by someone else (``del connections[alias]``): nothing to close.
            del aliases[alias]
            continue
        was_open = wrapper.connection is not None
        if was_open and reason == "obsolete" and wrapper.in_atomic_block:
            logger.info("Kept branch connection %s open: it is inside an atomic block.", alias)
            continue
        try:
            close(wrapper)
        except Exception:
            logger.warning("Closing branch connection %s failed.", alias, exc_info=True)
        if wrapper.connection is None:
            # Closed (or never opened): forget the wrapper, so memory follows
            # the branches a thread has open, not every branch it ever saw.
            del aliases[alias]
            del connections[alias]
            # Django remembers, per process, every alias whose server version
            # it checked; forget this one too (checked again if it reconnects).
            RAN_DB_VERSION_CHECK.discard(alias)
            if was_open:
                closed += 1
                logger.debug("Closed branch connection %s (%s).", alias, reason)
    return closed
