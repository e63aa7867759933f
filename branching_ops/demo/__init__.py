"""``python -m branching_ops.demo``: where branch connections leak, and what stops it.

One throw-away PostgreSQL with a small ``max_connections`` and four short
scenarios, one per entry point: HTTP with ``CONN_MAX_AGE=0``, HTTP with
persistent connections, an in-process RQ worker, a loop of
``call_command()``. Each runs in three modes: plain Django, the upstream fix
(netbox-branching 1.2.2) and branching_ops. Needs the ``demo`` extra.
"""

from __future__ import annotations
