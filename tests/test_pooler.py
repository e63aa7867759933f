"""``SEARCH_PATH = "transaction"`` behind real PgBouncers in transaction pooling: 1.18 and 1.24.

1.18 is the system's (Debian 12); 1.24 is Debian 13's, fetched from Debian's
archive into a private directory (:mod:`branching_ops.testing.debian`). A
pooler that cannot be had skips these tests, except in CI, where it fails.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
import pytest
from django.db import connections
from django.db import transaction
from django.test import override_settings

from branching_ops.routers import activate_branch
from branching_ops.search_path import BranchDoesNotExist
from branching_ops.search_path import SearchPathError
from branching_ops.testing.debian import debian_pgbouncer
from branching_ops.testing.pgbouncer import PgBouncer
from branching_ops.testing.pgbouncer import find_pgbouncer
from branching_ops.testing.pgbouncer import pgbouncer_version
from branching_ops.testing.pgbouncer import running_pgbouncer
from branching_ops.testing.postgres import PostgresServer
from branching_ops.tracking import close_branch_connections
from tests.conftest import APP_ROLE
from tests.servers import gunicorn
from tests.servers import running_server
from tests.testapp.models import Note

TRANSACTION = {"SEARCH_PATH": "transaction"}
THREADS = 8
BRANCHES = 40
POOL_SIZE = 3


def pooler_command(version: str) -> list[str]:
    """The command that runs PgBouncer ``version``; skip (fail in CI) when there is none."""
    try:
        if version == "1.18":
            binary = find_pgbouncer()
            if binary is None:
                raise RuntimeError(
                    "pgbouncer is not installed (Debian: apt-get install pgbouncer)"
                )
            command = [binary]
        else:
            command = debian_pgbouncer()
    except RuntimeError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"PgBouncer {version}: {exc}; CI must run the pooler tests.")
        pytest.skip(f"PgBouncer {version}: {exc}")
    assert ".".join(map(str, pgbouncer_version(command))) == version
    return command


@pytest.fixture(scope="module", params=["1.18", "1.24"])
def pooler(request: pytest.FixtureRequest, postgres: PostgresServer) -> Iterator[PgBouncer]:
    """Transaction pooling with fewer server connections than client threads."""
    with running_pgbouncer(
        postgres.host,
        postgres.port,
        users=["postgres", APP_ROLE],
        pool_mode="transaction",
        ignore_startup_parameters="options",
        default_pool_size=POOL_SIZE,
        command=pooler_command(request.param),
    ) as bouncer:
        yield bouncer


@pytest.fixture
def dbname(transactional_db: None) -> str:
    return str(connections["default"].settings_dict["NAME"])


@pytest.fixture
def through_pooler(
    pooler: PgBouncer, reroute_branches: Callable[..., None], transactional_db: None
) -> Iterator[PgBouncer]:
    reroute_branches(HOST=pooler.host, PORT=str(pooler.port), CONN_MAX_AGE=300)
    with override_settings(BRANCHING_OPS=TRANSACTION):
        yield pooler
    close_branch_connections()


@pytest.fixture
def branch_tables(postgres: PostgresServer, dbname: str) -> Iterator[Callable[[list[str]], None]]:
    """``branch_tables(names)``: each branch gets its own notes and marker tables."""
    created: list[str] = []

    def create(names: list[str]) -> None:
        postgres.create_schemas(dbname, names, owner=APP_ROLE)
        created.extend(names)
        sql = "CREATE TABLE IF NOT EXISTS public.marker (name text);"
        for name in names:
            sql += (
                f"CREATE TABLE {name}.testapp_note (LIKE testapp_note INCLUDING ALL);"
                f"CREATE TABLE {name}.marker AS SELECT '{name}'::text AS name;"
            )
        with connections["default"].cursor() as cursor:
            cursor.execute(sql)

    yield create
    close_branch_connections()
    if created:
        postgres.drop_schemas(dbname, created)
    with connections["default"].cursor() as cursor:
        cursor.execute("DROP TABLE IF EXISTS public.marker")


def rows_by_schema(names: list[str]) -> dict[str, list[str]]:
    with connections["default"].cursor() as cursor:
        found = {}
        for schema in ["public", *names]:
            cursor.execute(f"SELECT text FROM {schema}.testapp_note ORDER BY text")
            found[schema] = [text for (text,) in cursor.fetchall()]
    return found


def polluter(bouncer: PgBouncer, dbname: str, names: list[str], stop: threading.Event) -> int:
    """Another client of the same pool: session-level ``SET search_path``, as pg_dump does."""
    done = 0
    conninfo = f"host={bouncer.host} port={bouncer.port} user={APP_ROLE} dbname={dbname}"
    with psycopg.connect(conninfo, autocommit=True, prepare_threshold=None) as client:
        while not stop.is_set():
            client.execute(f"SET search_path TO {names[done % len(names)]}")
            done += 1
    return done


def test_threads_and_branches_through_the_pooler_each_write_their_own_branch(
    through_pooler: PgBouncer, branch_tables: Callable[[list[str]], None], dbname: str
) -> None:
    """8 threads x 40 branches over 3 server connections, polluted by session-level SETs."""
    names = [f"tp_{i}" for i in range(BRANCHES)]
    branch_tables(names)

    def work(thread: int) -> list[str]:
        read: list[str] = []
        try:
            for name in names:
                with activate_branch(name):
                    Note.objects.create(text=f"{name}/{thread}/auto")
                    with transaction.atomic(using=f"schema_{name}"):
                        Note.objects.create(text=f"{name}/{thread}/block")
                        try:
                            with transaction.atomic(using=f"schema_{name}"):
                                Note.objects.create(text=f"{name}/{thread}/undone")
                                raise RuntimeError
                        except RuntimeError:
                            pass
                        Note.objects.create(text=f"{name}/{thread}/after")
                    read += Note.objects.filter(text__startswith=f"{name}/{thread}/").values_list(
                        "text", flat=True
                    )
        finally:
            close_branch_connections()
        return read

    stop = threading.Event()
    with ThreadPoolExecutor(THREADS + 1) as pool:
        pollution = pool.submit(polluter, through_pooler, dbname, names, stop)
        try:
            reads = list(pool.map(work, range(THREADS)))
        finally:
            stop.set()
    assert pollution.result() > 0

    expected = {
        name: sorted(
            f"{name}/{t}/{kind}" for t in range(THREADS) for kind in ("after", "auto", "block")
        )
        for name in names
    }
    assert rows_by_schema(names) == {"public": [], **expected}
    assert [sorted(read) for read in reads] == [
        sorted(f"{name}/{t}/{kind}" for name in names for kind in ("after", "auto", "block"))
        for t in range(THREADS)
    ]


def test_a_missing_and_a_dropped_branch_are_refused_per_transaction(
    through_pooler: PgBouncer,
    branch_tables: Callable[[list[str]], None],
    postgres: PostgresServer,
    dbname: str,
) -> None:
    branch_tables(["stays", "goes"])
    with activate_branch("typo"), pytest.raises(BranchDoesNotExist):
        Note.objects.create(text="meant for typo")

    with activate_branch("goes"):
        Note.objects.create(text="before")
        with activate_branch("stays"):
            Note.objects.create(text="stays")  # another client, open meanwhile
        postgres.drop_schemas(dbname, ["goes"])
        with pytest.raises(BranchDoesNotExist):
            Note.objects.create(text="after")
        with pytest.raises(BranchDoesNotExist), transaction.atomic(using="schema_goes"):
            Note.objects.create(text="in a block")
    with activate_branch("stays"):
        assert list(Note.objects.values_list("text", flat=True)) == ["stays"]
    postgres.create_schemas(dbname, ["goes"], owner=APP_ROLE)  # for the fixture to drop
    assert rows_by_schema([]) == {"public": []}


def test_startup_mode_with_track_extra_parameters_is_refused_at_connect(
    reroute_branches: Callable[..., None], postgres: PostgresServer, dbname: str
) -> None:
    """The configuration docs/pgbouncer.md used to call "should work": the server ignores it."""
    major_minor = pgbouncer_version(pooler_command("1.24"))
    with running_pgbouncer(
        postgres.host,
        postgres.port,
        users=["postgres", APP_ROLE],
        pool_mode="transaction",
        default_pool_size=POOL_SIZE,
        extra={"track_extra_parameters": "IntervalStyle, search_path"},
        command=pooler_command("1.24"),
    ) as tracking:
        reroute_branches(HOST=tracking.host, PORT=str(tracking.port))
        with pytest.raises(SearchPathError, match="The server ignored the search_path startup"):
            connections["schema_tracked"].ensure_connection()
    assert major_minor == (1, 24)


@pytest.mark.slow
@pytest.mark.parametrize("max_age", [0, 300])
def test_gunicorn_gthread_through_the_pooler(
    max_age: int,
    pooler: PgBouncer,
    branch_tables: Callable[[list[str]], None],
    dbname: str,
    tmp_path: Path,
) -> None:
    names = [f"gp_{i}" for i in range(BRANCHES)]
    branch_tables(names)
    env = {
        "BRANCHING_OPS_TEST_PGPORT": str(pooler.port),
        "BRANCHING_OPS_TEST_CONN_MAX_AGE": str(max_age),
        "BRANCHING_OPS_TEST_SEARCH_PATH": "transaction",
    }
    paths = [f"/marker/{names[i % BRANCHES]}/" for i in range(4 * BRANCHES)]
    with running_server(gunicorn, dbname, tmp_path, **env) as server:
        results = server.load(paths, THREADS)
    # Each response names the branch its path asked for: its marker table, never public's.
    assert sorted((r.status, r.path, r.body) for r in results) == sorted(
        (200, path, path.split("/")[2]) for path in paths
    )
