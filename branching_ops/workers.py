"""RQ workers that apply connection hygiene around every job.

django-rq's ``rqworker`` closes Django's connections once, before the work
loop; nothing closes them between jobs, and nothing ever closes branch
connections. These workers treat each job like a request:

- before the job: close what is obsolete (``CONN_MAX_AGE``, errors);
- after the job, whatever its outcome: the same, and close any connection
  the job left inside a transaction;
- in a forked job process, before rq ends it with ``os._exit()`` (which
  skips every goodbye): close everything, so PostgreSQL sees a clean exit
  instead of ``unexpected EOF on client connection``;
- in the forking parent, before each fork: close everything, so no socket is
  ever shared between two processes;
- when a worker stops: close everything.

The hooks live in ``perform_job``, which runs in the process that runs the
job (the worker itself for ``SimpleWorker``, the job process for ``Worker``
and ``SpawnWorker``) and which calls the job's ``on_success``/``on_failure``
callbacks, so they still see working connections.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import django
from django.db import connections
from django.db.backends.base.base import BaseDatabaseWrapper
from psycopg.pq import TransactionStatus
from rq.job import Job
from rq.queue import Queue
from rq.worker import SimpleWorker
from rq.worker import SpawnWorker
from rq.worker import Worker

from branching_ops.tracking import close_branch_connections
from branching_ops.tracking import close_old_branch_connections
from branching_ops.tracking import stored_wrapper
from branching_ops.tracking import tracked_aliases

logger = logging.getLogger("branching_ops")


def _close_django_connections(close: Callable[[BaseDatabaseWrapper], None]) -> None:
    """Apply ``close`` to Django's own initialized connections; never raise."""
    for wrapper in connections.all(initialized_only=True):
        try:
            close(wrapper)
        except Exception:
            logger.warning("Closing connection %s failed.", wrapper.alias, exc_info=True)


def _left_in_transaction(wrapper: BaseDatabaseWrapper) -> bool:
    """True if the server still has a transaction open on this connection.

    Django only knows about transactions it started; a job that ran a raw
    ``BEGIN`` leaves the backend "idle in transaction", holding locks.
    """
    return (
        wrapper.connection is not None
        and not wrapper.in_atomic_block
        and wrapper.connection.info.transaction_status != TransactionStatus.IDLE
    )


def close_old_job_connections() -> None:
    """What a request boundary does, for Django's aliases and for branches."""
    _close_django_connections(BaseDatabaseWrapper.close_if_unusable_or_obsolete)
    close_old_branch_connections()


def close_job_leftovers() -> None:
    """After a job: close connections left in a transaction, then the obsolete ones."""
    _close_django_connections(
        lambda wrapper: wrapper.close() if _left_in_transaction(wrapper) else None
    )
    close_branch_connections(
        [
            alias
            for alias in tracked_aliases()
            if (wrapper := stored_wrapper(alias)) is not None and _left_in_transaction(wrapper)
        ]
    )
    close_old_job_connections()


def close_all_connections() -> None:
    """Close every connection of this thread, Django's and branches'."""
    _close_django_connections(BaseDatabaseWrapper.close)
    close_branch_connections()


class BranchJobMixin:
    """The hooks shared by the worker classes below; mix in before an rq worker."""

    is_horse: bool

    def perform_job(self, job: Job, queue: Queue, *args: Any, **kwargs: Any) -> bool:
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
        super().teardown()  # type: ignore[misc]
        close_all_connections()


class BranchSimpleWorker(BranchJobMixin, SimpleWorker):
    """``rq.SimpleWorker`` (jobs run in the worker process) with connection hygiene."""


class BranchWorker(BranchJobMixin, Worker):
    """``rq.Worker`` (one forked process per job) with connection hygiene."""

    def fork_work_horse(self, job: Job, queue: Queue) -> None:
        close_all_connections()
        super().fork_work_horse(job, queue)


class BranchSpawnWorker(BranchWorker, SpawnWorker):
    """``rq.SpawnWorker`` (a fresh interpreter per job) with connection hygiene.

    The job process is a new interpreter that imports this class but not
    ``manage.py``: it sets Django up before running the job.
    """

    def main_work_horse(self, job: Job, queue: Queue) -> None:
        django.setup()
        super().main_work_horse(job, queue)
