"""Jobs the worker tests enqueue; each touches one branch."""

from __future__ import annotations

import time

from django.db import connections
from django.db import transaction

from branching_ops.routers import activate_branch
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


def sleep_in_transaction(name: str, seconds: float) -> None:
    """Hold a transaction on the branch open longer than the job may run."""
    with transaction.atomic(using=f"schema_{name}"):
        touch_branch(name)
        time.sleep(seconds)


def leave_transaction_open(name: str) -> None:
    """A raw BEGIN Django knows nothing about: the backend stays idle in transaction."""
    with connections[f"schema_{name}"].cursor() as cursor:
        cursor.execute("BEGIN")
        cursor.execute("SELECT 1")


def idle_in_transaction_backends() -> int:
    """How many backends of this database sit idle in a transaction right now."""
    with connections["default"].cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() "
            "AND state IN ('idle in transaction', 'idle in transaction (aborted)')"
        )
        (count,) = cursor.fetchone()
    return int(count)


def wait(seconds: float) -> None:
    time.sleep(seconds)


def count_notes(name: str) -> int:
    """The ORM on a branch: needs Django's app registry in the job process."""
    with activate_branch(name):
        return Note.objects.count()
