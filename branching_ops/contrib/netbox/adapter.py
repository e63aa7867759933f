"""netbox-branching's branch connections, opened and tracked the way this package does it.

netbox-branching requires ``type(settings.DATABASES) is DynamicSchemaDict``
(its ``AppConfig.ready()`` raises otherwise), so :class:`BranchDatabases`
cannot take its place. The adapter leaves that object in place and changes
two things of netbox-branching's module, both checked by
``branching_ops.E060``:

- ``DynamicSchemaDict.__getitem__`` calls the module-level
  ``track_branch_connection(alias)`` at each lookup (netbox_branching/utilities.py,
  1.2.2 line 104). That hook becomes :func:`track_branch_connection`: the
  name check, then :func:`branching_ops.tracking.track` — thread-critical,
  untracked on close, the cap, the signals — instead of its never-emptied,
  context-local set.
- ``DynamicSchemaDict.__getitem__`` answers a branch with the settings of
  :func:`~branching_ops.databases.build_branch_settings` (``application_name``,
  ``search_path`` delivery and verification, ``main_schema`` as the tail)
  instead of ``default`` plus a bare ``-c search_path`` option.

netbox-branching's own request receivers (connected in its ``ready()``,
netbox_branching/__init__.py lines 107-108) are disconnected: they walk the
set the hook no longer fills, and ``branching_ops``' receivers do the work.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

from django.core.signals import request_finished
from django.core.signals import request_started
from django.utils.connection import ConnectionDoesNotExist
from netbox_branching import utilities
from netbox_branching.utilities import DynamicSchemaDict

from branching_ops import tracking
from branching_ops.databases import build_branch_settings
from branching_ops.names import ALIAS_PREFIX
from branching_ops.names import branch_name_error

logger = logging.getLogger("branching_ops")

HOOK = "track_branch_connection"
_stock_getitem: Callable[[DynamicSchemaDict, Any], Any] = DynamicSchemaDict.__getitem__


def track_branch_connection(alias: str) -> None:
    """netbox-branching's hook, called before a branch's connection wrapper is created."""
    error = branch_name_error(alias.removeprefix(ALIAS_PREFIX))
    if error is not None:
        raise ConnectionDoesNotExist(f"The connection '{alias}' doesn't exist: {error}")
    tracking.track(alias)


@functools.wraps(_stock_getitem)
def _getitem(self: DynamicSchemaDict, item: Any) -> Any:
    # netbox-branching's lookup runs first: through the hook it checks the
    # name and tracks the alias, and it keeps its answer for other keys.
    answer = _stock_getitem(self, item)
    if isinstance(item, str) and item.startswith(ALIAS_PREFIX) and item != ALIAS_PREFIX:
        return build_branch_settings(
            dict.__getitem__(self, "default"), item.removeprefix(ALIAS_PREFIX)
        )
    return answer


def install() -> None:
    """Take over netbox-branching's branch connections; idempotent."""
    if not hook_in_place():
        logger.error(hook_moved_message())
    utilities.track_branch_connection = track_branch_connection
    DynamicSchemaDict.__getitem__ = _getitem
    for signal in (request_started, request_finished):
        signal.disconnect(utilities.close_old_branch_connections)


def hook_in_place() -> bool:
    """Whether netbox-branching's ``__getitem__`` still tracks through the module's hook."""
    return hasattr(utilities, HOOK) and HOOK in _stock_getitem.__code__.co_names


def installed() -> bool:
    return (
        hook_in_place()
        and getattr(utilities, HOOK) is track_branch_connection
        and DynamicSchemaDict.__getitem__ is _getitem
    )


def hook_moved_message() -> str:
    return (
        "netbox-branching's DynamicSchemaDict.__getitem__ no longer calls the module-level "
        f"netbox_branching.utilities.{HOOK}(): the adapter cannot track its branch "
        "connections, which leak as without it (branching_ops.E060)."
    )
