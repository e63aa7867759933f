"""What the operations commands check on the way in, shared by all of them."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.management.base import CommandError
from django.db import connections

from branching_ops.testing.postgres import PostgresServer
from branching_ops.testing.processes import free_port
from branching_ops.tracking import tracked_aliases
from tests.operations import execute
from tests.operations import run
from tests.operations import schemas

pytestmark = pytest.mark.usefixtures("drop_schemas")


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


@pytest.mark.parametrize(
    "name", ["public", "information_schema", "pg_catalog", "pg_toast", "pg_x"]
)
@pytest.mark.parametrize("command", ["branch_create", "branch_drop"])
def test_reserved_schemas(command: str, name: str, postgres: PostgresServer, dbname: str) -> None:
    before = schemas(postgres, dbname)

    with pytest.raises(CommandError) as raised:
        run(command, name, *(["--noinput", "--if-exists"] if command == "branch_drop" else []))

    assert str(raised.value) == f"{name!r} is a reserved schema, not a branch."
    assert schemas(postgres, dbname) == before
    assert execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'") != [(0,)]


@pytest.mark.parametrize(
    ("command", "options"),
    [
        (["branch_connections"], {}),
        (["branch_terminate"], {"yes": True}),
        (["branch_create", "down_a"], {}),
        (["branch_drop", "down_a"], {"interactive": False}),
    ],
)
def test_server_down_is_a_command_error(
    postgres: PostgresServer, dbname: str, command: list[str], options: dict[str, Any]
) -> None:
    default = connections["default"]
    default.close()
    port = default.settings_dict["PORT"]
    default.settings_dict["PORT"] = str(free_port())  # nothing listens there
    try:
        with pytest.raises(CommandError) as excinfo:
            run(*command, **options)
    finally:
        default.close()
        default.settings_dict["PORT"] = port
    assert str(excinfo.value).startswith(
        "Cannot connect to database 'default'; nothing was changed. connection failed: "
    )
    assert tracked_aliases() == []
    assert schemas(postgres, dbname) == ["public"]
