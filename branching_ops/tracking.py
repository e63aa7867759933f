"""Per-thread tracking of branch connections, and the one loop that closes them.

Django closes only the aliases it can iterate; the docs' How it works page
tells the rest (the thread state, the fast path, the cap).
"""

from __future__ import annotations

import logging
import threading
import time
from asyncio import _get_running_loop
from collections.abc import Callable
from collections.abc import Collection
from typing import Any

from asgiref.local import Local
from django.db import connections
from django.db.backends.base.base import RAN_DB_VERSION_CHECK
from django.db.backends.base.base import BaseDatabaseWrapper

from branching_ops import pools
from branching_ops.conf import conf
from branching_ops.signals import CloseReason
from branching_ops.signals import branch_alias_tracked
from branching_ops.signals import branch_alias_untracked
from branching_ops.signals import branch_connection_closed
from branching_ops.signals import branch_connection_opened

__all__ = [
    "close_branch_connections",
    "close_connections",
    "close_old_branch_connections",
    "track",
    "tracked_aliases",
]

logger = logging.getLogger("branching_ops")


class _ThreadState:
    __slots__ = ("aliases", "over_cap_warned")

    def __init__(self) -> None:
        # Alias -> the wrapper that connected (a close signal is owed), or None.
        self.aliases: dict[str, BaseDatabaseWrapper | None] = {}
        self.over_cap_warned = False


# Local(thread_critical=True)'s two stores, told apart without its costly
# get_running_loop() probe at every access.
_sync_threads = threading.local()
_loop_threads = Local(thread_critical=True)


def _state() -> _ThreadState:
    """This thread's state (this context's, in a thread running an event loop)."""
    storage = _sync_threads if _get_running_loop() is None else _loop_threads
    try:
        state: _ThreadState = storage.state
    except AttributeError:
        state = storage.state = _ThreadState()
    return state


def track(alias: str) -> None:
    """Start tracking branch ``alias`` on this thread; call it as its wrapper is created.

    That is before the wrapper can connect, so it is where the cap makes room.
    """
    state = _state()
    aliases = state.aliases
    if alias in aliases:
        aliases[alias] = aliases.pop(alias)
        return
    cap = conf.MAX_CONNECTIONS_PER_THREAD
    if cap is not None:
        _make_room(state, cap - 1)
    aliases[alias] = None
    pools.retain(alias)
    logger.debug("Tracking branch connection %s.", alias)
    branch_alias_tracked.send_robust(sender=None, alias=alias)


def tracked_aliases() -> list[str]:
    """The branch aliases tracked on this thread, least recently used first."""
    return list(_state().aliases)


def stored_wrapper(alias: str) -> BaseDatabaseWrapper | None:
    """The connection wrapper this thread holds for ``alias``, without creating one."""
    wrapper: BaseDatabaseWrapper | None = getattr(
        connections._connections,  # type: ignore[attr-defined]
        alias,
        None,
    )
    return wrapper


def close_old_branch_connections(aliases: Collection[str] | None = None, **kwargs: object) -> int:
    """Django's ``close_old_connections()``, for this thread's branch aliases.

    Closes connections that are unusable or past ``CONN_MAX_AGE``, never one
    inside an atomic block; limited to ``aliases`` when given. Never raises.
    Returns how many it closed. Accepts and ignores signal arguments so it can
    be a signal receiver.
    """
    if aliases is None:
        # all_kept(kept_open), inlined: twice per request, one call less shows.
        for wrapper in _state().aliases.values():
            if not kept_open(wrapper):
                break
        else:
            return 0
    return close_connections(
        close_if_unusable_or_obsolete, "obsolete", aliases, spare_atomic=logging.INFO
    )


def all_kept(kept: Callable[[BaseDatabaseWrapper | None], bool]) -> bool:
    """Whether ``kept`` holds for every branch wrapper of this thread (None: not connected).

    The fast path of the passes that run at every boundary: ``kept`` must be
    true only of a wrapper that the pass's close rule would leave untouched.
    """
    return all(map(kept, _state().aliases.values()))


