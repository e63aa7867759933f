from __future__ import annotations

import os
import subprocess
import sys
from io import StringIO
from typing import Any

import pytest
from django.conf import settings
from django.core.checks import Error
from django.core.checks import Warning
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.test import override_settings

from branching_ops.checks import SERVES_BRANCHES
from branching_ops.checks import check_connection_lifetime
from branching_ops.checks import check_databases
from branching_ops.checks import check_default_database
from branching_ops.checks import check_installed
from branching_ops.checks import check_known_settings
from branching_ops.checks import check_settings
from branching_ops.checks import check_worker_class
from branching_ops.conf import DEFAULTS
from branching_ops.databases import BranchDatabases
from branching_ops.workers import SPAWN_SUPPORTED
from tests.servers import ROOT

pytestmark = pytest.mark.filterwarnings("ignore:Overriding setting DATABASES:UserWarning")


def test_postgresql_default_passes() -> None:
    assert check_databases(None) == []
    assert check_settings(None) == []


def test_plain_dict_databases_are_not_ours_to_check() -> None:
    with override_settings(DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3"}}):
        assert check_databases(None) == []


def test_e001_non_postgresql_default() -> None:
    databases = BranchDatabases({"default": {"ENGINE": "django.db.backends.sqlite3"}})
    with override_settings(DATABASES=databases):
        assert check_databases(None) == [
            Error(
                "BranchDatabases needs a PostgreSQL 'default' database, not "
                "'django.db.backends.sqlite3'.",
                hint="Branches are PostgreSQL schemas; set ENGINE to "
                "'django.db.backends.postgresql'.",
                id="branching_ops.E001",
            )
        ]


def test_a_backend_built_on_postgresql_is_postgresql() -> None:
    """django-prometheus' engine, which NetBox sets with METRICS_ENABLED, is one."""
    databases = BranchDatabases({"default": {"ENGINE": "branching_ops.backend"}})
    with override_settings(DATABASES=databases):
        assert check_databases(None) == []


def test_netbox_branchings_dynamic_schema_dict_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    """Recognised by the marker the NetBox adapter sets on it, without importing NetBox."""

    class DynamicSchemaDict(dict[str, Any]):
        pass

    databases = DynamicSchemaDict({"default": {"ENGINE": "django.db.backends.sqlite3"}})
    with override_settings(DATABASES=databases):
        assert check_databases(None) == []
        monkeypatch.setattr(DynamicSchemaDict, SERVES_BRANCHES, True, raising=False)
        assert [e.id for e in check_databases(None)] == ["branching_ops.E001"]


def test_e002_invalid_search_path_tail() -> None:
    with override_settings(BRANCHING_OPS={"SEARCH_PATH_TAIL": ["public", "Bad Name"]}):
        assert [e.id for e in check_settings(None)] == ["branching_ops.E002"]
    with override_settings(BRANCHING_OPS={"SEARCH_PATH_TAIL": "public"}):
        assert [e.id for e in check_settings(None)] == ["branching_ops.E002"]


def configured_default(**overrides: Any) -> BranchDatabases:
    return BranchDatabases(
        {"default": {"ENGINE": "django.db.backends.postgresql", "NAME": "app", **overrides}}
    )


def test_w010_unknown_setting() -> None:
    with override_settings(BRANCHING_OPS={"MAX_CONNECTION_PER_THREAD": 3}):
        assert check_known_settings(None) == [
            Warning(
                "BRANCHING_OPS has an unknown key 'MAX_CONNECTION_PER_THREAD'.",
                hint="The keys are: " + ", ".join(DEFAULTS) + ".",
                id="branching_ops.W010",
            )
        ]
    assert check_known_settings(None) == []


@pytest.mark.parametrize("cap", [0, -1, 2.5, "3", True])
def test_e011_invalid_cap(cap: object) -> None:
    with override_settings(BRANCHING_OPS={"MAX_CONNECTIONS_PER_THREAD": cap}):
        assert [e.id for e in check_connection_lifetime(None)] == ["branching_ops.E011"]


def test_valid_cap_and_lifetime_pass() -> None:
    with override_settings(
        DATABASES=configured_default(CONN_MAX_AGE=60),
        BRANCHING_OPS={"MAX_CONNECTIONS_PER_THREAD": 3},
    ):
        assert check_connection_lifetime(None) == []


def test_e010_pool_with_persistent_connections() -> None:
    databases = configured_default(CONN_MAX_AGE=60, OPTIONS={"pool": True})
    with override_settings(DATABASES=databases):
        errors = check_connection_lifetime(None)

    assert [e.id for e in errors] == ["branching_ops.E010"]
    assert errors[0].msg == (
        "Django's connection pool (OPTIONS['pool']) needs CONN_MAX_AGE = 0, not 60: "
        "every branch connection would fail to open."
    )


def test_pool_with_conn_max_age_zero_passes() -> None:
    databases = configured_default(CONN_MAX_AGE=0, OPTIONS={"pool": {"timeout": 5}})
    with override_settings(DATABASES=databases):
        assert check_connection_lifetime(None) == []


@pytest.mark.parametrize(
    ("options", "reason"),
    [
        ({"min_size": 0}, "max_size"),  # psycopg_pool's own wording follows
        ({"min_size": 5, "max_size": 2}, "max_size"),
        ({"max_sise": 4}, "'max_sise'"),
    ],
)
def test_e012_invalid_branch_pool_options(options: dict[str, Any], reason: str) -> None:
    databases = configured_default(CONN_MAX_AGE=0, OPTIONS={"pool": True})
    with override_settings(DATABASES=databases, BRANCHING_OPS={"BRANCH_POOL_OPTIONS": options}):
        errors = check_connection_lifetime(None)

    assert [e.id for e in errors] == ["branching_ops.E012"]
    assert reason in errors[0].msg


def test_w011_persistent_connections_with_a_cap() -> None:
    with override_settings(
        DATABASES=configured_default(CONN_MAX_AGE=None),
        BRANCHING_OPS={"MAX_CONNECTIONS_PER_THREAD": 3},
    ):
        errors = check_connection_lifetime(None)

    assert [e.id for e in errors] == ["branching_ops.W011"]
    assert "only MAX_CONNECTIONS_PER_THREAD = 3 bounds them" in errors[0].msg


def test_w012_persistent_connections_without_a_cap() -> None:
    with override_settings(DATABASES=configured_default(CONN_MAX_AGE=None)):
        errors = check_connection_lifetime(None)

    assert [e.id for e in errors] == ["branching_ops.W012"]
    assert "every thread keeps one per branch it ever touched" in errors[0].msg


def test_checks_run_with_the_check_command() -> None:
    """Without ``--database`` too: Django 6.1 skips checks tagged ``database`` then."""
    out = StringIO()
    with (
        override_settings(
            BRANCHING_OPS={"MAX_CONNECTIONS_PER_THREAD": 0, "TYPO": 1},
            DATABASES=BranchDatabases({"default": {"ENGINE": "django.db.backends.sqlite3"}}),
        ),
        pytest.raises(SystemCheckError) as excinfo,
    ):
        call_command("check", stdout=out, stderr=out)

    assert "branching_ops.E001" in str(excinfo.value)
    assert "branching_ops.E011" in str(excinfo.value)
    assert "branching_ops.W010" in str(excinfo.value)


@pytest.mark.parametrize(
    "worker_class",
    ["branching_ops.workers.BranchSpawnWorker", "tests.project.jobs.SpawnWorkerSubclass"],
)
def test_e032_spawn_worker_needs_rq_3(worker_class: str) -> None:
    """rq 2's spawned job process runs a plain rq.Worker: refuse ours there."""
    with override_settings(RQ={"WORKER_CLASS": worker_class}):
        errors = check_worker_class(None)

    if SPAWN_SUPPORTED:
        assert errors == []
    else:
        [error] = errors
        assert error.id == "branching_ops.E032"
        assert error.msg.startswith(f"RQ['WORKER_CLASS'] is {worker_class!r}: ")
        assert "BranchSpawnWorker needs rq >= 3" in error.msg


@pytest.mark.parametrize(
    "worker_class",
    [
        "branching_ops.workers.BranchWorker",
        "rq.worker.SpawnWorker",
        "no.such.Worker",
        None,
    ],
)
def test_e032_not_raised_for_other_workers(worker_class: str | None) -> None:
    with override_settings(RQ={"WORKER_CLASS": worker_class} if worker_class else {}):
        assert check_worker_class(None) == []


# Project misconfigurations (E030 and up).

APPS_WITHOUT_US = [app for app in settings.INSTALLED_APPS if app != "branching_ops"]
DUMMY = {"ENGINE": "django.db.backends.dummy"}


def test_default_database_present_passes() -> None:
    assert check_default_database(None) == []
    assert check_installed(None) == []


@pytest.mark.parametrize(
    "databases", [BranchDatabases({}), BranchDatabases({"default": dict(DUMMY)})]
)
def test_e030_no_default_database(databases: BranchDatabases) -> None:
    with override_settings(DATABASES=databases):
        assert check_default_database(None) == [
            Error(
                "BranchDatabases has no 'default' database: every branch is derived from it.",
                hint="Pass the project's PostgreSQL database as 'default': "
                "BranchDatabases({'default': {'ENGINE': 'django.db.backends.postgresql', ...}}).",
                id="branching_ops.E030",
            )
        ]
        assert check_databases(None) == []  # reported once, as E030


def test_e030_leaves_plain_dict_databases_alone() -> None:
    with override_settings(DATABASES={"default": dict(DUMMY)}):
        assert check_default_database(None) == []


def test_e031_app_not_installed_with_branch_databases() -> None:
    with override_settings(INSTALLED_APPS=APPS_WITHOUT_US, RQ={}):
        assert check_installed(None) == [
            Error(
                "'branching_ops' is not in INSTALLED_APPS, but DATABASES is a BranchDatabases.",
                hint="Add 'branching_ops' to INSTALLED_APPS: without it no request boundary "
                "closes branch connections, and its checks and commands are missing.",
                id="branching_ops.E031",
            )
        ]


def test_e031_app_not_installed_with_branch_worker() -> None:
    worker = "branching_ops.workers.BranchSimpleWorker"
    with override_settings(
        INSTALLED_APPS=APPS_WITHOUT_US,
        DATABASES={"default": settings.DATABASES["default"]},
        RQ={"WORKER_CLASS": worker},
    ):
        [error] = check_installed(None)
    assert error.id == "branching_ops.E031"
    assert error.msg == (
        f"'branching_ops' is not in INSTALLED_APPS, but RQ['WORKER_CLASS'] is {worker!r}."
    )


def test_e031_not_raised_for_projects_that_do_not_use_us() -> None:
    with override_settings(
        INSTALLED_APPS=APPS_WITHOUT_US,
        DATABASES={"default": settings.DATABASES["default"]},
        RQ={"WORKER_CLASS": "rq.worker.SimpleWorker"},
    ):
        assert check_installed(None) == []


@pytest.mark.parametrize(
    ("misconfiguration", "expected"),
    [
        ("app-not-installed", "(branching_ops.E031) 'branching_ops' is not in INSTALLED_APPS"),
        ("empty-databases", "(branching_ops.E030) BranchDatabases has no 'default' database"),
        # Django itself refuses this one at start-up, before any check can run.
        ("no-default", "ImproperlyConfigured: You must define a 'default' database."),
    ],
)
def test_manage_py_check_reports_misconfiguration(misconfiguration: str, expected: str) -> None:
    """Through Django's whole start-up, even without the app's ready()."""
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--settings", "tests.project.misconfigured"],
        cwd=ROOT,
        env={**os.environ, "BRANCHING_OPS_TEST_MISCONFIGURATION": misconfiguration},
        capture_output=True,
        text=True,
        check=False,
    )

    assert result.returncode == 1
    assert expected in result.stderr
