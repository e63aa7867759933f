"""The RQ executor: one job per branch (or per batch of branches) on a django-rq queue.

Any ``rqworker --worker-class branching_ops.workers.BranchWorker QUEUE``, on
any host, runs the jobs; each job runs :func:`~branching_ops.fanout.task.run_branch`
on its branches one after the other and returns their results as plain
data, with each branch's output. The command waits, writes the logs and
reports as the local executor does.

A job whose work horse dies is failed by its worker at once ("Work-horse
terminated unexpectedly"); one whose whole worker dies stays in rq's
``StartedJobRegistry`` until its heartbeat expires (90 s by default), and
the waiting command's cleanup of that registry then fails it as
``AbandonedJobError``. Either way its branches are reported failed, never lost.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import django_rq
from django.conf import settings
from django.core.management.base import CommandError
from redis.exceptions import RedisError
from rq.job import Job
from rq.job import JobStatus
from rq.queue import Queue
from rq.registry import StartedJobRegistry

from branching_ops.fanout.report import BranchResult
from branching_ops.fanout.report import Report
from branching_ops.fanout.selection import Branch
from branching_ops.fanout.task import BranchTask
from branching_ops.fanout.task import run_branch

POLL_SECONDS = 0.2
CLEANUP_SECONDS = 5.0  # how often the started jobs' registry is checked for abandoned ones
OUTPUT = "output"  # the key of the branch's output in a job's return value


def run_batch(task: BranchTask, branches: list[tuple[str, str]], fail_fast: bool) -> list[Any]:
    """The job: its ``(name, schema)`` branches in turn; each result and output as plain data.

    Under ``fail_fast`` the batch stops at its first failure; the rest are left out.
    """
    results = []
    for name, schema in branches:
        log = io.StringIO()
        result = run_branch(task, Branch(name, schema), log)
        results.append({**result.to_json(), OUTPUT: log.getvalue()})
        if fail_fast and result.status == "failed":
            break
    return results


def get_queue(name: str) -> Queue:
    """The django-rq queue ``name``, its Redis reachable; ``CommandError`` otherwise."""
    queues = getattr(settings, "RQ_QUEUES", {})
    if name not in queues:
        known = ", ".join(map(repr, sorted(queues))) or "none"
        raise CommandError(
            f"--via-rq: no queue {name!r} in RQ_QUEUES (known: {known}). Nothing was enqueued."
        )
    queue: Queue = django_rq.get_queue(name)
    try:
        queue.connection.ping()
    except RedisError as exc:
        raise CommandError(
            f"--via-rq: cannot reach the Redis of queue {name!r}: {str(exc).rstrip('.')}. "
            "Nothing was enqueued."
        ) from None
    return queue


def _enqueue(
    queue: Queue, batches: Sequence[Sequence[Branch]], task: BranchTask, fail_fast: bool
) -> list[Job]:
    """One job per batch, in one round trip."""
    return queue.enqueue_many(
        [
            Queue.prepare_data(
                run_batch,
                args=(task, [(branch.name, branch.schema) for branch in batch], fail_fast),
                description=f"{task!r} on branch(es) {', '.join(b.name for b in batch)}",
            )
            for batch in batches
        ]
    )


def _batched(branches: Sequence[Branch], size: int) -> list[Sequence[Branch]]:
    return [branches[start : start + size] for start in range(0, len(branches), size)]


def enqueue(queue: Queue, branches: Sequence[Branch], task: BranchTask, batch_size: int) -> Report:
    """``--no-wait``: the jobs are queued; their results stay in Redis."""
    batches = _batched(branches, batch_size)
    jobs = _enqueue(queue, batches, task, fail_fast=False)
    results = [
        BranchResult(branch.name, branch.schema, "queued", job_id=job.id)
        for batch, job in zip(batches, jobs, strict=True)
        for branch in batch
    ]
    return Report(results, executor=f"rq:{queue.name}")


def run_rq(
    queue: Queue,
    branches: Sequence[Branch],
    task: BranchTask,
    *,
    batch_size: int,
    fail_fast: bool,
    log_dir: Path,
    progress: Callable[[BranchResult], None],
) -> Report:
    """Enqueue, then wait for every job's results.

    Ctrl-C, or a failure under ``fail_fast``, cancels the jobs not yet taken.
    """
    batches = _batched(branches, batch_size)
    jobs = _enqueue(queue, batches, task, fail_fast)
    results: dict[Branch, BranchResult] = {}
    waiting = {job.id: batch for job, batch in zip(jobs, batches, strict=True)}
    registry = StartedJobRegistry(queue=queue)
    interrupted = False
    last_cleanup = time.monotonic()
    try:
        while waiting:
            if time.monotonic() - last_cleanup > CLEANUP_SECONDS:
                registry.cleanup()  # fails the jobs of a worker that died
                last_cleanup = time.monotonic()
            ids = list(waiting)
            for job_id, job in zip(
                ids, Job.fetch_many(ids, connection=queue.connection), strict=True
            ):
                finished = _finished(job_id, job, waiting[job_id], log_dir)
                if finished is None:
                    continue
                del waiting[job_id]
                for result in finished:
                    results[Branch(result.branch, result.schema)] = result
                    progress(result)
                if fail_fast and any(result.status == "failed" for result in finished):
                    _cancel_queued(queue, waiting, results)
            if waiting:
                time.sleep(POLL_SECONDS)
    except KeyboardInterrupt:
        interrupted = True
        _cancel_queued(queue, waiting, results)
        for job_id, batch in waiting.items():  # started: they run to their end on the workers
            for branch in batch:
                results[branch] = BranchResult(
                    branch.name, branch.schema, "interrupted", error="left running", job_id=job_id
                )
    report = [results[branch] for branch in branches]
    return Report(
        report, log_dir=str(log_dir), interrupted=interrupted, executor=f"rq:{queue.name}"
    )


def _finished(
    job_id: str, job: Job | None, batch: Sequence[Branch], log_dir: Path
) -> list[BranchResult] | None:
    """Its branches' results once the job has ended (their logs written), else ``None``."""
    if job is None:
        return _all_failed(batch, "its job is gone from Redis", job_id)
    status = job.get_status(refresh=False)
    if status == JobStatus.FINISHED:
        finished = []
        for data in job.return_value() or []:
            path = log_dir / f"{data['schema']}.log"
            path.write_text(data.pop(OUTPUT, ""), encoding="utf-8")
            finished.append(BranchResult.from_json({**data, "log": str(path), "job_id": job_id}))
        left_out = batch[len(finished) :]  # after a failure under --fail-fast
        return finished + _not_started(left_out, job_id)
    if status in (JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED):
        latest = job.latest_result()
        said = (latest.exc_string if latest is not None else None) or f"job {status}"
        for branch in batch:
            (log_dir / f"{branch.schema}.log").write_text(said, encoding="utf-8")
        error = f"its job failed: {said.strip().splitlines()[-1]}"
        return _all_failed(batch, error, job_id, log_dir)
    return None


def _not_started(batch: Sequence[Branch], job_id: str) -> list[BranchResult]:
    return [
        BranchResult(branch.name, branch.schema, "not-started", job_id=job_id) for branch in batch
    ]


def _all_failed(
    batch: Sequence[Branch], error: str, job_id: str, log_dir: Path | None = None
) -> list[BranchResult]:
    return [
        BranchResult(
            branch.name,
            branch.schema,
            "failed",
            error=error,
            log=str(log_dir / f"{branch.schema}.log") if log_dir else None,
            job_id=job_id,
        )
        for branch in batch
    ]


def _cancel_queued(
    queue: Queue, waiting: dict[str, Sequence[Branch]], results: dict[Branch, BranchResult]
) -> None:
    """Cancel the jobs no worker has taken yet; their branches are reported not started."""
    for job_id in set(queue.get_job_ids()) & set(waiting):
        job = Job.fetch(job_id, connection=queue.connection)
        if job.get_status() != JobStatus.QUEUED:  # taken meanwhile: its results will come
            continue
        job.cancel()
        for result in _not_started(waiting.pop(job_id), job_id):
            results[Branch(result.branch, result.schema)] = result
