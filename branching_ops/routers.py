"""Route ORM queries to a branch for the duration of a block.

A context variable (not a thread-local) holds the stack of active branches,
so each thread and each asyncio task sees its own, and nested blocks restore
the outer branch on exit. ``activate_branch`` itself keeps no state: one
instance may be entered by many threads and tasks at once, as a decorated
function is.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any
from typing import TypeVar

from asgiref.sync import iscoroutinefunction

from branching_ops.names import ALIAS_PREFIX
from branching_ops.names import branch_alias

__all__ = [
    "BranchRouter",
    "activate_branch",
]

_active_aliases: ContextVar[tuple[str, ...]] = ContextVar(
    "branching_ops_active_aliases", default=()
)

_F = TypeVar("_F", bound=Callable[..., Any])


class activate_branch:
    """Route ORM reads and writes to branch ``name`` inside the block.

    ``with activate_branch(name):``, ``async with activate_branch(name):``, or
    as a decorator on a function or an ``async def`` (the branch is active
    for the whole call, across its ``await``\\s). Needs :class:`BranchRouter`
    in ``DATABASE_ROUTERS``. Raises ``ValueError`` at once for an invalid
    name, before any connection.
    """

    def __init__(self, name: str) -> None:
        self.alias = branch_alias(name)

    def __enter__(self) -> None:
        _active_aliases.set((*_active_aliases.get(), self.alias))

    def __exit__(self, *exc_info: object) -> None:
        active = _active_aliases.get()
        if not active or active[-1] != self.alias:
            # Entered in another context (another thread or task): popping
            # here would route this context's queries to the wrong branch.
            raise RuntimeError(
                f"activate_branch({self.alias.removeprefix(ALIAS_PREFIX)!r}) is exited in a "
                "different context from the one it was entered in (another thread or "
                "asyncio task), or out of order."
            )
        _active_aliases.set(active[:-1])

    async def __aenter__(self) -> None:
        self.__enter__()

    async def __aexit__(self, *exc_info: object) -> None:
        self.__exit__(*exc_info)

    def __call__(self, func: _F) -> _F:
        if inspect.isgeneratorfunction(func) or inspect.isasyncgenfunction(func):
            # Context variables follow the code that iterates a generator, not
            # the generator: the branch would leak into the caller between
            # items and be gone while the generator's own code runs.
            raise TypeError(
                f"activate_branch cannot decorate the generator function {func.__qualname__}: "
                "its body runs while the caller iterates, outside any call the decorator "
                "could wrap. Activate the branch where the generator is consumed, around "
                "the whole iteration."
            )
        # An object whose __call__ is an ``async def`` (a class-based async view) too.
        if iscoroutinefunction(func) or iscoroutinefunction(type(func).__call__):

            @functools.wraps(func)
            async def run_async(*args: Any, **kwargs: Any) -> Any:
                with self:
                    return await func(*args, **kwargs)

            return run_async  # type: ignore[return-value]

        @functools.wraps(func)
        def run(*args: Any, **kwargs: Any) -> Any:
            with self:
                return func(*args, **kwargs)

        return run  # type: ignore[return-value]


class BranchRouter:
    """Send queries to the branch made active by :class:`activate_branch`."""

    def db_for_read(self, model: type[Any], **hints: Any) -> str | None:
        active = _active_aliases.get()
        return active[-1] if active else None

    def db_for_write(self, model: type[Any], **hints: Any) -> str | None:
        active = _active_aliases.get()
        return active[-1] if active else None
