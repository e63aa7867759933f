"""``manage.py branch_migrate BRANCH... [--all]``: Django's ``migrate`` on each branch.

The selection is checked in one query and every selected branch's applied
migrations are read in two more (:mod:`branching_ops.fanout.migrations`);
up-to-date branches are reported ``skipped`` without a worker touching
them, and the others run on ``branch_run``'s executors, each worker
reading the migration files once and migrating on the branch's schema alone.
"""

from __future__ import annotations

import json as json_module
import logging
from collections.abc import Sequence
from typing import Any

from django.core.management.base import CommandParser
from django.db import DEFAULT_DB_ALIAS

from branching_ops.fanout import Branch
from branching_ops.fanout import Report
from branching_ops.fanout import select_branches
from branching_ops.fanout.command import FanoutCommand
from branching_ops.fanout.migrations import BranchMigrations
from branching_ops.fanout.migrations import MigrateBranch
from branching_ops.fanout.migrations import plan_migrations
from branching_ops.fanout.report import not_started
from branching_ops.management import arguments

logger = logging.getLogger("branching_ops")


class Command(FanoutCommand):
    help = (
        "Apply Django's migrations to each branch (its own schema and django_migrations "
        "only), skipping branches that are up to date."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        super().add_arguments(parser)
        parser.add_argument(
            "--plan",
            action="store_true",
            help="Print which branches need which migrations; change nothing.",
        )

    def handle(
        self,
        *args: Any,
        branches: list[str],
        every: bool,
        exclude: list[str],
        parallel: int,
        via_rq: str | None,
        batch_size: int,
        wait: bool,
        json: bool,
        fail_fast: bool,
        log_dir: str | None,
        plan: bool,
        verbosity: int,
        **options: Any,
    ) -> None:
        self.check_executor(parallel=parallel, via_rq=via_rq, batch_size=batch_size, wait=wait)
        if via_rq is not None:  # checked even when every branch turns out up to date
            from branching_ops.fanout.via_rq import get_queue

            get_queue(via_rq)
        selected = select_branches(branches, every=every, exclude=exclude)
        plans = plan_migrations(
            arguments.database_connection(DEFAULT_DB_ALIAS), [b.schema for b in selected]
        )
        if plan:
            self.print_plan(selected, plans, json=json)
            return
        needed = [branch for branch, p in zip(selected, plans, strict=True) if not p.up_to_date]
        logger.info(
            "branch_migrate: %d of %d branch(es) need migrations.", len(needed), len(selected)
        )
        report = Report([])
        if needed:
            report = self.run(
                needed,
                MigrateBranch(verbosity),
                parallel=parallel,
                via_rq=via_rq,
                batch_size=batch_size,
                wait=wait,
                fail_fast=fail_fast,
                log_dir=log_dir,
                verbosity=verbosity,
            )
        ran = {result.schema: result for result in report.results}
        skipped = {r.schema: r for r in not_started(selected, "skipped") if r.schema not in ran}
        report.results = [ran.get(b.schema) or skipped[b.schema] for b in selected]
        if skipped:
            report.notes.append(
                f"Skipped {len(skipped)} branch(es) up to date: nothing ran on them."
            )
        self.finish(report, json=json, verbosity=verbosity)

    def print_plan(
        self, selected: Sequence[Branch], plans: Sequence[BranchMigrations], *, json: bool
    ) -> None:
        if json:
            data = [
                {"branch": branch.name, "schema": branch.schema, "migrations": p.labels}
                for branch, p in zip(selected, plans, strict=True)
            ]
            self.stdout.write(json_module.dumps(data, indent=2))
            return
        for branch, p in zip(selected, plans, strict=True):
            shown = (
                branch.name if branch.name == branch.schema else f"{branch.name} ({branch.schema})"
            )
            if p.up_to_date:
                self.stdout.write(f"{shown}: up to date")
            else:
                self.stdout.write(f"{shown}: {len(p.needed)} migration(s)")
                for label in p.labels:
                    self.stdout.write(f"  {label}")
        waiting = sum(not p.up_to_date for p in plans)
        self.stdout.write(
            f"{waiting} of {len(plans)} branch(es) need migrations; nothing was changed."
        )
