"""Signals projects connect to, e.g. to export metrics."""

from __future__ import annotations

from django.dispatch import Signal

branch_connection_closed = Signal()
"""Sent after this package closed a branch connection.

Arguments: ``sender`` (the connection wrapper's class, as for Django's
``connection_created``), ``alias`` and ``reason``: ``"obsolete"`` (unusable or
past ``CONN_MAX_AGE`` at a boundary), ``"shutdown"`` (every connection of the
thread closed: end of a command or job, before a fork) or ``"cap"`` (the least
recently used one, to stay within ``MAX_CONNECTIONS_PER_THREAD``).
"""
