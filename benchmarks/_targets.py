"""The last lines of a benchmark that has targets: one PASS or MISS line each."""

from __future__ import annotations

from collections.abc import Sequence


def report_targets(targets: Sequence[tuple[str, bool]]) -> int:
    """Print each target's verdict; the exit status: 1 when any was missed."""
    for label, met in targets:
        print(f"{'PASS' if met else 'MISS'} {label}")
    return 0 if all(met for _, met in targets) else 1
