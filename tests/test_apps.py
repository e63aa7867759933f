"""The HTTP entry point (`apps.py`'s request receivers), through Django's real WSGI handler."""

from __future__ import annotations

import time
from collections.abc import Callable
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import pytest
from django.db import connections

from branching_ops.apps import REQUEST_RECEIVERS
from branching_ops.testing.postgres import PostgresServer
from branching_ops.tracking import close_old_branch_connections
from branching_ops.tracking import stored_wrapper
from branching_ops.tracking import tracked_aliases
from tests.backends import BranchBackends
from tests.conftest import Branches
from tests.servers import Sampler
from tests.wsgi import get


@contextmanager
def receivers_disconnected() -> Iterator[None]:
    """Run without this package's request receivers: plain Django."""
    for signal, dispatch_uid in REQUEST_RECEIVERS:
        signal.disconnect(dispatch_uid=dispatch_uid)
    try:
        yield
    finally:
        for signal, dispatch_uid in REQUEST_RECEIVERS:
            signal.connect(close_old_branch_connections, dispatch_uid=dispatch_uid)


def test_sequential_branches_leave_no_backend(
    branch_backends: BranchBackends, branches: Branches
) -> None:
    branches(*[f"seq_{i}" for i in range(100)])
    for i in range(100):
        assert get(f"/branch/seq_{i}/") == (200, f"seq_{i},public")

    branch_backends.wait_for([])
    assert tracked_aliases() == []


def test_without_receivers_branches_leak(
    branch_backends: BranchBackends, branches: Branches
) -> None:
    branches(*[f"leak_{i}" for i in range(20)])
    with receivers_disconnected():
        for i in range(20):
            assert get(f"/branch/leak_{i}/") == (200, f"leak_{i},public")

        branch_backends.wait_for([f"branch:leak_{i}" for i in range(20)])

    print(f"\nleaked without receivers: {len(branch_backends())} of 20")


def test_backend_carries_branch_application_name(
    branch_backends: BranchBackends, branches: Branches
) -> None:
    branches("named")
    with connections["schema_named"].cursor() as cursor:
        cursor.execute("SELECT 1")

    branch_backends.wait_for(["branch:named"])


def test_conn_max_age_follows_default(
    branch_backends: BranchBackends, conn_max_age: Callable[[int], None], branches: Branches
) -> None:
    branches("young")
    conn_max_age(1)
    assert get("/default/") == (200, "default")
    assert get("/branch/young/") == (200, "young,public")

    assert get("/ok/") == (200, "ok")

    branch_backends.wait_for(["branch:young"])
    assert connections["default"].connection is not None
    young = connections["schema_young"]
    assert young.close_at is not None
    time.sleep(max(0.0, young.close_at - time.monotonic()) + 0.05)  # let it age

    assert get("/ok/") == (200, "ok")

    branch_backends.wait_for([])
    assert connections["default"].connection is None
    assert tracked_aliases() == []


def test_thread_pool_never_runs_out_of_slots(
    branch_backends: BranchBackends, postgres: PostgresServer, branches: Branches
) -> None:
    threads, count = 8, 200
    assert postgres.max_connections < threads * count
    branches(*[f"pool_{i}" for i in range(count)])
    paths = [f"/branch/pool_{i % count}/" for i in range(2 * count)]
    with Sampler(lambda: len(branch_backends())) as sampler, ThreadPoolExecutor(threads) as pool:
        results = list(pool.map(get, paths))
    peak = sampler.peak

    print(f"\nthread pool: peak branch backends {peak} for {threads} threads")
    assert [status for status, _ in results] == [200] * len(paths)
    # One open connection per thread, plus backends whose client has closed
    # but which have not finished exiting; a leak would climb to the limit.
    assert 0 < peak <= 2 * threads
    branch_backends.wait_for([])


def test_dropped_schema_under_open_connection(
    branch_backends: BranchBackends, conn_max_age: Callable[[int], None]
) -> None:
    conn_max_age(60)
    with connections["default"].cursor() as cursor:
        cursor.execute("CREATE SCHEMA dropped")
        cursor.execute("CREATE TABLE dropped.t (id int)")
    branch = connections["schema_dropped"]
    with branch.cursor() as cursor:
        cursor.execute("SELECT * FROM t")
        cursor.execute("DROP SCHEMA dropped CASCADE")

    with pytest.raises(Exception, match='relation "t" does not exist'), branch.cursor() as cursor:
        cursor.execute("SELECT * FROM t")
    assert branch.errors_occurred

    # The error makes the cleanup check the connection: its branch is gone.
    assert close_old_branch_connections() == 1
    branch_backends.wait_for([])

    assert get("/branch/dropped/")[0] == 500  # reconnecting is refused


def test_server_restart_under_tracked_connections(
    postgres: PostgresServer,
    conn_max_age: Callable[[int], None],
    transactional_db: None,
    caplog: pytest.LogCaptureFixture,
    branches: Branches,
) -> None:
    branches("restart_a", "restart_b", "restart_c")
    conn_max_age(60)
    connections["default"].settings_dict["CONN_HEALTH_CHECKS"] = True
    try:
        for name in ("restart_a", "restart_b"):
            assert get(f"/branch/{name}/") == (200, f"{name},public")
        assert tracked_aliases() == ["schema_restart_a", "schema_restart_b"]

        postgres.restart()

        assert get("/ok/") == (200, "ok")  # cleanup runs on dead sockets
        assert get("/branch/restart_a/") == (200, "restart_a,public")
        assert get("/branch/restart_c/") == (200, "restart_c,public")
    finally:
        connections["default"].settings_dict["CONN_HEALTH_CHECKS"] = False
        connections["default"].close()
    assert "Traceback" not in caplog.text
    backends = BranchBackends(postgres, connections["default"].settings_dict["NAME"])
    try:
        backends.wait_for(["branch:restart_a", "branch:restart_c"])
    finally:
        backends.close()


@pytest.mark.slow
def test_memory_follows_open_branches_not_branches_seen(
    branch_backends: BranchBackends, branches: Branches
) -> None:
    aliases = [f"schema_mem_{i}" for i in range(2000)]
    branches(*[alias.removeprefix("schema_") for alias in aliases])
    for alias in aliases:
        name = alias.removeprefix("schema_")
        assert get(f"/branch/{name}/") == (200, f"{name},public")

    assert tracked_aliases() == []
    assert [alias for alias in aliases if stored_wrapper(alias) is not None] == []
    branch_backends.wait_for([])
