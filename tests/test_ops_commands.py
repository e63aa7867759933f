"""The operations commands through call_command, against real server backends."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from collections.abc import Iterator
from io import StringIO
from typing import Any

import psycopg
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connections

from branching_ops.testing.postgres import PostgresServer
from tests.backends import BranchBackends
from tests.conftest import APP_ROLE

Connect = Callable[..., psycopg.Connection[Any]]


@pytest.fixture
def dbname(transactional_db: None) -> str:
    name: str = connections["default"].settings_dict["NAME"]
    return name


@pytest.fixture
def connect(postgres: PostgresServer, dbname: str) -> Iterator[Connect]:
    """Open real client backends, as other processes would: ``connect(app_name, ...)``."""
    opened: list[psycopg.Connection[Any]] = []

    def open_backend(
        application_name: str, *, user: str = APP_ROLE, database: str = "", autocommit: bool = True
    ) -> psycopg.Connection[Any]:
        connection = psycopg.connect(
            postgres.conninfo(database or dbname, user=user),
            application_name=application_name,
            autocommit=autocommit,
        )
        opened.append(connection)
        return connection

    yield open_backend
    for connection in opened:
        connection.cancel()  # a backend in pg_sleep() would outlive its client
        connection.close()


def run(*args: str, **options: Any) -> str:
    out = StringIO()
    call_command(*args, stdout=out, stderr=StringIO(), **options)
    return out.getvalue()


def normalized(text: str, pids: dict[int, str] | None = None) -> str:
    """Durations to ``H:MM:SS``; pids to names, padded back to the column width."""
    text = re.sub(r"\b\d+:\d\d:\d\d\b", "H:MM:SS", text)
    for pid, name in (pids or {}).items():
        text = re.sub(rf"\b{pid}\b", name.rjust(len(str(pid))), text)
    return text


def schemas(postgres: PostgresServer, dbname: str) -> list[str]:
    with postgres.connect(dbname) as monitor:
        rows = monitor.execute(
            "SELECT nspname FROM pg_namespace WHERE nspname !~ '^(pg_|information_schema)' "
            "ORDER BY 1"
        ).fetchall()
    return [str(name) for (name,) in rows]


# -- branch_connections --------------------------------------------------------


def test_connections_none(dbname: str) -> None:
    assert run("branch_connections") == f"No branch connections on database {dbname!r}.\n"


def test_connections_table(three_branches: dict[int, str], dbname: str) -> None:
    output = run("branch_connections")

    assert normalized(output) == (
        "BRANCH  CONNECTIONS  ACTIVE  IDLE  IDLE IN TX  OLDEST   LONGEST IDLE  CLIENTS\n"
        "alpha             2       0     2           0  H:MM:SS  H:MM:SS       127.0.0.1\n"
        "beta              1       0     0           1  H:MM:SS  H:MM:SS       127.0.0.1\n"
        "gamma             1       1     0           0  H:MM:SS  -             127.0.0.1\n"
        "\n"
        f"4 connection(s) on 3 branch(es) of database {dbname!r}.\n"
    )


@pytest.fixture
def three_branches(connect: Connect) -> dict[int, str]:
    """alpha: 2 idle; beta: 1 idle in transaction (project prefix); gamma: 1 active."""
    backends = {
        "a1": connect("branch:alpha"),
        "a2": connect("branch:alpha"),
        "b1": connect("myproject/branch:beta", autocommit=False),
        "g1": connect("branch:gamma"),
    }
    backends["b1"].execute("SELECT 1")
    backends["g1"].pgconn.send_query(b"SELECT pg_sleep(60)")
    connect("myproject")  # not a branch
    connect("branch:alpha", database="postgres")  # another database
    with connections["schema_mine"].cursor() as cursor:  # this thread's own
        cursor.execute("SELECT 1")
    return {connection.info.backend_pid: name for name, connection in backends.items()}


def json_normalized(data: Any, pids: dict[int, str]) -> Any:
    """Durations (checked non-negative) to ``"s"``, pids to names."""
    if isinstance(data, list):
        return [json_normalized(item, pids) for item in data]
    if not isinstance(data, dict):
        return data
    normal = {}
    for key, value in data.items():
        if key.endswith("_seconds") and value is not None:
            assert isinstance(value, float), (key, value)
            assert value >= 0, (key, value)
            value = "s"
        elif key == "pid" or key == "terminated":
            value = pids[value] if key == "pid" else [pids[pid] for pid in value]
        normal[key] = json_normalized(value, pids)
    return normal


BACKEND_ROWS = {  # name: (branch, user, state, idle)
    "a1": ("alpha", "app", "idle", "H:MM:SS"),
    "a2": ("alpha", "app", "idle", "H:MM:SS"),
    "b1": ("beta", "app", "idle in transaction", "H:MM:SS"),
    "g1": ("gamma", "app", "active", "-"),
}


def backend_lines(pids: dict[int, str], *names: str) -> str:
    """The expected backend table; only the pid column's width depends on the run."""
    width = max(len(str(pid)) for pid in pids)
    lines = [f"BRANCH  {'PID':>{width}}  USER  STATE                AGE      IDLE     CLIENT"]
    for name in names:
        branch, user, state, idle = BACKEND_ROWS[name]
        lines.append(
            f"{branch:<6}  {name:>{width}}  {user:<4}  {state:<19}  H:MM:SS  {idle:<7}  127.0.0.1"
        )
    return "\n".join(lines) + "\n"


