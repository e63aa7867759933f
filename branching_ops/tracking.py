"""The shared mechanism: per-thread tracking of open branch connections.

Django closes what it can iterate; branch aliases are never iterated, so this
module remembers, per thread, every branch alias whose connection wrapper was
created, and applies Django's own lifetime rules to them at the boundaries
the entry points (HTTP signals, RQ workers, commands) mark. Every entry point
closes through one loop, :func:`close_connections`: the same never-raise
rule, the same care for connections inside ``atomic()``.

The state has the storage semantics of ``django.db.connections``
(``asgiref.local.Local(thread_critical=True)``): a tracked alias always names
a connection that the current thread owns. A context-local tracker leaks
under ASGI, where the same context can move between threads.

A boundary pass runs twice per request, so it is kept to what Django's own
``close_old_connections()`` does: the thread's state is read once, and a
connected branch's wrapper is remembered when it connects, not looked up in
``connections`` again at every pass; a thread that tracks nothing returns at
once.

With ``MAX_CONNECTIONS_PER_THREAD`` set, a thread's tracked aliases are kept
in least-recently-used order: an alias moves to the end when its wrapper is
created, when it connects, and (through an execute wrapper installed at
connect time, only while a cap is set) at every query. Before a new branch
wrapper is created, the least recently used idle connections are closed so
that opening it stays within the cap.
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
from branching_ops.signals import branch_alias_tracked
from branching_ops.signals import branch_alias_untracked
from branching_ops.signals import branch_connection_closed
from branching_ops.signals import branch_connection_opened

logger = logging.getLogger("branching_ops")


class _ThreadState:
    __slots__ = ("aliases", "over_cap_warned")

    def __init__(self) -> None:
        # Alias -> the wrapper that connected (branch_connection_opened was
        # sent, branch_connection_closed is owed), or None before it connects.
        # Least recently used first.
        self.aliases: dict[str, BaseDatabaseWrapper | None] = {}
        self.over_cap_warned = False


# asgiref's Local(thread_critical=True) keeps a thread's attributes in a
# threading.local, or, while an event loop runs in the thread, per context.
# It asks asyncio at every attribute access, by catching the RuntimeError
# get_running_loop() raises in a thread without a loop: most of the cost of
# a pass. _get_running_loop() (in asyncio.events.__all__) answers None
# instead, so the same two stores are told apart for a fraction of it.
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
    """Start tracking branch ``alias`` on this thread.

    Call it when a connection wrapper for ``alias`` is created on this thread:
    :class:`~branching_ops.databases.BranchDatabases` does so from
    ``__getitem__``; a project with its own dynamic ``DATABASES`` mapping
    calls it from its own ``__getitem__``. This is the moment before the new
    wrapper can connect, so it is where the cap makes room.
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
    return close_connections(close_if_unusable_or_obsolete, "obsolete", aliases, spare_atomic=True)


_DJANGOS_CLOSE_IF_UNUSABLE_OR_OBSOLETE = BaseDatabaseWrapper.close_if_unusable_or_obsolete


def close_if_unusable_or_obsolete(wrapper: BaseDatabaseWrapper) -> None:
    """Django's ``wrapper.close_if_unusable_or_obsolete()``, its common case answered here.

    At a boundary nearly every open connection is kept: Django's method (the
    same from Django 4.2 to 6.1) keeps one whose autocommit is as configured,
    that saw no error and is younger than ``CONN_MAX_AGE``, and then only
    resets ``health_check_done``. That case is decided here from the same
    attributes, without the method's two event-loop probes (``get_autocommit()``
    and ``ensure_connection()`` are ``async_unsafe``): most of what a pass
    costs. Any other case, and any backend that overrides the method, goes to
    the method itself.
    """
    if (
        type(wrapper).close_if_unusable_or_obsolete is _DJANGOS_CLOSE_IF_UNUSABLE_OR_OBSOLETE
        and wrapper.connection is not None
        and wrapper.autocommit == wrapper.settings_dict["AUTOCOMMIT"]
        and not wrapper.errors_occurred
        and (wrapper.close_at is None or time.monotonic() < wrapper.close_at)
    ):
        wrapper.health_check_done = False  # type: ignore[attr-defined]  # not in django-stubs
        return
    wrapper.close_if_unusable_or_obsolete()


def close_branch_connections(aliases: Collection[str] | None = None) -> int:
    """Close every branch connection this thread holds, unconditionally.

    For the end of a job process, or before a fork; limited to ``aliases``
    when given. Never raises. Returns how many it closed.
    """
    return close_connections(BaseDatabaseWrapper.close, "shutdown", aliases)


