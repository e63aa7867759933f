"""What the fan-out tests share: branches with a Note table, running branch_run, reading notes."""

from __future__ import annotations

import re
from dataclasses import dataclass
from io import StringIO
from typing import Any

from django.core.management import call_command
from django.core.management.base import CommandError

from tests.operations import execute
from tests.operations import run


def note_branches(*names: str) -> None:
    """Real branches, each with its own ``testapp_note`` (``branch_create --from-schema``)."""
    for name in names:
        run("branch_create", name, from_schema="public")


def notes(schema: str) -> list[str]:
    """The texts of the notes in ``schema``'s own table."""
    return [text for (text,) in execute(f"SELECT text FROM {schema}.testapp_note ORDER BY id")]


@dataclass
class Ran:
    stdout: str
    stderr: str
    error: CommandError | None  # what call_command raised: the exit status is its returncode

    @property
    def out(self) -> str:
        """``stdout`` with seconds as S.SS (not for ``--json``: 0.12 would become S.SS)."""
        return normalized(self.stdout)

    @property
    def err(self) -> str:
        return normalized(self.stderr)


def branch_run(*args: str, **options: Any) -> Ran:
    """``call_command("branch_run", *args)``, its output and the ``CommandError`` it ended with."""
    out, err = StringIO(), StringIO()
    error = None
    try:
        call_command("branch_run", *args, stdout=out, stderr=err, **options)
    except CommandError as exc:
        error = exc
    return Ran(out.getvalue(), err.getvalue(), error)


def normalized(text: str) -> str:
    return re.sub(r"\b\d+\.\d\d\b", "S.SS", text)
