from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connections

from branching_ops.routers import BranchRouter
from branching_ops.routers import activate_branch
from tests.hostile import HOSTILE_NAMES
from tests.testapp.models import Note

router = BranchRouter()


def routed() -> str | None:
    read, write = router.db_for_read(Note), router.db_for_write(Note)
    assert read == write
    return read


@pytest.mark.django_db(transaction=True)
def test_orm_reads_and_writes_the_active_branch() -> None:
    for name in ("orm_a", "orm_b"):
        branch = connections[f"schema_{name}"]
        with branch.cursor() as cursor:
            cursor.execute(f"CREATE SCHEMA {name}")
        with branch.schema_editor() as editor:
            editor.create_model(Note)
    try:
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
    finally:
        with connections["default"].cursor() as cursor:
            cursor.execute("DROP SCHEMA IF EXISTS orm_a, orm_b CASCADE")


@pytest.mark.django_db(transaction=True)
def test_test_framework_sees_only_static_aliases() -> None:
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
