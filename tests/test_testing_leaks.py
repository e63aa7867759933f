"""``branching_ops.testing``: leak assertions and the pytest plugin."""

from __future__ import annotations

import importlib.metadata
import os
from pathlib import Path

import pytest
from django.db import connections

from branching_ops.testing import assert_no_branch_connections
from branching_ops.testing import branch_connection_count
from branching_ops.testing.postgres import PostgresServer
from branching_ops.tracking import close_branch_connections
from tests.backends import BranchBackends
from tests.conftest import Branches

REPO = Path(__file__).resolve().parent.parent
PLUGIN = "branching_ops.testing.pytest_plugin"


def open_branch(name: str) -> None:
    with connections[f"schema_{name}"].cursor() as cursor:
        cursor.execute("SELECT 1")


def test_branch_connection_count_reads_the_server(
    branch_backends: BranchBackends, branches: Branches
) -> None:
    branches("count_a", "count_b")
    assert branch_connection_count() == 0
    open_branch("count_a")
    open_branch("count_b")

    assert branch_connection_count() == 2


@pytest.mark.usefixtures("branch_backends")
def test_block_that_closes_what_it_opened_passes(branches: Branches) -> None:
    branches("before", "closed_inside")
    open_branch("before")  # open before the block: not the block's leak

    with assert_no_branch_connections():
        open_branch("closed_inside")
        close_branch_connections(["schema_closed_inside"])


@pytest.mark.usefixtures("branch_backends")
def test_block_that_leaks_fails_naming_the_branches(branches: Branches) -> None:
    branches("a", "b")
    other = connections.create_connection("schema_b")  # a second connection to b

    def leak() -> None:
        with assert_no_branch_connections(timeout=0.2):
            open_branch("a")
            open_branch("b")
            other.ensure_connection()

    try:
        with pytest.raises(AssertionError) as excinfo:
            leak()
    finally:
        other.close()

    assert str(excinfo.value) == (
        "3 branch connection(s) opened here are still open: a (1), b (2)"
    )


@pytest.mark.usefixtures("branch_backends")
def test_exception_in_block_is_not_masked(branches: Branches) -> None:
    branches("failing")

    def fail() -> None:
        with assert_no_branch_connections():
            open_branch("failing")
            raise ZeroDivisionError

    with pytest.raises(ZeroDivisionError):
        fail()


def plugin_is_installed() -> bool:
    return bool(importlib.metadata.entry_points(group="pytest11", name="branching_ops"))


def test_entry_point_declares_the_plugin() -> None:
    try:
        importlib.metadata.distribution("django-branching-ops")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("running from a source tree: the package is not installed (tox installs it)")
    (entry_point,) = importlib.metadata.entry_points(group="pytest11", name="branching_ops")
    assert entry_point.value == PLUGIN


CHILD_TESTS = """
import pytest
from django.db import connections

from branching_ops.tracking import close_branch_connections


def open_branch(name):
    with connections[f"schema_{name}"].cursor() as cursor:
        cursor.execute("SELECT 1")


@pytest.mark.django_db
def test_closes_what_it_opens(assert_no_branch_connections):
    open_branch("plugin_ok")
    close_branch_connections()


@pytest.mark.django_db(transaction=True)
def test_leaks(assert_no_branch_connections):
    open_branch("plugin_leak")


@pytest.mark.django_db
def test_fails_on_its_own(assert_no_branch_connections):
    open_branch("plugin_failing")
    assert 1 == 2, "its own failure"


@pytest.mark.django_db
def test_does_not_ask(client):
    open_branch("plugin_unchecked")
"""

CHILD_CONFTEST = """
import pytest
from django.db import connections

from branching_ops.tracking import close_branch_connections


@pytest.fixture(scope="session", autouse=True)
def _branches(django_db_setup, django_db_blocker):
    # Committed, outside any test's transaction: branch connections are other sessions.
    with django_db_blocker.unblock(), connections["default"].cursor() as cursor:
        for name in ("plugin_ok", "plugin_leak", "plugin_failing", "plugin_unchecked"):
            cursor.execute(f"CREATE SCHEMA {name}")


@pytest.fixture(autouse=True)
def _close_branches():
    yield
    close_branch_connections()  # lets the test database be dropped at the end
"""

CHILD_SETTINGS = """
from tests.project.settings import *  # noqa: F403

DATABASES["default"]["TEST"] = {"NAME": "branching_ops_plugin_test"}  # noqa: F405
"""


@pytest.mark.slow
def test_pytest_plugin_fails_the_leaking_test_only(
    pytester: pytest.Pytester, postgres: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile(test_child=CHILD_TESTS, conftest=CHILD_CONFTEST)
    pytester.makepyfile(child_settings=CHILD_SETTINGS)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(pytester.path), str(REPO)]))
    monkeypatch.setenv("DJANGO_SETTINGS_MODULE", "child_settings")
    plugin_args = [] if plugin_is_installed() else ["-p", PLUGIN]

    result = pytester.runpytest_subprocess(*plugin_args, "-p", "no:cacheprovider")

    result.assert_outcomes(passed=2, failed=2)
    result.stdout.fnmatch_lines(
        [
            "E * AssertionError: 1 branch connection(s) opened here are still open: "
            "plugin_leak (1)",
            "*short test summary info*",
            "FAILED test_child.py::test_fails_on_its_own - AssertionError: its own failure",
            "FAILED test_child.py::test_leaks - *",
        ]
    )
