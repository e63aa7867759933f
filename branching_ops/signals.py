"""Signals projects connect to, e.g. to export metrics (:mod:`branching_ops.metrics`).

Each is sent once per event on the thread where it happens, never per query:
with no receiver connected, sending one costs a dictionary lookup.
"""

from __future__ import annotations

from typing import Literal
from typing import get_args

from django.dispatch import Signal

__all__ = [
    "CLOSE_REASONS",
    "CloseReason",
    "branch_alias_tracked",
    "branch_alias_untracked",
    "branch_connection_closed",
    "branch_connection_failed",
    "branch_connection_opened",
    "job_process_exited",
]

CloseReason = Literal["obsolete", "shutdown", "cap", "external"]
"""Why a branch connection closed: the ``reason`` of ``branch_connection_closed``."""

CLOSE_REASONS: tuple[CloseReason, ...] = get_args(CloseReason)

branch_alias_tracked = Signal()
"""Sent when a thread starts tracking a branch alias (its wrapper was created).

Arguments: ``sender`` (``None``: no wrapper exists yet) and ``alias``.
"""

branch_alias_untracked = Signal()
"""Sent when a thread stops tracking a branch alias and drops its wrapper.

Arguments: ``sender`` (``None``) and ``alias``. Every ``branch_alias_tracked``
is followed by exactly one ``branch_alias_untracked`` on the same thread.
"""

branch_connection_opened = Signal()
"""Sent after a tracked branch alias connected to the server.

Arguments: ``sender`` (the connection wrapper's class, as for Django's
``connection_created``) and ``alias``. Every ``branch_connection_opened`` is
followed by exactly one ``branch_connection_closed`` on the same thread.
"""

branch_connection_closed = Signal()
"""Sent after a branch connection that sent ``branch_connection_opened`` closed.

Arguments: ``sender`` (the connection wrapper's class), ``alias`` and
``reason`` (a :data:`CloseReason`): ``"obsolete"`` (unusable or past
``CONN_MAX_AGE`` at a boundary), ``"shutdown"`` (every connection of the
thread closed: end of a command or job, before a fork), ``"cap"`` (the least
recently used one, to stay within ``MAX_CONNECTIONS_PER_THREAD``) or
``"external"`` (other code closed it, or dropped its wrapper, e.g.
``connections[alias].close()``: sent when this package next looks at the
alias, at a boundary or when it reconnects).
"""

branch_connection_failed = Signal()
"""Sent when a branch connection was refused or reached the wrong schema.

Arguments: ``sender`` (the connection wrapper's class), ``alias`` and
``error``: the :class:`~branching_ops.search_path.SearchPathError` about to be
raised, whose ``kind`` names the failure (``"search_path_mismatch"``,
``"pooler_refused"``, …). The connection was closed before any query ran on
it; no ``branch_connection_opened`` was sent for it.
"""

job_process_exited = Signal()
"""Sent in an RQ worker after a job process it started has exited (or was killed).

Arguments: ``sender`` (the worker's class) and ``pid``. For state kept per
process, such as ``prometheus_client``'s multiprocess files.
"""
