"""What the demo shows: a progress bar per mode, a table, a plot."""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from branching_ops.demo.soak import ModeResult
from branching_ops.demo.soak import SoakParams

BAR_WIDTH = 30


class ProgressBars:
    """One line per mode, redrawn in place on a terminal, printed once elsewhere."""

    def __init__(self, stream: TextIO = sys.stderr) -> None:
        self.stream = stream
        self.live = stream.isatty()
        self.current: str | None = None
        self.last_draw = 0.0

    def __call__(self, result: ModeResult, backends: int) -> None:
        done = result.ok + result.failed
        finished = done >= result.requests
        if self.current != result.mode:
            self.current = result.mode
        elif not finished and time.monotonic() - self.last_draw < 0.1:
            return
        self.last_draw = time.monotonic()
        filled = BAR_WIDTH * done // max(result.requests, 1)
        line = (
            f"{result.label:<34} [{'#' * filled}{'.' * (BAR_WIDTH - filled)}] "
            f"{done}/{result.requests}  failed {result.failed}  branch backends {backends}"
        )
        if self.live:
            self.stream.write(f"\r\033[K{line}" + ("\n" if finished else ""))
        elif finished:
            self.stream.write(line + "\n")
        self.stream.flush()


def table(results: Sequence[ModeResult]) -> str:
    """The results as a plain-text table."""
    header = (
        "mode",
        "ok",
        "failed",
        "too many clients",
        "peak backends",
        "final backends",
        "tracked aliases",
        "RSS MB",
        "seconds",
    )
    rows = [header] + [
        (
            r.label,
            str(r.ok),
            str(r.failed),
            str(r.too_many_clients),
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
            cell.ljust(width) if i == 0 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def plot(results: Sequence[ModeResult], params: SoakParams, path: Path) -> None:
    """Open branch backends over time, one line per mode, and the server's limit."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, axes = pyplot.subplots(figsize=(9, 5), dpi=110)
    for result in results:
        axes.plot(
            [t for t, _ in result.timeline],
            [n for _, n in result.timeline],
            label=f"{result.label}: {result.failed} failed, {result.final_backends} left",
            linewidth=1.6,
        )
    axes.axhline(
        params.max_connections,
        color="black",
        linestyle="--",
        linewidth=1,
        label=f"max_connections = {params.max_connections}",
    )
    axes.set_xlabel("seconds since the mode started")
    axes.set_ylabel("open branch backends (pg_stat_activity)")
    axes.set_title(
        f"{params.requests} requests over {params.branches} branches from "
        f"{params.threads} threads, CONN_MAX_AGE={params.conn_max_age}"
    )
    axes.set_ylim(bottom=0, top=params.max_connections * 1.15)
    axes.grid(alpha=0.3)
    axes.legend(loc="center right")
    figure.tight_layout()
    figure.savefig(path)
    pyplot.close(figure)
