"""``BranchCommand``: a ``BaseCommand`` that closes the branch connections it opened.

Django closes its static aliases when ``manage.py`` finishes
(``run_from_argv`` calls ``connections.close_all()``), never branch aliases,
and nothing at all after ``call_command()``: a command run from a shell
session, a scheduler or a loop leaves one socket per branch it touched.
"""

from __future__ import annotations

import logging
from typing import Any

from django.core.management.base import BaseCommand
from django.db.backends.base.base import BaseDatabaseWrapper

from branching_ops import tracking

__all__ = [
    "BranchCommand",
]

logger = logging.getLogger("branching_ops")


class BranchCommand(BaseCommand):
    """Subclass it instead of ``BaseCommand``; write ``handle()`` as usual.

    On every way out of :meth:`execute` (return, ``CommandError``, any other
    exception, ``KeyboardInterrupt``, ``SystemExit``) it closes the branch
    connections of this thread that were opened *during* the command. A
    branch connection the caller already held open (``call_command()`` from a
    view, a test, another command) stays as it was, and so does one still
    inside an ``atomic()`` block. A branch the caller had only looked up, or
    whose connection was closed before the command, is the command's if the
    command connects it.
    """

    _branch_aliases_before: frozenset[str] | None = None

    def execute(self, *args: Any, **options: Any) -> str | None:
        outer = self._branch_aliases_before
        self._branch_aliases_before = frozenset(
            wrapper.alias
            for wrapper in tracking.branch_wrappers()
            if wrapper.connection is not None
        )
        try:
            output: str | None = super().execute(*args, **options)
        finally:
            closed = tracking.close_connections(
                BaseDatabaseWrapper.close,
                "shutdown",
                self._opened_branch_aliases(),
                spare_atomic=logging.WARNING,
            )
            if closed:
                logger.debug("Closed %d branch connection(s) at the end of a command.", closed)
            self._branch_aliases_before = outer
        return output

    def close_old_branch_connections(self) -> int:
        """Checkpoint for long loops: the rule of a request boundary.

        Closes the branch connections opened during this command that are
        unusable or older than ``CONN_MAX_AGE`` (with the default ``0``: all
        of them), never one inside an atomic block. Returns how many it closed.
        """
        return tracking.close_old_branch_connections(aliases=self._opened_branch_aliases())

    def _opened_branch_aliases(self) -> set[str]:
        # Tracked now and not held open by the caller at the start.
        return set(tracking.tracked_aliases()) - (self._branch_aliases_before or frozenset())
