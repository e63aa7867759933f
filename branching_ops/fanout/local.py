"""The local executor: N long-lived worker processes, one branch at a time each.

Workers are forked from the command once Django is set up and every
connection is closed: each starts with Django ready and no socket of the
parent's, takes branch after branch from its pipe, and the parent hands out
the next branch as each result comes back (so ``--fail-fast`` and Ctrl-C
act between branches, and a worker that dies costs only its own branch).

Fork rather than spawn or forkserver: a spawned worker would set Django up
again from ``DJANGO_SETTINGS_MODULE`` and lose what the running process
changed in memory (pytest-django's test database name, ``call_command``
from code that adjusted settings), and would pay Django's start-up per
worker. Forking is safe here because the parent is single-threaded when it
forks (the progress bar is drawn only afterwards, without tqdm's monitor
thread) and holds no connection.

Workers ignore SIGINT (a terminal sends Ctrl-C to the whole process group):
the parent stops them with SIGTERM, which a worker turns into
``KeyboardInterrupt`` so psycopg cancels a running query and the branch's
connections close before the process ends.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import signal
import threading
from collections import deque
from collections.abc import Callable
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from pathlib import Path
from types import FrameType

from django.db import connections

from branching_ops.fanout.report import BranchResult
from branching_ops.fanout.report import Report
from branching_ops.fanout.report import not_started
from branching_ops.fanout.selection import Branch
from branching_ops.fanout.task import BranchTask
from branching_ops.fanout.task import run_branch
from branching_ops.tracking import close_branch_connections

logger = logging.getLogger("branching_ops")

STOP_GRACE_SECONDS = 10.0  # after SIGTERM, before SIGKILL


def close_all_connections() -> None:
    """Django's connections and this thread's branch connections: before a fork, at exit."""
    connections.close_all()
    close_branch_connections()


def log_path(log_dir: Path, branch: Branch) -> Path:
    return log_dir / f"{branch.schema}.log"


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _worker(pipe: Connection, task: BranchTask, log_dir: Path) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        while (branch := pipe.recv()) is not None:
            path = log_path(log_dir, branch)
            with path.open("w", encoding="utf-8") as log:
                result = run_branch(task, branch, log)
            pipe.send(_with_log(result, path))
            if result.status == "interrupted":  # the parent's SIGTERM came mid-branch
                break
    except (KeyboardInterrupt, EOFError):  # stopped, or the parent is gone
        pass
    finally:
        close_all_connections()


def _with_log(result: BranchResult, path: Path) -> BranchResult:
    return BranchResult(**{**result.to_json(), "log": str(path)})


@dataclass
class _Worker:
    process: BaseProcess
    pipe: Connection
    branch: tuple[int, Branch] | None = None  # what it runs now


def run_local(
    branches: Sequence[Branch],
    task: BranchTask,
    *,
    parallel: int,
    fail_fast: bool,
    log_dir: Path,
    progress: Callable[[BranchResult], None],
) -> Report:
    """Run ``task`` on every branch with ``parallel`` worker processes; Ctrl-C stops them."""
    close_all_connections()  # nothing shared with the children; none held while they work
    context = multiprocessing.get_context("fork")
    results: dict[int, BranchResult] = {}
    pending = deque(enumerate(branches))
    workers: list[_Worker] = []
    interrupted = False
    stopping = False
    try:
        for _ in range(min(parallel, len(branches))):
            ours, theirs = context.Pipe()
            process = context.Process(
                target=_worker, args=(theirs, task, log_dir), name="branch_run worker"
            )
            process.start()
            theirs.close()
            workers.append(_Worker(process, ours))
        for worker in workers:
            _hand_out(worker, pending)
        while busy := [worker for worker in workers if worker.branch is not None]:
            ready = wait([worker.pipe for worker in busy] + [w.process.sentinel for w in busy])
            for worker in busy:
                if worker.pipe not in ready and worker.process.sentinel not in ready:
                    continue
                result = _result_of(worker)
                assert worker.branch is not None
                results[worker.branch[0]] = result
                worker.branch = None
                progress(result)
                if result.status == "failed" and fail_fast:
                    stopping = True
                if not stopping and worker.process.is_alive():
                    _hand_out(worker, pending)
    except KeyboardInterrupt:
        interrupted = True
        logger.info("Interrupted: stopping %d worker(s).", len(workers))
    finally:
        _stop(workers, results, interrupted)
    report = [
        results.get(index) or not_started([branch])[0] for index, branch in enumerate(branches)
    ]
    return Report(report, log_dir=str(log_dir), interrupted=interrupted)


def _hand_out(worker: _Worker, pending: deque[tuple[int, Branch]]) -> None:
    if pending:
        worker.branch = pending.popleft()
        worker.pipe.send(worker.branch[1])


def _result_of(worker: _Worker) -> BranchResult:
    """The result the worker sent, or a failure if it died without sending one."""
    assert worker.branch is not None
    if worker.pipe.poll():
        try:
            result: BranchResult = worker.pipe.recv()
        except EOFError:
            pass
        else:
            return result
    worker.process.join()
    branch = worker.branch[1]
    return BranchResult(
        branch.name,
        branch.schema,
        "failed",
        error=f"its worker process died (exit code {worker.process.exitcode})",
    )


def _stop(workers: list[_Worker], results: dict[int, BranchResult], interrupted: bool) -> None:
    """End every worker: asked to stop when all went well, SIGTERM after Ctrl-C."""
    with _no_interrupts():
        for worker in workers:
            if interrupted:
                if worker.process.is_alive():
                    worker.process.terminate()
            else:
                with contextlib.suppress(OSError):  # already gone
                    worker.pipe.send(None)
        for worker in workers:
            worker.process.join(STOP_GRACE_SECONDS)
            if worker.process.is_alive():
                logger.warning("Worker %s did not stop; killing it.", worker.process.pid)
                worker.process.kill()
                worker.process.join()
            if worker.branch is not None:  # the result of a branch it was stopped in
                branch = worker.branch[1]
                result = None
                if worker.pipe.poll():
                    with contextlib.suppress(EOFError):
                        result = worker.pipe.recv()
                results[worker.branch[0]] = result or BranchResult(
                    branch.name, branch.schema, "interrupted", error="interrupted"
                )
            worker.pipe.close()


class _no_interrupts:
    """Ctrl-C is ignored while the workers are being stopped (main thread only)."""

    def __enter__(self) -> None:
        self.main = threading.current_thread() is threading.main_thread()
        if self.main:
            self.previous = signal.signal(signal.SIGINT, signal.SIG_IGN)

    def __exit__(self, *exc_info: object) -> None:
        if self.main:
            signal.signal(signal.SIGINT, self.previous)
