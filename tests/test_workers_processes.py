"""RQ workers as real ``manage.py rqworker`` subprocesses, real Redis, real PostgreSQL."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from rq import Callback
from rq import Queue
from rq.job import Job
from rq.job import JobStatus

from branching_ops.testing.postgres import PostgresServer
from branching_ops.workers import SPAWN_SUPPORTED
from tests.backends import BranchBackends
from tests.conftest import Branches
from tests.rqworkers import JOBS
from tests.rqworkers import result
from tests.rqworkers import rqworker
from tests.rqworkers import run_burst

ON_SUCCESS = Callback(f"{JOBS}.on_success_query")
ON_FAILURE = Callback(f"{JOBS}.on_failure_query")
# PostgreSQL's two ways of saying no: with, or past, superuser_reserved_connections.
# One open branch connection per worker, plus backends whose client closed
# but which have not finished exiting yet (on 2 busy cores that takes a few
# jobs' time); a leak climbs to max_connections instead.
PEAK_PER_WORKER = 3
OUT_OF_SLOTS = "too many clients already|remaining connection slots are reserved"


def enqueue_mixed(queue: Queue, branches: int) -> dict[str, list[Job]]:
    """One job per branch, of every kind a worker must survive, each followed by a plain one."""
    jobs: dict[str, list[Job]] = {"touch": [], "fail": [], "open": [], "timeout": []}
    for i in range(branches):
        name = f"w{i}"
        if i % 10 == 3:
            jobs["fail"].append(
                queue.enqueue(f"{JOBS}.fail_on_branch", name, on_failure=ON_FAILURE)
            )
        elif i % 10 == 6:
            jobs["open"].append(queue.enqueue(f"{JOBS}.leave_transaction_open", name))
        elif i % 50 == 9:
            jobs["timeout"].append(
                queue.enqueue(f"{JOBS}.query_in_transaction", name, 30, job_timeout=1)
            )
        else:
            jobs["touch"].append(
                queue.enqueue(f"{JOBS}.touch_branch", name, on_success=ON_SUCCESS)
            )
    return jobs


@pytest.mark.slow
@pytest.mark.rq_processes
@pytest.mark.parametrize(
    "worker_args",
    [
        pytest.param(["--worker-class", "branching_ops.workers.BranchSimpleWorker"], id="simple"),
        pytest.param([], id="forking-from-RQ-WORKER_CLASS"),
    ],
)
def test_branch_workers_leave_nothing(
    worker_args: list[str],
    queue: Queue,
    branch_backends: BranchBackends,
    postgres: PostgresServer,
    branches: Branches,
) -> None:
    count = 100
    assert postgres.max_connections < count
    branches(*[f"w{i}" for i in range(count)])
    jobs = enqueue_mixed(queue, count)

    run = run_burst(branch_backends, *worker_args)

    print(f"\n{worker_args}: peak branch backends {run.peak}")
    assert run.returncode == 0, run.output
    assert queue.count == 0
    for job in jobs["touch"]:
        assert job.get_status() == JobStatus.FINISHED, result(job)
        # The callback ran on the job's own connection: not yet cleaned up.
        assert int(queue.connection.get(f"callback:{job.id}") or 0) == job.return_value()
    for job in jobs["fail"]:
        assert job.get_status() == JobStatus.FAILED
        assert "failed on purpose" in str(result(job).exc_string)
        assert queue.connection.get(f"callback:{job.id}") is not None
    for job in jobs["open"]:
        assert job.get_status() == JobStatus.FINISHED
    for job in jobs["timeout"]:
        assert job.get_status() == JobStatus.FAILED
        assert "JobTimeoutException" in str(result(job).exc_string)
    assert run.opened() >= 1
    assert run.peak <= PEAK_PER_WORKER, run.peak_backends
    branch_backends.wait_for([])
    assert run.unexpected_eofs() == 0, run.server_log


@pytest.mark.slow
@pytest.mark.rq_processes
@pytest.mark.parametrize("worker_class", ["rq.SimpleWorker", "rq.Worker"])
def test_plain_rq_workers_show_the_problem(
    worker_class: str,
    queue: Queue,
    branch_backends: BranchBackends,
    postgres: PostgresServer,
    branches: Branches,
) -> None:
    """Proof the test above can fail: rq's own classes leak, or exit without a goodbye."""
    # More branches than slots for the leak; a few forks suffice for the EOFs.
    count = 60 if worker_class == "rq.SimpleWorker" else 20
    branches(*[f"plain{i}" for i in range(count)])
    jobs = [queue.enqueue(f"{JOBS}.touch_branch", f"plain{i}") for i in range(count)]

    run = run_burst(branch_backends, "--worker-class", worker_class)

    failed = [job for job in jobs if job.get_status() == JobStatus.FAILED]
    print(
        f"\n{worker_class}: {len(failed)} of {count} jobs failed, peak branch backends "
        f"{run.peak}, {run.unexpected_eofs()} 'unexpected EOF' lines"
    )
    assert run.returncode == 0, run.output
    if worker_class == "rq.SimpleWorker":
        # Every branch stays open until the worker exits: the server runs out of slots.
        assert run.peak >= postgres.max_connections - 10
        assert failed
        errors = {str(result(job).exc_string).strip().splitlines()[-1] for job in failed}
        assert all(re.search(OUT_OF_SLOTS, error) for error in errors), errors
        assert run.unexpected_eofs() == 0
    else:
        # Each job process ends with os._exit(), its connection still open.
        assert failed == []
        assert run.unexpected_eofs() == count
    branch_backends.wait_for([])


