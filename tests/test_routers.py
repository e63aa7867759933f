from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import AsyncIterator
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from asgiref.sync import iscoroutinefunction
from django.db import connections

from branching_ops.routers import BranchRouter
from branching_ops.routers import activate_branch
from branching_ops.testing.postgres import PostgresServer
from tests.conftest import Branches
from tests.hostile import HOSTILE_NAMES
from tests.servers import running_server
from tests.servers import uvicorn
from tests.testapp.models import Note

router = BranchRouter()


def routed() -> str | None:
    read, write = router.db_for_read(Note), router.db_for_write(Note)
    assert read == write
    return read


@pytest.mark.django_db(transaction=True)
def test_orm_reads_and_writes_the_active_branch(branches: Branches) -> None:
    branches("orm_a", "orm_b")
    for name in ("orm_a", "orm_b"):
        with connections[f"schema_{name}"].schema_editor() as editor:
            editor.create_model(Note)

    with activate_branch("orm_a"):
        Note.objects.create(text="in a")
    with activate_branch("orm_b"):
        Note.objects.create(text="in b")

    with activate_branch("orm_a"):
        assert list(Note.objects.values_list("text", flat=True)) == ["in a"]
        with activate_branch("orm_b"):
            assert list(Note.objects.values_list("text", flat=True)) == ["in b"]
        assert list(Note.objects.values_list("text", flat=True)) == ["in a"]
    assert Note.objects.count() == 0
    with connections["default"].cursor() as cursor:
        cursor.execute(
            "SELECT text FROM orm_a.testapp_note UNION ALL SELECT '|' "
            "UNION ALL SELECT text FROM orm_b.testapp_note"
        )
        assert [row[0] for row in cursor.fetchall()] == ["in a", "|", "in b"]


@pytest.mark.django_db(transaction=True)
def test_test_framework_sees_only_static_aliases(branches: Branches) -> None:
    branches("static")
    with connections["schema_static"].cursor() as cursor:
        cursor.execute("SELECT 1")

    assert list(connections) == ["default"]
    assert [c.alias for c in connections.all(initialized_only=True)] == ["default"]


def test_activate_branch_nests_and_restores() -> None:
    assert routed() is None
    with activate_branch("outer"):
        assert routed() == "schema_outer"
        with activate_branch("inner"):
            assert routed() == "schema_inner"
        assert routed() == "schema_outer"
    assert routed() is None


def test_activate_branch_as_decorator_reentrant() -> None:
    @activate_branch("deco")
    def depth(n: int) -> list[str | None]:
        return [routed(), *(depth(n - 1) if n else [])]

    assert depth(2) == ["schema_deco"] * 3
    assert routed() is None


def test_activate_branch_does_not_leak_into_other_threads() -> None:
    with activate_branch("mine"), ThreadPoolExecutor(1) as pool:
        assert pool.submit(routed).result() is None
        assert routed() == "schema_mine"


def test_activate_branch_per_asyncio_task() -> None:
    async def in_branch(name: str) -> list[str | None]:
        seen = []
        with activate_branch(name):
            for _ in range(3):
                await asyncio.sleep(0)
                seen.append(routed())
        return seen

    async def main() -> list[list[str | None]]:
        return list(await asyncio.gather(in_branch("task_a"), in_branch("task_b")))

    assert asyncio.run(main()) == [["schema_task_a"] * 3, ["schema_task_b"] * 3]


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_activate_branch_rejects_hostile_names(name: str) -> None:
    with pytest.raises(ValueError, match="is not a valid branch name"):
        activate_branch(name)


# -- activate_branch wherever a user puts it ----------------------------------------

WAIT = 20  # seconds; a thread that waits this long has hung


def test_decorated_function_run_by_8_threads_exiting_out_of_order() -> None:
    """One decorated function, one shared ``activate_branch`` instance, 8 threads at once.

    They enter in order 0..7 and leave in another order, each inside a branch
    of its own that the decorator must restore exactly.
    """
    exit_order = [3, 0, 7, 1, 6, 2, 5, 4]
    entered = [threading.Event() for _ in range(8)]
    may_leave = [threading.Event() for _ in range(8)]

    @activate_branch("deco")
    def work(i: int) -> str | None:
        entered[i].set()
        assert may_leave[i].wait(WAIT)
        return routed()

    def run(i: int) -> tuple[str | None, str | None, str | None]:
        if i:
            assert entered[i - 1].wait(WAIT)  # staggered: one after the other
        with activate_branch(f"own_{i}"):
            inside = work(i)
            after = routed()
        return inside, after, routed()

    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(run, i) for i in range(8)]
        assert entered[7].wait(WAIT)
        for i in exit_order:
            may_leave[i].set()
            futures[i].result(WAIT)  # left before the next one may
        results = [future.result() for future in futures]

    assert results == [("schema_deco", f"schema_own_{i}", None) for i in range(8)]
    assert routed() is None