_DJANGOS_CLOSE_IF_UNUSABLE_OR_OBSOLETE = BaseDatabaseWrapper.close_if_unusable_or_obsolete


def close_if_unusable_or_obsolete(wrapper: BaseDatabaseWrapper) -> None:
    """Django's ``wrapper.close_if_unusable_or_obsolete()``, its common case answered here."""
    if not kept_open(wrapper):
        wrapper.close_if_unusable_or_obsolete()


def kept_open(wrapper: BaseDatabaseWrapper | None) -> bool:
    """Whether Django's ``close_if_unusable_or_obsolete()`` would keep ``wrapper`` open.

    Read from its attributes, without the method's ``async_unsafe`` probes;
    False means "ask Django's method" (not connected, or a backend overriding it).
    """
    if (
        wrapper is not None
        and type(wrapper).close_if_unusable_or_obsolete is _DJANGOS_CLOSE_IF_UNUSABLE_OR_OBSOLETE
        and wrapper.connection is not None
        and wrapper.autocommit == wrapper.settings_dict["AUTOCOMMIT"]
        and not wrapper.errors_occurred
        and (wrapper.close_at is None or time.monotonic() < wrapper.close_at)
    ):
        wrapper.health_check_done = False  # type: ignore[attr-defined]  # not in django-stubs
        return True
    return False


def close_branch_connections(aliases: Collection[str] | None = None) -> int:
    """Close every branch connection this thread holds (of ``aliases`` when given).

    Never raises. Returns how many it closed.
    """
    return close_connections(BaseDatabaseWrapper.close, "shutdown", aliases)


def close_connections(
    close: Callable[[BaseDatabaseWrapper], object],
    reason: CloseReason,
    aliases: Collection[str] | None = None,
    *,
    spare_atomic: int | None = None,
) -> int:
    """The one close loop of every entry point: ``close`` on this thread's branch connections.

    ``reason`` is sent with ``branch_connection_closed``; with ``spare_atomic``
    (a log level) one inside ``atomic()`` is kept and logged. Limited to
    ``aliases`` when given. Never raises; returns how many it closed.
    """
    tracked = _state().aliases
    closed = 0
    for alias, opened in list(tracked.items()):  # a copy: closing untracks
        if aliases is not None and alias not in aliases:
            continue
        wrapper = stored_wrapper(alias) if opened is None else opened
        if wrapper is None:  # dropped by other code (del connections[alias]) before it connected
            _untrack(tracked, alias, None, "external")
            continue
        was_open = wrapper.connection is not None
        if was_open and spare_atomic is not None and wrapper.in_atomic_block:
            logger.log(
                spare_atomic,
                "Kept branch connection %s open: it is inside an atomic block.",
                alias,
            )
            continue
        attempt(close, wrapper, "Closing branch connection")
        if wrapper.connection is not None:
            continue
        if was_open:
            closed += 1
            logger.debug("Closed branch connection %s (%s).", alias, reason)
        # Memory follows the branches a thread has open, not every branch it ever saw.
        _untrack(tracked, alias, wrapper, reason if was_open or opened is None else "external")
    return closed


def branch_wrappers() -> list[BaseDatabaseWrapper]:
    """The connection wrappers of this thread's tracked branches (connected or not)."""
    return [
        wrapper
        for alias, opened in list(_state().aliases.items())
        if (wrapper := stored_wrapper(alias) if opened is None else opened) is not None
    ]


def attempt(
    action: Callable[[BaseDatabaseWrapper], object],
    wrapper: BaseDatabaseWrapper,
    what: str = "Closing connection",
) -> None:
    """Apply ``action`` to ``wrapper``; a failure is logged, never raised.

    Cleanup runs in receivers, ``finally`` blocks and alarm handlers: one
    failing connection must not stop the others from closing.
    """
    try:
        action(wrapper)
    except Exception:
        logger.warning("%s %s failed.", what, wrapper.alias, exc_info=True)


