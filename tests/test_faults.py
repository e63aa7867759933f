"""Faults around the HTTP entry point: each ends with no leaked branch backend
and a working next request.

Restarts and terminated backends are driven through a real gunicorn, whose
threads hold the branch connections; the rest through Django's real WSGI
handler in this process, where the test can act between the view and
``request_finished``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.db import connections

from branching_ops.testing.postgres import PostgresServer
from branching_ops.tracking import tracked_aliases
from tests.backends import BranchBackends
from tests.conftest import Branches
from tests.servers import THREADS
from tests.servers import gunicorn
from tests.servers import running_server
from tests.wsgi import get
from tests.wsgi import start


@pytest.fixture
def dbname(transactional_db: None) -> str:
    return str(connections["default"].settings_dict["NAME"])


@pytest.fixture
def reconnect_after_restart(postgres: PostgresServer) -> Iterator[None]:
    """This process' own connections die with a restart: reopen them afterwards."""
    yield
    connections["default"].close()


def terminate_branch_backends(postgres: PostgresServer, dbname: str, name: str) -> int:
    with postgres.connect() as admin:
        rows = admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND application_name = %s",
            (dbname, f"branch:{name}"),
        ).fetchall()
    return len(rows)


@pytest.mark.slow
@pytest.mark.parametrize("health_checks", [True, False], ids=["health-checks", "no-health-checks"])
@pytest.mark.parametrize("fault", ["restart", "terminate"])
def test_server_threads_survive_lost_branch_connections(
    branch_backends: BranchBackends,
    postgres: PostgresServer,
    dbname: str,
    tmp_path: Path,
    fault: str,
    health_checks: bool,
    reconnect_after_restart: None,
    branches: Branches,
) -> None:
    branches("lost")
    env = {"BRANCHING_OPS_TEST_CONN_MAX_AGE": "60"}
    if health_checks:
        env["BRANCHING_OPS_TEST_CONN_HEALTH_CHECKS"] = "1"
    with running_server(gunicorn, dbname, tmp_path, **env) as server:
        # Every server thread holds a persistent connection to the branch.
        assert [status for status, _ in server.hold_every_thread("lost")] == [200] * THREADS
        if fault == "restart":
            postgres.restart()  # fast shutdown: every backend goes
            branch_backends.reconnect()
        else:
            assert terminate_branch_backends(postgres, dbname, "lost") == THREADS
        branch_backends.wait_for([])

        # The next request on each thread meets its lost connection.
        statuses = [status for status, _ in server.hold_every_thread("lost")]

        # With health checks, Django reconnects before the first query; without,
        # that query fails, exactly as it does for Django's own aliases, and
        # the connection is closed at the end of the request.
        assert statuses == [200 if health_checks else 503] * THREADS
        held = server.hold_every_thread("lost")
        assert [status for status, _ in held] == [200] * THREADS
        assert [state["tracked"] for _, state in held] == [1] * THREADS
        branch_backends.wait_for(["branch:lost"] * THREADS)  # the new ones, nothing stale
        server.stop()
        branch_backends.wait_for([])
        assert "Traceback" not in server.log_text()


def test_backend_terminated_between_two_requests_on_one_thread(
    branch_backends: BranchBackends,
    postgres: PostgresServer,
    dbname: str,
    conn_max_age: Callable[[int], None],
    caplog: pytest.LogCaptureFixture,
    branches: Branches,
) -> None:
    branches("term")
    conn_max_age(60)
    assert get("/branch/term/") == (200, "term,public")
    old_pid = connections["schema_term"].connection.info.backend_pid

    assert terminate_branch_backends(postgres, dbname, "term") == 1
    branch_backends.wait_for([])

    # No health checks: the first query on the dead socket fails the request
    # (as it would on Django's own aliases); the cleanup closes the connection.
    with caplog.at_level(logging.ERROR, logger="django.request"):
        assert get("/branch/term/")[0] == 500
    assert "terminating connection due to administrator command" in caplog.text
    assert tracked_aliases() == []

    assert get("/branch/term/") == (200, "term,public")
    assert connections["schema_term"].connection.info.backend_pid != old_pid
    branch_backends.wait_for(["branch:term"])


