"""Planning and running Django's migrations per branch, never on ``public``, on a real server."""

from __future__ import annotations

from collections.abc import Callable
from io import StringIO
from typing import Any

import pytest
from django.db import connections
from django.db.backends.postgresql.introspection import (
    DatabaseIntrospection as DjangoIntrospection,
)
from django.db.migrations.exceptions import MigrationSchemaMissing
from django.db.migrations.executor import MigrationExecutor
from django.db.migrations.loader import MigrationLoader
from django.db.models.signals import pre_migrate
from django.test.utils import CaptureQueriesContext
from psycopg import sql

from branching_ops.fanout import migrations
from branching_ops.fanout.migrations import BranchMigrations
from branching_ops.fanout.migrations import migrate_branch
from branching_ops.fanout.migrations import plan_migrations
from branching_ops.testing.postgres import PostgresServer
from branching_ops.tracking import tracked_aliases
from tests.backends import BranchBackends
from tests.conftest import Branches

pytestmark = pytest.mark.usefixtures("transactional_db")

# The test project's own migrations; django_rq's come with them (they vary by version).
OURS = (
    ("testapp", "0001_initial"),
    ("testapp", "0002_tag"),
    ("library", "0001_initial"),
    ("library", "0002_book"),
    ("library", "0003_book_published"),
    ("shop", "0001_initial"),
    ("shop", "0002_alter_order_quantity"),
    ("testapp", "0003_tag_slug"),
    ("testapp", "0004_alter_tag_name"),
    ("testapp", "0005_fill_tag_slugs"),
    ("testapp", "0006_tag_slug_idx"),
)


def django_full_plan() -> tuple[tuple[str, str], ...]:
    """Django's own order of every migration on an empty database: the oracle."""
    executor = MigrationExecutor(connections["default"])
    plan = executor.migration_plan(executor.loader.graph.leaf_nodes(), clean_start=True)
    return tuple((migration.app_label, migration.name) for migration, _ in plan)


def applying(keys: tuple[tuple[str, str], ...]) -> str:
    return "".join(f"  Applying {app}.{name}... OK\n" for app, name in keys)


def execute(query: str | sql.Composable, params: Any = None) -> list[tuple[Any, ...]]:
    """On ``default`` (public), autocommit: what every other session sees."""
    with connections["default"].cursor() as cursor:
        cursor.execute(query, params)
        return cursor.fetchall() if cursor.description else []


def public_catalog() -> list[tuple[Any, ...]]:
    """public's tables, columns, constraints and indexes, and its migration records."""
    return [
        *execute(
            "SELECT table_name, column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = 'public' ORDER BY 1, 2"
        ),
        *execute(
            "SELECT conname FROM pg_constraint WHERE connamespace = 'public'::regnamespace "
            "ORDER BY 1"
        ),
        *execute("SELECT indexname FROM pg_indexes WHERE schemaname = 'public' ORDER BY 1"),
        *execute("SELECT app, name FROM public.django_migrations ORDER BY 1, 2"),
    ]


def record(branch: str, *keys: tuple[str, str]) -> None:
    """Give ``branch`` its own django_migrations with these rows (and no tables)."""
    execute(
        sql.SQL("CREATE TABLE {} (LIKE public.django_migrations INCLUDING ALL)").format(
            sql.Identifier(branch, "django_migrations")
        )
    )
    for app, name in keys:
        execute(
            sql.SQL("INSERT INTO {} (app, name, applied) VALUES (%s, %s, now())").format(
                sql.Identifier(branch, "django_migrations")
            ),
            [app, name],
        )


def test_public_is_fully_migrated() -> None:
    """The premise of the tests below: public has every record a branch must not borrow."""
    everything = django_full_plan()
    assert [key for key in everything if key in OURS] == list(OURS)
    assert set(everything) <= set(execute("SELECT app, name FROM public.django_migrations"))


def test_plan_reads_every_branch_in_two_queries(branches: Branches) -> None:
    ALL = django_full_plan()
    names = [f"plan_{i}" for i in range(12)]
    branches(*names)
    record("plan_1", *ALL)
    record("plan_2", *ALL[:3], ("gone", "0001_removed_app"))
    record("plan_3")  # its own table, empty

    with CaptureQueriesContext(connections["default"]) as queries:
        plans = plan_migrations(connections["default"], names)

    assert len(queries.captured_queries) == 2
    assert plans[:4] == [
        BranchMigrations("plan_0", ALL),
        BranchMigrations("plan_1", ()),
        BranchMigrations("plan_2", tuple(key for key in ALL if key not in ALL[:3])),
        BranchMigrations("plan_3", ALL),
    ]
    assert all(plan.needed == ALL for plan in plans[4:])
    assert plans[1].up_to_date
    assert plans[2].labels == [f"{app}.{name}" for app, name in ALL[3:]]


def test_plan_of_branches_without_any_table_is_one_query(branches: Branches) -> None:
    branches("bare")
    ALL = django_full_plan()
    with CaptureQueriesContext(connections["default"]) as queries:
        assert plan_migrations(connections["default"], ["bare"]) == [BranchMigrations("bare", ALL)]
    assert len(queries.captured_queries) == 1


