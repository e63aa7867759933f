"""``manage.py branch_terminate`` through call_command, against real server backends."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from django.core.management.base import CommandError
from django.db import connections

from branching_ops.testing.postgres import PostgresServer
from tests.backends import BranchBackends
from tests.conftest import APP_ROLE
from tests.conftest import Connect
from tests.operations import backend_json
from tests.operations import backend_lines
from tests.operations import json_normalized
from tests.operations import normalized
from tests.operations import run

pytestmark = pytest.mark.usefixtures("drop_schemas")


def test_terminate_is_a_dry_run_by_default(
    three_branches: dict[int, str], branch_backends: BranchBackends, dbname: str
) -> None:
    before = branch_backends()

    output = run("branch_terminate", branch=["alpha", "beta"])

    assert normalized(output, three_branches) == (
        backend_lines(three_branches, "a1", "a2", "b1") + "\n"
        f"Would terminate 3 branch backend(s) of database {dbname!r}. "
        "Run again with --yes to terminate them.\n"
    )
    assert branch_backends() == before


def test_terminate_yes(
    three_branches: dict[int, str], branch_backends: BranchBackends, dbname: str
) -> None:
    output = run("branch_terminate", branch=["alpha", "beta"], yes=True)

    assert normalized(output, three_branches) == (
        backend_lines(three_branches, "a1", "a2", "b1") + "\n"
        f"Terminated 3 branch backend(s) of database {dbname!r}.\n"
    )
    # gamma, and this thread's own branch connection, are still there.
    branch_backends.wait_for(["branch:gamma", "branch:mine"])
    with connections["schema_mine"].cursor() as cursor:
        cursor.execute("SELECT 1")


def test_terminate_json(three_branches: dict[int, str], branch_backends: BranchBackends) -> None:
    dry = json.loads(run("branch_terminate", json=True, state=["active"]))
    done = json.loads(run("branch_terminate", json=True, state=["active"], yes=True))

    expected = {
        "database": connections["default"].settings_dict["NAME"],
        "backends": [backend_json("g1", "gamma", "active")],
    }
    assert json_normalized(dry, three_branches) == {**expected, "dry_run": True, "terminated": []}
    assert json_normalized(done, three_branches) == {
        **expected,
        "dry_run": False,
        "terminated": ["g1"],
    }
    assert "branch:gamma" not in branch_backends()


def test_terminate_nothing_matches(connect: Connect, dbname: str) -> None:
    connect("myproject")

    output = run("branch_terminate", yes=True)

    assert output == f"No branch backends match on database {dbname!r}.\n"


def test_terminate_without_privilege_changes_nothing(
    three_branches: dict[int, str], connect: Connect, branch_backends: BranchBackends
) -> None:
    superuser_pid = connect("branch:alpha", user="postgres").info.backend_pid
    before = branch_backends()

    with pytest.raises(CommandError) as raised:
        run("branch_terminate", branch=["alpha"], yes=True)

    assert str(raised.value) == (
        f"Role 'app' may not terminate 1 of 3 branch backend(s) (pid {superuser_pid}, "
        "role 'postgres'); nothing was terminated. Connect as a superuser, as the "
        "backends' role, or as a member of pg_signal_backend."
    )
    assert branch_backends() == before


@pytest.fixture
def other_role(postgres: PostgresServer, dbname: str) -> Iterator[str]:
    """A second ordinary role; ``app`` is granted pg_signal_backend only inside the test."""
    with postgres.connect() as setup:
        if not setup.execute("SELECT 1 FROM pg_roles WHERE rolname = 'other'").fetchone():
            setup.execute("CREATE ROLE other LOGIN")
        yield "other"
        setup.execute(f"REVOKE pg_signal_backend FROM {APP_ROLE}")


def test_terminate_another_roles_backend_needs_pg_signal_backend(
    connect: Connect, other_role: str, postgres: PostgresServer, branch_backends: BranchBackends
) -> None:
    pid = connect("branch:alpha", user=other_role).info.backend_pid

    with pytest.raises(CommandError, match=rf"\(pid {pid}, role 'other'\); nothing was"):
        run("branch_terminate", yes=True)
    assert branch_backends() == ["branch:alpha"]

    with postgres.connect() as setup:
        setup.execute(f"GRANT pg_signal_backend TO {APP_ROLE}")
    output = run("branch_terminate", yes=True, json=True)

    assert json.loads(output)["terminated"] == [pid]
    branch_backends.wait_for([])
