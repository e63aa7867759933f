"""Jobs the worker tests enqueue; each touches one branch."""

from __future__ import annotations

import os
import time
from typing import Any

from django.db import connections
from django.db import transaction
from psycopg import sql
from redis import Redis
from rq import get_current_job
from rq.job import Job

from branching_ops.routers import activate_branch
from branching_ops.tracking import tracked_aliases
from branching_ops.workers import BranchSpawnWorker
from tests.testapp.models import Note


def touch_branch(name: str) -> int:
    """One query on the branch; the backend pid tells connections apart."""
    with connections[f"schema_{name}"].cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        (pid,) = cursor.fetchone()
    return int(pid)


def fail_on_branch(name: str) -> None:
    touch_branch(name)
    raise ValueError(f"job on {name} failed on purpose")


def query_in_transaction(name: str, seconds: float) -> None:
    """A query inside a transaction that outlives the job's ``job_timeout``.

    The timeout interrupts it while psycopg waits for the result: the
    connection is left busy, inside the transaction, the query running.
    """
    with transaction.atomic(using=f"schema_{name}"):
        touch_branch(name)
        with connections[f"schema_{name}"].cursor() as cursor:
            cursor.execute("SELECT pg_sleep(%s)", [seconds])


def default_query_in_transaction(seconds: float) -> None:
    """The same on Django's own ``default`` connection."""
    with transaction.atomic(), connections["default"].cursor() as cursor:
        cursor.execute("SELECT pg_sleep(%s)", [seconds])


def leave_transaction_open(name: str) -> int:
    """A raw BEGIN Django knows nothing about: the backend stays idle in transaction."""
    with connections[f"schema_{name}"].cursor() as cursor:
        cursor.execute("BEGIN")
        cursor.execute("SELECT pg_backend_pid()")
        (pid,) = cursor.fetchone()
    return int(pid)


def query_reporting_pid(name: str, seconds: float) -> None:
    """Publish this process's pid in Redis, then run a long query on the branch."""
    job = get_current_job()
    assert job is not None
    job.connection.set(f"pid:{job.id}", os.getpid())
    with connections[f"schema_{name}"].cursor() as cursor:
        cursor.execute("SELECT pg_sleep(%s)", [seconds])


def drop_schema(name: str) -> None:
    """Drop a branch's schema behind the package's back (not with ``branch_drop``)."""
    with connections["default"].cursor() as cursor:
        cursor.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(name)))


def use_other_database() -> None:
    """A job on the sqlite alias: a connection with no PostgreSQL server status."""
    with connections["other"].cursor() as cursor:
        cursor.execute("BEGIN")
        cursor.execute("SELECT 1")


def slow_query_after_other_database(name: str, seconds: float) -> None:
    """Open the sqlite alias, then a branch query that outlives ``job_timeout``."""
    with connections["other"].cursor() as cursor:
        cursor.execute("SELECT 1")
    with connections[f"schema_{name}"].cursor() as cursor:
        cursor.execute("SELECT pg_sleep(%s)", [seconds])


def wait(seconds: float) -> None:
    time.sleep(seconds)


def count_notes(name: str) -> int:
    """The ORM on a branch: needs Django's app registry in the job process."""
    with activate_branch(name):
        return Note.objects.count()


def on_success_query(
    job: Job, connection: Redis[bytes], result: Any, *args: Any, **kwargs: Any
) -> None:
    """Query the job's branch from its success callback; record the backend pid."""
    connection.set(f"callback:{job.id}", touch_branch(job.args[0]))


def on_failure_query(job: Job, connection: Redis[bytes], *exc_info: Any, **kwargs: Any) -> None:
    """Query the job's branch from its failure callback; record the backend pid."""
    connection.set(f"callback:{job.id}", touch_branch(job.args[0]))


def open_branches() -> list[str]:
    """The branch aliases with an open connection in this thread (in-process workers)."""
    return [alias for alias in tracked_aliases() if connections[alias].connection is not None]


class SpawnWorkerSubclass(BranchSpawnWorker):
    """A project's own spawn worker built on ours (for the E032 check)."""
