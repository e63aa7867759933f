"""Request cost with branching_ops vs plain Django, through Django's real WSGI handler.

One process, one thread, one branch per mode, interleaved blocks of requests
(shuffled every round), so machine noise hits every mode alike.
Branch connections persist (``CONN_MAX_AGE=600``) in every mode: the
difference is the package's bookkeeping, not reconnecting.

Before any of that, the same with a view that touches no branch, on a
thread that never opened one: what the package costs the requests of a
project that use no branch (target <= 1 %).

Then every mode visits ``--seen`` other branches, each closed afterwards (by
the mode's receivers at ``CONN_MAX_AGE=0``; by hand in plain Django, which
would otherwise leak them), and the same measurement runs again: cleanup
must cost O(open connections), not O(branches ever seen).

Last, one pass timed inside real requests (:func:`in_request`), at each
boundary: what a request pays, where a tight loop keeps it in the caches.

One more mode, ``branching_ops + metrics``, is branching_ops with the
receivers of ``branching_ops.metrics`` connected (needs the ``metrics``
extra): a request that opens or closes no connection sends no signal, so it
must cost what branching_ops costs, within noise and <= 1 µs.

    python -m benchmarks.overhead [--rounds 500] [--block 10] [--seen 1000]
"""

from __future__ import annotations

import argparse
import cProfile
import dataclasses
import os
import pstats
import random
import statistics
import time
import timeit
from collections.abc import Callable
from typing import Any
from wsgiref.util import setup_testing_defaults

from django.core.handlers.wsgi import WSGIHandler
from django.db import connections

from benchmarks._database import DBNAME
from benchmarks._database import bench_database
from branching_ops import signals
from branching_ops.demo import project
from branching_ops.demo.project import APP_ROLE
from branching_ops.demo.project import BRANCHING_OPS
from branching_ops.demo.project import PLAIN
from branching_ops.demo.project import UPSTREAM
from branching_ops.demo.project import Mode

TARGET = 0.03
TARGET_NO_BRANCH = 0.01
METRICS_TARGET_US = 1.0
METRICS = dataclasses.replace(BRANCHING_OPS, name="metrics", label="branching_ops + metrics")
MODES = (PLAIN, BRANCHING_OPS, UPSTREAM, METRICS)
PERSISTENT = 600


def use(mode: Mode) -> str:
    """Switch to ``mode``; the path of its branch (METRICS shares branching_ops's)."""
    from branching_ops.metrics import exporter

    project.use_mode(BRANCHING_OPS if mode is METRICS else mode)
    if mode is METRICS:
        exporter.connect()
    else:
        exporter.disconnect()
    return f"/branch/bench_{BRANCHING_OPS.name if mode is METRICS else mode.name}/"


def get(handler: Any, path: str) -> int:
    """GET ``path`` through the WSGI handler (signals and all); return the status."""
    environ: dict[str, Any] = {"PATH_INFO": path}
    setup_testing_defaults(environ)
    status: list[str] = []

    def start_response(status_line: str, *args: Any) -> None:
        status.append(status_line)

    response = handler(environ, start_response)
    try:
        b"".join(response)
    finally:
        response.close()  # sends request_finished
    return int(status[0].split()[0])


def measure(
    handler: Any, rounds: int, block: int, *, branch: bool = True
) -> dict[Mode, tuple[float, float]]:
    """Each mode's 10th percentile and median of single requests, in microseconds.

    ``branch=False``: a view that touches no branch (``/ok/``), what most
    requests of a project are.

    Other processes on the machine only ever add time to a request, up to
    milliseconds; the low percentile is the least disturbed estimate of what a
    request costs, the median shows how disturbed the run was. Interleaving
    gives every mode the same share of the disturbance.
    """
    samples: dict[Mode, list[int]] = {mode: [] for mode in MODES}
    shuffled = random.Random(0)
    for mode in MODES:  # open each mode's branch connection before timing
        assert get(handler, use(mode) if branch else "/ok/") == 200
    for _ in range(rounds):
        # Shuffled, not rotated: a rotation puts each mode after the same one
        # every time, and with it whatever that one left in the CPU's caches.
        for mode in shuffled.sample(MODES, len(MODES)):
            path = use(mode) if branch else "/ok/"
            for _ in range(block):
                start = time.perf_counter_ns()
                status = get(handler, path)
                samples[mode].append(time.perf_counter_ns() - start)
                if status != 200:
                    raise RuntimeError(f"{path} failed in mode {mode.name}")
    return {
        mode: (statistics.quantiles(values, n=10)[0] / 1000, statistics.median(values) / 1000)
        for mode, values in samples.items()
    }


