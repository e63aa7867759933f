"""Branch connections through a real PgBouncer in front of the suite's real PostgreSQL.

Needs the system's ``pgbouncer`` (Debian package ``pgbouncer``). Without it
these tests skip, except in CI (``CI`` set), where they fail: CI installs it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from django.db import connections
from django.test import override_settings

from branching_ops.names import branch_from_application_name
from branching_ops.routers import activate_branch
from branching_ops.search_path import SET_AND_CHECK_SQL
from branching_ops.search_path import BranchDoesNotExist
from branching_ops.search_path import SearchPathError
from branching_ops.testing.pgbouncer import PgBouncer
from branching_ops.testing.pgbouncer import find_pgbouncer
from branching_ops.testing.pgbouncer import running_pgbouncer
from branching_ops.testing.postgres import PostgresServer
from branching_ops.testing.processes import wait_until
from branching_ops.tracking import stored_wrapper
from branching_ops.tracking import tracked_aliases
from tests.backends import BranchBackends
from tests.conftest import APP_ROLE
from tests.conftest import Branches
from tests.statements import as_logged
from tests.statements import write_to_missing_branch
from tests.testapp.models import Note
from tests.wsgi import get

SESSION = {"SEARCH_PATH": "session"}


def require_pgbouncer() -> None:
    """Skip without ``pgbouncer``, except in CI: there a missing binary is a failure."""
    if find_pgbouncer() is None:
        message = "pgbouncer is not installed (Debian: apt-get install pgbouncer)"
        if os.environ.get("CI"):
            pytest.fail(f"{message}; CI must run the PgBouncer tests.")
        pytest.skip(message)


@pytest.fixture(scope="module")
def start_pgbouncer(postgres: PostgresServer) -> Iterator[Callable[..., PgBouncer]]:
    """Start PgBouncers in front of the suite's server; all stop at the end of the module.

    They stop before the test database is dropped: their idle server
    connections would keep ``DROP DATABASE`` from running.
    """
    require_pgbouncer()
    stack: list[Any] = []

    def start(**config: Any) -> PgBouncer:
        context = running_pgbouncer(
            postgres.host, postgres.port, users=["postgres", APP_ROLE], **config
        )
        stack.append(context)
        return context.__enter__()

    yield start
    for context in reversed(stack):
        context.__exit__(None, None, None)


@pytest.fixture(scope="module")
def strict(start_pgbouncer: Callable[..., PgBouncer]) -> PgBouncer:
    """Session pooling, PgBouncer's defaults: the ``options`` startup parameter is refused."""
    return start_pgbouncer(pool_mode="session")


@pytest.fixture(scope="module")
def lenient(start_pgbouncer: Callable[..., PgBouncer]) -> PgBouncer:
    """Session pooling with the common workaround: ``options`` silently dropped."""
    return start_pgbouncer(pool_mode="session", ignore_startup_parameters="options")


@pytest.fixture(scope="module")
def transaction_pooled(start_pgbouncer: Callable[..., PgBouncer]) -> PgBouncer:
    """Transaction pooling, ``options`` dropped, one server connection to share."""
    return start_pgbouncer(
        pool_mode="transaction", ignore_startup_parameters="options", default_pool_size=1
    )


@pytest.fixture
def dbname(transactional_db: None) -> str:
    return str(connections["default"].settings_dict["NAME"])


def wait_for_clients(bouncer: PgBouncer, dbname: str, expected: list[str]) -> None:
    wait_until(
        lambda: bouncer.client_application_names(dbname) == sorted(expected),
        timeout=10,
        what=f"PgBouncer's clients of {dbname} to be {sorted(expected)}",
    )


@pytest.fixture
def markers(dbname: str) -> Iterator[Callable[[list[str]], None]]:
    """``markers(names)``: a ``marker`` table in each schema holding its name; ``public`` too.

    A connection on the wrong schema reads ``public``: a wrong row, not an error.
    """
    created: list[str] = []

    def create(names: list[str]) -> None:
        sql = "CREATE TABLE marker (name text); INSERT INTO marker VALUES ('public');"
        for name in names:
            sql += (
                f"CREATE SCHEMA {name}; CREATE TABLE {name}.marker (name text); "
                f"INSERT INTO {name}.marker VALUES ('{name}');"
            )
        with connections["default"].cursor() as cursor:
            cursor.execute(sql)
        created.extend(names)

    yield create
    if created:
        with connections["default"].cursor() as cursor:
            cursor.execute(
                "DROP TABLE public.marker;"
                + "".join(f"DROP SCHEMA {name} CASCADE;" for name in created)
            )