def on_connection_created(
    sender: object, connection: BaseDatabaseWrapper, **kwargs: object
) -> None:
    """Receiver of ``connection_created``: remember a tracked branch's wrapper as it connects.

    With a cap, also record its use per query, and make room for a wrapper
    that reconnected without passing through :func:`track`.
    """
    state = _state()
    aliases = state.aliases
    alias = connection.alias
    if alias not in aliases or stored_wrapper(alias) is not connection:
        return
    opened_before = aliases.pop(alias)
    aliases[alias] = connection
    logger.debug("Opened branch connection %s.", alias)
    if opened_before is not None:  # other code closed its previous connection
        branch_connection_closed.send_robust(
            sender=type(opened_before), alias=alias, reason="external"
        )
    branch_connection_opened.send_robust(sender=type(connection), alias=alias)
    cap = conf.MAX_CONNECTIONS_PER_THREAD
    if cap is None:
        return
    if not any(isinstance(w, _UseRecorder) for w in connection.execute_wrappers):
        connection.execute_wrappers.append(_UseRecorder(aliases, alias))
    _make_room(state, cap - 1, keep=alias)


class _UseRecorder:
    """An execute wrapper: each query moves its alias to the most recent end.

    It holds its thread's order itself: a lookup per query would cost more.
    """

    __slots__ = ("alias", "order")

    def __init__(self, order: dict[str, Any], alias: str) -> None:
        self.order = order
        self.alias = alias

    def __call__(
        self, execute: Callable[..., Any], sql: Any, params: Any, many: bool, context: Any
    ) -> Any:
        if self.alias in self.order:
            self.order[self.alias] = self.order.pop(self.alias)
        return execute(sql, params, many, context)


def _make_room(state: _ThreadState, limit: int, keep: str | None = None) -> None:
    """Close least recently used idle connections until at most ``limit`` are open.

    ``keep`` is never closed, nor one inside ``atomic()``: then the thread goes
    over the cap, with one warning until it is back within it.
    """
    connected = [
        (alias, wrapper)
        for alias, wrapper in state.aliases.items()
        if alias != keep and wrapper is not None and wrapper.connection is not None
    ]
    excess = len(connected) - limit
    for alias, wrapper in connected:
        if excess <= 0:
            break
        if not wrapper.in_atomic_block:
            excess -= close_connections(BaseDatabaseWrapper.close, "cap", (alias,))
    if excess <= 0:
        state.over_cap_warned = False
    elif not state.over_cap_warned:
        state.over_cap_warned = True
        logger.warning(
            "Went over MAX_CONNECTIONS_PER_THREAD=%d: the %d open branch connections "
            "of this thread are all inside atomic blocks.",
            conf.MAX_CONNECTIONS_PER_THREAD,
            len(connected) + (keep is not None),
        )


def _untrack(
    aliases: dict[str, BaseDatabaseWrapper | None],
    alias: str,
    wrapper: BaseDatabaseWrapper | None,
    reason: CloseReason,
) -> None:
    """Forget ``alias`` and drop its wrapper; ``reason`` is sent if it had opened."""
    opened = aliases.pop(alias)
    stored = stored_wrapper(alias)
    if stored is not None and stored is not wrapper:
        # Other code made another wrapper since: that one is tracked now.
        aliases[alias] = None
    else:
        if stored is not None:
            del connections[alias]
        # Django's per-process set of aliases whose server version it checked.
        RAN_DB_VERSION_CHECK.discard(alias)
        pools.release(alias, wrapper)
        logger.debug("Untracked branch connection %s (%s).", alias, reason)
    # send_robust: a failing receiver must not stop cleanup.
    if opened is not None:
        branch_connection_closed.send_robust(sender=type(opened), alias=alias, reason=reason)
    if alias not in aliases:
        branch_alias_untracked.send_robust(sender=None, alias=alias)
