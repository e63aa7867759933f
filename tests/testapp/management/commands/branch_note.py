"""A plain BaseCommand that writes a Note through the ORM: where branch_run routes it."""

from __future__ import annotations

import time
from typing import Any

from django.core.management.base import BaseCommand
from django.core.management.base import CommandError
from django.core.management.base import CommandParser
from django.db import connections
from django.db import router

from tests.testapp.models import Note


class Command(BaseCommand):
    help = "Write a Note on the branch the ORM is routed to; fail or sleep when told."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--text", default="note")
        parser.add_argument("--fail-on", action="append", default=[], metavar="BRANCH")
        parser.add_argument("--crash-on", action="append", default=[], metavar="BRANCH")
        parser.add_argument(
            "--pg-sleep",
            type=float,
            default=0,
            help="SELECT pg_sleep() on the branch after writing",
        )
        parser.add_argument(
            "--sleep", type=float, default=0, help="time.sleep() after writing, connection idle"
        )
        parser.add_argument(
            "--sleep-on", action="append", default=[], metavar="BRANCH", help="only these sleep"
        )

    def handle(
        self,
        *args: Any,
        text: str,
        fail_on: list[str],
        crash_on: list[str],
        pg_sleep: float,
        sleep: float,
        sleep_on: list[str],
        **options: Any,
    ) -> None:
        alias = router.db_for_write(Note)
        branch = alias.removeprefix("schema_")
        if branch in fail_on:
            raise CommandError(f"told to fail on {branch}")
        if branch in crash_on:
            raise RuntimeError(f"told to crash on {branch}")
        note = Note.objects.create(text=text)
        print(f"print() on {branch}")  # goes to the branch's log too
        if sleep_on and branch not in sleep_on:
            pg_sleep = sleep = 0
        if pg_sleep:
            with connections[alias].cursor() as cursor:
                cursor.execute("SELECT pg_sleep(%s)", [pg_sleep])
        time.sleep(sleep)
        self.stdout.write(f"note {note.pk} {text!r} on {alias}")
