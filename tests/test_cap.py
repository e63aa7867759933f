"""MAX_CONNECTIONS_PER_THREAD: a least-recently-used cap, against real PostgreSQL."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connections
from django.db import transaction
from django.test import override_settings

from branching_ops.backend.base import DatabaseWrapper as BranchDatabaseWrapper
from branching_ops.signals import branch_connection_closed
from branching_ops.tracking import close_branch_connections
from branching_ops.tracking import close_old_branch_connections
from branching_ops.tracking import tracked_aliases
from tests.backends import BranchBackends
from tests.conftest import Branches


@pytest.fixture
def cap() -> Iterator[None]:
    with override_settings(BRANCHING_OPS={"MAX_CONNECTIONS_PER_THREAD": 3}):
        yield


def backend_pid(branch: str) -> int:
    with connections[f"schema_{branch}"].cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        (pid,) = cursor.fetchone()
    return int(pid)


def settled_count(backends: BranchBackends, at_most: int, timeout: float = 5) -> int:
    """Branch backends once those whose client closed have exited (or the timeout)."""
    deadline = time.monotonic() + timeout
    while len(current := backends()) > at_most and time.monotonic() < deadline:
        time.sleep(0.005)
    return len(current)


@pytest.mark.slow
@pytest.mark.usefixtures("cap")
def test_thousand_branches_on_one_thread_hold_at_most_the_cap(
    branch_backends: BranchBackends, branches: Branches
) -> None:
    branches(*[f"walk_{i}" for i in range(1000)])
    peak = 0
    for i in range(1000):
        backend_pid(f"walk_{i}")
        count = settled_count(branch_backends, at_most=3)
        assert count <= 3, f"{count} branch backends after branch {i}"
        assert len(tracked_aliases()) <= 3
        peak = max(peak, count)

    print(f"\ncap 3, 1000 branches on one thread: peak branch backends {peak}")
    assert peak == 3
    branch_backends.wait_for([f"branch:walk_{i}" for i in (997, 998, 999)])


@pytest.mark.usefixtures("cap")
def test_least_recently_used_is_closed_not_least_recently_opened(
    branch_backends: BranchBackends, branches: Branches
) -> None:
    branches("hot", *[f"cold_{i}" for i in range(10)])
    hot = backend_pid("hot")
    for i in range(10):
        backend_pid(f"cold_{i}")
        assert backend_pid("hot") == hot  # touched between cold ones: never closed

    assert tracked_aliases() == ["schema_cold_8", "schema_cold_9", "schema_hot"]
    branch_backends.wait_for(["branch:cold_8", "branch:cold_9", "branch:hot"])


@pytest.mark.usefixtures("cap")
def test_busy_connections_are_never_closed_and_warn_once(
    branch_backends: BranchBackends, caplog: pytest.LogCaptureFixture, branches: Branches
) -> None:
    branches("idle", *[f"busy_{x}" for x in "abcde"])
    with transaction.atomic(using="schema_busy_a"), transaction.atomic(using="schema_busy_b"):
        backend_pid("busy_a")
        backend_pid("busy_b")
        with transaction.atomic(using="schema_busy_c"):
            backend_pid("busy_c")
            with caplog.at_level(logging.WARNING, logger="branching_ops"):
                backend_pid("busy_d")  # 3 busy: goes over the cap
                backend_pid("busy_e")  # d is idle: closed; still over, no second warning
            branch_backends.wait_for([f"branch:busy_{x}" for x in "abce"])

    assert [r.getMessage() for r in caplog.records] == [
        "Went over MAX_CONNECTIONS_PER_THREAD=3: the 3 open branch connections "
        "of this thread are all inside atomic blocks."
    ]
    backend_pid("idle")  # back to idle: the least recently used make room
    branch_backends.wait_for(["branch:busy_c", "branch:busy_e", "branch:idle"])


@pytest.mark.usefixtures("cap")
def test_reconnect_of_a_closed_wrapper_stays_within_the_cap(
    branch_backends: BranchBackends, branches: Branches
) -> None:
    branches("re_a", "re_b", "re_c", "re_d")
    for branch in ("re_a", "re_b", "re_c"):
        backend_pid(branch)
    connections["schema_re_a"].close()  # closed by someone else: still tracked
    backend_pid("re_d")

    backend_pid("re_a")  # reconnects without a new wrapper

    branch_backends.wait_for(["branch:re_a", "branch:re_c", "branch:re_d"])
    assert tracked_aliases() == ["schema_re_c", "schema_re_d", "schema_re_a"]


@pytest.mark.usefixtures("transactional_db")
def test_without_cap_no_use_recorder_is_installed(branches: Branches) -> None:
    branches("uncapped")
    backend_pid("uncapped")

    assert connections["schema_uncapped"].execute_wrappers == []


@pytest.mark.usefixtures("cap")
def test_signal_and_logs_name_alias_and_reason(
    branch_backends: BranchBackends, caplog: pytest.LogCaptureFixture, branches: Branches
) -> None:
    branches("sig_a", "sig_b", "sig_c", "sig_d", "sig_e")
    received: list[tuple[object, str, str]] = []

    def receiver(sender: object, alias: str, reason: str, **kwargs: object) -> None:
        received.append((sender, alias, reason))

    def failing(**kwargs: object) -> None:
        raise RuntimeError("metrics exporter down")

    branch_connection_closed.connect(receiver)
    branch_connection_closed.connect(failing)
    try:
        with caplog.at_level(logging.DEBUG, logger="branching_ops"):
            for branch in ("sig_a", "sig_b", "sig_c", "sig_d"):
                backend_pid(branch)
            assert close_old_branch_connections() == 3  # CONN_MAX_AGE=0: all obsolete
            backend_pid("sig_e")
            assert close_branch_connections() == 1
    finally:
        branch_connection_closed.disconnect(receiver)
        branch_connection_closed.disconnect(failing)

    wrapper_class = BranchDatabaseWrapper
    assert received == [
        (wrapper_class, "schema_sig_a", "cap"),
        (wrapper_class, "schema_sig_b", "obsolete"),
        (wrapper_class, "schema_sig_c", "obsolete"),
        (wrapper_class, "schema_sig_d", "obsolete"),
        (wrapper_class, "schema_sig_e", "shutdown"),
    ]
    messages = [r.getMessage() for r in caplog.records if r.name == "branching_ops"]
    assert messages[:6] == [
        "Tracking branch connection schema_sig_a.",
        "Opened branch connection schema_sig_a.",
        "Tracking branch connection schema_sig_b.",
        "Opened branch connection schema_sig_b.",
        "Tracking branch connection schema_sig_c.",
        "Opened branch connection schema_sig_c.",
    ]
    assert messages[6:9] == [
        "Closed branch connection schema_sig_a (cap).",
        "Untracked branch connection schema_sig_a (cap).",
        "Tracking branch connection schema_sig_d.",
    ]
    assert "Closed branch connection schema_sig_e (shutdown)." in messages
    assert "Untracked branch connection schema_sig_e (shutdown)." in messages
    failures = [r for r in caplog.records if r.name == "django.dispatch"]
    assert len(failures) == 5  # logged by Django; cleanup went on
    branch_backends.wait_for([])


@pytest.mark.usefixtures("cap")
def test_cap_is_per_thread(branch_backends: BranchBackends, branches: Branches) -> None:
    threads, walk = 4, 30
    branches(*[f"t{n}_{i}" for n in range(threads) for i in range(walk)])
    holding = threading.Barrier(threads + 1)  # every thread holds its cap at once
    read = threading.Barrier(threads + 1)  # until the server has been read

    def worker(n: int) -> list[str]:
        try:
            for i in range(walk):
                backend_pid(f"t{n}_{i}")
                assert len(tracked_aliases()) <= 3
            held = tracked_aliases()
            holding.wait(timeout=60)
            read.wait(timeout=60)
            return held
        finally:
            close_branch_connections()

    with ThreadPoolExecutor(threads) as executor:
        futures = [executor.submit(worker, n) for n in range(threads)]
        holding.wait(timeout=60)
        try:
            branch_backends.wait_for(
                [f"branch:t{n}_{i}" for n in range(threads) for i in range(walk - 3, walk)]
            )
        finally:
            read.wait(timeout=60)
        held = [future.result() for future in futures]

    assert held == [[f"schema_t{n}_{i}" for i in range(walk - 3, walk)] for n in range(threads)]
    branch_backends.wait_for([])