@pytest.mark.parametrize("cleanup", ["obsolete", "unusable"])
def test_database_unreachable_during_cleanup(
    branch_backends: BranchBackends,
    postgres: PostgresServer,
    conn_max_age: Callable[[int], None],
    caplog: pytest.LogCaptureFixture,
    reconnect_after_restart: None,
    cleanup: str,
    branches: Branches,
) -> None:
    """The server goes away between the view and ``request_finished``."""
    branches("down")
    if cleanup == "obsolete":
        conn_max_age(0)  # the cleanup closes the connection: a goodbye to nobody
        path, expected_status = "/branch/down/", 200
    else:
        conn_max_age(60)  # the view's error makes the cleanup ping the server first
        path, expected_status = "/count_t/down/", 500
    status, response = start(path)
    body = b"".join(response)
    assert status == expected_status
    branch_backends.wait_for(["branch:down"])

    postgres.stop()  # the port is closed
    try:
        with caplog.at_level(logging.DEBUG, logger="branching_ops"):
            response.close()  # request_finished: the cleanup must not raise
    finally:
        postgres.start()
    if cleanup == "obsolete":
        assert body == b"down,public"  # the response was complete before the fault

    assert "Closed branch connection schema_down (obsolete)." in caplog.text
    assert not [r for r in caplog.records if r.name == "branching_ops" and r.levelno >= 30]
    assert tracked_aliases() == []
    branch_backends.reconnect()
    assert get("/branch/down/") == (200, "down,public")
    branch_backends.wait_for(["branch:down"] if cleanup == "unusable" else [])


def test_atomic_spanning_request_finished_is_closed_at_the_next_boundary(
    branch_backends: BranchBackends, caplog: pytest.LogCaptureFixture, branches: Branches
) -> None:
    """A streamed response whose generator is inside ``transaction.atomic``."""
    branches("streamed")
    status, response = start("/stream/streamed/")
    chunks = iter(response)
    assert (status, next(chunks)) == (200, b"0")

    # The client goes away mid-stream: the server closes the response, which
    # sends request_finished while the generator still holds the transaction.
    with caplog.at_level(logging.INFO, logger="branching_ops"):
        response.close()

    assert "Kept branch connection schema_streamed open: it is inside an atomic block." in (
        caplog.text
    )
    assert tracked_aliases() == ["schema_streamed"]
    assert backend_states(branch_backends, "streamed") == ["idle in transaction"]

    # The server drops the response: the generator ends, the transaction
    # rolls back, and the next request boundary closes the connection.
    del chunks, response
    assert backend_states(branch_backends, "streamed") == ["idle"]
    assert get("/ok/") == (200, "ok")
    assert tracked_aliases() == []
    branch_backends.wait_for([])


def backend_states(branch_backends: BranchBackends, name: str) -> list[str]:
    rows = branch_backends.monitor.execute(
        "SELECT state FROM pg_stat_activity WHERE datname = %s AND application_name = %s",
        (branch_backends.dbname, f"branch:{name}"),
    ).fetchall()
    return [str(state) for (state,) in rows]


