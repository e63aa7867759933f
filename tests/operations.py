"""What the tests of the operations commands share: running them, reading the server."""

from __future__ import annotations

import re
from io import StringIO
from typing import Any

from django.core.management import call_command
from django.db import connections

from branching_ops.testing.postgres import PostgresServer
from tests.conftest import APP_ROLE


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


def public_tables() -> int:
    """How many tables ``public`` has: what ``branch_create --from-schema public`` copies."""
    ((count,),) = execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
    return int(count)


def execute(sql: str) -> list[tuple[Any, ...]]:
    with connections["default"].cursor() as cursor:
        cursor.execute(sql)
        return cursor.fetchall() if cursor.description else []


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
