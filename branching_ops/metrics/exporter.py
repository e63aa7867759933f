"""The metrics, in ``prometheus_client``'s default registry, and the receivers that move them.

Every figure moves on a signal sent once per connection event (open, close,
failure, track, untrack), never per query or per request. Under
``PROMETHEUS_MULTIPROC_DIR`` (gunicorn workers, RQ job processes) each
process writes its own files: counters add up over every process that ever
ran, gauges (``livesum``) over the processes alive, so a process that exits
must be marked dead (``prometheus_client.multiprocess.mark_process_dead``):
gunicorn's ``child_exit`` hook for its workers, :func:`on_job_process_exited`
for RQ job processes.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from collections.abc import Iterator

from django.dispatch import Signal
from prometheus_client import Counter
from prometheus_client import Gauge
from prometheus_client import multiprocess

from branching_ops import signals
from branching_ops.search_path import SearchPathError

OPEN = Gauge(
    "branching_ops_branch_connections_open",
    "Branch connections open in this process now, all threads.",
    multiprocess_mode="livesum",
)
OPENED = Counter("branching_ops_branch_connections_opened", "Branch connections opened.")
CLOSED = Counter(
    "branching_ops_branch_connections_closed",
    "Branch connections closed, by reason: " + ", ".join(signals.CLOSE_REASONS) + ".",
    ["reason"],
)
ERRORS = Counter(
    "branching_ops_branch_connection_errors",
    "Branch connections refused or on the wrong schema, closed before any query ran.",
    ["kind"],
)
TRACKED = Gauge(
    "branching_ops_tracked_aliases",
    "Branch aliases tracked in this process now, summed over threads.",
    multiprocess_mode="livesum",
)


def _error_kinds(error_class: type[SearchPathError] = SearchPathError) -> Iterator[str]:
    yield error_class.kind
    for subclass in error_class.__subclasses__():
        yield from _error_kinds(subclass)


# Every series exists from the start at 0, so that increase() and rate()
# see the first event and alerts need no "or absent()".
for _reason in signals.CLOSE_REASONS:
    CLOSED.labels(_reason)
for _kind in sorted(set(_error_kinds())):
    ERRORS.labels(_kind)


def on_opened(**kwargs: object) -> None:
    OPENED.inc()
    OPEN.inc()


def on_closed(reason: signals.CloseReason, **kwargs: object) -> None:
    CLOSED.labels(reason).inc()
    OPEN.dec()


def on_failed(error: SearchPathError, **kwargs: object) -> None:
    ERRORS.labels(error.kind).inc()


def on_tracked(**kwargs: object) -> None:
    TRACKED.inc()


def on_untracked(**kwargs: object) -> None:
    TRACKED.dec()


def on_job_process_exited(pid: int, **kwargs: object) -> None:
    """Drop the gauges of a dead RQ job process, killed ones included.

    A job process normally closes its connections before it exits, leaving
    0; one killed mid-job would count its connections as open for good.
    """
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


RECEIVERS: list[tuple[Signal, Callable[..., None]]] = [
    (signals.branch_connection_opened, on_opened),
    (signals.branch_connection_closed, on_closed),
    (signals.branch_connection_failed, on_failed),
    (signals.branch_alias_tracked, on_tracked),
    (signals.branch_alias_untracked, on_untracked),
    (signals.job_process_exited, on_job_process_exited),
]


def _uid(receiver: Callable[..., None]) -> str:
    return f"branching_ops.metrics.{receiver.__name__}"


def connect() -> None:
    """Start moving the metrics (idempotent)."""
    for signal, receiver in RECEIVERS:
        # Module functions live as long as the process: no weak reference needed.
        signal.connect(receiver, weak=False, dispatch_uid=_uid(receiver))


def disconnect() -> None:
    """Stop moving the metrics; their values stay."""
    for signal, receiver in RECEIVERS:
        signal.disconnect(dispatch_uid=_uid(receiver))