def visit_and_close(handler: Any, seen: int) -> None:
    """Each mode visits ``seen`` branches, each closed once its request is over."""
    default = connections["default"].settings_dict
    default["CONN_MAX_AGE"] = 0  # copied into the branches created from now on
    try:
        for mode in MODES:
            use(mode)
            for number in range(seen):
                name = f"seen_{mode.name}_{number}"
                assert get(handler, f"/branch/{name}/") == 200
                if mode is PLAIN:
                    connections[f"schema_{name}"].close()
    finally:
        default["CONN_MAX_AGE"] = PERSISTENT


def per_call(repeat: int = 20_000) -> bool:
    """What one request boundary costs each cleanup, for one open connection.

    Returns the metrics' verdict: a request that opens and closes nothing
    runs no more code with them on, so the cleanup at its boundaries must
    cost the same, within ``METRICS_TARGET_US``. Alternated best-of figures
    hold still where single requests (hundreds of µs) vary by more.
    """
    from django.db import close_old_connections

    from branching_ops.tracking import close_old_branch_connections

    def best(function: Callable[[], object]) -> float:
        return min(timeit.repeat(function, number=repeat, repeat=5)) / repeat * 1e6

    def off_and_on(function: Callable[[], object]) -> tuple[float, float]:
        """Best of 5 with the metrics off and on, alternating, so load hits both alike."""
        times: dict[Mode, list[float]] = {BRANCHING_OPS: [], METRICS: []}
        for _ in range(5):
            for mode in times:
                use(mode)
                times[mode].append(timeit.timeit(function, number=repeat) / repeat * 1e6)
        return min(times[BRANCHING_OPS]), min(times[METRICS])

    def one_connection() -> None:
        """The signals of one branch connection's life: what metrics cost per connection."""
        alias = "schema_bench_events"
        signals.branch_alias_tracked.send_robust(sender=None, alias=alias)
        signals.branch_connection_opened.send_robust(sender=None, alias=alias)
        signals.branch_connection_closed.send_robust(sender=None, alias=alias, reason="obsolete")
        signals.branch_alias_untracked.send_robust(sender=None, alias=alias)

    use(BRANCHING_OPS)
    connections["default"].ensure_connection()
    assert BRANCHING_OPS.tracked() == 1
    print("\none call at a request boundary, one open persistent connection (best of 5):")
    for label, function in (
        ("Django's close_old_connections() (its 1 alias)", close_old_connections),
        ("close_old_branch_connections() (1 branch)", close_old_branch_connections),
    ):
        print(f"  {label:<50} {best(function):6.2f} µs")
    off, on = off_and_on(close_old_branch_connections)
    verdict = on - off <= METRICS_TARGET_US
    print(
        f"  {'the same, metrics off / on':<50} {off:6.2f} / {on:.2f} µs  (target: ≤ "
        f"{METRICS_TARGET_US:g} µs more: {'PASS' if verdict else 'MISS'})"
    )
    off, on = off_and_on(one_connection)
    print(f"\nthe 4 signals of one branch connection's life ({mode_of_metrics()}):")
    print(f"  {'metrics off (no receiver) / on':<50} {off:6.2f} / {on:.2f} µs")
    use(BRANCHING_OPS)
    connections["default"].close()
    return verdict


def in_request(handler: Any, requests: int = 20_000) -> None:
    """What each pass costs inside real requests, timed around the receiver.

    In a tight loop (:func:`per_call`) a pass stays in the CPU's caches;
    between two boundaries a request evicts it, and it costs about twice as
    much: this is what a request pays. The package's receivers are swapped
    for the same pass wrapped in a timer (about 0.15 µs of it is the timer).
    """
    from django.core.signals import request_finished
    from django.core.signals import request_started

    from branching_ops.tracking import close_old_branch_connections

    samples: dict[str, list[int]] = {"request_started": [], "request_finished": []}

    def timed(boundary: str) -> Callable[..., None]:
        def receiver(**kwargs: object) -> None:
            start = time.perf_counter_ns()
            close_old_branch_connections()
            samples[boundary].append(time.perf_counter_ns() - start)

        return receiver

    path = use(BRANCHING_OPS)
    assert get(handler, path) == 200  # its connection is open and tracked
    use(PLAIN)  # none of the package's receivers: only the timed ones
    receivers = {boundary: timed(boundary) for boundary in samples}
    request_started.connect(receivers["request_started"], dispatch_uid="bench.started")
    request_finished.connect(receivers["request_finished"], dispatch_uid="bench.finished")
    try:
        for _ in range(requests):
            get(handler, path)
    finally:
        request_started.disconnect(dispatch_uid="bench.started")
        request_finished.disconnect(dispatch_uid="bench.finished")
    print(f"\none pass inside a request, 1 branch held ({requests} requests):")
    for boundary, values in samples.items():
        p10 = statistics.quantiles(values, n=10)[0] / 1000
        median = statistics.median(values) / 1000
        print(f"  at {boundary:<36} {p10:6.2f} µs (10th percentile); {median:6.2f} µs (median)")


