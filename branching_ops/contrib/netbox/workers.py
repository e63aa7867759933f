"""RQ workers for NetBox: this package's job hygiene composed with ``NetBoxRQWorker``.

Named with ``--worker-class``: NetBox warns about any ``RQ["WORKER_CLASS"]`` but its own.
"""

from __future__ import annotations

from utilities.rqworker import NetBoxRQWorker

from branching_ops.workers import BranchSimpleWorker
from branching_ops.workers import BranchWorker

__all__ = [
    "NetBoxBranchSimpleWorker",
    "NetBoxBranchWorker",
]


class NetBoxBranchWorker(BranchWorker, NetBoxRQWorker):  # type: ignore[misc]
    """NetBox's worker (one forked process per job) with connection hygiene."""


class NetBoxBranchSimpleWorker(BranchSimpleWorker, NetBoxRQWorker):  # type: ignore[misc]
    """NetBox's worker running jobs in its own process, with connection hygiene."""