def close_connections(
    close: Callable[[BaseDatabaseWrapper], object],
    reason: str,
    aliases: Collection[str] | None = None,
    *,
    spare_atomic: bool = False,
    django_connections: bool = False,
) -> int:
    """The one close loop of every entry point: apply ``close`` to this thread's connections.

    ``close`` is Django's ``close``, :func:`close_if_unusable_or_obsolete`, or
    a rule of the caller's that ends in one of them; ``reason`` names it in
    the logs and in ``branch_connection_closed``. It runs on each branch
    connection of the thread (those of ``aliases`` when given); with
    ``spare_atomic`` not on one inside an ``atomic()`` block, which is kept
    and logged (at ``INFO`` at a boundary, at ``WARNING`` when everything was
    to close). With ``django_connections`` it also runs on Django's own open
    connections outside ``atomic()``: an RQ worker has no request boundary
    that does it for them, and one inside ``atomic()`` belongs to code still
    running around the worker (a test's transaction).

    Never raises: a failure is logged and the loop goes on. A branch
    connection left closed is untracked and its wrapper dropped. Returns how
    many branch connections it closed.
    """
    if django_connections:
        for static in connections.all(initialized_only=True):
            if not static.in_atomic_block:
                attempt(close, static)
    tracked = _state().aliases
    if not tracked:
        return 0
    closed = 0
    for alias, opened in list(tracked.items()):  # a copy: closing untracks
        if aliases is not None and alias not in aliases:
            continue
        wrapper = stored_wrapper(alias) if opened is None else opened
        if wrapper is None:
            # Dropped by someone else (``del connections[alias]``) before it
            # ever connected: nothing to close.
            _untrack(tracked, alias, None, "dropped", "external")
            continue
        was_open = wrapper.connection is not None
        if was_open and spare_atomic and wrapper.in_atomic_block:
            logger.log(
                logging.INFO if reason == "obsolete" else logging.WARNING,
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
        # Closed (or never opened): forget the wrapper, so memory follows the
        # branches a thread has open, not every branch it ever saw.
        _untrack(tracked, alias, wrapper, reason, reason if was_open else "external")
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
    """Apply ``action`` to ``wrapper``; a failure is logged with its traceback, never raised.

    Cleanup runs where an exception would do harm (a signal receiver, a
    ``finally``, rq's alarm handler): one failing connection must not stop
    the others from closing.
    """
    try:
        action(wrapper)
    except Exception:
        logger.warning("%s %s failed.", what, wrapper.alias, exc_info=True)


def on_connection_created(
    sender: object, connection: BaseDatabaseWrapper, **kwargs: object
) -> None:
    """Receiver of Django's ``connection_created``: a tracked branch connected.

    Remembers the wrapper (so that passes need not look it up), marks it most
    recently used and, with a cap, installs the per-query use recorder. A
    wrapper that reconnects after someone else closed it did not pass through
    :func:`track`; make room after the fact for it. A wrapper that is not the
    one this thread holds for the alias (``connections.create_connection()``)
    is not this thread's to manage.
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

    It holds the owning thread's order itself: a wrapper is only ever used on
    the thread that created it, and a thread-local lookup per query would
    cost more than the move.
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

    ``keep`` is never closed. A connection inside ``atomic()`` is busy: when
    only busy ones are left the thread goes over the cap, with one warning
    until it is back within it.
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
    reason: str,
    closed_reason: str,
) -> None:
    """Forget ``alias`` and drop its wrapper; ``closed_reason`` is sent if it had opened."""
    opened = aliases.pop(alias)
    stored = stored_wrapper(alias)
    if stored is not None and stored is not wrapper:
        # Other code dropped the wrapper that connected and made another one
        # since: that one is this thread's now, and tracked.
        aliases[alias] = None
    else:
        if stored is not None:
            del connections[alias]
        # Django remembers, per process, every alias whose server version it
        # checked; forget this one too (checked again if it reconnects).
        RAN_DB_VERSION_CHECK.discard(alias)
        pools.release(alias, wrapper)
        logger.debug("Untracked branch connection %s (%s).", alias, reason)
    # A failing receiver (a metrics exporter) must not stop cleanup; Django
    # logs its exception to the "django.dispatch" logger.
    if opened is not None:
        branch_connection_closed.send_robust(
            sender=type(opened), alias=alias, reason=closed_reason
        )
    if alias not in aliases:
        branch_alias_untracked.send_robust(sender=None, alias=alias)
