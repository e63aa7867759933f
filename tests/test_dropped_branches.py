"""A dropped branch leaves no connection searching ``public``.

``branch_drop`` ends every connection to the branch, against the suite's
real PostgreSQL: connections held by this thread, by another thread of this
process, and one that connects while the drop runs. A schema dropped behind
the package's back is caught by the health check before the next job (for
requests: tests/test_faults.py).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from collections.abc import Iterator
from io import StringIO
from typing import Any

import psycopg
import pytest
from django.core.management import call_command
from django.db import OperationalError
from django.db import connections
from fakeredis import FakeRedis
from rq import Queue
from rq.job import JobStatus

from branching_ops import activity
from branching_ops.routers import activate_branch
from branching_ops.search_path import BranchDoesNotExist
from branching_ops.testing.postgres import PostgresServer
from branching_ops.tracking import close_branch_connections
from branching_ops.tracking import stored_wrapper
from branching_ops.workers import BranchSimpleWorker
from tests.backends import BranchBackends
from tests.conftest import APP_ROLE
from tests.conftest import Branches
from tests.operations import public_tables
from tests.rqworkers import JOBS
from tests.rqworkers import result
from tests.testapp.models import Note

WAIT = 20  # seconds; a thread that waits this long has hung


@pytest.fixture
def doomed(branch_backends: BranchBackends) -> Iterator[str]:
    """Branch ``doomed``, a copy of ``public`` made with ``branch_create``."""
    call_command("branch_create", "doomed", from_schema="public", stdout=StringIO())
    yield "doomed"
    close_branch_connections()
    with connections["default"].cursor() as cursor:
        cursor.execute("DROP SCHEMA IF EXISTS doomed CASCADE")


def drop(name: str) -> str:
    out = StringIO()
    call_command("branch_drop", name, interactive=False, stdout=out)
    return out.getvalue()


def test_drop_closes_the_callers_own_connection_to_the_branch(
    doomed: str, branch_backends: BranchBackends
) -> None:
    with activate_branch(doomed):
        Note.objects.create(text="in the branch")
    branch_backends.wait_for(["branch:doomed"])

    tables = public_tables()
    assert (
        drop(doomed) == f"Dropped branch 'doomed' ({tables} table(s)); terminated 0 backend(s).\n"
    )

    wrapper = stored_wrapper("schema_doomed")
    assert wrapper is None or wrapper.connection is None
    branch_backends.wait_for([])
    with pytest.raises(BranchDoesNotExist), activate_branch(doomed):
        Note.objects.create(text="meant for the branch")
    assert not Note.objects.exists()


def test_drop_ends_the_connection_another_thread_keeps(
    doomed: str, branch_backends: BranchBackends
) -> None:
    """A persistent connection of a server thread: its next write fails, not lands in public."""
    opened, dropped = threading.Event(), threading.Event()
    outcome: list[BaseException | None] = []

    def server_thread() -> None:
        try:
            with activate_branch(doomed):
                Note.objects.create(text="in the branch")
                opened.set()
                assert dropped.wait(WAIT)
                try:
                    Note.objects.create(text="meant for the branch")
                except OperationalError as exc:
                    outcome.append(exc)
                else:
                    outcome.append(None)
        finally:
            close_branch_connections()

    thread = threading.Thread(target=server_thread)
    thread.start()
    assert opened.wait(WAIT)
    output = drop(doomed)
    dropped.set()
    thread.join(WAIT)

    tables = public_tables()
    assert output == f"Dropped branch 'doomed' ({tables} table(s)); terminated 1 backend(s).\n"
    (error,) = outcome
    assert error is not None
    assert "terminating connection due to administrator command" in str(error)
    assert not Note.objects.exists()
    branch_backends.wait_for([])


def test_drop_ends_a_connection_made_while_it_ran(
    doomed: str,
    branch_backends: BranchBackends,
    postgres: PostgresServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A backend that connects after the terminate, before the drop commits, found the
    schema: it is terminated once the drop has committed."""
    dbname = str(connections["default"].settings_dict["NAME"])
    late: list[psycopg.Connection[Any]] = []
    terminate = activity.terminate

    def terminate_then_connect(*args: Any) -> list[int]:
        ended = terminate(*args)
        if not late:  # the first pass, inside the drop's transaction
            late.append(
                psycopg.connect(
                    postgres.conninfo(dbname, user=APP_ROLE),
                    application_name="branch:doomed",
                    options="-c search_path=doomed,public",
                    autocommit=True,
                )
            )
            searched = late[0].execute("SELECT current_schemas(false)").fetchone()
            assert searched == (["doomed", "public"],)
        return ended

    monkeypatch.setattr(activity, "terminate", terminate_then_connect)
    try:
        output = drop(doomed)

        tables = public_tables()
        assert output == f"Dropped branch 'doomed' ({tables} table(s)); terminated 1 backend(s).\n"
        with pytest.raises(psycopg.OperationalError):
            late[0].execute("INSERT INTO testapp_note (text) VALUES ('meant for the branch')")
    finally:
        late[0].close()
    assert not Note.objects.exists()
    branch_backends.wait_for([])


def test_job_after_its_branch_was_dropped_fails_cleanly_with_health_checks(
    branches: Branches,
    branch_backends: BranchBackends,
    conn_max_age: Callable[[int], None],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    branches("gone")
    conn_max_age(600)
    monkeypatch.setitem(connections["default"].settings_dict, "CONN_HEALTH_CHECKS", True)
    queue = Queue("default", connection=FakeRedis())
    before = queue.enqueue(f"{JOBS}.count_notes", "gone")
    queue.enqueue(f"{JOBS}.drop_schema", "gone")
    after = queue.enqueue(f"{JOBS}.count_notes", "gone")

    BranchSimpleWorker([queue], connection=queue.connection).work(burst=True)

    assert before.get_status() == JobStatus.FINISHED
    assert after.get_status() == JobStatus.FAILED
    assert "BranchDoesNotExist: Branch 'gone' does not exist" in str(result(after).exc_string)
    branch_backends.wait_for([])
