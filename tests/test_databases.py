from __future__ import annotations

from typing import Any

import pytest
from django.db import connections
from django.db.utils import ConnectionHandler
from django.test import override_settings
from django.utils.connection import ConnectionDoesNotExist

from branching_ops.databases import BranchDatabases
from branching_ops.databases import build_branch_settings
from branching_ops.tracking import stored_wrapper
from branching_ops.tracking import tracked_aliases
from tests.hostile import HOSTILE_NAMES


def configured(default: dict[str, Any]) -> BranchDatabases:
    """A BranchDatabases as Django leaves it after filling in its defaults."""
    databases = BranchDatabases({"default": default})
    ConnectionHandler(databases).settings  # noqa: B018 - configures in place
    return databases


def test_branch_settings_derive_from_configured_default() -> None:
    databases = configured(
        {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": "app",
            "CONN_MAX_AGE": 30,
            "OPTIONS": {
                "sslmode": "disable",
                "application_name": "myproject",
                "options": "-c statement_timeout=5000",
            },
        }
    )
    default = databases["default"]

    branch = databases["schema_feature_x"]

    assert branch == {
        **default,
        "ENGINE": "branching_ops.backend",
        "OPTIONS": {
            "sslmode": "disable",
            "application_name": "myproject/branch:feature_x",
            "options": "-c statement_timeout=5000 -c search_path=feature_x,public",
            "search_path": "feature_x,public",
            "set_search_path": False,
            "verify_search_path": True,
            "search_path_per_transaction": False,
        },
    }
    assert branch["CONN_MAX_AGE"] == 30
    assert branch["CONN_HEALTH_CHECKS"] is False
    assert branch["TEST"] == default["TEST"]
    assert branch["TEST"] is not default["TEST"]
    assert default["OPTIONS"]["options"] == "-c statement_timeout=5000"


def test_branch_without_project_application_name() -> None:
    databases = configured({"ENGINE": "django.db.backends.postgresql", "NAME": "app"})

    assert databases["schema_b"]["OPTIONS"] == {
        "application_name": "branch:b",
        "options": "-c search_path=b,public",
        "search_path": "b,public",
        "set_search_path": False,
        "verify_search_path": True,
        "search_path_per_transaction": False,
    }


def test_search_path_tail_is_configurable() -> None:
    databases = configured({"ENGINE": "django.db.backends.postgresql", "NAME": "app"})

    with override_settings(BRANCHING_OPS={"SEARCH_PATH_TAIL": ["shared", "public"]}):
        options = databases["schema_b"]["OPTIONS"]

    assert options["options"] == "-c search_path=b,shared,public"
    assert options["search_path"] == "b,shared,public"


def test_session_mode_leaves_the_startup_options_alone() -> None:
    databases = configured(
        {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": "app",
            "OPTIONS": {"options": "-c statement_timeout=5000"},
        }
    )

    with override_settings(BRANCHING_OPS={"SEARCH_PATH": "session", "VERIFY_SEARCH_PATH": False}):
        options = databases["schema_b"]["OPTIONS"]

    assert options == {
        "application_name": "branch:b",
        "options": "-c statement_timeout=5000",
        "search_path": "b,public",
        "set_search_path": True,
        "verify_search_path": False,
        "search_path_per_transaction": False,
    }


def test_iteration_sees_only_static_aliases() -> None:
    databases = configured({"ENGINE": "django.db.backends.postgresql", "NAME": "app"})
    databases["schema_b"]

    assert list(databases) == ["default"]
    assert list(databases.keys()) == ["default"]
    assert len(databases) == 1
    assert "schema_b" in databases
    assert "other" not in databases
    with pytest.raises(KeyError):
        databases["other"]


def test_subclass_builds_branch_settings() -> None:
    class PinnedDatabases(BranchDatabases):
        def branch_settings(self, name: str) -> dict[str, Any]:
            return {**super().branch_settings(name), "CONN_MAX_AGE": None}

    databases = PinnedDatabases({"default": {"ENGINE": "x", "OPTIONS": {}}})

    assert databases["schema_b"]["CONN_MAX_AGE"] is None


def test_build_branch_settings_from_a_plain_dict() -> None:
    """The public helper, for dynamic mappings of other projects (NetBox's)."""
    default = {"ENGINE": "django.db.backends.postgresql", "NAME": "app", "OPTIONS": {}}

    assert build_branch_settings(default, "b") == {
        "ENGINE": "branching_ops.backend",
        "NAME": "app",
        "OPTIONS": {
            "application_name": "branch:b",
            "options": "-c search_path=b,public",
            "search_path": "b,public",
            "set_search_path": False,
            "verify_search_path": True,
            "search_path_per_transaction": False,
        },
        "TEST": {},
    }
    assert default["OPTIONS"] == {}


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_build_branch_settings_rejects_hostile_names(name: str) -> None:
    with pytest.raises(ValueError, match="is not a valid branch name"):
        build_branch_settings({"OPTIONS": {}}, name)


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_hostile_names_rejected_before_any_connection(name: str) -> None:
    alias = "schema_" + name

    with pytest.raises(ConnectionDoesNotExist, match="is not a valid branch name") as excinfo:
        connections[alias]

    assert repr(name) in str(excinfo.value)
    assert not stored_wrapper(alias) is not None
    assert tracked_aliases() == []


def test_unknown_static_alias_keeps_djangos_message() -> None:
    with pytest.raises(ConnectionDoesNotExist, match=r"^The connection 'other' doesn't exist\.$"):
        connections["other"]


@pytest.mark.parametrize(
    ("pool", "branch_pool"),
    [
        (True, {"min_size": 0, "max_size": 4, "num_workers": 1}),
        (
            {"min_size": 8, "max_size": 16, "timeout": 10},
            {"min_size": 0, "max_size": 4, "num_workers": 1, "timeout": 10},
        ),
    ],
)
def test_branch_pool_options_go_over_defaults(pool: object, branch_pool: dict[str, Any]) -> None:
    databases = configured({"ENGINE": "django.db.backends.postgresql", "OPTIONS": {"pool": pool}})

    assert databases["schema_b"]["OPTIONS"]["pool"] == branch_pool
    assert databases["default"]["OPTIONS"]["pool"] == pool
