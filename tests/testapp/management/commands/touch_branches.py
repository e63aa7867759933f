"""A BranchCommand that runs one query on each of N branches, then ends as told."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand
from django.core.management.base import CommandError
from django.core.management.base import CommandParser
from django.db import connections

from branching_ops.management.base import BranchCommand

ENDINGS = ("return", "command-error", "exception", "keyboard-interrupt", "system-exit")


class TouchBranches(BaseCommand):
    """The command's body, shared by the BranchCommand and the plain BaseCommand."""

    help = "Run SELECT 1 on branches <prefix>_0 ... <prefix>_<count-1>."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--count", type=int, default=50)
        parser.add_argument("--prefix", default="touch")
        parser.add_argument("--end", choices=ENDINGS, default="return")
        parser.add_argument(
            "--checkpoint", action="store_true", help="close_old_branch_connections() per branch"
        )

    def handle(
        self, *args: Any, count: int, prefix: str, end: str, checkpoint: bool, **options: Any
    ) -> None:
        for i in range(count):
            with connections[f"schema_{prefix}_{i}"].cursor() as cursor:
                cursor.execute("SELECT 1")
            if checkpoint:
                assert isinstance(self, BranchCommand)
                self.close_old_branch_connections()
        self.stdout.write(f"touched {count} branches")
        if end == "command-error":
            raise CommandError(f"failed after touching {count} branches")
        if end == "exception":
            raise RuntimeError(f"crashed after touching {count} branches")
        if end == "keyboard-interrupt":
            raise KeyboardInterrupt
        if end == "system-exit":
            raise SystemExit(3)


class Command(TouchBranches, BranchCommand):
    pass
