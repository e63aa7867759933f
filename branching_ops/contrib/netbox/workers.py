"""RQ workers for NetBox: this package's job hygiene composed with ``NetBoxRQWorker``.

NetBox's own worker class re-registers itself after a Redis outage and loads
the URLconf before forking; keep it, and add the hooks of
:mod:`branching_ops.workers`::

    netbox rqworker --worker-class branching_ops.contrib.netbox.workers.NetBoxBranchWorker

Set on the command line rather than in ``RQ["WORKER_CLASS"]``, where NetBox
warns about any class but its own (netbox/settings.py, 4.7.3 line 201).
"""

from __future__ import annotations

from utilities.rqworker import NetBoxRQWorker

from branching_ops.workers import BranchSimpleWorker
from branching_ops.workers import BranchWorker


class NetBoxBranchWorker(BranchWorker, NetBoxRQWorker):  # type: ignore[misc]
    """NetBox's worker (one forked process per job) with connection hygiene."""


class NetBoxBranchSimpleWorker(BranchSimpleWorker, NetBoxRQWorker):  # type: ignore[misc]
    """NetBox's worker running jobs in its own process, with connection hygiene."""