def test_startup_mode_refused_by_pgbouncer_fails_fast_with_our_error(
    strict: PgBouncer,
    reroute_branches: Callable[..., None],
    branch_backends: BranchBackends,
    dbname: str,
) -> None:
    reroute_branches(HOST=strict.host, PORT=str(strict.port))

    with pytest.raises(SearchPathError) as excinfo:
        connections["schema_refused"].ensure_connection()

    assert str(excinfo.value) == (
        "Branch connection 'schema_refused' was refused: the server said 'unsupported "
        "startup parameter: options'. A connection pooler in front of PostgreSQL does not "
        "accept the branch's search_path as a startup option (PgBouncer before 1.20, or "
        "without track_extra_parameters = search_path). Set BRANCHING_OPS['SEARCH_PATH'] = "
        "'session' and use session pooling; see 'Behind PgBouncer' (docs/pgbouncer.md) in "
        "the django-branching-ops documentation."
    )
    wrapper = stored_wrapper("schema_refused")
    assert wrapper is not None
    assert wrapper.connection is None
    wait_for_clients(strict, dbname, [])
    branch_backends.wait_for([])


def test_dropped_options_are_caught_and_no_write_lands_in_public(
    lenient: PgBouncer,
    reroute_branches: Callable[..., None],
    branch_backends: BranchBackends,
    dbname: str,
) -> None:
    with connections["default"].cursor() as cursor:
        cursor.execute("CREATE SCHEMA stray; CREATE TABLE stray.testapp_note (LIKE testapp_note)")

    def rows() -> dict[str, list[str]]:
        with connections["default"].cursor() as cursor:
            found = {}
            for schema in ("public", "stray"):
                cursor.execute(f"SELECT text FROM {schema}.testapp_note ORDER BY id")
                found[schema] = [text for (text,) in cursor.fetchall()]
        return found

    try:
        reroute_branches(HOST=lenient.host, PORT=str(lenient.port))

        with (
            pytest.raises(SearchPathError, match=r"has search_path '\"\$user\", public'"),
            activate_branch("stray"),
        ):
            Note.objects.create(id=1, text="meant for stray")

        assert rows() == {"public": [], "stray": []}
        wait_for_clients(lenient, dbname, [])
        branch_backends.wait_for([])

        # The configuration that works behind it: session mode.
        reroute_branches(HOST=lenient.host, PORT=str(lenient.port))
        with override_settings(BRANCHING_OPS=SESSION), activate_branch("stray"):
            Note.objects.create(id=1, text="meant for stray")

        assert rows() == {"public": [], "stray": ["meant for stray"]}
    finally:
        with connections["default"].cursor() as cursor:
            cursor.execute("DROP SCHEMA stray CASCADE")


@pytest.mark.parametrize("mode", ["startup", "session"])
def test_a_missing_branch_behind_pgbouncer_runs_nothing(
    mode: str,
    start_pgbouncer: Callable[..., PgBouncer],
    reroute_branches: Callable[..., None],
    branch_backends: BranchBackends,
    postgres: PostgresServer,
    dbname: str,
) -> None:
    """Session mode: only the check reaches the server. Startup mode: PgBouncer (before
    1.20) refuses the connection, so nothing does."""
    bouncer = start_pgbouncer(pool_mode="session")  # new: its server connections log
    reroute_branches(HOST=bouncer.host, PORT=str(bouncer.port))

    error, statements = write_to_missing_branch(postgres, dbname, mode)

    if mode == "session":
        assert type(error) is BranchDoesNotExist
        assert str(error).startswith(
            f"Branch 'typo' does not exist: database '{dbname}' has no schema 'typo'"
        )
        # PgBouncer's own statements around the check: its server connection
        # takes the client's application_name, and is reset when the client goes.
        assert statements == [
            "SET application_name='branch:typo';",
            as_logged(SET_AND_CHECK_SQL, "typo", "typo,public"),
            "DISCARD ALL",
        ]
    else:
        assert "was refused: the server said 'unsupported startup parameter" in str(error)
        assert statements == []
    assert not Note.objects.exists()  # nothing landed in public
    wait_for_clients(bouncer, dbname, [])
    branch_backends.wait_for([])


