"""``manage.py branch_drop NAME``: end the branch's backends, then drop its schema.

A connection left open on a dropped branch would search ``public`` in its
place, so every backend of the branch ends: this thread's own connection to
it (closed cleanly), every other one on the server (terminated) before the
drop, and once more after it commits any that connected while it ran.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandError
from django.core.management.base import CommandParser
from django.db import transaction
from psycopg import sql

from branching_ops import activity
from branching_ops.management import arguments
from branching_ops.management.base import BranchCommand
from branching_ops.names import branch_alias
from branching_ops.tracking import close_branch_connections

OWNER_SQL = """
SELECT pg_has_role(n.nspowner, 'USAGE'), pg_get_userbyid(n.nspowner),
       (SELECT count(*) FROM pg_class c WHERE c.relnamespace = n.oid AND c.relkind IN ('r', 'p'))
FROM pg_namespace n WHERE n.nspname = %s
"""


class Command(BranchCommand):
    help = (
        "Drop a branch: terminate its backends, then DROP SCHEMA ... CASCADE in one "
        "transaction. Asks for confirmation unless --noinput."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", help="The branch (schema) name.")
        parser.add_argument(
            "--noinput",
            "--no-input",
            action="store_false",
            dest="interactive",
            help="Do not ask for confirmation.",
        )
        parser.add_argument(
            "--if-exists",
            action="store_true",
            help="Succeed without changing anything if the branch does not exist.",
        )
        arguments.add_database_argument(parser)

    def handle(
        self,
        *args: Any,
        name: str,
        interactive: bool,
        if_exists: bool,
        database: str,
        verbosity: int,
        **options: Any,
    ) -> None:
        arguments.check_branch_schema(name)
        connection = arguments.database_connection(database)
        with connection.cursor() as cursor:
            cursor.execute(OWNER_SQL, [name])
            row = cursor.fetchone()
        if row is None:
            if not if_exists:
                raise CommandError(f"Branch {name!r} does not exist.")
            if verbosity >= 1:
                self.stdout.write(f"Branch {name!r} does not exist; nothing to do.")
            return
        may_drop, owner, tables = row
        if not may_drop:
            raise CommandError(
                f"Role {connection.settings_dict['USER']!r} may not drop branch {name!r}: "
                f"its schema belongs to {owner!r}. Nothing was changed."
            )
        backends = activity.branch_backends(connection, branches=[name])
        arguments.check_can_terminate(connection, backends)
        if interactive and not self.confirm(name, tables, len(backends)):
            self.stdout.write("Drop cancelled.")
            return
        close_branch_connections([branch_alias(name)])
        with arguments.privilege_errors(), transaction.atomic(using=database):
            terminated = activity.terminate(connection, backends)
            with connection.cursor() as cursor:
                cursor.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(name)))
        # A backend that connected between the terminate and the commit found
        # the schema still there; it is the only one that can be on it.
        terminated += activity.terminate(
            connection, activity.branch_backends(connection, branches=[name])
        )
        if verbosity >= 1:
            self.stdout.write(
                self.style.SUCCESS(
                    f"Dropped branch {name!r} ({tables} table(s)); "
                    f"terminated {len(terminated)} backend(s)."
                )
            )

    def confirm(self, name: str, tables: int, backends: int) -> bool:
        answer = input(
            f"This will terminate {backends} backend(s) of branch {name!r} and drop its "
            f"schema with everything in it ({tables} table(s)).\n"
            "Type 'yes' to continue, or 'no' to cancel: "
        )
        return answer == "yes"
