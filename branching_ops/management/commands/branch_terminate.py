"""``manage.py branch_terminate``: end branch backends; a dry run unless ``--yes``."""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandParser

from branching_ops import activity
from branching_ops.management import arguments
from branching_ops.management import output
from branching_ops.management.base import BranchCommand


class Command(BranchCommand):
    help = (
        "Terminate this database's branch backends that match the filters. "
        "Only shows what it would end unless --yes is given."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        arguments.add_filter_arguments(parser)
        parser.add_argument(
            "--yes", action="store_true", help="Terminate them (without it: a dry run)."
        )

    def handle(
        self,
        *args: Any,
        branch: list[str],
        state: list[str],
        idle_longer_than: float | None,
        database: str,
        json: bool,
        yes: bool,
        verbosity: int,
        **options: Any,
    ) -> None:
        connection, backends = arguments.filtered_backends(
            database, branch, state, idle_longer_than
        )
        terminated: list[int] = []
        if yes:
            arguments.check_can_terminate(connection, backends)
            with arguments.privilege_errors():
                terminated = activity.terminate(connection, backends)
        dbname = connection.settings_dict["NAME"]
        if json:
            self.stdout.write(
                output.to_json(
                    {
                        "database": dbname,
                        "dry_run": not yes,
                        "backends": [output.backend_json(backend) for backend in backends],
                        "terminated": terminated,
                    }
                )
            )
            return
        if verbosity < 1:
            return
        if not backends:
            self.stdout.write(f"No branch backends match on database {dbname!r}.")
            return
        self.stdout.write(output.backend_table(backends))
        if not yes:
            self.stdout.write(
                f"\nWould terminate {len(backends)} branch backend(s) of database {dbname!r}. "
                "Run again with --yes to terminate them."
            )
            return
        self.stdout.write(
            self.style.SUCCESS(
                f"\nTerminated {len(terminated)} branch backend(s) of database {dbname!r}."
            )
        )
        if len(terminated) < len(backends):
            self.stdout.write(
                f"{len(backends) - len(terminated)} had already exited or did not exit "
                f"within {activity.TERMINATE_TIMEOUT_MS // 1000} s."
            )
