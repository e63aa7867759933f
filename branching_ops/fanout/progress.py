"""Progress of a fan-out: a ``tqdm`` bar on a terminal, one plain line per branch otherwise."""

from __future__ import annotations

from typing import TextIO

from tqdm import tqdm

from branching_ops.fanout.report import BranchResult


class _Bar(tqdm):  # type: ignore[type-arg]
    # No monitor thread: local workers may be forked while a bar exists.
    monitor_interval = 0


class Progress:
    """Called with each branch's result as it comes; ``close()`` at the end."""

    def __init__(self, total: int, stream: TextIO, *, bar: bool | None = None) -> None:
        self.total = total
        self.done = 0
        self.stream = stream
        self.bar: _Bar | None = None
        self.use_bar = stream.isatty() if bar is None else bar

    def __call__(self, result: BranchResult) -> None:
        self.done += 1
        if not self.use_bar:
            seconds = "" if result.seconds is None else f" in {result.seconds:.2f} s"
            self.stream.write(
                f"[{self.done}/{self.total}] {result.branch}: {result.status}{seconds}\n"
            )
            self.stream.flush()
            return
        if self.bar is None:  # drawn from the first result on: after any fork
            self.bar = _Bar(total=self.total, file=self.stream, unit="branch", leave=False)
        self.bar.set_postfix_str(f"{result.branch}: {result.status}", refresh=False)
        self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def no_progress(result: BranchResult) -> None:
    """For callers that show nothing (``--verbosity 0``)."""
