"""One NetBox instance for the session; every figure measured is printed at the end."""

from __future__ import annotations

import os
from collections.abc import Callable
from collections.abc import Iterator
from typing import Any

import django
import psycopg
import pytest

from branching_ops.testing.postgres import running_postgres
from branching_ops.testing.redis import running_redis
from tests_netbox.instance import DBNAME
from tests_netbox.instance import ROLE
from tests_netbox.instance import NetBox
from tests_netbox.instance import Setting
from tests_netbox.instance import start_netbox
from tests_netbox.scenarios import FIGURES
from tests_netbox.scenarios import MAX_CONNECTIONS
from tests_netbox.scenarios import figures_table


@pytest.fixture(scope="session")
def netbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NetBox]:
    with (
        running_postgres(max_connections=MAX_CONNECTIONS) as postgres,
        running_redis() as redis,
    ):
        instance = start_netbox(postgres, redis, tmp_path_factory.mktemp("netbox-root"))
        TIMINGS.update(instance.timings)
        yield instance


TIMINGS: dict[str, float] = {}

Open = Callable[..., psycopg.Connection[Any]]


@pytest.fixture
def open_backend(netbox: NetBox) -> Iterator[Open]:
    """``open_backend(application_name)``: a backend of NetBox's database, as NetBox's role."""
    opened: list[psycopg.Connection[Any]] = []

    def connect(application_name: str) -> psycopg.Connection[Any]:
        connection = psycopg.connect(
            netbox.postgres.conninfo(DBNAME, user=ROLE),
            application_name=application_name,
            autocommit=True,
        )
        opened.append(connection)
        return connection

    yield connect
    for connection in opened:
        connection.cancel()  # a backend in pg_sleep() would outlive its client
        connection.close()


@pytest.fixture(scope="session")
def netbox_process(netbox: NetBox) -> None:
    """This process becomes NetBox with the adapter (CONN_MAX_AGE 0), for in-process tests."""
    environment = netbox.env(Setting(adapter=True, conn_max_age=0))
    os.environ.update(
        {key: value for key, value in environment.items() if key.startswith(("NETBOX", "DJANGO"))}
    )
    django.setup()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if TIMINGS:
        terminalreporter.write_sep("=", "NetBox instance set-up")
        for step, seconds in TIMINGS.items():
            terminalreporter.write_line(f"{step}: {seconds:.0f} s")
    if FIGURES:
        terminalreporter.write_sep("=", "NetBox figures: stock vs adapter")
        terminalreporter.write_line(figures_table())


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """A run that selects no test (``-k`` matching nothing) is not a failure, as in tests/."""
    if exitstatus == pytest.ExitCode.NO_TESTS_COLLECTED:
        session.exitstatus = pytest.ExitCode.OK