def mode_of_metrics() -> str:
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    return f"multiprocess files in {directory}" if directory else "single process"


def calls_per_request(handler: Any, requests: int = 100) -> bool:
    """Python function calls per request, metrics off and on: the same code, or not.

    A count does not vary with the machine's load, where single requests
    vary by more than a microsecond.
    """
    counts = {}
    for mode in (BRANCHING_OPS, METRICS):
        path = use(mode)
        profile = cProfile.Profile()
        profile.enable()
        for _ in range(requests):
            get(handler, path)
        profile.disable()
        counts[mode] = {
            function: calls
            for function, (_, calls, *_) in pstats.Stats(profile).stats.items()  # type: ignore[attr-defined]
        }
    same = counts[BRANCHING_OPS] == counts[METRICS]
    off, on = (sum(counts[mode].values()) / requests for mode in (BRANCHING_OPS, METRICS))
    verdict = "the same functions: PASS" if same else "different functions: MISS"
    print(f"\nPython function calls per request, metrics off / on: {off:.0f} / {on:.0f}")
    print(f"  ({verdict})")
    return same


def report(title: str, times: dict[Mode, tuple[float, float]], target: float) -> list[bool]:
    print(f"\n{title}  (10th percentile; median)")
    base_p10, base_median = times[PLAIN]
    verdicts = []
    for mode, (p10, median) in times.items():
        line = f"  {mode.label:<34} {p10:8.1f} µs; {median:8.1f} µs"
        if mode is not PLAIN:
            ratio = p10 / base_p10 - 1
            line += f"   {ratio:+7.1%}; {median / base_median - 1:+7.1%} vs plain Django"
            if mode is BRANCHING_OPS:
                verdicts.append(ratio <= target)
                line += f"  (target ≤ {target:.0%}: {'PASS' if ratio <= target else 'MISS'})"
        print(line)
    added = times[METRICS][0] - times[BRANCHING_OPS][0]
    print(f"  metrics on vs off: {added:+.1f} µs per request (10th percentile; see per call)")
    return verdicts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=500, help="default: %(default)s")
    parser.add_argument("--block", type=int, default=10, help="requests per mode and round")
    parser.add_argument("--seen", type=int, default=1000, help="branches seen before")
    args = parser.parse_args()

    names = [f"bench_{mode.name}" for mode in MODES]
    names += [f"seen_{mode.name}_{n}" for mode in MODES for n in range(args.seen)]
    with bench_database(names) as server:
        project.configure(
            PLAIN,
            host=server.host,
            port=server.port,
            dbname=DBNAME,
            user=APP_ROLE,
            conn_max_age=PERSISTENT,
        )
        handler = WSGIHandler()
        print(
            f"{args.rounds} rounds x {args.block} requests per mode, interleaved; "
            "figures per single request; the verdict uses the 10th percentile"
        )
        # First, while this thread has never touched a branch.
        verdicts = report(
            "no branch (a view that touches none; the thread tracks none):",
            measure(handler, args.rounds, args.block, branch=False),
            TARGET_NO_BRANCH,
        )
        verdicts += report("1 branch:", measure(handler, args.rounds, args.block), TARGET)
        visit_and_close(handler, args.seen)
        print(f"\ntracked aliases after visiting {args.seen} branches:")
        for mode in (BRANCHING_OPS, UPSTREAM):
            project.use_mode(mode)
            print(f"  {mode.label:<34} {mode.tracked()}")
        verdicts += report(
            f"1 branch, {args.seen} other branches visited before on the same thread:",
            measure(handler, args.rounds, args.block),
            TARGET,
        )
        verdicts.append(calls_per_request(handler))
        verdicts.append(per_call())
        in_request(handler)
    return 0 if all(verdicts) else 1


if __name__ == "__main__":
    raise SystemExit(main())
