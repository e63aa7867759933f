"""Django's connection pool (Django >= 5.1, psycopg 3) with branch aliases."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import django
import pytest
from django.db import connections
from django.test import override_settings

import branching_ops.pools
from tests.backends import BranchBackends
from tests.conftest import Branches
from tests.servers import Sampler
from tests.wsgi import get

pytestmark = pytest.mark.skipif(
    django.VERSION < (5, 1), reason="Django's connection pool is new in Django 5.1"
)


def pools() -> dict[str, Any]:
    """Django's process-wide pools, by alias."""
    wrapper: Any = connections["default"]  # PostgreSQL's: typed as the base class
    pools: dict[str, Any] = type(wrapper)._connection_pools
    return pools


@pytest.fixture
def pooled_default(branch_backends: BranchBackends) -> Iterator[None]:
    """``default`` with OPTIONS["pool"], as a project that uses the pool sets it."""
    default: Any = connections["default"]
    default.close()
    default.settings_dict["OPTIONS"]["pool"] = {"min_size": 2, "max_size": 4}
    try:
        yield
    finally:
        default.close()
        default.close_pool()
        del default.settings_dict["OPTIONS"]["pool"]


@pytest.mark.usefixtures("pooled_default")
def test_branch_pools_are_small_and_closed_when_no_thread_holds_them(
    branch_backends: BranchBackends, branches: Branches
) -> None:
    branches("pooled")
    assert get("/default/") == (200, "default")
    branch: Any = connections["schema_pooled"]
    with branch.cursor() as cursor:
        cursor.execute("SELECT 1")
    pool = branch.pool

    assert (pool.min_size, pool.max_size, pool.num_workers) == (0, 4, 1)
    assert branch.settings_dict["OPTIONS"]["pool"] == {
        "min_size": 0,
        "max_size": 4,
        "num_workers": 1,
    }
    branch_backends.wait_for(["branch:pooled"])

    assert get("/ok/") == (200, "ok")  # request boundary: CONN_MAX_AGE=0

    branch_backends.wait_for([])
    assert pool.closed
    assert list(pools()) == ["default"]
    assert not pools()["default"].closed  # default's pool untouched


@pytest.mark.usefixtures("pooled_default")
def test_branch_pool_options_are_configurable() -> None:
    options = {"min_size": 1, "max_size": 2, "timeout": 5}
    with override_settings(BRANCHING_OPS={"BRANCH_POOL_OPTIONS": options}):
        branch: Any = connections["schema_sized"]

    assert branch.settings_dict["OPTIONS"]["pool"] == {**options}
    assert (branch.pool.min_size, branch.pool.max_size, branch.pool.timeout) == (1, 2, 5)


@pytest.mark.usefixtures("pooled_default")
def test_hundred_branches_over_threads_leave_no_pool_and_no_backend(
    branch_backends: BranchBackends, branches: Branches
) -> None:
    threads, count = 4, 100
    branches(*[f"pool_{i}" for i in range(count)])
    assert get("/default/") == (200, "default")
    pool_threads = pool_thread_names()
    paths = [f"/branch/pool_{i % count}/" for i in range(2 * count)]
    with (
        Sampler(lambda: len(branch_backends())) as sampler,
        ThreadPoolExecutor(threads) as executor,
    ):
        results = list(executor.map(get, paths))
    peak = sampler.peak

    print(f"\npools: peak branch backends {peak} for {threads} threads, {count} branches")
    assert [status for status, _ in results] == [200] * len(paths)
    assert 0 < peak <= 2 * threads
    branch_backends.wait_for([])
    assert list(pools()) == ["default"]
    assert pool_thread_names() == pool_threads  # only default's pool has threads


@pytest.mark.usefixtures("pooled_default")
def test_cap_closes_the_pools_of_the_branches_it_closes(
    branch_backends: BranchBackends, branches: Branches
) -> None:
    branches(*[f"capped_{i}" for i in range(20)])
    with override_settings(BRANCHING_OPS={"MAX_CONNECTIONS_PER_THREAD": 2}):
        for i in range(20):
            with connections[f"schema_capped_{i}"].cursor() as cursor:
                cursor.execute("SELECT 1")

    branch_backends.wait_for(["branch:capped_18", "branch:capped_19"])
    assert sorted(pools()) == ["schema_capped_18", "schema_capped_19"]


@pytest.mark.usefixtures("pooled_default")
def test_without_closing_branch_pools_idle_connections_stay(
    branch_backends: BranchBackends, monkeypatch: pytest.MonkeyPatch, branches: Branches
) -> None:
    branches(*[f"kept_{i}" for i in range(10)])
    monkeypatch.setattr(branching_ops.pools, "release", lambda alias, wrapper: None)
    try:
        for i in range(10):
            assert get(f"/branch/kept_{i}/") == (200, f"kept_{i},public")

        # Plain Django: each branch's pool keeps its connection, idle, for max_idle.
        branch_backends.wait_for([f"branch:kept_{i}" for i in range(10)])
    finally:
        for alias in [alias for alias in pools() if alias != "default"]:
            pools().pop(alias).close()
    branch_backends.wait_for([])


def pool_thread_names() -> set[str]:
    return {t.name for t in threading.enumerate() if t.name.startswith("pool-")}
