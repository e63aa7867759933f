"""RQ workers that apply connection hygiene around every job.

django-rq's ``rqworker`` closes Django's connections once, before the work
loop; nothing closes them between jobs, and nothing ever closes branch
connections. These workers treat each job like a request:

- before the job: close what is obsolete (``CONN_MAX_AGE``, errors);
- when a job times out: cancel the queries it is running before rq raises
  ``JobTimeoutException``, so the server stops working for a job that is gone;
- after the job, whatever its outcome: close any connection left inside a
  transaction, then close what is obsolete;
- in a forked job process, before rq ends it with ``os._exit()`` (which
  skips every goodbye): close everything, so PostgreSQL sees a clean exit
  instead of ``unexpected EOF on client connection``;
- in the forking parent, before each fork: close everything, so no socket is
  ever shared between two processes;
- when a worker stops: close everything.

The hooks wrap ``perform_job``, which runs in the process that
runs the job (the worker itself for ``SimpleWorker``, the job process for
``Worker`` and ``SpawnWorker``) and which calls the job's ``on_success``/``on_failure``
callbacks, so those still see the job's connections.

rq 2.6 to 3.x are supported. What differs between them is detected, not
read from a version number: ``perform_job`` takes an ``execution`` argument
from rq 3 on (passed through as ``*args``), and only rq 3's ``SpawnWorker``
runs the worker's own class in the job process (see :data:`SPAWN_SUPPORTED`).

Django's other aliases may use any backend (a sqlite or MySQL database beside
the PostgreSQL ones): the server-side checks below only apply to PostgreSQL
connections, and no hook lets an exception stop the worker.
"""

from __future__ import annotations

import logging
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

logger = logging.getLogger("branching_ops")


def _server_status(wrapper: BaseDatabaseWrapper) -> int | None:
    """The server's transaction status of an open PostgreSQL connection, else None.

    A :class:`~psycopg.pq.TransactionStatus` value. Only PostgreSQL reports
    it; a connection of another backend has no server-side status to read and
    nothing to cancel. Django's PostgreSQL backend runs on psycopg 3 whenever
    it is installed, and this package requires it. Read after every job on
    every connection.
    """
    if wrapper.vendor != "postgresql" or wrapper.connection is None:
        return None
    # libpq's answer as psycopg's C object gives it: ``connection.info`` would
    # build a ConnectionInfo and convert the answer to an enum, at every read.
    status: int = wrapper.connection.pgconn.transaction_status
    return status


def _cancel_running_query(wrapper: BaseDatabaseWrapper) -> None:
    if _server_status(wrapper) == TransactionStatus.ACTIVE:
        logger.info("Cancelling the query running on connection %s.", wrapper.alias)
        wrapper.connection.cancel()


class BranchDeathPenalty(UnixSignalDeathPenalty):
    """rq's ``job_timeout`` alarm, which first cancels this thread's running queries.

    rq raises ``JobTimeoutException`` from a ``SIGALRM`` handler, most often
    while psycopg waits for a query's result. Nothing stops the query on the
    server then: ``atomic()`` cannot roll back a busy connection, so Django
    closes it, and the backend keeps its slot (and its locks) until the query
    ends by itself, which for a runaway query is never.
    """

    def handle_death_penalty(self, signum: int, frame: FrameType | None) -> None:
        for wrapper in [*connections.all(initialized_only=True), *tracking.branch_wrappers()]:
            tracking.attempt(_cancel_running_query, wrapper, "Cancelling the query on connection")
        super().handle_death_penalty(signum, frame)  # type: ignore[no-untyped-call]


def _close_if_left_in_transaction_or_obsolete(wrapper: BaseDatabaseWrapper) -> None:
    """After a job: close a connection the job left inside a transaction, else as a request would.

    Django only knows about transactions it started; a job that ran a raw
    ``BEGIN`` (or was interrupted mid-query outside ``atomic()``) leaves the
    backend "idle in transaction", holding locks. (A connection inside an
    ``atomic()`` block belongs to code still running around the worker, and
    never gets here.)
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


def close_old_job_connections() -> None:
    """Before a job: what a request boundary does, for Django's aliases and for branches."""
    tracking.close_connections(
        tracking.close_if_unusable_or_obsolete,
        "obsolete",
        spare_atomic=True,
        django_connections=True,
        kept=tracking.kept_open,
    )


def close_job_leftovers() -> None:
    """After a job, in one pass: what it left inside a transaction, and the obsolete."""
    tracking.close_connections(
        _close_if_left_in_transaction_or_obsolete,
        "obsolete",
        spare_atomic=True,
        django_connections=True,
        kept=_idle_and_kept_open,
    )


def close_all_connections() -> None:
    """Close every connection of this thread, Django's (outside ``atomic()``) and branches'."""
    tracking.close_connections(BaseDatabaseWrapper.close, "shutdown", django_connections=True)


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
"""Whether rq's ``SpawnWorker`` runs the worker's own class in the job process.

rq 3 pickles the worker class into the spawned interpreter; rq 2 rebuilds a
plain ``rq.Worker`` there, so none of :class:`BranchSpawnWorker`'s hooks
(``django.setup()``, closing, query-cancelling timeouts) would run. Detected
from the method rq 3 added for that, not from a version number.
"""

SPAWN_UNSUPPORTED = (
    "BranchSpawnWorker needs rq >= 3: rq 2's SpawnWorker runs jobs in a plain rq.Worker, "
    "without Django and without this package's connection hygiene. "
    "Use branching_ops.workers.BranchWorker (forking) or BranchSimpleWorker instead."
)


class BranchSpawnWorker(BranchWorker, SpawnWorker):
    """``rq.SpawnWorker`` (a fresh interpreter per job) with connection hygiene.

    rq starts the job process with ``python -c``: it unpickles this class and
    calls :meth:`main_work_horse`, but never runs ``manage.py``, so Django
    is set up here (from ``DJANGO_SETTINGS_MODULE``, which ``manage.py`` and
    ``--settings`` put in the environment the job process inherits).

    On rq 2 it refuses to start (see :data:`SPAWN_SUPPORTED`). It raises
    ``CommandError`` because ``rqworker`` builds the worker inside its
    ``handle()``: Django prints the message without a traceback and exits 1.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if not SPAWN_SUPPORTED:
            raise CommandError(SPAWN_UNSUPPORTED)
        super().__init__(*args, **kwargs)

    def main_work_horse(self, job: Job, queue: Queue) -> None:
        django.setup()
        super().main_work_horse(job, queue)
