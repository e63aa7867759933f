"""Route ORM queries to a branch for the duration of a block.

A context variable (not a thread-local) holds the active branch, so each
thread and each asyncio task sees its own, and nested blocks restore the
outer branch on exit.
"""

from __future__ import annotations

from contextlib import ContextDecorator
from contextvars import ContextVar
from contextvars import Token
from typing import Any

from branching_ops.names import branch_alias

_active_alias: ContextVar[str | None] = ContextVar("branching_ops_active_alias", default=None)


class activate_branch(ContextDecorator):
    """Route ORM reads and writes to branch ``name`` inside the block.

    Needs :class:`BranchRouter` in ``DATABASE_ROUTERS``. Raises
    ``ValueError`` at once for an invalid name, before any connection.
    """

    def __init__(self, name: str) -> None:
        self.alias = branch_alias(name)
        self._tokens: list[Token[str | None]] = []

    def __enter__(self) -> None:
        self._tokens.append(_active_alias.set(self.alias))

    def __exit__(self, *exc_info: object) -> None:
        _active_alias.reset(self._tokens.pop())


class BranchRouter:
    """Send queries to the branch made active by :class:`activate_branch`."""

    def db_for_read(self, model: type[Any], **hints: Any) -> str | None:
        return _active_alias.get()

    def db_for_write(self, model: type[Any], **hints: Any) -> str | None:
        return _active_alias.get()
