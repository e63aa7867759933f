"""Test-only: give stock netbox-branching's branch connections an ``application_name``.

Stock branch connections carry none, so the server cannot tell them from
``default``'s. This wraps ``DynamicSchemaDict.__getitem__`` to add the
``application_name`` the adapter would give (``branch:<schema>``) and
nothing else, so the stock figures count exactly the stock connections.
"""

from __future__ import annotations

from typing import Any

from netbox_branching.utilities import DynamicSchemaDict

from branching_ops.names import ALIAS_PREFIX
from branching_ops.names import branch_application_name

_stock_getitem = DynamicSchemaDict.__getitem__


def _labelled_getitem(self: DynamicSchemaDict, item: Any) -> Any:
    settings = _stock_getitem(self, item)
    if isinstance(item, str) and item.startswith(ALIAS_PREFIX) and item != "default":
        name = item.removeprefix(ALIAS_PREFIX)
        settings["OPTIONS"]["application_name"] = branch_application_name(name, None)
    return settings


DynamicSchemaDict.__getitem__ = _labelled_getitem  # type: ignore[method-assign]
