"""Which branches a fan-out runs on: named ones, or every branch except some.

One query answers for the whole selection, whatever its size. A *source*
says what a branch is: by default every schema of the database that can be
a branch (:class:`SchemaSource`); under NetBox, netbox-branching's ready
branches (``branching_ops.contrib.netbox.fanout``). The source also
activates a branch in the worker that runs it, so the project's router
sends the ORM there.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Protocol

from django.core.management.base import CommandError
from django.db import DEFAULT_DB_ALIAS

from branching_ops.conf import conf
from branching_ops.management import arguments
from branching_ops.names import branch_name_error
from branching_ops.routers import activate_branch

# Every schema that can be a branch: not the system's, not public, not the
# tail every branch's search_path ends in. Names are checked in Python.
EVERY_SCHEMA_SQL = """
SELECT nspname FROM pg_namespace
WHERE nspname !~ '^pg_' AND nspname <> 'information_schema' AND nspname <> ALL(%s)
ORDER BY nspname
"""
NAMED_SCHEMAS_SQL = "SELECT nspname FROM pg_namespace WHERE nspname = ANY(%s)"


@dataclass(frozen=True)
class Branch:
    """A selected branch: ``name`` as the operator types it, ``schema`` as the server has it."""

    name: str
    schema: str


class BranchSource(Protocol):
    """What a branch is in this project, and how a worker makes one active."""

    def select(self, names: Sequence[str], *, every: bool, exclude: Sequence[str]) -> list[Branch]:
        """The selection in order; ``CommandError`` for any name that is not a branch."""

    def activate(self, schema: str) -> AbstractContextManager[object]:
        """Route the ORM to the branch of ``schema`` inside the block."""


class SchemaSource:
    """Every schema of the database is a branch, except the system's, ``public`` and the tail."""

    def select(self, names: Sequence[str], *, every: bool, exclude: Sequence[str]) -> list[Branch]:
        for name in exclude:
            arguments.check_branch_name(name, argument="--exclude: ")
        if every:
            reserved = ["public", *conf.SEARCH_PATH_TAIL]
            found = [
                schema
                for schema in _schemas(EVERY_SCHEMA_SQL, reserved)
                if branch_name_error(schema) is None
            ]
            return [Branch(schema, schema) for schema in found if schema not in exclude]
        for name in names:
            arguments.check_branch_schema(name)
        existing = set(_schemas(NAMED_SCHEMAS_SQL, list(names)))
        missing = [name for name in names if name not in existing]
        if missing:
            raise CommandError(
                f"No schema for branch(es) {', '.join(map(repr, missing))}; nothing was run."
            )
        return [Branch(name, name) for name in names]

    def activate(self, schema: str) -> AbstractContextManager[object]:
        return activate_branch(schema)


def _schemas(query: str, parameter: list[str]) -> list[str]:
    connection = arguments.database_connection(DEFAULT_DB_ALIAS)
    with connection.cursor() as cursor:
        cursor.execute(query, [parameter])
        return [name for (name,) in cursor.fetchall()]


_source: BranchSource = SchemaSource()


def branch_source() -> BranchSource:
    """What a branch is in this project: :class:`SchemaSource` unless an adapter set another."""
    return _source


def set_branch_source(source: BranchSource) -> None:
    """An adapter's hook (the NetBox plugin's ``ready()``): its branches instead of schemas."""
    global _source
    _source = source


def select_branches(
    names: Sequence[str], *, every: bool = False, exclude: Sequence[str] = ()
) -> list[Branch]:
    """Check the selection an operator typed; ``CommandError`` before anything runs.

    Names keep their order, repeats dropped. ``every`` (``--all``) takes no
    names; ``exclude`` goes with ``every`` only.
    """
    names = list(dict.fromkeys(names))
    if every and names:
        raise CommandError("Give branch names or --all, not both.")
    if exclude and not every:
        raise CommandError("--exclude goes with --all.")
    if not every and not names:
        raise CommandError("No branch selected: give branch names, or --all.")
    selected = branch_source().select(names, every=every, exclude=list(exclude))
    if not selected:
        raise CommandError("No branch selected: --all found none (after --exclude).")
    return selected
