"""gunicorn settings for the metrics tests (``--config python:tests.project.gunicorn_metrics``).

The ``child_exit`` hook docs/metrics.md asks for: a dead worker's gauges go
with it.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import multiprocess


def child_exit(server: Any, worker: Any) -> None:
    multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]
