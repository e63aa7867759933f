"""``manage.py branch_connections``: what is open on the server, and on PgBouncer, per branch."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from itertools import groupby
from typing import Any

from django.core.management.base import CommandError
from django.core.management.base import CommandParser

from branching_ops import activity
from branching_ops import pgbouncer
from branching_ops.conf import conf
from branching_ops.management import arguments
from branching_ops.management import output
from branching_ops.management.base import BranchCommand


@dataclass(frozen=True)
class BranchSummary:
    branch: str
    backends: list[activity.Backend]
    pooler: pgbouncer.PoolerClients | None = None

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
        pooler = () if self.pooler is None else (self.pooler.clients, self.pooler.waiting)
        return (
            self.branch,
            len(self.backends),
            self.count("active"),
            self.count("idle"),
            self.count(*activity.IDLE_STATES[1:]),
            output.format_duration(self.oldest),
            output.format_duration(self.longest_idle),
            *pooler,
            ", ".join(self.clients),
        )

    def as_json(self) -> dict[str, Any]:
        pooler = (
            {}
            if self.pooler is None
            else {"pooler_clients": self.pooler.clients, "pooler_waiting": self.pooler.waiting}
        )
        return {
            "branch": self.branch,
            "connections": len(self.backends),
            "active": self.count("active"),
            "idle": self.count("idle"),
            "idle_in_transaction": self.count(*activity.IDLE_STATES[1:]),
            "oldest_seconds": output.seconds(self.oldest),
            "longest_idle_seconds": output.seconds(self.longest_idle),
            **pooler,
            "clients": self.clients,
            "backends": [output.backend_json(backend) for backend in self.backends],
        }


HEADERS: tuple[str, ...] = (
    "BRANCH",
    "CONNECTIONS",
    "ACTIVE",
    "IDLE",
    "IDLE IN TX",
    "OLDEST",
    "LONGEST IDLE",
    "CLIENTS",
)
NO_CLIENTS = pgbouncer.PoolerClients()
POOLER_HEADERS: tuple[str, ...] = (*HEADERS[:-1], "POOLER CLIENTS", "WAITING", HEADERS[-1])


def pooler_clients(
    conninfo: str, database: str, branches: list[str]
) -> dict[str, pgbouncer.PoolerClients]:
    """The branch clients on PgBouncer's admin console; ``CommandError`` if it cannot be read."""
    if error := pgbouncer.conninfo_error(conninfo):
        raise CommandError(f"BRANCHING_OPS['PGBOUNCER_ADMIN'] {error} (branching_ops.E023).")
    try:
        counts = pgbouncer.branch_clients(conninfo, database)
    except pgbouncer.ConsoleError as exc:
        raise CommandError(
            f"Cannot read the clients on PgBouncer's admin console "
            f"(BRANCHING_OPS['PGBOUNCER_ADMIN']): {exc}"
        ) from exc
    return {name: c for name, c in counts.items() if not branches or name in branches}


class Command(BranchCommand):
    help = (
        "Show the branch connections open on the server right now, per branch, "
        "from pg_stat_activity: this database's backends whose application_name "
        "names a branch; with BRANCHING_OPS['PGBOUNCER_ADMIN'] also the client "
        "connections on PgBouncer, from SHOW CLIENTS."
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
        dbname = connection.settings_dict["NAME"]
        by_branch = {
            name: list(group) for name, group in groupby(backends, key=lambda b: b.branch)
        }
        console = conf.PGBOUNCER_ADMIN
        if console is None:
            summaries = [BranchSummary(name, group) for name, group in by_branch.items()]
            headers, total = HEADERS, f"{len(backends)} connection(s)"
        else:
            clients = pooler_clients(console, dbname, branch)
            summaries = [
                BranchSummary(name, by_branch.get(name, []), clients.get(name, NO_CLIENTS))
                for name in sorted(by_branch.keys() | clients.keys())
            ]
            headers = POOLER_HEADERS
            total = (
                f"{len(backends)} server connection(s) and "
                f"{sum(c.clients for c in clients.values())} PgBouncer client(s) "
                f"({sum(c.waiting for c in clients.values())} waiting)"
            )
        if json:
            self.stdout.write(
                output.to_json({"database": dbname, "branches": [s.as_json() for s in summaries]})
            )
        elif not summaries:
            if verbosity >= 1:
                on_pooler = "" if console is None else ", nor clients on PgBouncer"
                self.stdout.write(f"No branch connections on database {dbname!r}{on_pooler}.")
        else:
            self.stdout.write(output.format_table(headers, [s.row() for s in summaries]))
            if verbosity >= 2 and backends:
                self.stdout.write("\n" + output.backend_table(backends))
            if verbosity >= 1:
                self.stdout.write(
                    f"\n{total} on {len(summaries)} branch(es) of database {dbname!r}."
                )
