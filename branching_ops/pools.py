"""Close the connection pool of a branch that no thread holds any more.

With ``OPTIONS["pool"]`` (Django >= 5.1, psycopg 3) Django keeps one pool per
alias for the life of the process, and so one per branch ever visited: each
with its worker threads and, until its idle timeout, its server connections.
This module counts, per branch alias, the threads that track it, and closes
the branch's pool when the last of them lets go. ``default`` and the other
static aliases are never tracked, so their pools are untouched.

Counting happens under a lock that a thread also takes before it creates a
wrapper (:func:`retain`, called from ``track()``), so no thread can pick up a
pool that another thread is closing: it finds the pool gone and Django makes
a fresh one.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter

from django.db.backends.base.base import BaseDatabaseWrapper

logger = logging.getLogger("branching_ops")

_lock = threading.Lock()
_holders: Counter[str] = Counter()


def retain(alias: str) -> None:
    """One more thread holds branch ``alias``."""
    with _lock:
        _holders[alias] += 1


def release(alias: str, wrapper: BaseDatabaseWrapper | None) -> None:
    """One thread less holds ``alias``; close its pool if that was the last."""
    with _lock:
        _holders[alias] -= 1
        if _holders[alias] > 0:
            return
        del _holders[alias]
        if wrapper is None or not wrapper.settings_dict["OPTIONS"].get("pool"):
            return
        try:
            wrapper.close_pool()  # type: ignore[attr-defined]  # PostgreSQL's wrapper
        except Exception:
            logger.warning("Closing the connection pool of %s failed.", alias, exc_info=True)
        else:
            logger.debug("Closed the connection pool of branch connection %s.", alias)