@pytest.mark.slow
@pytest.mark.rq_processes
@pytest.mark.parametrize(
    "worker_class", ["branching_ops.workers.BranchSimpleWorker", "rq.SimpleWorker"]
)
def test_rqworker_pool_closes_kept_connections_at_exit(
    worker_class: str, queue: Queue, branch_backends: BranchBackends, branches: Branches
) -> None:
    """django-rq's ``rqworker-pool`` ends each worker process with ``os._exit()``.

    With ``CONN_MAX_AGE`` each worker keeps its branch connections between
    jobs; only the worker's teardown can close them before that exit.
    """
    count = 4
    branches(*[f"pool{i}" for i in range(count)])
    jobs = [queue.enqueue(f"{JOBS}.touch_branch", f"pool{i % count}") for i in range(40)]

    with rqworker(
        branch_backends,
        "--burst",
        "--num-workers=2",
        f"--worker-class={worker_class}",
        command="rqworker-pool",
        BRANCHING_OPS_TEST_CONN_MAX_AGE="600",
    ) as run:
        run.wait()

    print(f"\nrqworker-pool, 2 x {worker_class}: peak branch backends {run.peak}")
    assert run.returncode == 0, run.output
    assert [job.get_status() for job in jobs] == [JobStatus.FINISHED] * len(jobs)
    assert len({result(job).worker_name for job in jobs}) == 2
    assert 2 <= run.peak <= 2 * count, run.peak_backends
    branch_backends.wait_for([])
    if worker_class == "rq.SimpleWorker":  # proof the test can fail
        assert run.unexpected_eofs() >= 2  # at least one connection per worker process
    else:
        assert run.unexpected_eofs() == 0, run.server_log


@pytest.mark.slow
@pytest.mark.rq_processes
def test_branch_spawn_worker(
    queue: Queue, branch_backends: BranchBackends, branches: Branches
) -> None:
    """A fresh interpreter per job: Django is set up in it, and it says goodbye.

    On rq 2 the job process would be a plain rq.Worker: the worker refuses to
    start, with a message and exit status 1, and leaves the jobs queued.
    """
    branches("spawn0", "spawn1", "spawn_orm", "spawn_fail")
    touched = [queue.enqueue(f"{JOBS}.touch_branch", f"spawn{i}") for i in range(2)]
    orm = queue.enqueue(f"{JOBS}.count_notes", "spawn_orm")
    failed = queue.enqueue(f"{JOBS}.fail_on_branch", "spawn_fail")

    run = run_burst(branch_backends, "--worker-class=branching_ops.workers.BranchSpawnWorker")

    if not SPAWN_SUPPORTED:
        assert run.returncode == 1, run.output
        assert "CommandError: BranchSpawnWorker needs rq >= 3" in run.output
        assert "Traceback" not in run.output
        assert {job.get_status() for job in [*touched, orm, failed]} == {JobStatus.QUEUED}
        return
    assert run.returncode == 0, run.output
    assert [job.get_status() for job in [*touched, orm]] == [JobStatus.FINISHED] * 3, run.output
    assert orm.return_value() == 0
    assert failed.get_status() == JobStatus.FAILED
    assert run.opened() >= 1
    assert run.peak <= PEAK_PER_WORKER, run.peak_backends
    branch_backends.wait_for([])
    assert run.unexpected_eofs() == 0, run.server_log


def test_simple_worker_beside_a_sqlite_alias(
    queue: Queue, branch_backends: BranchBackends, tmp_path: Path, branches: Branches
) -> None:
    """A connection of another engine neither stops the worker nor confuses a timeout.

    sqlite has no server transaction status and no query to cancel on a
    server: the hooks pass it over instead of raising (which stopped the
    worker after the first job) or logging a failed close.
    """
    branches("sqlite_timeout", "sqlite_after")
    other = queue.enqueue(f"{JOBS}.use_other_database")
    timed_out = queue.enqueue(
        f"{JOBS}.slow_query_after_other_database", "sqlite_timeout", 30, job_timeout=1
    )
    after = queue.enqueue(f"{JOBS}.touch_branch", "sqlite_after")

    run = run_burst(
        branch_backends,
        "--worker-class=branching_ops.workers.BranchSimpleWorker",
        BRANCHING_OPS_TEST_SQLITE=str(tmp_path / "other.sqlite3"),
    )

    assert run.returncode == 0, run.output
    assert other.get_status() == JobStatus.FINISHED, run.output
    assert timed_out.get_status() == JobStatus.FAILED, run.output
    assert "JobTimeoutException" in (result(timed_out).exc_string or "")
    assert after.get_status() == JobStatus.FINISHED, run.output
    assert "connection other failed" not in run.output
    branch_backends.wait_for([])
