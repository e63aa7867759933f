"""What ``branch_run`` and ``branch_migrate`` share: the selection and executor options, the run.

A subclass adds its own arguments, builds its task and calls :meth:`FanoutCommand.run`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO
from typing import cast

from django.core.management.base import CommandError
from django.core.management.base import CommandParser

from branching_ops.fanout import check_batch_size
from branching_ops.fanout import check_parallel
from branching_ops.fanout import run_branches
from branching_ops.fanout.progress import Progress
from branching_ops.fanout.progress import no_progress
from branching_ops.fanout.report import Report
from branching_ops.fanout.selection import Branch
from branching_ops.fanout.task import BranchTask
from branching_ops.management.base import BranchCommand

logger = logging.getLogger("branching_ops")


class FanoutCommand(BranchCommand):
    """Options: ``BRANCH...``, ``--all``/``--exclude``, ``--parallel``, ``--via-rq``/
    ``--batch-size``/``--no-wait``, ``--json``, ``--fail-fast``, ``--log-dir``; ``handle()``
    gets them as ``branches``, ``every``, ``exclude``, ``parallel``, ``via_rq``,
    ``batch_size``, ``wait``, ``json``, ``fail_fast``, ``log_dir``."""

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("branches", nargs="*", metavar="BRANCH", help="A branch to run on.")
        parser.add_argument(
            "--all",
            action="store_true",
            dest="every",
            help="Every branch: every schema but the system's, public and SEARCH_PATH_TAIL "
            "(under NetBox: every ready branch).",
        )
        parser.add_argument(
            "--exclude",
            action="append",
            default=[],
            metavar="BRANCH",
            help="With --all: not this branch (repeat for several).",
        )
        parser.add_argument(
            "--parallel",
            type=int,
            default=1,
            metavar="N",
            help="Worker processes (default 1): at most N branch connections at a time.",
        )
        parser.add_argument(
            "--via-rq",
            metavar="QUEUE",
            help="Enqueue one job per branch (or per --batch-size) on this django-rq queue and "
            "wait for the results.",
        )
        parser.add_argument(
            "--batch-size",
            type=int,
            default=1,
            metavar="N",
            help="With --via-rq: N branches per job, run one after the other (default 1).",
        )
        parser.add_argument(
            "--no-wait",
            action="store_false",
            dest="wait",
            help="With --via-rq: only enqueue, and print the job ids.",
        )
        parser.add_argument("--json", action="store_true", help="Output the report as JSON.")
        parser.add_argument(
            "--fail-fast",
            action="store_true",
            help="Start no new branch after the first failure.",
        )
        parser.add_argument(
            "--log-dir",
            metavar="DIR",
            help="Write each branch's output to DIR/<schema>.log (default: a new temporary "
            "directory, named in the report).",
        )

    def check_executor(
        self, *, parallel: int, via_rq: str | None, batch_size: int, wait: bool
    ) -> None:
        """The executor options, checked before the selection's query."""
        check_parallel(parallel)
        check_batch_size(batch_size, via_rq)
        if not wait and via_rq is None:
            raise CommandError("--no-wait goes with --via-rq.")

    def run(
        self,
        selected: Sequence[Branch],
        task: BranchTask,
        *,
        parallel: int,
        via_rq: str | None,
        batch_size: int,
        wait: bool,
        fail_fast: bool,
        log_dir: str | None,
        verbosity: int,
    ) -> Report:
        """Run ``task`` on ``selected`` with progress on stderr; the report, not yet printed."""
        stream = cast(TextIO, self.stderr._out)  # the bar draws with bare carriage returns
        progress = Progress(len(selected), stream) if verbosity else None
        try:
            return run_branches(
                selected,
                task,
                parallel=parallel,
                via_rq=via_rq,
                batch_size=batch_size,
                wait=wait,
                fail_fast=fail_fast,
                log_dir=Path(log_dir) if log_dir else None,
                progress=progress or no_progress,
            )
        finally:
            if progress:
                progress.close()

    def finish(self, report: Report, *, json: bool, verbosity: int) -> None:
        """Print the report; exit status 1 when a branch failed, 130 when interrupted."""
        if json:
            self.stdout.write(report.json())
        elif verbosity:
            self.stdout.write(report.table())
        if report.exit_status:
            failed = ", ".join(result.branch for result in report.failed)
            message = f"Failed on {len(report.failed)} branch(es): {failed}."
            if report.interrupted:
                message = f"Interrupted; {report.summary()}"
            raise CommandError(message, returncode=report.exit_status)

    def list_selection(self, selected: Sequence[Branch], what: str) -> None:
        """``--dry-run``: each branch (and its schema, when named otherwise) and what would run."""
        for branch in selected:
            shown = branch.name
            if branch.name != branch.schema:
                shown += f" ({branch.schema})"
            self.stdout.write(f"{shown}: {what}")
        self.stdout.write(f"Would run on {len(selected)} branch(es); nothing was run.")
