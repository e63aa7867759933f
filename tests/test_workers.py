"""The per-job hooks, in-process (SimpleWorker classes on fakeredis), and the fork rule."""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Iterator

import pytest
from django.db import connections
from django.db import transaction
from fakeredis import FakeRedis
from rq import Queue
from rq import SimpleWorker
from rq import Worker
from rq.job import Job
from rq.job import JobStatus

from branching_ops.tracking import close_branch_connections
from branching_ops.tracking import tracked_aliases
from branching_ops.workers import BranchSimpleWorker
from branching_ops.workers import BranchWorker
from branching_ops.workers import close_all_connections
from tests.backends import BranchBackends
from tests.conftest import Branches
from tests.project.jobs import touch_branch
from tests.rqworkers import JOBS
from tests.rqworkers import result
from tests.testapp.models import Note


@pytest.fixture
def fake_queue() -> Iterator[Queue]:
    connection = FakeRedis()
    yield Queue("default", connection=connection)
    connection.close()


@pytest.fixture
def conn_max_age(monkeypatch: pytest.MonkeyPatch) -> Callable[[int], None]:
    """Set CONN_MAX_AGE of ``default``, and so of branches created from now on."""

    def set_age(seconds: int) -> None:
        monkeypatch.setitem(connections["default"].settings_dict, "CONN_MAX_AGE", seconds)
        connections["default"].close()

    return set_age


def work(queue: Queue, worker_class: type[SimpleWorker] = BranchSimpleWorker) -> None:
    worker_class([queue], connection=queue.connection).work(burst=True)


def finished(job: Job) -> object:
    assert job.get_status() == JobStatus.FINISHED, job.latest_result()
    return job.return_value()


@pytest.mark.parametrize(
    ("worker_class", "left_open"),
    [(BranchSimpleWorker, []), (SimpleWorker, ["schema_a", "schema_b"])],
)
def test_branch_connections_closed_after_each_job(
    worker_class: type[SimpleWorker],
    left_open: list[str],
    fake_queue: Queue,
    branch_backends: BranchBackends,
    branches: Branches,
) -> None:
    branches("a", "b")
    fake_queue.enqueue(f"{JOBS}.touch_branch", "a")
    fake_queue.enqueue(f"{JOBS}.fail_on_branch", "b")
    probe = fake_queue.enqueue(f"{JOBS}.open_branches")

    work(fake_queue, worker_class)

    assert finished(probe) == left_open


def test_conn_max_age_reuses_young_and_closes_expired(
    fake_queue: Queue,
    branch_backends: BranchBackends,
    conn_max_age: Callable[[int], None],
    branches: Branches,
) -> None:
    branches("aging")
    conn_max_age(1)
    first = fake_queue.enqueue(f"{JOBS}.touch_branch", "aging")
    young = fake_queue.enqueue(f"{JOBS}.touch_branch", "aging")
    kept = fake_queue.enqueue(f"{JOBS}.open_branches")
    fake_queue.enqueue(f"{JOBS}.wait", 1.1)
    expired = fake_queue.enqueue(f"{JOBS}.touch_branch", "aging")

    work(fake_queue)

    assert finished(first) == finished(young)
    assert finished(kept) == ["schema_aging"]
    assert finished(expired) != finished(first)
    # The worker stopped: everything is closed, whatever its age.
    assert tracked_aliases() == []
    branch_backends.wait_for([])


def test_connection_left_in_transaction_is_closed(
    fake_queue: Queue,
    branch_backends: BranchBackends,
    conn_max_age: Callable[[int], None],
    branches: Branches,
) -> None:
    branches("txn")
    conn_max_age(600)
    left_open = fake_queue.enqueue(f"{JOBS}.leave_transaction_open", "txn")
    fresh = fake_queue.enqueue(f"{JOBS}.touch_branch", "txn")
    reused = fake_queue.enqueue(f"{JOBS}.touch_branch", "txn")

    work(fake_queue)

    assert finished(left_open) != finished(fresh)
    assert finished(fresh) == finished(reused)
    branch_backends.wait_for([])


def test_job_timeout_cancels_the_running_query(
    fake_queue: Queue, branch_backends: BranchBackends, branches: Branches
) -> None:
    branches("slow")
    timed_out = [
        fake_queue.enqueue(f"{JOBS}.query_in_transaction", "slow", 600, job_timeout=1),
        fake_queue.enqueue(f"{JOBS}.default_query_in_transaction", 600, job_timeout=1),
    ]
    after = fake_queue.enqueue(f"{JOBS}.touch_branch", "slow")

    work(fake_queue)

    for job in timed_out:
        assert job.get_status() == JobStatus.FAILED
        assert "JobTimeoutException" in str(result(job).exc_string)
    finished(after)
    branch_backends.wait_for([])  # not in ten minutes, when pg_sleep(600) ends
    running = branch_backends.monitor.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep%%' "
        "AND state = 'active' AND pid <> pg_backend_pid()"
    ).fetchone()
    assert running == (0,)


def test_plain_timeout_leaves_the_query_running(
    fake_queue: Queue, branch_backends: BranchBackends, branches: Branches
) -> None:
    """Proof the test above can fail: rq's own alarm leaves the server working."""
    branches("runaway")
    fake_queue.enqueue(f"{JOBS}.query_in_transaction", "runaway", 600, job_timeout=1)

    work(fake_queue, SimpleWorker)

    running = (
        "SELECT pid FROM pg_stat_activity WHERE application_name = 'branch:runaway' "
        "AND state = 'active'"
    )
    pids = branch_backends.monitor.execute(running).fetchall()
    for (pid,) in pids:
        branch_backends.monitor.execute("SELECT pg_cancel_backend(%s)", [pid])
    assert len(pids) == 1


@pytest.mark.parametrize(
    ("worker_class", "inherited"), [(BranchWorker, []), (Worker, ["schema_parent"])]
)
def test_no_connection_crosses_a_fork(
    worker_class: type[Worker],
    inherited: list[str],
    queue: Queue,
    branch_backends: BranchBackends,
    branches: Branches,
) -> None:
    """The job process must not inherit the worker's sockets (real Redis: it forks)."""
    branches("parent")
    touch_branch("parent")
    probe = queue.enqueue(f"{JOBS}.open_branches")

    worker_class([queue], connection=queue.connection).work(burst=True)

    assert finished(probe) == inherited


@pytest.mark.django_db
@pytest.mark.parametrize("worker_class", [BranchSimpleWorker, BranchWorker])
def test_worker_inside_a_test_transaction(
    worker_class: type[Worker], queue: Queue, branches: Branches
) -> None:
    """Tests run workers inside their own transaction: it must survive the worker."""
    branches("in_test")
    Note.objects.create(text="before")
    job = queue.enqueue(f"{JOBS}.touch_branch", "in_test")

    worker_class([queue], connection=queue.connection).work(burst=True)

    finished(job)
    assert connections["default"].in_atomic_block
    assert list(Note.objects.values_list("text", flat=True)) == ["before"]


@pytest.mark.usefixtures("transactional_db")
def test_django_connections_closed_by_workers_never_inside_atomic() -> None:
    """A job has no request boundary to close Django's own connections."""
    default = connections["default"]
    default.ensure_connection()

    close_branch_connections()
    assert default.connection is not None  # branches only
    with transaction.atomic():
        close_all_connections()
        assert default.connection is not None  # code around is still using it
    close_all_connections()
    assert default.connection is None
