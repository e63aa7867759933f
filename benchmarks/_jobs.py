"""The job ``workers.py`` runs: the test project's branch job, plus when it ended."""

from __future__ import annotations

import time

from tests.project.jobs import touch_branch


def touch_branch_timed(name: str) -> float:
    """Touch branch ``name``; return ``time.perf_counter()`` at the end.

    On Linux ``perf_counter()`` reads ``CLOCK_MONOTONIC``, one clock for
    every process, so the stamps of jobs run in forked job processes compare
    with each other too. rq stores the return value as the job's result.
    """
    touch_branch(name)
    return time.perf_counter()
