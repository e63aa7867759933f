from __future__ import annotations

from django.core.checks import Error
from django.test import override_settings

from branching_ops.checks import check_databases
from branching_ops.checks import check_settings
from branching_ops.databases import BranchDatabases


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


def test_e002_invalid_search_path_tail() -> None:
    with override_settings(BRANCHING_OPS={"SEARCH_PATH_TAIL": ["public", "Bad Name"]}):
        assert [e.id for e in check_settings(None)] == ["branching_ops.E002"]
    with override_settings(BRANCHING_OPS={"SEARCH_PATH_TAIL": "public"}):
        assert [e.id for e in check_settings(None)] == ["branching_ops.E002"]
