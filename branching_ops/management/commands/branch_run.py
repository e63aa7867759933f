"""``manage.py branch_run BRANCH... [--all] -- COMMAND [ARG...]``: a command on each branch.

Everything is checked before anything starts (the command and its
arguments with its own parser, the branches and their schemas in one
query); then :func:`branching_ops.fanout.run_branches` runs it on local
worker processes or as RQ jobs, and the report says what happened on each.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from typing import Any

from django.core.management import get_commands
from django.core.management import load_command_class
from django.core.management.base import CommandError
from django.core.management.base import CommandParser

from branching_ops.fanout import CommandTask
from branching_ops.fanout import select_branches
from branching_ops.fanout.command import FanoutCommand

logger = logging.getLogger("branching_ops")

# Fan-outs of fan-outs: a worker process may not fork workers of its own.
NOT_PER_BRANCH = ("branch_run", "branch_migrate")


class _CommandAfterDashes(CommandParser):
    """Everything after the first ``--`` is the command to run and its arguments."""

    def parse_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> argparse.Namespace:
        words = list(args or [])
        split = words.index("--") if "--" in words else len(words)
        parsed = super().parse_args(words[:split], namespace)
        parsed.command = words[split + 1 :]
        return parsed


class Command(FanoutCommand):
    help = (
        "Run a management command once on each branch, with the ORM routed to it: "
        "BRANCH... [options] -- COMMAND [ARG...]."
    )

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any) -> CommandParser:
        parser = super().create_parser(prog_name, subcommand, **kwargs)
        parser.__class__ = _CommandAfterDashes
        parser.usage = "%(prog)s [BRANCH ...] [options] -- COMMAND [ARG ...]"
        return parser

    def add_arguments(self, parser: CommandParser) -> None:
        super().add_arguments(parser)
        parser.add_argument(
            "--dry-run", action="store_true", help="List what would run; run nothing."
        )

    def handle(
        self,
        *args: Any,
        branches: list[str],
        every: bool,
        exclude: list[str],
        command: list[str],
        parallel: int,
        via_rq: str | None,
        batch_size: int,
        wait: bool,
        json: bool,
        fail_fast: bool,
        log_dir: str | None,
        dry_run: bool,
        verbosity: int,
        **options: Any,
    ) -> None:
        task = command_task(command)
        self.check_executor(parallel=parallel, via_rq=via_rq, batch_size=batch_size, wait=wait)
        selected = select_branches(branches, every=every, exclude=exclude)
        if dry_run:
            self.list_selection(selected, " ".join([task.name, *task.args]))
            return
        logger.info("branch_run %s on %d branch(es).", task.name, len(selected))
        report = self.run(
            selected,
            task,
            parallel=parallel,
            via_rq=via_rq,
            batch_size=batch_size,
            wait=wait,
            fail_fast=fail_fast,
            log_dir=log_dir,
            verbosity=verbosity,
        )
        self.finish(report, json=json, verbosity=verbosity)


def command_task(command: Sequence[str]) -> CommandTask:
    """The command to run on each branch, checked (name and arguments) before anything starts."""
    if not command:
        raise CommandError("No command given: put it after --, e.g. -- migrate --check.")
    name, *args = command
    if name in NOT_PER_BRANCH:
        raise CommandError(f"{name} cannot run once per branch: it works on many branches itself.")
    app = get_commands().get(name)
    if app is None:
        raise CommandError(f"Unknown command: {name!r}. Type 'manage.py help' for usage.")
    parser = load_command_class(app, name).create_parser("manage.py", name)
    try:
        parser.parse_args(args)
    except CommandError as exc:
        raise CommandError(f"{name}: {exc}") from None
    return CommandTask(name, tuple(args))
