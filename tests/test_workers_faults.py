"""Faults around RQ workers: a killed job process, a restarted server."""

from __future__ import annotations

import os
import signal

import pytest
from django.db import connections
from rq import Queue
from rq.job import Job
from rq.job import JobStatus

from branching_ops.testing.postgres import PostgresServer
from branching_ops.testing.processes import wait_until
from tests.backends import BranchBackends
from tests.conftest import Branches
from tests.rqworkers import JOBS
from tests.rqworkers import result
from tests.rqworkers import rqworker


def client_backends(backends: BranchBackends) -> int:
    """Every client backend of the test database, branch or not, but our monitor."""
    row = backends.monitor.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = %s "
        "AND backend_type = 'client backend' AND pid <> pg_backend_pid()",
        (backends.dbname,),
    ).fetchone()
    assert row is not None
    return int(str(row[0]))


def wait_for_jobs(*jobs: Job) -> None:
    done = (JobStatus.FINISHED, JobStatus.FAILED)
    wait_until(
        lambda: all(job.get_status() in done for job in jobs), timeout=60, what="jobs to end"
    )


@pytest.mark.slow
@pytest.mark.rq_processes
def test_job_process_killed_mid_query(
    queue: Queue, branch_backends: BranchBackends, branches: Branches
) -> None:
    """SIGKILL can't say goodbye; the worker goes on and the server cleans up."""
    branches("killed", "after_kill")
    connections["default"].close()
    baseline = client_backends(branch_backends)
    killed = queue.enqueue(f"{JOBS}.query_reporting_pid", "killed", 2)
    after = queue.enqueue(f"{JOBS}.touch_branch", "after_kill")

    with rqworker(branch_backends, "--burst") as run:  # BranchWorker, from RQ["WORKER_CLASS"]
        wait_until(
            lambda: (
                queue.connection.get(f"pid:{killed.id}") is not None
                and branch_backends() == ["branch:killed"]
            ),
            timeout=30,
            what="the job's query to run",
        )
        os.kill(int(queue.connection.get(f"pid:{killed.id}") or 0), signal.SIGKILL)
        run.wait()

    assert run.returncode == 0, run.output
    assert killed.get_status() == JobStatus.FAILED
    assert "terminated unexpectedly" in str(result(killed).exc_string)
    assert after.get_status() == JobStatus.FINISHED
    # The orphaned backend ends when its query does and it finds no client.
    branch_backends.wait_for([], timeout=30)
    # At most the baseline: a backend counted in it may still have been
    # exiting (the connection that created the branches, on a loaded machine).
    wait_until(
        lambda: client_backends(branch_backends) <= baseline,
        timeout=10,
        what="the server's backends to return to the baseline",
    )


@pytest.mark.slow
@pytest.mark.rq_processes
@pytest.mark.parametrize("health_checks", [True, False], ids=["health-checks", "no-health-checks"])
def test_server_restart_between_jobs(
    health_checks: bool,
    queue: Queue,
    branch_backends: BranchBackends,
    postgres: PostgresServer,
    branches: Branches,
) -> None:
    """A BranchSimpleWorker holds branch connections between jobs when the server restarts."""
    branches("ra", "rb")
    env = {
        "BRANCHING_OPS_TEST_CONN_MAX_AGE": "600",
        "BRANCHING_OPS_TEST_CONN_HEALTH_CHECKS": "1" if health_checks else "0",
    }
    worker_class = "--worker-class=branching_ops.workers.BranchSimpleWorker"
    with rqworker(branch_backends, worker_class, **env) as run:
        before = [queue.enqueue(f"{JOBS}.touch_branch", name) for name in ("ra", "rb")]
        wait_for_jobs(*before)
        assert [job.get_status() for job in before] == [JobStatus.FINISHED] * 2
        branch_backends.wait_for(["branch:ra", "branch:rb"])  # held between jobs

        connections["default"].close()
        branch_backends.monitor.close()
        postgres.restart()
        branch_backends.monitor = postgres.connect()

        after = [queue.enqueue(f"{JOBS}.touch_branch", name) for name in ("ra", "ra", "rb", "rb")]
        wait_for_jobs(*after)
        branch_backends.wait_for(["branch:ra", "branch:rb"])  # reconnected, held again

    statuses = [job.get_status() for job in after]
    print(f"\nhealth checks {health_checks}: jobs after the restart {statuses}")
    assert run.returncode == 0, run.output
    if health_checks:
        # The check before the first query finds the dead socket and reconnects.
        assert statuses == [JobStatus.FINISHED] * 4
    else:
        # Like a request: the first job on a dead connection fails, the
        # cleanup after it closes the connection, the next job reconnects.
        assert statuses == [JobStatus.FAILED, JobStatus.FINISHED] * 2
        assert "OperationalError" in str(result(after[0]).exc_string)
    branch_backends.wait_for([])  # the warm shutdown closed them
    assert run.unexpected_eofs() == 0, run.server_log
