"""What reached the server: the statements new sessions of the application role ran."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator

from psycopg import sql

from branching_ops.testing.postgres import PostgresServer

# "2026-12-01 10:00:00.000 UTC [1234] LOG:  statement: SELECT 1"
_STATEMENT_RE = re.compile(r"^\S+ \S+ \S+ \[\d+\] LOG:  statement: (.*)$")


# Django's own connection setup when the server's TimeZone is not settings.TIME_ZONE.
DJANGO_TIME_ZONE_SETUP = "SELECT set_config('TimeZone', 'UTC', false)"


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
