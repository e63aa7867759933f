"""``branching_ops.tracking``: the mechanism's specification, in-process against real PostgreSQL.

The entry points (HTTP, RQ workers, commands) are specified through real
servers and processes in their own test modules; this one pins down what
they all rest on: what is tracked, what each pass closes and leaves, that no
pass raises, and that the thread's state is Django's connections' own.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable

import pytest
from django.db import connections
from django.db import transaction
from django.db.backends.base.base import RAN_DB_VERSION_CHECK
from django.db.backends.base.base import BaseDatabaseWrapper

from branching_ops import tracking
from branching_ops.testing.postgres import PostgresServer
from branching_ops.tracking import close_branch_connections
from branching_ops.tracking import close_connections
from branching_ops.tracking import close_old_branch_connections
from branching_ops.tracking import stored_wrapper
from branching_ops.tracking import tracked_aliases
from tests.backends import BranchBackends
from tests.conftest import Branches


def open_branch(name: str) -> BaseDatabaseWrapper:
    wrapper = connections[f"schema_{name}"]
    with wrapper.cursor() as cursor:
        cursor.execute("SELECT 1")
    return wrapper


@pytest.mark.usefixtures("transactional_db")
def test_an_alias_is_tracked_once_in_least_recently_used_order(branches: Branches) -> None:
    branches("lru_a", "lru_b")
    open_branch("lru_a")
    open_branch("lru_b")
    assert tracked_aliases() == ["schema_lru_a", "schema_lru_b"]

    tracking.track("schema_lru_a")

    assert tracked_aliases() == ["schema_lru_b", "schema_lru_a"]


def test_nothing_tracked_nothing_closed() -> None:
    assert tracked_aliases() == []
    assert close_old_branch_connections() == 0
    assert close_branch_connections() == 0


@pytest.mark.usefixtures("branch_backends")
def test_a_pass_keeps_young_connections_and_closes_expired(
    branches: Branches, conn_max_age: Callable[[int], None]
) -> None:
    branches("young", "expired")
    conn_max_age(600)
    young = open_branch("young")
    expired = open_branch("expired")
    expired.close_at = 0  # as if CONN_MAX_AGE had run out

    assert close_old_branch_connections() == 1

    assert tracked_aliases() == ["schema_young"]
    assert young.connection is not None
    assert stored_wrapper("schema_expired") is None  # the wrapper is dropped too


def test_a_pass_is_limited_to_the_aliases_given(
    branch_backends: BranchBackends, branches: Branches
) -> None:
    branches("only_a", "only_b")
    open_branch("only_a")
    open_branch("only_b")

    assert close_old_branch_connections(aliases={"schema_only_b"}) == 1
    assert close_branch_connections(["schema_only_a", "schema_elsewhere"]) == 1

    assert tracked_aliases() == []
    branch_backends.wait_for([])


def test_close_branch_connections_closes_even_inside_atomic(
    branch_backends: BranchBackends, branches: Branches
) -> None:
    """The end of a job process or a fork: no socket of the thread may stay open.

    Inside ``atomic()`` Django closes the socket but keeps the wrapper's
    connection for the block to roll back: the alias is forgotten at the
    first pass after the block.
    """
    branches("forced")
    with transaction.atomic(using="schema_forced"):
        open_branch("forced")

        close_branch_connections()

        branch_backends.wait_for([])
        assert tracked_aliases() == ["schema_forced"]
    assert close_old_branch_connections() == 0
    assert tracked_aliases() == []


def test_sparing_atomic_when_everything_was_to_close_warns(
    branch_backends: BranchBackends, branches: Branches, caplog: pytest.LogCaptureFixture
) -> None:
    branches("kept")
    with transaction.atomic(using="schema_kept"):
        open_branch("kept")

        closed = close_connections(
            BaseDatabaseWrapper.close, "shutdown", spare_atomic=logging.WARNING
        )

        assert closed == 0
        assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
            ("WARNING", "Kept branch connection schema_kept open: it is inside an atomic block.")
        ]
    branch_backends.wait_for(["branch:kept"])


def test_cleanup_never_closes_inside_atomic(
    branch_backends: BranchBackends, branches: Branches
) -> None:
    branches("atomic_b")
    with transaction.atomic(using="schema_atomic_b"):
        with connections["schema_atomic_b"].cursor() as cursor:
            cursor.execute("SELECT 1")

        assert close_old_branch_connections() == 0

        branch_backends.wait_for(["branch:atomic_b"])
        assert tracked_aliases() == ["schema_atomic_b"]

    assert close_old_branch_connections() == 1
    branch_backends.wait_for([])


def test_failed_close_is_logged_and_the_loop_goes_on(
    branch_backends: BranchBackends,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    branches: Branches,
) -> None:
    branches("fail_a", "fail_b")
    for name in ("fail_a", "fail_b"):
        with connections[f"schema_{name}"].cursor() as cursor:
            cursor.execute("SELECT 1")
    failing = connections["schema_fail_a"]
    real_close = getattr(failing, "_close")  # noqa: B009 - private to the backend

    def broken_close() -> None:
        real_close()  # the socket really closes; the error comes after
        raise OSError("injected failure")

    monkeypatch.setattr(failing, "_close", broken_close)

    assert close_old_branch_connections() == 2

    assert "Closing branch connection schema_fail_a failed." in caplog.text
    assert "injected failure" in caplog.text
    assert tracked_aliases() == []
    branch_backends.wait_for([])


def test_wrapper_never_connected_is_forgotten_without_counting(
    branch_backends: BranchBackends,
) -> None:
    connections["schema_unused"]

    assert tracked_aliases() == ["schema_unused"]
    assert close_old_branch_connections() == 0
    assert tracked_aliases() == []
    assert stored_wrapper("schema_unused") is None


def test_closing_forgets_the_server_version_check(
    branch_backends: BranchBackends, branches: Branches
) -> None:
    """Django adds every alias it connects to a process-wide set, forever."""
    branches("versioned")
    with connections["schema_versioned"].cursor() as cursor:
        cursor.execute("SELECT 1")
    assert "schema_versioned" in RAN_DB_VERSION_CHECK

    assert close_branch_connections() == 1

    assert "schema_versioned" not in RAN_DB_VERSION_CHECK
    with connections["schema_versioned"].cursor() as cursor:  # connects and checks again
        cursor.execute("SELECT 1")
    assert "schema_versioned" in RAN_DB_VERSION_CHECK


def test_other_code_closing_a_connection_is_seen_at_the_next_pass(
    branch_backends: BranchBackends, branches: Branches, conn_max_age: Callable[[int], None]
) -> None:
    branches("closed_elsewhere")
    conn_max_age(600)
    open_branch("closed_elsewhere").close()

    assert close_old_branch_connections() == 0  # nothing left to close: not counted

    assert tracked_aliases() == []
    assert stored_wrapper("schema_closed_elsewhere") is None


def test_a_wrapper_other_code_replaced_is_closed_and_its_successor_tracked(
    branch_backends: BranchBackends, branches: Branches, conn_max_age: Callable[[int], None]
) -> None:
    """``del connections[alias]`` drops Django's wrapper, not its open connection."""
    branches("replaced")
    conn_max_age(600)
    first = open_branch("replaced")
    del connections["schema_replaced"]
    second = connections["schema_replaced"]  # created, not connected yet
    first.close_at = 0

    assert close_old_branch_connections() == 1

    assert first.connection is None
    assert tracked_aliases() == ["schema_replaced"]
    assert stored_wrapper("schema_replaced") is second
    open_branch("replaced")
    assert close_branch_connections() == 1
    branch_backends.wait_for([])