def test_plan_again_when_a_branch_is_dropped_between_the_queries(
    branches: Branches, postgres: PostgresServer, dbname: str
) -> None:
    ALL = django_full_plan()
    branches("stays", "vanishes")
    record("stays", *ALL)
    record("vanishes", *ALL)
    dropped: list[str] = []

    def drop_first(execute: Callable[..., Any], query: Any, *args: Any) -> Any:
        if not dropped and "UNION ALL" in str(query):
            dropped.append("vanishes")
            postgres.drop_schemas(dbname, ["vanishes"])
        return execute(query, *args)

    with connections["default"].execute_wrapper(drop_first):
        plans = plan_migrations(connections["default"], ["stays", "vanishes"])

    assert dropped == ["vanishes"]
    # The branch has no records any more: the worker refuses its missing schema.
    assert plans == [BranchMigrations("stays", ()), BranchMigrations("vanishes", ALL)]


def test_a_branch_without_its_own_records_is_migrated_on_itself(branches: Branches) -> None:
    """public has every migration applied; the branch gets them all, public nothing."""
    execute("INSERT INTO public.testapp_tag (name, slug) VALUES ('Public Tag', '')")
    ALL = django_full_plan()
    before = public_catalog()
    branches("fresh")
    out = StringIO()

    applied = migrate_branch("fresh", out)

    assert applied == list(ALL)
    assert out.getvalue() == applying(ALL)
    assert public_catalog() == before
    assert execute("SELECT slug FROM public.testapp_tag") == [("",)]  # RunPython left it
    assert sorted(execute("SELECT app, name FROM fresh.django_migrations")) == sorted(ALL)
    assert execute(
        "SELECT count(*) FROM pg_tables WHERE schemaname = 'fresh' AND tablename = ANY(%s)",
        [["testapp_note", "testapp_tag", "library_author", "library_book", "shop_order"]],
    ) == [(5,)]
    assert plan_migrations(connections["default"], ["fresh"]) == [BranchMigrations("fresh", ())]

    out = StringIO()
    assert migrate_branch("fresh", out) == []
    assert out.getvalue() == "No migrations to apply.\n"


def test_a_table_the_branch_lacks_is_never_found_in_public(
    branches: Branches, branch_backends: BranchBackends
) -> None:
    """Records say testapp_tag exists; only public has it: the FK to it fails, public unchanged."""
    branches("holey")
    record("holey", ("testapp", "0001_initial"), ("testapp", "0002_tag"))
    before = public_catalog()

    with pytest.raises(Exception, match='relation "testapp_tag" does not exist'):
        migrate_branch("holey", StringIO())

    assert public_catalog() == before
    # Django's schema editor left its atomic() open; the branch connection is closed anyway.
    assert tracked_aliases() == []
    branch_backends.wait_for([])
    # Django leaves the branch as it was after the last migration that succeeded.
    recorded = set(execute("SELECT app, name FROM holey.django_migrations"))
    assert ("library", "0001_initial") in recorded
    assert ("library", "0002_book") not in recorded


def test_a_branch_dropped_before_its_migrations_run_creates_nothing_in_public(
    branches: Branches, postgres: PostgresServer, dbname: str
) -> None:
    branches("doomed")
    before = public_catalog()

    def drop(**kwargs: Any) -> None:
        if kwargs["using"] == "schema_doomed" and kwargs["app_config"].label == "testapp":
            postgres.drop_schemas(dbname, ["doomed"])

    pre_migrate.connect(drop, weak=False)
    try:
        with pytest.raises(MigrationSchemaMissing, match="no schema has been selected"):
            migrate_branch("doomed", StringIO())
    finally:
        pre_migrate.disconnect(drop)

    assert public_catalog() == before


def test_each_process_reads_the_migration_files_once(
    branches: Branches, monkeypatch: pytest.MonkeyPatch
) -> None:
    branches("first", "second")
    loads: list[int] = []
    load_disk = MigrationLoader.load_disk

    def counted(self: MigrationLoader) -> None:
        loads.append(1)
        load_disk(self)

    monkeypatch.setattr(MigrationLoader, "load_disk", counted)
    monkeypatch.setattr(migrations.ProcessLoader, "_disk", None)

    migrate_branch("first", StringIO())
    migrate_branch("second", StringIO())

    assert len(loads) == 1
    assert execute("SELECT count(*) FROM second.django_migrations") == [(len(django_full_plan()),)]


def test_a_branch_only_connection_lists_what_django_would_see(branches: Branches) -> None:
    """Its own tables and the session's temporary ones; not public's, not another branch's."""
    branches("listed", "other")
    execute("CREATE TABLE listed.mine (id int); CREATE TABLE other.theirs (id int)")
    connection = migrations.branch_only_connection("listed")
    try:
        with connection.cursor() as cursor:
            cursor.execute("CREATE TEMPORARY TABLE scratch (id int)")
            with CaptureQueriesContext(connection) as queries, connection.cursor() as listing:
                listed = connection.introspection.get_table_list(listing)
            visible = DjangoIntrospection.get_table_list(connection.introspection, cursor)
            assert sorted(listed) == sorted(visible)
        assert sorted(table.name for table in listed) == ["mine", "scratch"]
        # Not Django's scan of every relation in the database.
        assert "pg_table_is_visible" not in queries[0]["sql"]
    finally:
        connection.close()
