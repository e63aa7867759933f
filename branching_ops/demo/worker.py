"""The demo's RQ worker process: one in-process worker, as the mode runs it.

Plain Django and the upstream fix run ``rq.SimpleWorker`` (nothing of the
upstream fix runs in workers: it only listens to request signals);
branching_ops runs ``BranchSimpleWorker``. The worker keeps running after
the last job, as a real one does, until SIGTERM (rq's warm shutdown).
"""

from __future__ import annotations

from typing import Any

from django.utils.module_loading import import_string
from redis import Redis
from rq import Queue
from rq.job import Job

from branching_ops.demo import child


def queue_name(mode_name: str) -> str:
    """The queue the demo fills for the worker of mode ``mode_name``."""
    return f"demo-{mode_name}"


def main(argv: list[str] | None = None) -> None:
    parser = child.parser(__doc__)
    parser.add_argument("--redis-url", required=True)
    args = parser.parse_args(argv)
    mode = child.configure(args)
    worker_class: Any = import_string(mode.worker_class)

    class ReportingWorker(worker_class):  # type: ignore[misc]
        """The mode's worker, unchanged, plus a report once each job is over."""

        def perform_job(self, job: Job, queue: Queue, *args: Any, **kwargs: Any) -> bool:
            performed: bool = super().perform_job(job, queue, *args, **kwargs)
            result = None if performed else job.latest_result()
            child.emit_outcome(None if result is None else result.exc_string)
            return performed

    connection = Redis.from_url(args.redis_url)
    queue = Queue(queue_name(mode.name), connection=connection)
    worker = ReportingWorker([queue], connection=connection)
    child.emit(ready=True)
    worker.work(logging_level="WARNING")


if __name__ == "__main__":
    main()
