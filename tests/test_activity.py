"""``branching_ops.activity``: which server backends serve which branch, against a real server."""

from __future__ import annotations

from django.db import connections

from branching_ops import activity
from branching_ops.testing.postgres import PostgresServer
from tests.conftest import Branches
from tests.conftest import Connect


def names(backends: list[activity.Backend]) -> list[tuple[str, str]]:
    return [(backend.branch, backend.application_name) for backend in backends]


def test_branch_backends_are_told_by_their_application_name(connect: Connect) -> None:
    connect("branch:alpha")
    connect("myproject/branch:beta")
    connect("branch:gamma - 127.0.0.1:6432")  # PgBouncer's application_name_add_host
    for other in ("myproject", "mybranch:x", "myproject branch:x", "branch:Upper", "branch:"):
        connect(other)

    backends = activity.branch_backends(connections["default"])

    assert names(backends) == [
        ("alpha", "branch:alpha"),
        ("beta", "myproject/branch:beta"),
        ("gamma", "branch:gamma - 127.0.0.1:6432"),
    ]
    assert all(backend.can_signal and backend.user == "app" for backend in backends)


def test_this_threads_own_connections_only_on_request(
    connect: Connect, branches: Branches
) -> None:
    branches("mine")
    connect("branch:other")
    with connections["schema_mine"].cursor() as cursor:
        cursor.execute("SELECT 1")

    assert names(activity.branch_backends(connections["default"])) == [("other", "branch:other")]
    assert names(activity.branch_backends(connections["default"], include_own=True)) == [
        ("mine", "branch:mine"),
        ("other", "branch:other"),
    ]


def test_another_database_through_a_monitoring_connection(
    connect: Connect, postgres: PostgresServer, dbname: str
) -> None:
    """A raw psycopg connection to another database reads the same rows."""
    connect("branch:alpha")
    connect("branch:elsewhere", database="postgres")

    with postgres.connect() as monitor:  # connected to "postgres"
        here = activity.branch_backends(monitor, database=dbname, include_own=True)
        there = activity.branch_backends(monitor, include_own=True)

    assert names(here) == [("alpha", "branch:alpha")]
    assert names(there) == [("elsewhere", "branch:elsewhere")]


def test_filters(connect: Connect) -> None:
    connect("branch:alpha")
    connect("branch:beta").pgconn.send_query(b"SELECT pg_sleep(60)")

    default = connections["default"]

    def branches(backends: list[activity.Backend]) -> list[str]:
        return [backend.branch for backend in backends]

    assert branches(activity.branch_backends(default, branches=["beta"])) == ["beta"]
    assert branches(activity.branch_backends(default, states=["active"])) == ["beta"]
    assert branches(activity.branch_backends(default, idle_longer_than=0)) == ["alpha"]
    assert branches(activity.branch_backends(default, idle_longer_than=3600)) == []


def test_terminate_answers_the_pids_that_ended(connect: Connect) -> None:
    connect("branch:doomed")
    [backend] = activity.branch_backends(connections["default"])

    assert activity.terminate(connections["default"], [backend]) == [backend.pid]
    assert activity.branch_backends(connections["default"]) == []
    # Gone already: nothing more ends.
    assert activity.terminate(connections["default"], [backend]) == []
    assert activity.terminate(connections["default"], []) == []