def test_a_connection_not_stored_for_this_thread_is_not_its_to_manage(
    branch_backends: BranchBackends, branches: Branches
) -> None:
    branches("made_aside")
    aside = connections.create_connection("schema_made_aside")  # tracked, never stored
    aside.ensure_connection()
    try:
        assert close_branch_connections() == 0
        branch_backends.wait_for(["branch:made_aside"])
    finally:
        aside.close()
    assert tracked_aliases() == []


def test_another_threads_pass_sees_only_its_own(
    branch_backends: BranchBackends, branches: Branches
) -> None:
    branches("mine_only")
    open_branch("mine_only")
    seen: list[object] = []

    def other_thread() -> None:
        seen.extend([tracked_aliases(), close_branch_connections()])

    thread = threading.Thread(target=other_thread)
    thread.start()
    thread.join()

    assert seen == [[], 0]
    assert tracked_aliases() == ["schema_mine_only"]
    branch_backends.wait_for(["branch:mine_only"])


@pytest.mark.usefixtures("transactional_db")
def test_in_a_thread_running_an_event_loop_the_state_is_per_context(branches: Branches) -> None:
    """What Django's connections do there (``Local(thread_critical=True)``), so both agree."""
    branches("outside", "inside")
    open_branch("outside")

    async def inside_the_loop() -> tuple[list[str], bool, list[str]]:
        before = tracked_aliases()
        connections["schema_inside"]  # a wrapper of this context only
        return before, stored_wrapper("schema_outside") is None, tracked_aliases()

    before, outside_unseen, inside = asyncio.run(inside_the_loop())

    assert (before, outside_unseen, inside) == ([], True, ["schema_inside"])
    assert tracked_aliases() == ["schema_outside"]


