"""What the demo shows: a progress bar per run, a table, a plot."""

from __future__ import annotations

import bisect
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from branching_ops.demo.harness import MONITOR_CONNECTIONS
from branching_ops.demo.harness import DemoParams
from branching_ops.demo.harness import RunResult
from branching_ops.demo.harness import usable_slots
from branching_ops.demo.scenarios import SCENARIOS
from branching_ops.testing.postgres import SUPERUSER_RESERVED_CONNECTIONS

BAR_WIDTH = 30
COLORS = {"plain": "#d62728", "upstream": "#ff7f0e", "branching_ops": "#2ca02c"}


class ProgressBars:
    """One line per run, redrawn in place on a terminal; its last state printed once elsewhere.

    The last line gives what the table gives: failures, and the branch
    backends the run left open.
    """

    def __init__(self, stream: TextIO = sys.stderr) -> None:
        self.stream = stream
        self.live = stream.isatty()
        self.last_draw = 0.0

    def __call__(self, result: RunResult, backends: int, over: bool) -> None:
        if not over and (not self.live or time.monotonic() - self.last_draw < 0.1):
            return
        self.last_draw = time.monotonic()
        filled = BAR_WIDTH * result.done // max(result.total, 1)
        line = (
            f"{result.scenario:<10} {result.label:<37} "
            f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {result.done}/{result.total} "
            f"{result.unit}  failed {result.failed}  "
            + (f"left open {backends}" if over else f"branch backends {backends}")
        )
        if self.live:
            self.stream.write(f"\r\033[K{line}" + ("\n" if over else ""))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()


def table(results: Sequence[RunResult]) -> str:
    """The results as a plain-text table, one row per scenario and mode."""
    header = (
        "scenario",
        "mode",
        "ok",
        "failed",
        "peak backends",
        "left open",
        "tracked aliases",
        "RSS MB",
        "seconds",
    )
    rows = [header] + [
        (
            f"{r.scenario} ({r.total} {r.unit})",
            r.label,
            str(r.ok),
            str(r.failed),
            str(r.peak_backends),
            str(r.final_backends),
            "-" if r.tracked_aliases is None else str(r.tracked_aliases),
            "-" if r.rss_mb is None else f"{r.rss_mb:.1f}",
            f"{r.seconds:.1f}",
        )
        for r in results
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [
        "  ".join(
            cell.ljust(width) if i < 2 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def backends_at(timeline: Sequence[tuple[float, int]], at: float) -> float:
    """The count the plotted line shows at ``at``: between two samples, on the segment.

    A failure is marked on its curve, not at the sample before it (which,
    while the count climbs, sits far below it).
    """
    if not timeline:
        return 0
    times = [t for t, _ in timeline]
    index = bisect.bisect_right(times, at)
    if index == 0:
        return timeline[0][1]
    if index == len(timeline):
        return timeline[-1][1]
    (t0, n0), (t1, n1) = timeline[index - 1], timeline[index]
    return n0 + (n1 - n0) * (at - t0) / (t1 - t0) if t1 > t0 else n1


def legend(result: RunResult) -> str:
    text = f"{result.label}: {result.failed} failed, {result.final_backends} left"
    if result.tracked_aliases is not None:
        text += f", {result.tracked_aliases} aliases tracked"
    return text


def plot(results: Sequence[RunResult], params: DemoParams, path: Path) -> None:
    """One panel per scenario: branch backends over time per mode, failures marked."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    scenarios = list(dict.fromkeys(r.scenario for r in results))
    columns = min(len(scenarios), 2)
    rows = math.ceil(len(scenarios) / columns)
    figure, axes = pyplot.subplots(
        rows, columns, figsize=(7.5 * columns, 4.6 * rows), dpi=100, squeeze=False
    )
    for axis, name in zip(axes.flat, scenarios, strict=False):
        for result in (r for r in results if r.scenario == name):
            color = COLORS[result.mode]
            axis.plot(
                [t for t, _ in result.timeline],
                [n for _, n in result.timeline],
                color=color,
                linewidth=2.6 if result.mode == "upstream" else 1.6,
                alpha=0.75 if result.mode == "upstream" else 1.0,
                label=legend(result),
            )
            if result.failures:
                axis.scatter(
                    result.failures,
                    [backends_at(result.timeline, t) for t in result.failures],
                    marker="x",
                    color=color,
                    s=28,
                    linewidths=1.2,
                    zorder=3,
                )
        axis.axhline(
            usable_slots(params.max_connections),
            color="black",
            linestyle="--",
            linewidth=1,
            label=(
                f"{usable_slots(params.max_connections)} usable: max_connections "
                f"{params.max_connections}, {SUPERUSER_RESERVED_CONNECTIONS} reserved "
                f"for superusers, {MONITOR_CONNECTIONS} the demo's monitor"
            ),
        )
        axis.set_title(SCENARIOS[name].title(params), fontsize=10)
        axis.set_xlabel("seconds")
        axis.set_ylabel("open branch backends")
        axis.set_ylim(bottom=0, top=params.max_connections * 1.7)
        axis.grid(alpha=0.3)
        axis.legend(loc="upper left", fontsize=8.5)
    for axis in axes.flat[len(scenarios) :]:
        axis.set_visible(False)
    figure.suptitle(
        "Branch backends in pg_stat_activity, per mode; x: a failed request, job or run",
        fontsize=12,
    )
    figure.tight_layout()
    figure.savefig(path)
    pyplot.close(figure)