@pytest.mark.parametrize(
    ("route", "mode"),
    [("direct", "startup"), ("direct", "session"), ("pgbouncer", "session")],
)
def test_many_branches_from_threads_read_their_own_rows(
    route: str,
    mode: str,
    strict: PgBouncer,
    markers: Callable[[list[str]], None],
    reroute_branches: Callable[..., None],
    branch_backends: BranchBackends,
    dbname: str,
) -> None:
    """200 requests over 50 branches from 4 threads; CONN_MAX_AGE = 0 closes each after use."""
    names = [f"pgb_{i}" for i in range(50)]
    markers(names)
    if route == "pgbouncer":
        reroute_branches(HOST=strict.host, PORT=str(strict.port), CONN_MAX_AGE=0)
    else:
        reroute_branches(CONN_MAX_AGE=0)
    paths = [f"/marker/{names[i % len(names)]}/" for i in range(200)]

    with override_settings(BRANCHING_OPS={"SEARCH_PATH": mode}), ThreadPoolExecutor(4) as pool:
        results = list(pool.map(get, paths))

    assert results == [(200, names[i % len(names)]) for i in range(200)]
    branch_backends.wait_for([])
    wait_for_clients(strict, dbname, [])


def test_conn_max_age_through_pgbouncer(
    strict: PgBouncer,
    markers: Callable[[list[str]], None],
    reroute_branches: Callable[..., None],
    branch_backends: BranchBackends,
    dbname: str,
) -> None:
    markers(["aged"])
    reroute_branches(HOST=strict.host, PORT=str(strict.port), CONN_MAX_AGE=1)

    with override_settings(BRANCHING_OPS=SESSION):
        assert get("/marker/aged/") == (200, "aged")
        assert get("/marker/aged/") == (200, "aged")

        wait_for_clients(strict, dbname, ["branch:aged"])  # one client, kept between requests
        branch_backends.wait_for(["branch:aged"])  # its server connection carries the name
        aged = connections["schema_aged"]
        assert aged.close_at is not None
        time.sleep(max(0.0, aged.close_at - time.monotonic()) + 0.05)  # let it age

        assert get("/ok/") == (200, "ok")

    wait_for_clients(strict, dbname, [])
    branch_backends.wait_for([])  # back in PgBouncer's pool, its name reset by DISCARD ALL
    assert tracked_aliases() == []


def test_server_side_names_still_tell_the_branch_with_application_name_add_host(
    start_pgbouncer: Callable[..., PgBouncer],
    reroute_branches: Callable[..., None],
    branch_backends: BranchBackends,
    branches: Branches,
) -> None:
    """What the operations commands read in pg_stat_activity behind PgBouncer."""
    branches("tagged")
    bouncer = start_pgbouncer(pool_mode="session", extra={"application_name_add_host": "1"})
    reroute_branches(HOST=bouncer.host, PORT=str(bouncer.port))

    with override_settings(BRANCHING_OPS=SESSION):
        connections["schema_tagged"].ensure_connection()

    (name,) = branch_backends()
    assert name.startswith("branch:tagged - 127.0.0.1:")
    assert branch_from_application_name(name) == "tagged"


def test_transaction_pooling_with_dropped_options_is_caught(
    transaction_pooled: PgBouncer, reroute_branches: Callable[..., None], dbname: str
) -> None:
    reroute_branches(HOST=transaction_pooled.host, PORT=str(transaction_pooled.port))

    with pytest.raises(SearchPathError, match="The server ignored the search_path startup"):
        connections["schema_pooled"].ensure_connection()

    wait_for_clients(transaction_pooled, dbname, [])


def test_session_mode_under_transaction_pooling_reads_another_branch(
    transaction_pooled: PgBouncer,
    markers: Callable[[list[str]], None],
    reroute_branches: Callable[..., None],
) -> None:
    """The configuration the README says not to use, and why: a SET follows the server
    connection, not the client. Verification cannot see it: the SET and its check share
    one transaction."""
    markers(["mine", "theirs"])
    reroute_branches(HOST=transaction_pooled.host, PORT=str(transaction_pooled.port))

    with override_settings(BRANCHING_OPS=SESSION):
        connections["schema_mine"].ensure_connection()
        connections["schema_theirs"].ensure_connection()
        with connections["schema_mine"].cursor() as cursor:
            cursor.execute("SELECT name FROM marker")
            (found,) = cursor.fetchone()

    assert found == "theirs"


@pytest.mark.parametrize(
    ("ci", "outcome"), [("true", pytest.fail.Exception), ("", pytest.skip.Exception)]
)
def test_missing_pgbouncer_fails_in_ci_and_skips_elsewhere(
    ci: str, outcome: type[BaseException], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("tests.test_pgbouncer.find_pgbouncer", lambda: None)
    monkeypatch.setenv("CI", ci)

    with pytest.raises(outcome, match="pgbouncer is not installed"):
        require_pgbouncer()
