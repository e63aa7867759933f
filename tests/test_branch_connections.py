"""``manage.py branch_connections`` through call_command, against real server backends."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.conftest import Connect
from tests.operations import backend_json
from tests.operations import backend_lines
from tests.operations import json_normalized
from tests.operations import normalized
from tests.operations import run

pytestmark = pytest.mark.usefixtures("drop_schemas")


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


def test_other_roles_backends_are_listed_with_what_is_visible(
    connect: Connect, dbname: str
) -> None:
    """Without pg_read_all_stats, another role's backend shows no state, times or address."""
    pid = connect("branch:hidden", user="postgres").info.backend_pid

    table = run("branch_connections", verbosity=2)
    data = json.loads(run("branch_connections", json=True))

    width = len(str(pid))
    assert table == (
        "BRANCH  CONNECTIONS  ACTIVE  IDLE  IDLE IN TX  OLDEST  LONGEST IDLE  CLIENTS\n"
        "hidden            1       0     0           0  -       -\n"
        "\n"
        f"BRANCH  {'PID':>{width}}  USER      STATE  AGE  IDLE  CLIENT\n"
        f"hidden  {pid}  postgres  -      -    -     -\n"
        "\n"
        f"1 connection(s) on 1 branch(es) of database {dbname!r}.\n"
    )
    assert data["branches"][0]["backends"] == [
        {
            "pid": pid,
            "branch": "hidden",
            "application_name": "branch:hidden",
            "user": "postgres",
            "state": None,
            "client": None,
            "age_seconds": None,
            "idle_seconds": None,
        }
    ]
    assert data["branches"][0]["oldest_seconds"] is None
    assert data["branches"][0]["clients"] == []
