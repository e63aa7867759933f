"""System checks of the NetBox adapter (``branching_ops.E060`` and up); run by ``netbox check``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.apps import AppConfig
from django.conf import settings
from django.core.checks import CheckMessage
from django.core.checks import Error
from django.core.checks import Warning

from branching_ops.conf import conf
from branching_ops.contrib.netbox import NAME
from branching_ops.contrib.netbox import adapter


def check_adapter(app_configs: Sequence[AppConfig] | None, **kwargs: Any) -> list[CheckMessage]:
    if adapter.installed():
        return []
    return [
        Error(
            adapter.hook_moved_message(),
            hint="Install a netbox-branching release the adapter is tested with "
            "(docs/netbox.md), or remove it from PLUGINS until one supports it.",
            id="branching_ops.E060",
        )
    ]


def check_plugin_settings(
    app_configs: Sequence[AppConfig] | None, **kwargs: Any
) -> list[CheckMessage]:
    plugin_config = settings.PLUGINS_CONFIG.get(NAME, {})  # type: ignore[misc]  # NetBox's
    if "SEARCH_PATH_TAIL" not in plugin_config:
        return []
    return [
        Error(
            f"PLUGINS_CONFIG[{NAME!r}] sets SEARCH_PATH_TAIL, which the adapter ignores.",
            hint="Under NetBox every branch's search_path ends with netbox-branching's "
            "main_schema (PLUGINS_CONFIG['netbox_branching']['main_schema']); "
            "remove SEARCH_PATH_TAIL.",
            id="branching_ops.E061",
        )
    ]


def check_uncapped_persistent_connections(
    app_configs: Sequence[AppConfig] | None, **kwargs: Any
) -> list[CheckMessage]:
    """CONN_MAX_AGE > 0 with no cap: the setup that exhausts the server (docs/netbox.md)."""
    max_age = settings.DATABASES["default"].get("CONN_MAX_AGE", 0)
    if conf.MAX_CONNECTIONS_PER_THREAD is not None or not max_age:
        return []  # None (forever) is branching_ops.W012
    return [
        Warning(
            f"CONN_MAX_AGE = {max_age} with MAX_CONNECTIONS_PER_THREAD = None: every NetBox "
            f"thread keeps a connection to each branch it served in the last {max_age} "
            "seconds, and the server runs out of connections.",
            hint=f"Remove MAX_CONNECTIONS_PER_THREAD from PLUGINS_CONFIG[{NAME!r}] (the "
            "adapter's default is 1), or set CONN_MAX_AGE to 0.",
            id="branching_ops.W060",
        )
    ]


CHECKS = (check_adapter, check_plugin_settings, check_uncapped_persistent_connections)
"""Registered by the plugin's ``ready()``."""
