"""The shared mechanism: per-thread tracking of open branch connections.

Django closes what it can iterate; branch aliases are never iterated, so this
module remembers, per thread, every branch alias whose connection wrapper was
created, and applies Django's own lifetime rules to them at the boundaries
the entry points (HTTP signals, RQ workers, commands) mark.

The storage is ``Local(thread_critical=True)``, exactly like
``django.db.connections``: a tracked alias always names a connection that
the current thread owns. A context-local tracker leaks under ASGI, where the
same context can move between threads.

With ``MAX_CONNECTIONS_PER_THREAD`` set, a thread's tracked aliases are kept
in least-recently-used order: an alias moves to the end when its wrapper is
created, when it connects, and (through an execute wrapper installed at
connect time, only while a cap is set) at every query. Before a new branch
wrapper is created, the least recently used idle connections are closed so
that opening it stays within the cap.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from collections.abc import Collection
from typing import Any
from typing import TypeAlias

from asgiref.local import Local
from django.db import connections
from django.db.backends.base.base import RAN_DB_VERSION_CHECK
from django.db.backends.base.base import BaseDatabaseWrapper

from branching_ops import pools
from branching_ops.conf import conf
from branching_ops.signals import branch_alias_tracked
from branching_ops.signals import branch_alias_untracked
from branching_ops.signals import branch_connection_closed
from branching_ops.signals import branch_connection_opened

logger = logging.getLogger("branching_ops")

_state = Local(thread_critical=True)

# Alias -> the wrapper class it connected with (branch_connection_opened was
# sent, branch_connection_closed is owed), or None before it connects.
_TrackedAliases: TypeAlias = dict[str, type[BaseDatabaseWrapper] | None]


def _tracked() -> _TrackedAliases:
    """This thread's tracked aliases, least recently used first."""
    try:
        aliases: _TrackedAliases = _state.aliases
    except AttributeError:
        aliases = _state.aliases = {}
    return aliases


def track(alias: str) -> None:
    """Start tracking branch ``alias`` on this thread.

    Call it when a connection wrapper for ``alias`` is created on this thread:
    :class:`~branching_ops.databases.BranchDatabases` does so from
    ``__getitem__``; a project with its own dynamic ``DATABASES`` mapping
    calls it from its own ``__getitem__``. This is the moment before the new
    wrapper can connect, so it is where the cap makes room.
    """
    aliases = _tracked()
    if alias in aliases:
        aliases[alias] = aliases.pop(alias)
        return
    cap = conf.MAX_CONNECTIONS_PER_THREAD
    if cap is not None:
        _make_room(aliases, cap - 1)
    aliases[alias] = None
    pools.retain(alias)
    logger.debug("Tracking branch connection %s.", alias)
    branch_alias_tracked.send_robust(sender=None, alias=alias)


def tracked_aliases() -> list[str]:
    """The branch aliases tracked on this thread, least recently used first."""
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


def on_connection_created(
    sender: object, connection: BaseDatabaseWrapper, **kwargs: object
) -> None:
    """Receiver of Django's ``connection_created``: a tracked branch connected.

    Marks it most recently used and, with a cap, installs the per-query use
    recorder. A wrapper that reconnects after someone else closed it did not
    pass through :func:`track`; make room after the fact for it.
    """
    aliases = _tracked()
    alias = connection.alias
    if alias not in aliases:
        return
    opened_before = aliases.pop(alias)
    aliases[alias] = type(connection)
    logger.debug("Opened branch connection %s.", alias)
    if opened_before is not None:  # other code closed its previous connection
        branch_connection_closed.send_robust(sender=opened_before, alias=alias, reason="external")
    branch_connection_opened.send_robust(sender=type(connection), alias=alias)
    cap = conf.MAX_CONNECTIONS_PER_THREAD
    if cap is None:
        return
    if not any(isinstance(w, _UseRecorder) for w in connection.execute_wrappers):
        connection.execute_wrappers.append(_UseRecorder(aliases, alias))
    _make_room(aliases, cap - 1, keep=alias)


