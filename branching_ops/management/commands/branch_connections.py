"""``manage.py branch_connections``: what is open on the server, per branch."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from itertools import groupby
from typing import Any

from django.core.management.base import CommandParser

from branching_ops import activity
from branching_ops.management import arguments
from branching_ops.management import output
from branching_ops.management.base import BranchCommand


@dataclass(frozen=True)
class BranchSummary:
    branch: str
    backends: list[activity.Backend]

    def count(self, *states: str) -> int:
        return sum(backend.state in states for backend in self.backends)

    @property
    def oldest(self) -> timedelta | None:
        return max((b.age for b in self.backends if b.age is not None), default=None)

    @property
    def longest_idle(self) -> timedelta | None:
        return max((b.idle for b in self.backends if b.idle is not None), default=None)

    @property
    def clients(self) -> list[str]:
        return sorted({backend.client for backend in self.backends if backend.client})

    def row(self) -> tuple[str | int, ...]:
        return (
            self.branch,
            len(self.backends),
            self.count("active"),
            self.count("idle"),
            self.count(*activity.IDLE_STATES[1:]),
            output.format_duration(self.oldest),
            output.format_duration(self.longest_idle),
            ", ".join(self.clients),
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "branch": self.branch,
            "connections": len(self.backends),
            "active": self.count("active"),
            "idle": self.count("idle"),
            "idle_in_transaction": self.count(*activity.IDLE_STATES[1:]),
            "oldest_seconds": output.seconds(self.oldest),
            "longest_idle_seconds": output.seconds(self.longest_idle),
            "clients": self.clients,
            "backends": [output.backend_json(backend) for backend in self.backends],
        }


HEADERS = (
    "BRANCH",
    "CONNECTIONS",
    "ACTIVE",
    "IDLE",
    "IDLE IN TX",
    "OLDEST",
    "LONGEST IDLE",
    "CLIENTS",
)


class Command(BranchCommand):
    help = (
        "Show the branch connections open on the server right now, per branch, "
        "from pg_stat_activity: this database's backends whose application_name "
        "names a branch."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        arguments.add_filter_arguments(parser)

    def handle(
        self,
        *args: Any,
        branch: list[str],
        state: list[str],
        idle_longer_than: float | None,
        database: str,
        json: bool,
        verbosity: int,
        **options: Any,
    ) -> None:
        connection, backends = arguments.filtered_backends(
            database, branch, state, idle_longer_than
        )
        summaries = [
            BranchSummary(name, list(group))
            for name, group in groupby(backends, key=lambda backend: backend.branch)
        ]
        dbname = connection.settings_dict["NAME"]
        if json:
            self.stdout.write(
                output.to_json({"database": dbname, "branches": [s.as_json() for s in summaries]})
            )
        elif not summaries:
            if verbosity >= 1:
                self.stdout.write(f"No branch connections on database {dbname!r}.")
        else:
            self.stdout.write(output.format_table(HEADERS, [s.row() for s in summaries]))
            if verbosity >= 2:
                self.stdout.write("\n" + output.backend_table(backends))
            if verbosity >= 1:
                self.stdout.write(
                    f"\n{len(backends)} connection(s) on {len(summaries)} branch(es) "
                    f"of database {dbname!r}."
                )
