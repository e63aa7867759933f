"""Run one task on many branches: local worker processes or RQ jobs, one report.

The public entry of the fan-out that ``branch_run`` and ``branch_migrate``
share (see docs/fanout.md): select the branches
(:func:`~branching_ops.fanout.selection.select_branches`), then
:func:`run_branches` with a :class:`~branching_ops.fanout.task.BranchTask`.
"""

from __future__ import annotations

import importlib
import tempfile
from collections.abc import Callable
from collections.abc import Sequence
from pathlib import Path

from django.core.management.base import CommandError
from django.db import connections

from branching_ops.fanout.progress import no_progress
from branching_ops.fanout.report import BranchResult
from branching_ops.fanout.report import Report
from branching_ops.fanout.selection import Branch
from branching_ops.fanout.selection import select_branches
from branching_ops.fanout.task import BranchTask
from branching_ops.fanout.task import CommandTask
from branching_ops.fanout.task import run_branch

__all__ = [
    "Branch",
    "BranchResult",
    "BranchTask",
    "CommandTask",
    "Report",
    "run_branch",
    "run_branches",
    "select_branches",
]


def run_branches(
    branches: Sequence[Branch],
    task: BranchTask,
    *,
    parallel: int,
    via_rq: str | None = None,
    batch_size: int = 1,
    wait: bool = True,
    fail_fast: bool = False,
    log_dir: Path | None = None,
    progress: Callable[[BranchResult], None] = no_progress,
) -> Report:
    """Run ``task`` once per branch and report every branch's result.

    Locally with ``parallel`` worker processes, or as RQ jobs on queue
    ``via_rq``, ``batch_size`` branches per job (``wait=False``: only
    enqueued, results ``queued``). Logs go to ``log_dir``, a new temporary
    directory when ``None``. ``CommandError`` for what cannot start, before
    anything runs.
    """
    check_parallel(parallel)
    check_batch_size(batch_size, via_rq)
    for connection in connections.all(initialized_only=True):
        if connection.in_atomic_block:
            raise CommandError(
                f"Cannot run branches inside a transaction (atomic block) on "
                f"{connection.alias!r}: the workers would not see its changes. Nothing was run."
            )
    if via_rq is not None:
        try:
            rq_executor = importlib.import_module("branching_ops.fanout.via_rq")
        except ImportError as exc:
            raise CommandError(
                f"--via-rq needs django-rq ({exc}): pip install 'django-branching-ops[rq]'. "
                "Nothing was run."
            ) from None

        queue = rq_executor.get_queue(via_rq)
        if not wait:
            queued: Report = rq_executor.enqueue(queue, branches, task, batch_size)
            return queued
        log_dir = _log_dir(log_dir)
        report: Report = rq_executor.run_rq(
            queue,
            branches,
            task,
            batch_size=batch_size,
            fail_fast=fail_fast,
            log_dir=log_dir,
            progress=progress,
        )
        return report
    from branching_ops.fanout.local import run_local

    return run_local(
        branches,
        task,
        parallel=parallel,
        fail_fast=fail_fast,
        log_dir=_log_dir(log_dir),
        progress=progress,
    )


def check_parallel(parallel: int) -> None:
    if parallel < 1:
        raise CommandError(f"--parallel must be at least 1, not {parallel}.")


def check_batch_size(batch_size: int, via_rq: str | None) -> None:
    if batch_size < 1:
        raise CommandError(f"--batch-size must be at least 1, not {batch_size}.")
    if batch_size > 1 and via_rq is None:
        raise CommandError("--batch-size goes with --via-rq.")


def _log_dir(log_dir: Path | None) -> Path:
    if log_dir is None:
        return Path(tempfile.mkdtemp(prefix="branch_run-"))
    try:
        log_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CommandError(f"--log-dir: cannot create {str(log_dir)!r}: {exc.strerror}.") from None
    return log_dir
