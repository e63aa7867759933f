"""The HTTP entry point under real servers: gunicorn, waitress, uvicorn.

Each test starts a server as a subprocess against a real PostgreSQL, loads it
from a pool of client threads, samples the branch backends from
``pg_stat_activity`` while it runs, and asks the server what it still holds.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import django
import pytest
from django.db import connections

from branching_ops.testing.postgres import PostgresServer
from branching_ops.testing.postgres import running_postgres
from branching_ops.testing.processes import wait_until
from tests.backends import BranchBackends
from tests.conftest import APP_ROLE
from tests.conftest import Branches
from tests.hostile import HOSTILE_NAMES
from tests.servers import THREADS
from tests.servers import Command
from tests.servers import Result
from tests.servers import Sampler
from tests.servers import Server
from tests.servers import gunicorn
from tests.servers import running_server
from tests.servers import uvicorn
from tests.servers import waitress

CLIENTS = 8
REQUESTS, BRANCHES = 2000, 300


def round_robin(requests: int, branches: int, prefix: str = "/branch/") -> list[str]:
    """Every branch in turn (``rr_<i>``): a leak would hold one backend per branch per thread."""
    return [f"{prefix}rr_{i % branches}/" for i in range(requests)]


def round_robin_branches(branches: int) -> list[str]:
    return [f"rr_{i}" for i in range(branches)]


def sliding(requests: int, branches: int) -> list[str]:
    """Each branch (``sl_<i>``) hot for a moment, then never again: how branches come and go."""
    return [f"/branch/sl_{i * branches // requests}/" for i in range(requests)]


def assert_all_served(server: Server, results: list[Result]) -> None:
    failed = [(r.path, r.status, r.body[:200]) for r in results if r.status != 200]
    assert failed == [], f"{len(failed)} of {len(results)} requests failed: {failed[:5]}"
    assert "Traceback" not in server.log_text()


def report(label: str, results: list[Result], sampler: Sampler) -> None:
    seconds = max(r.end for r in results) - min(r.start for r in results)
    print(
        f"\n{label}: {len(results)} requests in {seconds:.1f} s, "
        f"peak branch backends {sampler.peak}"
    )


@pytest.fixture
def dbname(transactional_db: None) -> str:
    """The test database, which the server subprocesses use too."""
    return str(connections["default"].settings_dict["NAME"])


@pytest.mark.slow
@pytest.mark.parametrize("command", [gunicorn, waitress], ids=["gunicorn-gthread", "waitress"])
def test_wsgi_thread_pool_conn_max_age_0(
    branch_backends: BranchBackends,
    branches: Branches,
    dbname: str,
    tmp_path: Path,
    command: Command,
) -> None:
    branches(*round_robin_branches(BRANCHES))
    with running_server(command, dbname, tmp_path) as server:
        with Sampler(lambda: len(branch_backends())) as sampler:
            results = server.load(round_robin(REQUESTS, BRANCHES), CLIENTS)

        report(f"{command.__name__}, {THREADS} threads, CONN_MAX_AGE=0", results, sampler)
        assert_all_served(server, results)
        # One open connection per busy thread, plus backends whose client has
        # closed but which are still exiting; a leak climbs to the limit.
        assert 0 < sampler.peak <= 2 * THREADS
        branch_backends.wait_for([])
        held = server.hold_every_thread()
        assert [state["tracked"] for _, state in held] == [0] * THREADS
        assert len({state["thread"] for _, state in held}) == THREADS


@pytest.fixture(scope="module")
def roomy_postgres() -> Iterator[PostgresServer]:
    """A server with a slot for every thread and branch, so only the bound can fail.

    With ``CONN_MAX_AGE=2`` a thread keeps every branch it served in the last
    2 s: that is Django's contract, and more than the suite's server allows.
    """
    with running_postgres(max_connections=THREADS * BRANCHES + 20) as server:
        with server.connect() as setup:
            setup.execute(f"CREATE ROLE {APP_ROLE} LOGIN")
            setup.execute(f"CREATE DATABASE roomy OWNER {APP_ROLE}")
        server.create_schemas("roomy", [f"sl_{i}" for i in range(BRANCHES)], owner=APP_ROLE)
        yield server


@pytest.mark.slow
def test_gunicorn_gthread_conn_max_age_2(roomy_postgres: PostgresServer, tmp_path: Path) -> None:
    max_age = 2
    backends = BranchBackends(roomy_postgres, "roomy")
    env = {
        "BRANCHING_OPS_TEST_PGPORT": str(roomy_postgres.port),
        "BRANCHING_OPS_TEST_CONN_MAX_AGE": str(max_age),
    }
    try:
        with running_server(gunicorn, "roomy", tmp_path, **env) as server:
            sessions_before = sessions(backends)
            with Sampler(lambda: len(backends())) as sampler:
                results = server.load(sliding(REQUESTS, BRANCHES), CLIENTS)

            report("gunicorn gthread, CONN_MAX_AGE=2", results, sampler)
            assert_all_served(server, results)
            # At any moment, each thread holds at most the branches it served
            # within CONN_MAX_AGE (plus 1 s for its next request boundary).
            over = [
                (round(at - min(r.start for r in results), 2), count, bound)
                for at, count in sampler.samples
                if count > (bound := THREADS * young_branches(results, at, max_age + 1))
            ]
            assert over == []
            assert backends(), "connections younger than CONN_MAX_AGE are kept"

            time.sleep(max_age + 1)  # every connection ages past CONN_MAX_AGE
            held = server.hold_every_thread()

            assert [state["tracked"] for _, state in held] == [0] * THREADS
            assert len({state["thread"] for _, state in held}) == THREADS
            backends.wait_for([])

            # Young connections were reused: at most one per thread and branch,
            # where CONN_MAX_AGE=0 opens one per request.
            opened = sessions(backends) - sessions_before
            print(f"{opened} branch connections opened for {REQUESTS} requests")
            assert opened <= THREADS * BRANCHES
    finally:
        backends.close()


def sessions(backends: BranchBackends) -> int:
    """Sessions ever opened on the database (counted when they end, at the latest)."""
    row = backends.monitor.execute(
        "SELECT sessions FROM pg_stat_database WHERE datname = %s", (backends.dbname,)
    ).fetchone()
    assert row is not None
    return int(str(row[0]))


def young_branches(results: list[Result], at: float, window: float) -> int:
    """How many branches had a request start within ``window`` seconds before ``at``."""
    return len({r.path for r in results if at - window <= r.start <= at})


def wait_for_state(server: Server, **expected: int) -> dict[str, int]:
    """Poll the server's ``state`` until it shows ``expected``; fail showing the last."""
    last: dict[str, int] = {}

    def matches() -> bool:
        nonlocal last
        last = server.json("/state/")
        return all(last[key] == value for key, value in expected.items())

    try:
        wait_until(matches, timeout=10, what=f"state {expected}")
    except TimeoutError:
        raise AssertionError(f"server state {last} never matched {expected}") from None
    return last