def test_connections_verbosity_2_lists_backends(
    three_branches: dict[int, str], dbname: str
) -> None:
    output = run("branch_connections", verbosity=2)

    assert normalized(output, three_branches) == (
        "BRANCH  CONNECTIONS  ACTIVE  IDLE  IDLE IN TX  OLDEST   LONGEST IDLE  CLIENTS\n"
        "alpha             2       0     2           0  H:MM:SS  H:MM:SS       127.0.0.1\n"
        "beta              1       0     0           1  H:MM:SS  H:MM:SS       127.0.0.1\n"
        "gamma             1       1     0           0  H:MM:SS  -             127.0.0.1\n"
        "\n" + backend_lines(three_branches, "a1", "a2", "b1", "g1") + "\n"
        f"4 connection(s) on 3 branch(es) of database {dbname!r}.\n"
    )


def test_connections_verbosity_0_is_the_bare_table(three_branches: dict[int, str]) -> None:
    output = run("branch_connections", verbosity=0, branch=["beta"])

    assert normalized(output) == (
        "BRANCH  CONNECTIONS  ACTIVE  IDLE  IDLE IN TX  OLDEST   LONGEST IDLE  CLIENTS\n"
        "beta              1       0     0           1  H:MM:SS  H:MM:SS       127.0.0.1\n"
    )
    assert run("branch_connections", verbosity=0, branch=["nothing_here"]) == ""


def backend_json(pid: str, branch: str, state: str, *, prefix: str = "") -> dict[str, Any]:
    return {
        "pid": pid,
        "branch": branch,
        "application_name": f"{prefix}branch:{branch}",
        "user": APP_ROLE,
        "state": state,
        "client": "127.0.0.1",
        "age_seconds": "s",
        "idle_seconds": None if state == "active" else "s",
    }


def test_connections_json(three_branches: dict[int, str], dbname: str) -> None:
    output = run("branch_connections", json=True)

    def branch(name: str, backends: list[dict[str, Any]], **counts: int) -> dict[str, Any]:
        return {
            "branch": name,
            "connections": len(backends),
            "active": 0,
            "idle": 0,
            "idle_in_transaction": 0,
            **counts,
            "oldest_seconds": "s",
            "longest_idle_seconds": None if counts.get("active") else "s",
            "clients": ["127.0.0.1"],
            "backends": backends,
        }

    assert json_normalized(json.loads(output), three_branches) == {
        "database": dbname,
        "branches": [
            branch(
                "alpha",
                [
                    backend_json("a1", "alpha", "idle"),
                    backend_json("a2", "alpha", "idle"),
                ],
                idle=2,
            ),
            branch(
                "beta",
                [backend_json("b1", "beta", "idle in transaction", prefix="myproject/")],
                idle_in_transaction=1,
            ),
            branch("gamma", [backend_json("g1", "gamma", "active")], active=1),
        ],
    }


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({"branch": ["alpha"]}, ["a1", "a2"]),
        ({"branch": ["alpha", "gamma"]}, ["a1", "a2", "g1"]),
        ({"state": ["active"]}, ["g1"]),
        ({"state": ["idle in transaction", "active"]}, ["b1", "g1"]),
        ({"idle_longer_than": 0}, ["a1", "a2", "b1"]),
        ({"idle_longer_than": 3600}, []),
        ({"branch": ["alpha"], "state": ["active"]}, []),
        ({"branch": ["nothing_here"]}, []),
    ],
)
def test_connections_filters(
    three_branches: dict[int, str], filters: dict[str, Any], expected: list[str]
) -> None:
    output = json.loads(run("branch_connections", json=True, **filters))

    pids = [b["pid"] for branch in output["branches"] for b in branch["backends"]]
    assert [three_branches[pid] for pid in pids] == expected


def test_connections_filters_from_the_command_line(three_branches: dict[int, str]) -> None:
    output = run(
        "branch_connections", "--json", "--branch", "beta", "--state", "idle in transaction",
        "--idle-longer-than", "0",
    )  # fmt: skip

    [branch] = json.loads(output)["branches"]
    assert [three_branches[b["pid"]] for b in branch["backends"]] == ["b1"]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"state": ["sleeping"]}, "--state: 'sleeping' is not one of 'active', 'idle', "
         "'idle in transaction', 'idle in transaction (aborted)'."),
        ({"idle_longer_than": -1}, "--idle-longer-than: -1 is negative."),
        ({"database": "nope"}, "The connection 'nope' doesn't exist."),
    ],
)  # fmt: skip
@pytest.mark.parametrize("command", ["branch_connections", "branch_terminate"])
def test_filter_refusals(command: str, options: dict[str, Any], message: str) -> None:
    with pytest.raises(CommandError) as raised:
        run(command, **options)

    assert str(raised.value) == message


# -- branch_terminate ------------------------------------------------------------


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
