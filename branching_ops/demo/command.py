"""The demo's command loop: one process calling ``call_command()`` again and again.

Like a scheduler, a shell session or a test suite does: each run works on a
few branches, with a checkpoint after each branch (docs/commands.md). Plain
Django and the upstream fix run a ``BaseCommand`` whose checkpoint is
Django's ``close_old_connections()`` (nothing of the upstream fix runs in
commands); branching_ops runs the same command as a ``BranchCommand``, whose
checkpoint is its ``close_old_branch_connections()``. The process stays up
after the last run, holding whatever the runs left open, until SIGTERM (or
until the demo is gone: its stdin closes).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from typing import Any

from django.core.management import call_command
from django.db import DatabaseError
from django.db import close_old_connections
from django.utils.module_loading import import_string

from branching_ops.demo import child
from branching_ops.demo import project

# How long the command works on each branch, and the pause between runs.
SECONDS_PER_BRANCH = 0.02
PAUSE = 0.2


def run_branches(run: int, runs: int, branches: int) -> list[str]:
    """The branches run number ``run`` works on: together, the runs visit every branch."""
    per_run = math.ceil(branches / runs)
    return [f"b{(run * per_run + offset) % branches}" for offset in range(per_run)]


def main(argv: list[str] | None = None) -> None:
    parser = child.parser(__doc__)
    parser.add_argument("--runs", type=int, required=True)
    parser.add_argument("--branches", type=int, required=True)
    args = parser.parse_args(argv)
    mode = child.configure(args)
    command_class: Any = import_string(mode.command_class)

    class Command(command_class):  # type: ignore[misc]
        help = "Work on each branch given."

        def add_arguments(self, parser: argparse.ArgumentParser) -> None:
            parser.add_argument("branches", nargs="+")

        def handle(self, *args: Any, branches: list[str], **options: Any) -> None:
            checkpoint = getattr(self, "close_old_branch_connections", close_old_connections)
            for name in branches:
                project.work_on_branch(name, SECONDS_PER_BRANCH)
                checkpoint()

    child.emit(ready=True)
    sys.stdin.readline()  # the demo's go, once it watches the server
    for run in range(args.runs):
        try:
            call_command(Command(), *run_branches(run, args.runs, args.branches))
        except DatabaseError as exc:
            child.emit_outcome(str(exc))
        else:
            child.emit_outcome(None)
        time.sleep(PAUSE)
    sys.stdin.read()  # until SIGTERM, or the demo is gone


if __name__ == "__main__":
    main()
