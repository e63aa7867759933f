"""What the operations commands share on the way out: tables for people, JSON for machines."""

from __future__ import annotations

import json
from collections.abc import Iterable
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from branching_ops.activity import Backend


def format_duration(duration: timedelta | None) -> str:
    if duration is None:
        return "-"
    minutes, seconds = divmod(int(duration.total_seconds()), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02}:{seconds:02}"


def seconds(duration: timedelta | None) -> float | None:
    return None if duration is None else round(duration.total_seconds(), 3)


def format_table(headers: Sequence[str], rows: Iterable[Sequence[str | int]]) -> str:
    """Columns aligned for people: numbers to the right, text to the left."""
    rows = [list(row) for row in rows]
    numeric = [
        bool(rows) and all(isinstance(row[i], int) for row in rows) for i in range(len(headers))
    ]
    cells = [list(headers), *([str(cell) for cell in row] for row in rows)]
    widths = [max(len(line[i]) for line in cells) for i in range(len(headers))]
    return "\n".join(
        "  ".join(
            cell.rjust(width) if right else cell.ljust(width)
            for cell, width, right in zip(line, widths, numeric, strict=True)
        ).rstrip()
        for line in cells
    )


BACKEND_HEADERS = ("BRANCH", "PID", "USER", "STATE", "AGE", "IDLE", "CLIENT")


def backend_table(backends: Iterable[Backend]) -> str:
    """One line per backend; ``-`` for what the role may not see."""
    return format_table(
        BACKEND_HEADERS,
        [
            (
                backend.branch,
                backend.pid,
                backend.user,
                backend.state or "-",
                format_duration(backend.age),
                format_duration(backend.idle),
                backend.client or "-",
            )
            for backend in backends
        ],
    )


def backend_json(backend: Backend) -> dict[str, Any]:
    """One backend for ``--json``; ``null`` for what the role may not see."""
    return {
        "pid": backend.pid,
        "branch": backend.branch,
        "application_name": backend.application_name,
        "user": backend.user,
        "state": backend.state,
        "client": backend.client,
        "age_seconds": seconds(backend.age),
        "idle_seconds": seconds(backend.idle),
    }


def to_json(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=2)