def test_schema_dropped_under_an_open_connection_without_health_checks(
    branch_backends: BranchBackends,
    conn_max_age: Callable[[int], None],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The remaining window without ``CONN_HEALTH_CHECKS``: until the connection errs."""
    conn_max_age(60)
    admin = connections["default"]
    try:
        with admin.cursor() as cursor:
            cursor.execute("CREATE SCHEMA recreated")
            cursor.execute("CREATE TABLE recreated.t AS SELECT generate_series(1, 2) AS id")
        assert get("/count_t/recreated/") == (200, "2")
        pid = connections["schema_recreated"].connection.info.backend_pid

        with admin.cursor() as cursor:
            cursor.execute("DROP SCHEMA recreated CASCADE")

        # The open connection now searches public: a query that public can
        # answer would succeed here. This one fails, and the failure makes the
        # end of the request ask whether the connection is usable: it is not.
        with caplog.at_level(logging.WARNING):
            assert get("/count_t/recreated/")[0] == 500
        assert 'relation "t" does not exist' in caplog.text
        assert "Branch connection schema_recreated is no longer usable" in caplog.text
        branch_backends.wait_for([])

        # The next request reconnects, and the new connection is refused.
        caplog.clear()
        with caplog.at_level(logging.ERROR, logger="django.request"):
            assert get("/branch/recreated/")[0] == 500
        assert "BranchDoesNotExist: Branch 'recreated' does not exist" in caplog.text

        with admin.cursor() as cursor:
            cursor.execute("CREATE SCHEMA recreated")
            cursor.execute("CREATE TABLE recreated.t AS SELECT 1 AS id")

        assert get("/count_t/recreated/") == (200, "1")
        assert connections["schema_recreated"].connection.info.backend_pid != pid
        branch_backends.wait_for(["branch:recreated"])
    finally:
        with admin.cursor() as cursor:
            cursor.execute("DROP SCHEMA IF EXISTS recreated CASCADE")


@pytest.mark.slow
def test_branch_dropped_under_persistent_connections_with_health_checks(
    branch_backends: BranchBackends,
    branches: Branches,
    postgres: PostgresServer,
    dbname: str,
    tmp_path: Path,
) -> None:
    """Every server thread holds a connection to the branch when its schema goes.

    Dropped behind the package's back (not with ``branch_drop``, which would
    end the connections): Django's health check finds each one unusable at
    the next request on its thread, the reconnect is refused, and no write
    lands in ``public``.
    """

    def create_branch() -> None:
        branches("vanishing")
        with postgres.connect(dbname) as admin:
            admin.execute("CREATE TABLE vanishing.testapp_note (LIKE testapp_note INCLUDING ALL)")
            admin.execute("ALTER TABLE vanishing.testapp_note OWNER TO app")

    def notes() -> dict[str, int]:
        """Rows of testapp_note per schema that has the table."""
        with postgres.connect(dbname) as admin:
            schemas = admin.execute(
                "SELECT table_schema FROM information_schema.tables "
                "WHERE table_name = 'testapp_note' ORDER BY 1"
            ).fetchall()
            return {
                str(schema): len(admin.execute(f"SELECT 1 FROM {schema}.testapp_note").fetchall())
                for (schema,) in schemas
            }

    create_branch()
    env = {"BRANCHING_OPS_TEST_CONN_MAX_AGE": "600", "BRANCHING_OPS_TEST_CONN_HEALTH_CHECKS": "1"}
    with running_server(gunicorn, dbname, tmp_path, **env) as server:
        first = server.hold_every_thread("vanishing", view="hold_note")
        assert [(status, body["error"]) for status, body in first] == [(200, None)] * THREADS
        threads = {body["thread"] for _, body in first}
        assert len(threads) == THREADS
        branch_backends.wait_for(["branch:vanishing"] * THREADS)

        with postgres.connect(dbname) as admin:
            admin.execute("DROP SCHEMA vanishing CASCADE")
        assert branch_backends() == ["branch:vanishing"] * THREADS  # still open

        failed = server.hold_every_thread("vanishing", view="hold_note")
        assert [(status, body["error"]) for status, body in failed] == [
            (503, "BranchDoesNotExist")
        ] * THREADS
        assert {body["thread"] for _, body in failed} == threads
        assert notes() == {"public": 0}
        branch_backends.wait_for([])  # discarded, and the reconnects refused

        create_branch()
        again = server.hold_every_thread("vanishing", view="hold_note")
        assert [(status, body["error"]) for status, body in again] == [(200, None)] * THREADS
        assert notes() == {"public": 0, "vanishing": THREADS}
        server.stop()
        branch_backends.wait_for([])
        log = server.log_text()
    assert log.count("is no longer usable: schema 'vanishing' has gone") == THREADS
    assert "Traceback" not in log
