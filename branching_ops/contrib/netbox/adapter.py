"""netbox-branching's branch connections, opened and tracked the way this package does it.

Replaces ``utilities.track_branch_connection`` and ``DynamicSchemaDict.__getitem__``
in place (netbox-branching accepts no other ``DATABASES``); docs/netbox.md tells how.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

from django.core.signals import request_finished
from django.core.signals import request_started
from netbox_branching import utilities
from netbox_branching.utilities import DynamicSchemaDict

from branching_ops import tracking
from branching_ops.databases import alias_branch_name
from branching_ops.databases import build_branch_settings
from branching_ops.names import ALIAS_PREFIX

logger = logging.getLogger("branching_ops")

HOOK = "track_branch_connection"
_stock_getitem: Callable[[DynamicSchemaDict, Any], Any] = DynamicSchemaDict.__getitem__


def track_branch_connection(alias: str) -> None:
    """netbox-branching's hook, called before a branch's connection wrapper is created."""
    alias_branch_name(alias)
    tracking.track(alias)


@functools.wraps(_stock_getitem)
def _getitem(self: DynamicSchemaDict, item: Any) -> Any:
    # netbox-branching's lookup first: through the hook it checks and tracks.
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
    DynamicSchemaDict.branching_ops_serves_branches = True  # for branching_ops.checks
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
