"""SEARCH_PATH modes and connect-time verification, straight to the real PostgreSQL.

Behind a real PgBouncer: tests/test_pgbouncer.py.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import django
import pytest
from django.core.checks import Error
from django.db import connections
from django.db.utils import OperationalError
from django.test import override_settings
from django.test.utils import CaptureQueriesContext

from branching_ops.checks import check_search_path_settings
from branching_ops.routers import activate_branch
from branching_ops.search_path import CHECK_SQL
from branching_ops.search_path import SET_AND_CHECK_SQL
from branching_ops.search_path import BranchDoesNotExist
from branching_ops.search_path import BranchSearchPath
from branching_ops.search_path import SearchPathError
from branching_ops.testing.postgres import PostgresServer
from branching_ops.testing.processes import free_port
from branching_ops.tracking import stored_wrapper
from tests.backends import BranchBackends
from tests.conftest import Branches
from tests.statements import as_logged
from tests.statements import write_to_missing_branch
from tests.test_pools import pooled_default  # noqa: F401 - a fixture
from tests.testapp.models import Note

SESSION = {"SEARCH_PATH": "session"}
CHECK = {
    "startup": as_logged(CHECK_SQL, "typo"),
    "session": as_logged(SET_AND_CHECK_SQL, "typo", "typo,public"),
}


@pytest.fixture
def dbname(transactional_db: None) -> str:
    return str(connections["default"].settings_dict["NAME"])


def show_search_path(alias: str) -> str:
    with connections[alias].cursor() as cursor:
        cursor.execute("SHOW search_path")
        (value,) = cursor.fetchone()
    return str(value)


@pytest.mark.parametrize("mode", ["startup", "session"])
def test_both_modes_give_the_branch_its_search_path(
    mode: str, branch_backends: BranchBackends, branches: Branches
) -> None:
    branches("both")
    with override_settings(BRANCHING_OPS={"SEARCH_PATH": mode}):
        assert show_search_path("schema_both") == "both,public"

    params = connections["schema_both"].get_connection_params()
    assert ("search_path" in params.get("options", "")) == (mode == "startup")
    assert not set(BranchSearchPath.KEYS) & params.keys()
    branch_backends.wait_for(["branch:both"])


@pytest.mark.parametrize("mode", ["startup", "session"])
def test_setting_and_checking_stay_out_of_the_query_log(
    mode: str, branches: Branches, transactional_db: None
) -> None:
    branches("quiet")
    with override_settings(BRANCHING_OPS={"SEARCH_PATH": mode}):
        connection = connections["schema_quiet"]
        with CaptureQueriesContext(connection) as queries:
            connection.ensure_connection()

    assert len(queries) == 0


def test_session_search_path_survives_a_rollback_without_autocommit(
    reroute_branches: Callable[..., None], branches: Branches, transactional_db: None
) -> None:
    branches("manual")
    reroute_branches(AUTOCOMMIT=False)

    with override_settings(BRANCHING_OPS=SESSION):
        connection = connections["schema_manual"]
        assert not connection.get_autocommit()
        connection.rollback()  # the caller's first transaction, undone

        assert show_search_path("schema_manual") == "manual,public"


@pytest.mark.parametrize("mode", ["startup", "session"])
def test_a_dropped_startup_option_is_caught_and_the_connection_closed(
    mode: str,
    reroute_branches: Callable[..., None],
    branch_backends: BranchBackends,
    branches: Branches,
) -> None:
    branches("lost")
    # What a pooler with ignore_startup_parameters = options does, without one.
    reroute_branches(options={"options": ""})

    if mode == "session":
        with override_settings(BRANCHING_OPS=SESSION):
            assert show_search_path("schema_lost") == "lost,public"
        return
    with pytest.raises(SearchPathError) as excinfo:
        show_search_path("schema_lost")

    assert str(excinfo.value) == (
        "Branch connection 'schema_lost' has search_path '\"$user\", public' on the server, "
        "not 'lost,public'. The server ignored the search_path startup option: a connection "
        "pooler that drops startup parameters (PgBouncer with ignore_startup_parameters = "
        "options) is the usual cause. Behind PgBouncer session pooling, set "
        "BRANCHING_OPS['SEARCH_PATH'] = 'session'. The connection was closed before any query "
        "ran on it; see 'Behind PgBouncer' (docs/pgbouncer.md) in the django-branching-ops "
        "documentation."
    )
    wrapper = stored_wrapper("schema_lost")
    assert wrapper is not None
    assert wrapper.connection is None
    branch_backends.wait_for([])


def test_without_verification_the_wrong_schema_goes_unnoticed(
    reroute_branches: Callable[..., None], transactional_db: None
) -> None:
    """What VERIFY_SEARCH_PATH is for: the same setup, unchecked, queries ``public``."""
    reroute_branches(options={"options": ""})

    with override_settings(BRANCHING_OPS={"VERIFY_SEARCH_PATH": False}):
        assert show_search_path("schema_lost") == '"$user", public'


def test_other_connection_failures_keep_djangos_error(
    reroute_branches: Callable[..., None], transactional_db: None
) -> None:
    reroute_branches(PORT=str(free_port()))

    with pytest.raises(OperationalError) as excinfo:
        connections["schema_nowhere"].ensure_connection()

    assert not isinstance(excinfo.value, SearchPathError)


@pytest.mark.parametrize(
    ("setting", "errors"),
    [
        ({}, []),
        ({"SEARCH_PATH": "session", "VERIFY_SEARCH_PATH": False}, []),
        ({"SEARCH_PATH": "transaction"}, []),
        (
            {"SEARCH_PATH": "sesion"},
            [
                Error(
                    "BRANCHING_OPS['SEARCH_PATH'] must be 'startup', 'session' or "
                    "'transaction', not 'sesion'.",
                    hint="'startup' passes the search_path in the libpq options (no extra "
                    "round trip); 'session' sets it right after connecting (PgBouncer session "
                    "pooling); 'transaction' sends it with every transaction (transaction "
                    "pooling).",
                    id="branching_ops.E020",
                )
            ],
        ),
        (
            {"VERIFY_SEARCH_PATH": "yes"},
            [
                Error(
                    "BRANCHING_OPS['VERIFY_SEARCH_PATH'] must be True or False, not 'yes'.",
                    id="branching_ops.E021",
                )
            ],
        ),
    ],
)
def test_checks(setting: dict[str, Any], errors: list[Error]) -> None:
    with override_settings(BRANCHING_OPS=setting):
        assert check_search_path_settings(None) == errors


# -- the branch's schema must exist ------------------------------------------------


def missing_branch_message(name: str, dbname: str) -> str:
    return (
        f"Branch '{name}' does not exist: database '{dbname}' has no schema '{name}', so "
        f"connection 'schema_{name}' would read and write public instead. The connection "
        f"was closed before any query ran on it. Create the branch first (manage.py "
        f"branch_create {name}) or correct its name."
    )


@pytest.mark.parametrize("mode", ["startup", "session"])
def test_a_missing_branch_is_refused_before_any_statement_runs(
    mode: str, postgres: PostgresServer, branch_backends: BranchBackends, dbname: str
) -> None:
    error, statements = write_to_missing_branch(postgres, dbname, mode)

    assert type(error) is BranchDoesNotExist
    assert str(error) == missing_branch_message("typo", dbname)
    assert statements == [CHECK[mode]]  # the check, and not the INSERT
    assert not Note.objects.exists()  # nothing landed in public
    wrapper = stored_wrapper("schema_typo")
    assert wrapper is not None
    assert wrapper.connection is None
    branch_backends.wait_for([])


def test_the_error_is_caught_where_users_already_catch() -> None:
    """A wrong search_path, and a database that is not there: both already handled."""
    assert issubclass(BranchDoesNotExist, SearchPathError)
    assert issubclass(BranchDoesNotExist, OperationalError)


@pytest.mark.parametrize("mode", ["startup", "session"])
def test_without_verification_a_missing_branch_writes_public(mode: str, dbname: str) -> None:
    """What the check is for: the same write, unchecked, lands in ``public``."""
    with (
        override_settings(BRANCHING_OPS={"SEARCH_PATH": mode, "VERIFY_SEARCH_PATH": False}),
        activate_branch("typo"),
    ):
        Note.objects.create(text="meant for typo")

    assert list(Note.objects.values_list("text", flat=True)) == ["meant for typo"]


@pytest.mark.parametrize("mode", ["startup", "session"])
def test_a_branch_the_role_may_not_use_is_refused(
    mode: str, postgres: PostgresServer, branch_backends: BranchBackends, dbname: str
) -> None:
    with postgres.connect(dbname) as admin:
        admin.execute("CREATE SCHEMA locked")  # the superuser's: app has no USAGE
    try:
        with (
            override_settings(BRANCHING_OPS={"SEARCH_PATH": mode}),
            pytest.raises(SearchPathError) as excinfo,
        ):
            connections["schema_locked"].ensure_connection()
    finally:
        with postgres.connect(dbname) as admin:
            admin.execute("DROP SCHEMA locked")

    assert not isinstance(excinfo.value, BranchDoesNotExist)
    assert str(excinfo.value) == (
        f"Branch connection 'schema_locked' may not use schema 'locked' on database "
        f"'{dbname}': role 'app' has no USAGE privilege on it, so its queries would run on "
        "public instead. The connection was closed before any query ran on it; GRANT USAGE "
        "ON SCHEMA locked TO app."
    )
    branch_backends.wait_for([])


def test_health_check_fails_once_the_schema_is_gone(
    branches: Branches, dbname: str, caplog: pytest.LogCaptureFixture
) -> None:
    branches("fleeting")
    connection = connections["schema_fleeting"]
    connection.ensure_connection()
    assert connection.is_usable()

    with connections["default"].cursor() as cursor:
        cursor.execute("DROP SCHEMA fleeting")
    with caplog.at_level(logging.WARNING, logger="branching_ops"):
        assert not connection.is_usable()
    assert caplog.messages == [
        "Branch connection schema_fleeting is no longer usable: schema 'fleeting' has gone "
        "from its search_path (dropped, or its USAGE privilege revoked). Closing it."
    ]

    branches("fleeting")
    assert connection.is_usable()


def test_health_check_without_verification_is_djangos(dbname: str) -> None:
    with override_settings(BRANCHING_OPS={"VERIFY_SEARCH_PATH": False}):
        connection = connections["schema_unchecked"]
        connection.ensure_connection()

    assert connection.is_usable()  # Django's SELECT 1: the schema was never there
    connection.close()
    assert not connection.is_usable()


def test_health_check_on_a_broken_connection(
    branches: Branches, postgres: PostgresServer, dbname: str
) -> None:
    branches("broken")
    connection = connections["schema_broken"]
    connection.ensure_connection()
    with postgres.connect() as admin:
        admin.execute(
            "SELECT pg_terminate_backend(%s, 5000)", [connection.connection.info.backend_pid]
        )

    assert not connection.is_usable()


@pytest.mark.skipif(django.VERSION < (5, 1), reason="Django's connection pool is new in 5.1")
@pytest.mark.usefixtures("pooled_default")
def test_a_pooled_connection_is_checked_at_every_checkout(
    branches: Branches, branch_backends: BranchBackends
) -> None:
    """Django's pool skips the health check: each checkout runs the connect-time check."""
    branches("pooled_gone")
    connection = connections["schema_pooled_gone"]
    connection.ensure_connection()
    pid = connection.connection.info.backend_pid
    connection.close()  # back into the branch's pool
    connection.ensure_connection()
    assert connection.connection.info.backend_pid == pid  # the same server connection
    connection.close()

    with connections["default"].cursor() as cursor:
        cursor.execute("DROP SCHEMA pooled_gone")

    with pytest.raises(BranchDoesNotExist):
        connection.ensure_connection()


def test_branch_search_path_travels_in_options_and_back() -> None:
    search_path = BranchSearchPath("feature_x,shared, public", False, True)

    options = search_path.options()

    assert options == {
        "search_path": "feature_x,shared, public",
        "set_search_path": False,
        "verify_search_path": True,
        "search_path_per_transaction": False,
    }
    assert BranchSearchPath.from_options({"sslmode": "require", **options}) == search_path
    assert BranchSearchPath.from_options({"sslmode": "require"}) is None
    assert search_path.branch == "feature_x"
    assert search_path.schemas == ["feature_x", "shared", "public"]
