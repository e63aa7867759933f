"""SEARCH_PATH modes and connect-time verification, straight to the real PostgreSQL.

Behind a real PgBouncer: tests/test_pgbouncer.py.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.core.checks import Error
from django.db import connections
from django.db.utils import OperationalError
from django.test import override_settings
from django.test.utils import CaptureQueriesContext

from branching_ops.checks import check_search_path_settings
from branching_ops.search_path import SearchPathError
from branching_ops.testing._process import free_port
from branching_ops.tracking import stored_wrapper
from tests.backends import BranchBackends

SESSION = {"SEARCH_PATH": "session"}


def show_search_path(alias: str) -> str:
    with connections[alias].cursor() as cursor:
        cursor.execute("SHOW search_path")
        (value,) = cursor.fetchone()
    return str(value)


@pytest.mark.parametrize("mode", ["startup", "session"])
def test_both_modes_give_the_branch_its_search_path(
    mode: str, branch_backends: BranchBackends
) -> None:
    with override_settings(BRANCHING_OPS={"SEARCH_PATH": mode}):
        assert show_search_path("schema_both") == "both,public"

    params = connections["schema_both"].get_connection_params()
    assert ("search_path" in params.get("options", "")) == (mode == "startup")
    assert not {"search_path", "set_search_path", "verify_search_path"} & params.keys()
    branch_backends.wait_for(["branch:both"])


@pytest.mark.parametrize("mode", ["startup", "session"])
def test_setting_and_checking_stay_out_of_the_query_log(mode: str, transactional_db: None) -> None:
    with override_settings(BRANCHING_OPS={"SEARCH_PATH": mode}):
        connection = connections["schema_quiet"]
        with CaptureQueriesContext(connection) as queries:
            connection.ensure_connection()

    assert len(queries) == 0


def test_session_search_path_survives_a_rollback_without_autocommit(
    reroute_branches: Callable[..., None], transactional_db: None
) -> None:
    reroute_branches(AUTOCOMMIT=False)

    with override_settings(BRANCHING_OPS=SESSION):
        connection = connections["schema_manual"]
        assert not connection.get_autocommit()
        connection.rollback()  # the caller's first transaction, undone

        assert show_search_path("schema_manual") == "manual,public"


@pytest.mark.parametrize("mode", ["startup", "session"])
def test_a_dropped_startup_option_is_caught_and_the_connection_closed(
    mode: str, reroute_branches: Callable[..., None], branch_backends: BranchBackends
) -> None:
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
        "ran on it; see 'Running behind PgBouncer' in the django-branching-ops README."
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
        (
            {"SEARCH_PATH": "sesion"},
            [
                Error(
                    "BRANCHING_OPS['SEARCH_PATH'] must be 'startup' or 'session', not 'sesion'.",
                    hint="'startup' passes the search_path in the libpq options (no extra "
                    "round trip); 'session' sets it right after connecting (behind PgBouncer).",
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
