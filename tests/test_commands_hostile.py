"""Hostile branch names through every argument of every management command.

These tests have no database fixture: pytest-django refuses any connection
attempt, so a name that got as far as the server would fail them with a
``RuntimeError`` instead of the expected ``CommandError``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from branching_ops.names import branch_name_error
from branching_ops.tracking import tracked_aliases
from tests.hostile import HOSTILE_NAMES

ROOT = Path(__file__).resolve().parent.parent

# (door, call with the hostile name, the message's prefix)
Door = tuple[str, Callable[[str], None], str]


def call(*args: str, **options: Any) -> None:
    call_command(*args, stdout=StringIO(), stderr=StringIO(), **options)


def through_database(*args: str) -> Callable[[str], None]:
    return lambda name: call(*args, database="schema_" + name)


DOORS: list[Door] = [
    ("branch_create NAME", lambda n: call("branch_create", n), ""),
    ("branch_create --from-schema", lambda n: call("branch_create", "ok", from_schema=n),
     "--from-schema: "),
    ("branch_drop NAME", lambda n: call("branch_drop", n, interactive=False), ""),
    ("branch_connections --branch", lambda n: call("branch_connections", branch=[n]),
     "--branch: "),
    ("branch_terminate --branch", lambda n: call("branch_terminate", branch=["ok", n], yes=True),
     "--branch: "),
    *(
        (f"{args[0]} --database", through_database(*args),
         "The connection 'schema_{name}' doesn't exist: ")
        for args in [
            ["branch_connections"],
            ["branch_terminate", "--yes"],
            ["branch_create", "ok"],
            ["branch_drop", "ok", "--noinput"],
        ]
    ),
]  # fmt: skip


def test_enough_hostile_names() -> None:
    assert len(HOSTILE_NAMES) >= 30
    assert all(branch_name_error(name) for name in HOSTILE_NAMES)


@pytest.mark.parametrize("name", HOSTILE_NAMES)
@pytest.mark.parametrize(("door", "use", "prefix"), DOORS, ids=[door for door, _, _ in DOORS])
def test_hostile_name_rejected_before_any_connection(
    door: str, use: Callable[[str], None], prefix: str, name: str
) -> None:
    with pytest.raises(CommandError) as raised:
        use(name)

    assert str(raised.value) == prefix.format(name=name) + str(branch_name_error(name))
    assert tracked_aliases() == []


@pytest.mark.parametrize(
    "args",
    [
        ["branch_drop", "a; DROP SCHEMA public CASCADE", "--noinput"],
        ["branch_create", "ok", "--from-schema", "../public"],
        ["branch_terminate", "--branch", "-c search_path=public", "--yes"],
    ],
)
def test_hostile_name_through_manage_py(args: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env={**os.environ, "BRANCHING_OPS_TEST_PGPORT": "1"},  # a connection would fail
        capture_output=True,
        text=True,
        check=False,
    )

    assert done.returncode == 1
    assert done.stderr.startswith("CommandError: ")
    assert "is not a valid branch name" in done.stderr
    assert "Traceback" not in done.stderr
