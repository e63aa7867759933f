"""pytest plugin, registered through the ``pytest11`` entry point.

Provides the ``assert_no_branch_connections`` fixture: a test that requests
it fails if a branch connection it opened is still open on the server when
its body ends. The check runs in the test's own call phase (a hook wrapper
around ``pytest_runtest_call``), so a leak is reported as a failure of that
test, not as an error in some fixture's teardown.

Importing this module must stay cheap and free of Django settings access: it
is loaded into every pytest run of an environment that has the package.
"""

from __future__ import annotations

import contextlib
from collections.abc import Generator
from collections.abc import Iterator
from typing import Any

import pytest

from branching_ops.testing.leaks import BranchConnectionGuard

_guard_key = pytest.StashKey[tuple[BranchConnectionGuard, Any]]()


def _unblocked(blocker: Any) -> contextlib.AbstractContextManager[Any]:
    """pytest-django blocks database access outside ``django_db`` tests; lift it."""
    return contextlib.nullcontext() if blocker is None else blocker.unblock()


@pytest.fixture(name="assert_no_branch_connections")
def assert_no_branch_connections_fixture(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail the test if a branch connection opened in it is still open at its end."""
    try:
        blocker = request.getfixturevalue("django_db_blocker")
    except pytest.FixtureLookupError:  # plain pytest, without pytest-django
        blocker = None
    guard = BranchConnectionGuard()
    with _unblocked(blocker):
        guard.start()
    request.node.stash[_guard_key] = (guard, blocker)
    yield
    del request.node.stash[_guard_key]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, object, object]:
    __tracebackhide__ = True
    result = yield  # a failing test raises here and is reported as it is
    if _guard_key in item.stash:
        guard, blocker = item.stash[_guard_key]
        with _unblocked(blocker):
            guard.check()
    return result
