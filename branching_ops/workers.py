"""RQ worker classes that treat each job like a request: connections closed around it.

What runs when, and why, is on the docs' RQ workers page.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from types import FrameType
from typing import Any

import django
from django.core.management import CommandError
from django.db import connections
from django.db.backends.base.base import BaseDatabaseWrapper
from psycopg.pq import TransactionStatus
from rq.job import Job
from rq.queue import Queue
from rq.timeouts import BaseDeathPenalty
from rq.timeouts import UnixSignalDeathPenalty
from rq.worker import SimpleWorker
from rq.worker import SpawnWorker
from rq.worker import Worker

from branching_ops import tracking
from branching_ops.signals import job_process_exited

__all__ = [
    "SPAWN_SUPPORTED",
    "BranchDeathPenalty",
    "BranchSimpleWorker",
    "BranchSpawnWorker",
    "BranchWorker",
]

logger = logging.getLogger("branching_ops")


def _server_status(wrapper: BaseDatabaseWrapper) -> int | None:
    """The :class:`~psycopg.pq.TransactionStatus` of an open PostgreSQL connection, else None."""
    if wrapper.vendor != "postgresql" or wrapper.connection is None:
        return None
    # pgconn's int, not connection.info's enum: read after every job.
    status: int = wrapper.connection.pgconn.transaction_status
    return status


def _cancel_running_query(wrapper: BaseDatabaseWrapper) -> None:
    if _server_status(wrapper) == TransactionStatus.ACTIVE:
        logger.info("Cancelling the query running on connection %s.", wrapper.alias)
        wrapper.connection.cancel()


class BranchDeathPenalty(UnixSignalDeathPenalty):
    """rq's ``job_timeout`` alarm, which first cancels this thread's running queries.

    Otherwise the server runs a timed-out job's query (and holds its locks) on.
    """

    def handle_death_penalty(self, signum: int, frame: FrameType | None) -> None:
        for wrapper in [*connections.all(initialized_only=True), *tracking.branch_wrappers()]:
            tracking.attempt(_cancel_running_query, wrapper, "Cancelling the query on connection")
        super().handle_death_penalty(signum, frame)  # type: ignore[no-untyped-call]


def _close_if_left_in_transaction_or_obsolete(wrapper: BaseDatabaseWrapper) -> None:
    """After a job: close a connection left inside a transaction, else as a request would.

    Django knows only the transactions it started; a raw ``BEGIN`` holds locks.
    """
    if _server_status(wrapper) not in (None, TransactionStatus.IDLE):
        wrapper.close()
    else:
        tracking.close_if_unusable_or_obsolete(wrapper)


def _idle_and_kept_open(wrapper: BaseDatabaseWrapper | None) -> bool:
    """What nearly every connection is after a job: outside a transaction, and kept."""
    return (
        wrapper is not None
        and tracking.kept_open(wrapper)
        and _server_status(wrapper) == TransactionStatus.IDLE
    )


def _close_django_connections(close: Callable[[BaseDatabaseWrapper], object]) -> None:
    """Apply ``close`` to Django's own open connections outside ``atomic()``.

    A job has no request boundary to close them; one inside ``atomic()``
    belongs to code running around the worker (a test's transaction).
    """
    for wrapper in connections.all(initialized_only=True):
        if not wrapper.in_atomic_block:
            tracking.attempt(close, wrapper)


def close_old_job_connections() -> None:
    """Before a job: what a request boundary does, for Django's aliases and for branches."""
    _close_django_connections(tracking.close_if_unusable_or_obsolete)
    tracking.close_old_branch_connections()


def close_job_leftovers() -> None:
    """After a job, in one pass: what it left inside a transaction, and the obsolete."""
    _close_django_connections(_close_if_left_in_transaction_or_obsolete)
    if not tracking.all_kept(_idle_and_kept_open):
        tracking.close_connections(
            _close_if_left_in_transaction_or_obsolete, "obsolete", spare_atomic=logging.INFO
        )


def close_all_connections() -> None:
    """Close every connection of this thread, Django's (outside ``atomic()``) and branches'."""
    _close_django_connections(BaseDatabaseWrapper.close)
    tracking.close_branch_connections()


class BranchJobMixin:
    """The hooks shared by the worker classes below; mix in before an rq worker."""

    is_horse: bool
    death_penalty_class: type[BaseDeathPenalty] = BranchDeathPenalty

    def perform_job(self, job: Job, queue: Queue, *args: Any, **kwargs: Any) -> bool:
        # ``*args``: rq 3 passes ``execution``; pass through whatever rq passes.
        close_old_job_connections()
        try:
            performed: bool = super().perform_job(job, queue, *args, **kwargs)  # type: ignore[misc]
        finally:
            if self.is_horse:
                close_all_connections()  # rq ends this process with os._exit()
            else:
                close_job_leftovers()
        return performed

    def teardown(self) -> None:
        try:
            super().teardown()  # type: ignore[misc]
        finally:
            close_all_connections()


class BranchSimpleWorker(BranchJobMixin, SimpleWorker):
    """``rq.SimpleWorker`` (jobs run in the worker process) with connection hygiene."""


class BranchWorker(BranchJobMixin, Worker):
    """``rq.Worker`` (one forked process per job) with connection hygiene."""

    def fork_work_horse(self, job: Job, queue: Queue) -> None:
        close_all_connections()
        super().fork_work_horse(job, queue)

    def wait_for_horse(self) -> tuple[int | None, int | None, Any]:
        pid, status, rusage = super().wait_for_horse()
        if pid:  # also after a kill: say so, state kept per process goes with it
            job_process_exited.send_robust(sender=type(self), pid=pid)
        return pid, status, rusage


SPAWN_SUPPORTED = hasattr(SpawnWorker, "_dump_worker_config")
"""Whether rq's ``SpawnWorker`` runs the worker's own class in the job process (rq 3).

Detected from the method rq 3 added for that, not from a version number.
"""

SPAWN_UNSUPPORTED = (
    "BranchSpawnWorker needs rq >= 3: rq 2's SpawnWorker runs jobs in a plain rq.Worker, "
    "without Django and without this package's connection hygiene. "
    "Use branching_ops.workers.BranchWorker (forking) or BranchSimpleWorker instead."
)


class BranchSpawnWorker(BranchWorker, SpawnWorker):
    """``rq.SpawnWorker`` (a fresh interpreter per job) with connection hygiene.

    The job process never runs ``manage.py``, so Django is set up here. On rq 2
    it refuses to start, with a ``CommandError``: ``rqworker`` exits 1 saying why.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if not SPAWN_SUPPORTED:
            raise CommandError(SPAWN_UNSUPPORTED)
        super().__init__(*args, **kwargs)

    def main_work_horse(self, job: Job, queue: Queue) -> None:
        django.setup()
        super().main_work_horse(job, queue)