class _UseRecorder:
    """An execute wrapper: each query moves its alias to the most recent end.

    It holds the owning thread's order itself: a wrapper is only ever used on
    the thread that created it, and a thread-local lookup per query would
    cost more than the move.
    """

    __slots__ = ("alias", "order")

    def __init__(self, order: _TrackedAliases, alias: str) -> None:
        self.order = order
        self.alias = alias

    def __call__(
        self, execute: Callable[..., Any], sql: Any, params: Any, many: bool, context: Any
    ) -> Any:
        if self.alias in self.order:
            self.order[self.alias] = self.order.pop(self.alias)
        return execute(sql, params, many, context)


def _make_room(aliases: _TrackedAliases, limit: int, keep: str | None = None) -> None:
    """Close least recently used idle connections until at most ``limit`` are open.

    ``keep`` is never closed. A connection inside ``atomic()`` is busy: when
    only busy ones are left the thread goes over the cap, with one warning
    until it is back within it.
    """
    open_aliases = []
    for alias in aliases:
        wrapper = stored_wrapper(alias)
        if alias != keep and wrapper is not None and wrapper.connection is not None:
            open_aliases.append((alias, wrapper))
    excess = len(open_aliases) - limit
    for alias, wrapper in open_aliases:
        if excess <= 0:
            break
        if not wrapper.in_atomic_block and _close(
            aliases, alias, wrapper, BaseDatabaseWrapper.close, "cap"
        ):
            excess -= 1
    if excess <= 0:
        _state.over_cap_warned = False
    elif not getattr(_state, "over_cap_warned", False):
        _state.over_cap_warned = True
        logger.warning(
            "Went over MAX_CONNECTIONS_PER_THREAD=%d: the %d open branch connections "
            "of this thread are all inside atomic blocks.",
            conf.MAX_CONNECTIONS_PER_THREAD,
            len(open_aliases) + (keep is not None),
        )


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
            _untrack(aliases, alias, None, "dropped", "external")
            continue
        if wrapper.connection is not None and reason == "obsolete" and wrapper.in_atomic_block:
            logger.info("Kept branch connection %s open: it is inside an atomic block.", alias)
            continue
        closed += _close(aliases, alias, wrapper, close, reason)
    return closed


def _close(
    aliases: _TrackedAliases,
    alias: str,
    wrapper: BaseDatabaseWrapper,
    close: Callable[[BaseDatabaseWrapper], None],
    reason: str,
) -> bool:
    """Apply ``close``; untrack the alias if that left it closed. Never raises.

    Returns whether an open connection was closed.
    """
    was_open = wrapper.connection is not None
    try:
        close(wrapper)
    except Exception:
        logger.warning("Closing branch connection %s failed.", alias, exc_info=True)
    if wrapper.connection is not None:
        return False
    if was_open:
        logger.debug("Closed branch connection %s (%s).", alias, reason)
    # Closed (or never opened): forget the wrapper, so memory follows the
    # branches a thread has open, not every branch it ever saw.
    _untrack(aliases, alias, wrapper, reason, reason if was_open else "external")
    return was_open


def _untrack(
    aliases: _TrackedAliases,
    alias: str,
    wrapper: BaseDatabaseWrapper | None,
    reason: str,
    closed_reason: str,
) -> None:
    """Forget ``alias``; ``closed_reason`` is sent if its connection had opened."""
    opened_as = aliases.pop(alias)
    if wrapper is not None:
        del connections[alias]
    # Django remembers, per process, every alias whose server version it
    # checked; forget this one too (checked again if it reconnects).
    RAN_DB_VERSION_CHECK.discard(alias)
    pools.release(alias, wrapper)
    logger.debug("Untracked branch connection %s (%s).", alias, reason)
    # A failing receiver (a metrics exporter) must not stop cleanup; Django
    # logs its exception to the "django.dispatch" logger.
    if opened_as is not None:
        branch_connection_closed.send_robust(sender=opened_as, alias=alias, reason=closed_reason)
    branch_alias_untracked.send_robust(sender=None, alias=alias)
