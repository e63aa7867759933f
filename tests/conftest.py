from __future__ import annotations

import os
from collections.abc import Callable
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from django.conf import settings
from django.db import connections
from psycopg import sql
from rq import Queue

from branching_ops.databases import BranchDatabases
from branching_ops.testing.postgres import PostgresServer
from branching_ops.testing.postgres import running_postgres
from branching_ops.testing.redis import RedisServer
from branching_ops.testing.redis import running_redis
from branching_ops.tracking import close_branch_connections
from tests.backends import BranchBackends

pytest_plugins = ["pytester"]

# Low on purpose: a leak runs into "too many clients" quickly.
MAX_CONNECTIONS = 40
APP_ROLE = "app"


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """The suite's own PostgreSQL, started once; exported for subprocesses."""
    with running_postgres(max_connections=MAX_CONNECTIONS) as server:
        with server.connect() as setup:
            # The application role is not a superuser: superusers may use the
            # reserved slots, and the tests want the ordinary limit.
            setup.execute(f"CREATE ROLE {APP_ROLE} LOGIN CREATEDB")
        os.environ["BRANCHING_OPS_TEST_PGHOST"] = server.host
        os.environ["BRANCHING_OPS_TEST_PGPORT"] = str(server.port)
        yield server


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """The suite's own redis-server, started once; exported for subprocesses."""
    with running_redis() as server:
        os.environ["BRANCHING_OPS_TEST_REDIS_URL"] = server.url
        settings.RQ_QUEUES["default"]["URL"] = server.url
        yield server


@pytest.fixture
def queue(redis_server: RedisServer) -> Iterator[Queue]:
    """The ``default`` RQ queue on an empty Redis database."""
    client = redis_server.client()
    client.flushdb()
    yield Queue("default", connection=client)
    client.close()


@pytest.fixture(scope="session")
def django_db_modify_db_settings(postgres: PostgresServer) -> None:
    # settings.DATABASES is the very dict Django's connections read, so the
    # address reaches every connection created from here on.
    settings.DATABASES["default"].update(HOST=postgres.host, PORT=str(postgres.port))


@pytest.fixture
def branch_backends(postgres: PostgresServer, transactional_db: None) -> Iterator[BranchBackends]:
    """This test database's branch backends, read from the server."""
    backends = BranchBackends(postgres, connections["default"].settings_dict["NAME"])
    yield backends
    backends.close()


Branches = Callable[..., None]


@pytest.fixture
def branches(postgres: PostgresServer, django_db_setup: None) -> Iterator[Branches]:
    """``branches("a", "b", ...)``: a real, empty schema for each branch a test connects to.

    A branch connection refuses a schema that does not exist (it would
    search ``public`` in its place), so the test creates the ones it uses,
    as ``branch_create`` would: committed (branch connections are other
    sessions) and owned by the application role. They go after the test.
    """
    dbname = str(connections["default"].settings_dict["NAME"])
    created: list[str] = []

    def create(*names: str) -> None:
        postgres.create_schemas(dbname, names, owner=APP_ROLE)
        created.extend(names)

    yield create
    if created:
        close_branch_connections()
        postgres.drop_schemas(dbname, created)


@pytest.fixture
def conn_max_age(monkeypatch: pytest.MonkeyPatch) -> Callable[[int], None]:
    """Set CONN_MAX_AGE of ``default`` (and so of branches created from now on)."""

    def set_age(seconds: int) -> None:
        monkeypatch.setitem(connections["default"].settings_dict, "CONN_MAX_AGE", seconds)
        connections["default"].close()  # reconnects with the new age

    return set_age


@pytest.fixture
def reroute_branches(
    monkeypatch: pytest.MonkeyPatch,
) -> Callable[..., None]:
    """Change the settings of branch aliases created from now on (e.g. HOST/PORT of a pooler).

    ``reroute(options={...}, **keys)``: ``keys`` replace top-level settings,
    ``options`` are merged into ``OPTIONS``. ``default`` keeps its settings.
    """
    databases = connections.settings
    assert isinstance(databases, BranchDatabases)
    build = databases.branch_settings

    def reroute(options: dict[str, Any] | None = None, **changes: Any) -> None:
        def branch_settings(name: str) -> dict[str, Any]:
            result = {**build(name), **changes}
            result["OPTIONS"] = {**result["OPTIONS"], **(options or {})}
            return result

        close_branch_connections()
        monkeypatch.setattr(databases, "branch_settings", branch_settings)

    return reroute


Connect = Callable[..., psycopg.Connection[Any]]


# -- the operations commands' tests: backends of other processes, schemas they make


@pytest.fixture
def dbname(transactional_db: None) -> str:
    name: str = connections["default"].settings_dict["NAME"]
    return name


@pytest.fixture
def connect(postgres: PostgresServer, dbname: str) -> Iterator[Connect]:
    """Open real client backends, as other processes would: ``connect(app_name, ...)``."""
    opened: list[psycopg.Connection[Any]] = []

    def open_backend(
        application_name: str, *, user: str = APP_ROLE, database: str = "", autocommit: bool = True
    ) -> psycopg.Connection[Any]:
        connection = psycopg.connect(
            postgres.conninfo(database or dbname, user=user),
            application_name=application_name,
            autocommit=autocommit,
        )
        opened.append(connection)
        return connection

    yield open_backend
    for connection in opened:
        connection.cancel()  # a backend in pg_sleep() would outlive its client
        connection.close()


@pytest.fixture
def drop_schemas(postgres: PostgresServer, dbname: str) -> Iterator[None]:
    """Flushing the test database keeps schemas; drop the ones a test made."""
    yield
    with postgres.connect(dbname) as cleanup:
        made = cleanup.execute(
            "SELECT nspname FROM pg_namespace "
            "WHERE nspname !~ '^(pg_|information_schema$|public$)'"
        ).fetchall()
        for (name,) in made:
            cleanup.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(str(name))))


@pytest.fixture
def three_branches(connect: Connect, branches: Branches) -> dict[int, str]:
    """alpha: 2 idle; beta: 1 idle in transaction (project prefix); gamma: 1 active."""
    branches("mine")
    backends = {
        "a1": connect("branch:alpha"),
        "a2": connect("branch:alpha"),
        "b1": connect("myproject/branch:beta", autocommit=False),
        "g1": connect("branch:gamma"),
    }
    backends["b1"].execute("SELECT 1")
    backends["g1"].pgconn.send_query(b"SELECT pg_sleep(60)")
    connect("myproject")  # not a branch
    connect("branch:alpha", database="postgres")  # another database
    with connections["schema_mine"].cursor() as cursor:  # this thread's own
        cursor.execute("SELECT 1")
    return {connection.info.backend_pid: name for name, connection in backends.items()}


@pytest.fixture(autouse=True)
def _close_branches_after_test() -> Iterator[None]:
    """Tests leave no branch connection on the main thread for the next one."""
    yield
    close_branch_connections()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """A run that selects no test (``-k`` matching nothing) is not a failure."""
    if exitstatus == pytest.ExitCode.NO_TESTS_COLLECTED:
        session.exitstatus = pytest.ExitCode.OK
