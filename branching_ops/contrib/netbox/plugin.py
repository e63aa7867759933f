"""The NetBox plugin: refuses a setup it was not tested with, then installs the adapter.

NetBox builds ``INSTALLED_APPS`` itself and passes to Django only the
configuration names it knows, so everything arrives through the plugin:
``branching_ops`` (receivers, checks, commands) through ``django_apps``, the
settings through ``PLUGINS_CONFIG["branching_ops_netbox"]``.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from netbox.plugins import PluginConfig
from netbox.plugins import get_plugin_config
from netbox.registry import registry
from packaging.specifiers import SpecifierSet

import branching_ops
from branching_ops.contrib.netbox import NAME

BRANCHING_DISTRIBUTION = "netboxlabs-netbox-branching"
# The netbox-branching releases the adapter is tested with (tox env "netbox").
TESTED_BRANCHING = SpecifierSet(">=1.2,<1.3")
DEFAULTS: dict[str, Any] = {
    # NetBox documents CONN_MAX_AGE = 300: without a cap every thread would
    # keep a connection to each branch it served in the last five minutes.
    "MAX_CONNECTIONS_PER_THREAD": 1,
}


class BranchingOpsNetBoxConfig(PluginConfig):  # type: ignore[misc]  # NetBox is untyped
    name = NAME
    label = NAME
    verbose_name = "Branching ops"
    description = "Keeps netbox-branching's branch connections from leaking"
    version = branching_ops.__version__
    base_url = "branching-ops"
    # This app's commands (branch_create and branch_drop, refused) take the
    # place of branching_ops' own because it comes first in INSTALLED_APPS.
    django_apps = [f"{__name__}.BranchingOpsNetBoxConfig", "branching_ops"]
    default_settings = DEFAULTS

    @classmethod
    def validate(cls, user_config: dict[str, Any], netbox_version: str) -> None:
        """Refuse, at start-up, a netbox-branching that is missing, untested or not before us.

        NetBox turns an ``IncompatiblePluginError`` into a warning and starts
        without the plugin; a setup the adapter cannot serve must stop NetBox
        instead, with a message that says what to change.
        """
        super().validate(user_config, netbox_version)
        try:
            installed = version(BRANCHING_DISTRIBUTION)
        except PackageNotFoundError:
            raise ImproperlyConfigured(
                f"{NAME} adapts netbox-branching, which is not installed: "
                f"pip install '{BRANCHING_DISTRIBUTION}{TESTED_BRANCHING}'."
            ) from None
        if installed not in TESTED_BRANCHING:
            raise ImproperlyConfigured(
                f"{NAME} {cls.version} is tested with {BRANCHING_DISTRIBUTION}"
                f"{TESTED_BRANCHING}, not {installed}: install a tested netbox-branching, "
                f"or remove {NAME!r} from PLUGINS."
            )
        if "netbox_branching" not in registry["plugins"]["installed"]:
            raise ImproperlyConfigured(
                f"{NAME} needs the netbox_branching plugin loaded before it: "
                f'PLUGINS = ["netbox_branching", "{NAME}"].'
            )

    def ready(self) -> None:
        super().ready()
        from branching_ops.contrib.netbox import adapter
        from branching_ops.contrib.netbox import checks  # noqa: F401 - registers the checks

        # What the package reads as BRANCHING_OPS: this plugin's settings, and
        # netbox-branching's main schema as every branch's search_path tail.
        settings.BRANCHING_OPS = {
            **settings.PLUGINS_CONFIG[NAME],  # type: ignore[misc]  # NetBox's setting
            "SEARCH_PATH_TAIL": [get_plugin_config("netbox_branching", "main_schema")],
        }
        adapter.install()
