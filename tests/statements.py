"""What reached the server: the statements new sessions of the application role ran."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator

import pytest
from django.test import override_settings
from psycopg import sql

from branching_ops.routers import activate_branch
from branching_ops.search_path import SearchPathError
from branching_ops.testing.postgres import PostgresServer
from tests.conftest import APP_ROLE
from tests.testapp.models import Note

# "2026-12-01 10:00:00.000 UTC [1234] LOG:  statement: SELECT 1"
_STATEMENT_RE = re.compile(r"^\S+ \S+ \S+ \[\d+\] LOG:  statement: (.*)$")


# Django's own connection setup when the server's TimeZone is not settings.TIME_ZONE.
_DJANGO_TIME_ZONE_SETUP = "SELECT set_config('TimeZone', 'UTC', false)"


def as_logged(query: str, *params: str) -> str:
    """``query`` as the server logs it: Django's psycopg cursors bind client-side."""
    quoted = iter(params)
    return re.sub("%s", lambda _: "'" + next(quoted).replace("'", "''") + "'", query)


@contextlib.contextmanager
def logged_statements(postgres: PostgresServer, dbname: str, role: str) -> Iterator[list[str]]:
    """Inside: every session ``role`` opens on ``dbname`` logs its statements; after: the list.

    Sessions opened before the block log nothing (the setting applies at
    connection start), so the list holds what the new ones sent.
    """
    role_in_database = sql.SQL("ALTER ROLE {} IN DATABASE {}").format(
        sql.Identifier(role), sql.Identifier(dbname)
    )
    with postgres.connect() as admin:
        admin.execute(role_in_database + sql.SQL(" SET log_statement = 'all'"))
    start = postgres.log_path.stat().st_size
    statements: list[str] = []
    try:
        yield statements
    finally:
        with postgres.connect() as admin:
            admin.execute(role_in_database + sql.SQL(" RESET log_statement"))
        with postgres.log_path.open(errors="replace") as log:
            log.seek(start)
            statements += [m[1] for line in log if (m := _STATEMENT_RE.match(line))]


def write_to_missing_branch(
    postgres: PostgresServer, dbname: str, mode: str
) -> tuple[SearchPathError, list[str]]:
    """Create a note with branch ``typo`` active, which does not exist, in ``SEARCH_PATH`` mode.

    The error it raised, and the statements new sessions sent the server
    meanwhile, Django's own time zone setup left out.
    """
    with (
        override_settings(BRANCHING_OPS={"SEARCH_PATH": mode}),
        logged_statements(postgres, dbname, APP_ROLE) as statements,
        pytest.raises(SearchPathError) as excinfo,
        activate_branch("typo"),
    ):
        Note.objects.create(text="meant for typo")
    return excinfo.value, [s for s in statements if s != _DJANGO_TIME_ZONE_SETUP]