def test_decorated_async_function_keeps_the_branch_across_awaits() -> None:
    @activate_branch("coro")
    async def view() -> list[str | None]:
        seen = []
        for _ in range(3):
            await asyncio.sleep(0)
            seen.append(routed())
        return seen

    assert iscoroutinefunction(view)  # Django still serves it as an async view
    assert asyncio.run(view()) == ["schema_coro"] * 3
    assert routed() is None


def test_concurrent_tasks_nest_and_restore_their_own_branches() -> None:
    """Tasks interleave at every await; each sees its own stack of branches."""

    @activate_branch("shared_inner")
    async def inner(delay: float) -> str | None:
        await asyncio.sleep(delay)
        return routed()

    async def task(name: str, delay: float) -> list[str | None]:
        seen = [routed()]
        async with activate_branch(name):
            seen.append(routed())
            seen.append(await inner(delay))
            await asyncio.sleep(delay)
            seen.append(routed())
        seen.append(routed())
        return seen

    async def main() -> list[list[str | None]]:
        with activate_branch("outer"):
            tasks = [task(f"task_{i}", (7 - i) / 1000) for i in range(8)]
            results = list(await asyncio.gather(*tasks))
            assert routed() == "schema_outer"
        return results

    assert asyncio.run(main()) == [
        ["schema_outer", f"schema_task_{i}", "schema_shared_inner", f"schema_task_{i}",
         "schema_outer"]
        for i in range(8)
    ]  # fmt: skip


def test_decorated_async_callable_object() -> None:
    class View:
        async def __call__(self) -> str | None:
            await asyncio.sleep(0)
            return routed()

    view = activate_branch("callable")(View())

    assert asyncio.run(view()) == "schema_callable"


def generator() -> Iterator[str | None]:
    yield routed()


async def async_generator() -> AsyncIterator[str | None]:
    yield routed()


@pytest.mark.parametrize("function", [generator, async_generator])
def test_generator_functions_are_refused_at_decoration(function: object) -> None:
    with pytest.raises(TypeError) as excinfo:
        activate_branch("gen")(function)  # type: ignore[type-var]

    assert str(excinfo.value) == (
        f"activate_branch cannot decorate the generator function {function.__qualname__}: "  # type: ignore[attr-defined]
        "its body runs while the caller iterates, outside any call the decorator could "
        "wrap. Activate the branch where the generator is consumed, around the whole "
        "iteration."
    )


def test_exit_in_another_context_is_an_error_not_a_wrong_branch() -> None:
    block = activate_branch("elsewhere")
    contextvars.copy_context().run(block.__enter__)  # entered in a copy, as another task

    with pytest.raises(RuntimeError) as excinfo:
        block.__exit__(None, None, None)

    assert str(excinfo.value) == (
        "activate_branch('elsewhere') is exited in a different context from the one it "
        "was entered in (another thread or asyncio task), or out of order."
    )
    assert routed() is None


@pytest.mark.slow
def test_decorated_async_view_under_uvicorn_reads_and_writes_its_branch(
    branches: Branches, postgres: PostgresServer, tmp_path: Path, transactional_db: None
) -> None:
    dbname = str(connections["default"].settings_dict["NAME"])
    branches("async_view")
    with connections["default"].cursor() as cursor:
        cursor.execute("CREATE TABLE async_view.testapp_note (LIKE testapp_note INCLUDING ALL)")

    with running_server(uvicorn, dbname, tmp_path) as server:
        assert server.json("/async/note/first/") == ["first"]
        assert server.json("/async/note/second/") == ["first", "second"]

    with postgres.connect(dbname) as admin:
        rows = admin.execute(
            "SELECT 'branch', text FROM async_view.testapp_note UNION ALL "
            "SELECT 'public', text FROM public.testapp_note ORDER BY 1, 2"
        ).fetchall()
    assert rows == [("branch", "first"), ("branch", "second")]