def prepared(name: str, state: str, postgres: PostgresServer) -> BaseDatabaseWrapper:
    """A connected branch wrapper in ``state``, as a boundary finds it."""
    wrapper = open_branch(name)
    wrapper.health_check_done = True  # type: ignore[attr-defined]  # not in django-stubs
    if state == "expired":
        wrapper.close_at = 0
    elif state == "forever":
        wrapper.close_at = None
    elif state == "autocommit changed":
        wrapper.set_autocommit(False)
    elif state.startswith("errors"):
        wrapper.errors_occurred = True
        if state == "errors, server gone":
            with postgres.connect() as admin:
                admin.execute(
                    "SELECT pg_terminate_backend(%s)", [wrapper.connection.info.backend_pid]
                )
    return wrapper


def outcome(wrapper: BaseDatabaseWrapper) -> tuple[bool, object, bool]:
    return (
        wrapper.connection is None,
        getattr(wrapper, "health_check_done", None),
        wrapper.errors_occurred,
    )


@pytest.mark.parametrize(
    "state",
    ["young", "expired", "forever", "autocommit changed", "errors", "errors, server gone"],
)
@pytest.mark.usefixtures("transactional_db")
def test_the_boundary_rule_decides_as_djangos_method(
    state: str, branches: Branches, conn_max_age: Callable[[int], None], postgres: PostgresServer
) -> None:
    """Its common case is answered without calling Django's method: it must agree with it."""
    branches("by_django", "by_us")
    conn_max_age(600)
    by_django = prepared("by_django", state, postgres)
    by_us = prepared("by_us", state, postgres)

    by_django.close_if_unusable_or_obsolete()
    tracking.close_if_unusable_or_obsolete(by_us)

    assert outcome(by_us) == outcome(by_django)
    assert outcome(by_us)[0] is (state in ("expired", "autocommit changed", "errors, server gone"))


@pytest.mark.usefixtures("transactional_db")
def test_a_backend_that_overrides_the_method_is_asked(branches: Branches) -> None:
    branches("custom")
    wrapper = open_branch("custom")
    asked: list[BaseDatabaseWrapper] = []

    class Custom(type(wrapper)):  # type: ignore[misc]
        def close_if_unusable_or_obsolete(self) -> None:
            asked.append(self)

    wrapper.__class__ = Custom

    tracking.close_if_unusable_or_obsolete(wrapper)

    assert asked == [wrapper]