@pytest.mark.slow
@pytest.mark.parametrize("prefix", ["/branch/", "/async/branch/"], ids=["sync", "async"])
def test_uvicorn_asgi_conn_max_age_0(
    branch_backends: BranchBackends, branches: Branches, dbname: str, tmp_path: Path, prefix: str
) -> None:
    branches(*round_robin_branches(200))
    with running_server(uvicorn, dbname, tmp_path) as server:
        before = server.json("/state/")
        with Sampler(lambda: len(branch_backends())) as sampler:
            results = server.load(round_robin(1000, 200, prefix), CLIENTS)

        report(f"uvicorn, {prefix} views, CONN_MAX_AGE=0", results, sampler)
        assert_all_served(server, results)
        assert 0 < sampler.peak <= 2 * CLIENTS
        branch_backends.wait_for([])
        # Each request ran on a thread of its own; nothing of them is left.
        assert len({r.body for r in results}) == 200
        wait_for_state(server, branch_wrappers=0, threads=before["threads"])


# Not marked slow: CI runs slow tests on Django 6.1 only, where this does not apply.
@pytest.mark.skipif(
    not (5, 0) <= django.VERSION[:2] < (6, 1),
    reason="Django runs an ASGI view in the handler's own context before 5.0 and again "
    "from 6.1 on (in a TaskGroup, not in a task with a copy of the context), so a "
    "context-local tracker happens to hold there",
)
def test_asgi_test_catches_a_context_local_tracker(
    branch_backends: BranchBackends, branches: Branches, dbname: str, tmp_path: Path
) -> None:
    """The regression the ASGI test guards against, shown failing it.

    Django 5.0 to 6.0's ASGI handler runs the view in a task (to notice a
    client disconnect): the view's thread records the connection in a copy
    of the context that ``response.close()`` and its cleanup never see.
    Django 6.1 awaits the view in the handler's own context again (inside an
    ``asyncio.TaskGroup``), where a context-local tracker holds by luck; the
    thread-critical tracker does not depend on that.
    """
    branches(*round_robin_branches(100))
    env = {"BRANCHING_OPS_TEST_CONTEXT_LOCAL_TRACKER": "1"}
    with running_server(uvicorn, dbname, tmp_path, **env) as server:
        with Sampler(lambda: len(branch_backends())) as sampler:
            results = server.load(round_robin(400, 100), CLIENTS)
        state = server.json("/state/")

    failed = [r for r in results if r.status != 200]
    print(f"\ncontext-local tracker: {len(failed)} of 400 failed, peak {sampler.peak}, {state}")
    assert failed or sampler.peak > 2 * CLIENTS or state["branch_wrappers"] > 0


@pytest.fixture(scope="module")
def bare_server(
    postgres: PostgresServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """gunicorn on the ``postgres`` database: for requests that must never connect."""
    with running_server(gunicorn, "postgres", tmp_path_factory.mktemp("bare")) as server:
        yield server


@pytest.mark.parametrize("name", HOSTILE_NAMES)
@pytest.mark.parametrize("prefix", ["/branch/", "/async/branch/"], ids=["sync", "async"])
def test_hostile_names_in_urls_answer_400_without_connecting(
    bare_server: Server, name: str, prefix: str
) -> None:
    status, body = bare_server.get(prefix + quote(name, safe="") + "/")

    if name == "" or "/" in name:
        assert status == 404  # no route matches: the view never sees it
    else:
        assert status == 400
        assert f"{name!r} is not a valid branch name" in body
    assert bare_server.json("/state/")["branch_wrappers"] == 0
