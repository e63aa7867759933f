"""``branch_connections`` with ``PGBOUNCER_ADMIN``: Django's clients behind real PgBouncers.

The poolers are those of ``tests/test_pooler.py`` (1.18 and 1.24, transaction
pooling over 3 server connections): clients beyond the server connections
wait, which only PgBouncer's ``SHOW CLIENTS`` can tell.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from django.core.checks import Error
from django.core.management.base import CommandError
from django.test import override_settings

from branching_ops.checks import check_pgbouncer_admin
from branching_ops.management.commands.branch_connections import Command
from branching_ops.pgbouncer import PoolerClients
from branching_ops.pgbouncer import branch_clients
from branching_ops.testing.pgbouncer import PgBouncer
from branching_ops.testing.processes import free_port
from branching_ops.testing.processes import wait_until
from tests import test_pooler
from tests.conftest import APP_ROLE
from tests.operations import normalized
from tests.operations import run

pooler = test_pooler.pooler
pytestmark = pytest.mark.usefixtures("drop_schemas")

HELD = {  # what the ``held`` fixture leaves on the pooler
    "alpha": PoolerClients(clients=2, waiting=0),
    "beta": PoolerClients(clients=1, waiting=0),
    "delta": PoolerClients(clients=1, waiting=0),
    "gamma": PoolerClients(clients=2, waiting=1),
}


def settle(bouncer: PgBouncer, dbname: str) -> None:
    """No server connection left from an earlier test: each would count as its last branch."""
    with psycopg.connect(
        f"host={bouncer.host} port={bouncer.port} dbname={dbname} user={APP_ROLE}",
        autocommit=True,
    ) as first:
        first.execute("SELECT 1")  # PgBouncer's first server connection, for its parameters
    with bouncer.admin() as console:
        console.execute("RECONNECT")
    wait_until(lambda: not bouncer.show("SERVERS"), timeout=10, what="PgBouncer's servers")


@pytest.fixture
def held(pooler: PgBouncer, dbname: str) -> Iterator[PgBouncer]:
    """Through the pooler: alpha in a transaction and idle, beta in a transaction, gamma in
    a transaction and one waiting for a server connection (all 3 are taken), delta idle."""
    settle(pooler, dbname)
    opened: list[psycopg.Connection[Any]] = []

    def client(application_name: str, *, in_transaction: bool = False) -> psycopg.Connection[Any]:
        connection = psycopg.connect(
            f"host={pooler.host} port={pooler.port} dbname={dbname} user={APP_ROLE}",
            application_name=application_name,
            autocommit=True,
            prepare_threshold=None,
        )
        opened.append(connection)
        if in_transaction:
            connection.execute("BEGIN")
            connection.execute("SELECT 1")  # holds a server connection until it ends
        return connection

    try:
        client("branch:alpha", in_transaction=True)
        client("branch:alpha")
        client("myproject/branch:beta", in_transaction=True)
        client("branch:gamma", in_transaction=True)
        client("branch:gamma").pgconn.send_query(b"SELECT 1")
        client("branch:delta")
        client("myproject")  # not a branch
        wait_until(
            lambda: branch_clients(pooler.admin_conninfo, dbname) == HELD,
            timeout=10,
            what=f"PgBouncer's clients to be {HELD}",
        )
        with override_settings(BRANCHING_OPS={"PGBOUNCER_ADMIN": pooler.admin_conninfo}):
            yield pooler
    finally:
        for connection in reversed(opened):
            connection.close()


def test_pooler_clients_beside_server_connections(held: PgBouncer, dbname: str) -> None:
    output = run("branch_connections")

    assert normalized(output) == (
        "BRANCH  CONNECTIONS  ACTIVE  IDLE  IDLE IN TX  OLDEST   LONGEST IDLE  "
        "POOLER CLIENTS  WAITING  CLIENTS\n"
        "alpha             1       0     0           1  H:MM:SS  H:MM:SS                    "
        "2        0  127.0.0.1\n"
        "beta              1       0     0           1  H:MM:SS  H:MM:SS                    "
        "1        0  127.0.0.1\n"
        "delta             0       0     0           0  -        -                          "
        "1        0\n"
        "gamma             1       0     0           1  H:MM:SS  H:MM:SS                    "
        "2        1  127.0.0.1\n"
        "\n"
        "3 server connection(s) and 6 PgBouncer client(s) (1 waiting) on 4 branch(es) "
        f"of database {dbname!r}.\n"
    )


def test_the_branch_filter_applies_to_pooler_clients(held: PgBouncer) -> None:
    output = run("branch_connections", branch=["delta"], verbosity=0)

    assert output == (
        "BRANCH  CONNECTIONS  ACTIVE  IDLE  IDLE IN TX  OLDEST  LONGEST IDLE  "
        "POOLER CLIENTS  WAITING  CLIENTS\n"
        "delta             0       0     0           0  -       -                          "
        "1        0\n"
    )


def test_pooler_clients_in_json(held: PgBouncer, dbname: str) -> None:
    data = json.loads(run("branch_connections", json=True))

    assert data["database"] == dbname
    keys = ("branch", "connections", "idle_in_transaction", "pooler_clients", "pooler_waiting")
    assert [tuple(b[key] for key in keys) for b in data["branches"]] == [
        ("alpha", 1, 1, 2, 0),
        ("beta", 1, 1, 1, 0),
        ("delta", 0, 0, 1, 0),
        ("gamma", 1, 1, 2, 1),
    ]
    delta = data["branches"][2]
    assert delta == {
        "branch": "delta",
        "connections": 0,
        "active": 0,
        "idle": 0,
        "idle_in_transaction": 0,
        "oldest_seconds": None,
        "longest_idle_seconds": None,
        "pooler_clients": 1,
        "pooler_waiting": 0,
        "clients": [],
        "backends": [],
    }


def test_nothing_on_server_or_pooler(pooler: PgBouncer, dbname: str) -> None:
    settle(pooler, dbname)
    with override_settings(BRANCHING_OPS={"PGBOUNCER_ADMIN": pooler.admin_conninfo}):
        assert run("branch_connections") == (
            f"No branch connections on database {dbname!r}, nor clients on PgBouncer.\n"
        )
        assert json.loads(run("branch_connections", json=True)) == {
            "database": dbname,
            "branches": [],
        }


def test_without_the_setting_nothing_changes(held: PgBouncer) -> None:
    with override_settings(BRANCHING_OPS={}):
        data = json.loads(run("branch_connections", json=True))

    assert [b["branch"] for b in data["branches"]] == ["alpha", "beta", "gamma"]
    assert "pooler_clients" not in data["branches"][0]


def test_a_console_that_cannot_be_reached_is_a_command_error(dbname: str) -> None:
    port = free_port()
    conninfo = f"host=127.0.0.1 port={port} dbname=pgbouncer user=postgres"

    with (
        override_settings(BRANCHING_OPS={"PGBOUNCER_ADMIN": conninfo}),
        pytest.raises(CommandError) as excinfo,
    ):
        run("branch_connections")

    assert str(excinfo.value) == (
        "Cannot read the clients on PgBouncer's admin console "
        "(BRANCHING_OPS['PGBOUNCER_ADMIN']): connection failed: connection to server at "
        f'"127.0.0.1", port {port} failed: Connection refused Is the server running on that '
        "host and accepting TCP/IP connections?"
    )


def test_a_malformed_setting_is_a_command_error(dbname: str) -> None:
    with (
        override_settings(BRANCHING_OPS={"PGBOUNCER_ADMIN": "host=127.0.0.1 port=6432"}),
        pytest.raises(CommandError) as excinfo,
    ):
        run("branch_connections")

    assert str(excinfo.value) == (
        "BRANCHING_OPS['PGBOUNCER_ADMIN'] must name the admin console's database: "
        "dbname=pgbouncer (branching_ops.E023)."
    )


def test_a_console_that_refuses_the_user_is_a_command_error(pooler: PgBouncer) -> None:
    conninfo = pooler.admin_conninfo.replace("user=postgres", f"user={APP_ROLE}")

    with (
        override_settings(BRANCHING_OPS={"PGBOUNCER_ADMIN": conninfo}),
        pytest.raises(CommandError) as excinfo,
    ):
        run("branch_connections")

    assert str(excinfo.value) == (
        "Cannot read the clients on PgBouncer's admin console "
        "(BRANCHING_OPS['PGBOUNCER_ADMIN']): connection failed: connection to server at "
        f'"127.0.0.1", port {pooler.port} failed: FATAL: not allowed'
    )


def test_from_the_command_line_exit_status_1_and_no_traceback(
    capsys: pytest.CaptureFixture[str], dbname: str
) -> None:
    conninfo = f"host=127.0.0.1 port={free_port()} dbname=pgbouncer user=postgres"

    with (
        override_settings(BRANCHING_OPS={"PGBOUNCER_ADMIN": conninfo}),
        pytest.raises(SystemExit) as excinfo,
    ):
        Command().run_from_argv(["manage.py", "branch_connections"])

    assert excinfo.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("CommandError: Cannot read the clients on PgBouncer's admin console")
    assert "Traceback" not in err


HINT = (
    "None, or the admin console of the PgBouncer in front of the database, "
    "e.g. 'host=127.0.0.1 port=6432 dbname=pgbouncer user=pgbouncer'."
)


@pytest.mark.parametrize(
    ("value", "error"),
    [
        (None, None),
        ("host=127.0.0.1 port=6432 dbname=pgbouncer user=postgres", None),
        ("postgresql://postgres@127.0.0.1:6432/pgbouncer", None),
        (6432, "must be a libpq connection string or URL, not int"),
        (
            "host=127.0.0.1 port",
            'is not a libpq connection string or URL: missing "=" after "port" in '
            "connection info string",
        ),
        (
            "host=127.0.0.1 port=6432 dbname=app",
            "must name the admin console's database: dbname=pgbouncer",
        ),
        ("host=127.0.0.1 port=6432", "must name the admin console's database: dbname=pgbouncer"),
    ],
)
def test_e023_pgbouncer_admin(value: object, error: str | None) -> None:
    with override_settings(BRANCHING_OPS={"PGBOUNCER_ADMIN": value}):
        errors = check_pgbouncer_admin(None)

    expected = [
        Error(f"BRANCHING_OPS['PGBOUNCER_ADMIN'] {error}.", hint=HINT, id="branching_ops.E023")
    ]
    assert errors == (expected if error else [])
