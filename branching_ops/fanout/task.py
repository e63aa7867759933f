"""One branch's work, and the scope it runs in wherever it runs (a local worker, an RQ job).

:func:`run_branch` gives a task what ``BranchCommand`` gives a command: the
branch active (the ORM goes there, ``connections["schema_<branch>"]``
works), every branch connection closed when the branch is done, and
Django's own connections treated as at a request boundary before and after,
so a worker that runs thousands of branches holds what one branch needs.
"""

from __future__ import annotations

import contextlib
import logging
import time
import traceback
from dataclasses import dataclass
from typing import Protocol
from typing import TextIO

from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import close_old_connections

from branching_ops.fanout.report import BranchResult
from branching_ops.fanout.report import Status
from branching_ops.fanout.selection import Branch
from branching_ops.fanout.selection import branch_source
from branching_ops.tracking import close_branch_connections

logger = logging.getLogger("branching_ops")


class BranchTask(Protocol):
    """The work done on each branch: picklable (RQ ships it), raises to fail.

    Called in a worker process once per branch, with the branch active;
    ``branch`` is its schema, so ``connections[f"schema_{branch}"]`` is its
    connection. ``stdout`` and ``stderr`` go to the branch's log.
    """

    def __call__(self, branch: str, stdout: TextIO, stderr: TextIO) -> None: ...


@dataclass(frozen=True)
class CommandTask:
    """``branch_run``'s task: a management command with its arguments."""

    name: str
    args: tuple[str, ...] = ()

    def __call__(self, branch: str, stdout: TextIO, stderr: TextIO) -> None:
        call_command(self.name, *self.args, stdout=stdout, stderr=stderr)


def run_branch(task: BranchTask, branch: Branch, log: TextIO) -> BranchResult:
    """Run ``task`` on ``branch`` in this thread, its output (``print()`` too) into ``log``.

    The thread is the fan-out's (a worker process, an RQ job): every branch
    connection of it is closed at the end. Never raises for the task's
    failure; ``KeyboardInterrupt`` (how a local worker is stopped) gives an
    ``interrupted`` result.
    """
    status: Status = "ok"
    error = None
    started = time.monotonic()
    close_old_connections()
    try:
        with (
            contextlib.redirect_stdout(log),
            contextlib.redirect_stderr(log),
            branch_source().activate(branch.schema),
        ):
            task(branch.schema, log, log)
    except KeyboardInterrupt:
        status, error = "interrupted", "interrupted"
    except BaseException as exc:  # SystemExit too: a command's exit is this branch's failure
        status, error = "failed", describe(exc)
        if isinstance(exc, CommandError):
            log.write(f"CommandError: {error}\n")
        else:
            traceback.print_exc(file=log)
        logger.info("Branch %s failed: %s", branch.name, error)
    finally:
        close_branch_connections()
        close_old_connections()
        log.flush()
    return BranchResult(
        branch.name, branch.schema, status, round(time.monotonic() - started, 3), error
    )


def describe(exc: BaseException) -> str:
    """One line for the report: the message of a ``CommandError``, else type and message."""
    text = " ".join(str(exc).split())
    if isinstance(exc, CommandError):
        return text or "CommandError"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
