"""``python -m branching_ops.demo``: the leak and the fix, measured side by side.

One soak, three modes, the same workload each: a throw-away PostgreSQL with a
small ``max_connections``, a real threaded WSGI server (waitress) serving a
view that touches the branch named in the URL, and client threads driving
requests over many branches. Needs the ``demo`` extra.
"""

from __future__ import annotations
