"""The NetBox plugin: refuses a setup it was not tested with, then installs the adapter.

NetBox passes Django only what it knows, so ``branching_ops`` and its settings
come in through the plugin (``django_apps``, ``PLUGINS_CONFIG``).
"""

from __future__ import annotations

import re
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

import branching_ops
from branching_ops.contrib.netbox import NAME

try:
    from netbox.plugins import PluginConfig
    from netbox.plugins import get_plugin_config
    from netbox.registry import registry
except ModuleNotFoundError as exc:
    if exc.name != "netbox":
        raise
    raise ImportError(
        f"{NAME} is a NetBox plugin: list it in NetBox's configuration, "
        f'PLUGINS = ["netbox_branching", "{NAME}"], and run NetBox. '
        'Outside NetBox, add "branching_ops" to INSTALLED_APPS instead.'
    ) from exc

BRANCHING_DISTRIBUTION = "netboxlabs-netbox-branching"
# The netbox-branching release series the adapter is tested with (tox env
# "netbox"), compared without `packaging`, which NetBox's pins do not require.
TESTED_BRANCHING = "1.2"
TESTED_REQUIREMENT = f"{BRANCHING_DISTRIBUTION}~={TESTED_BRANCHING}.0"


def release_series(installed: str) -> str:
    """``"1.2"`` for ``"1.2.2"`` or ``"1.2rc1"``: the part a tested range is about."""
    match = re.match(r"\d+\.\d+", installed)
    return match.group() if match else installed


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
    # This app's commands (branch_create, branch_drop, branch_migrate: refused) take the
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
                f"pip install '{TESTED_REQUIREMENT}'."
            ) from None
        if release_series(installed) != TESTED_BRANCHING:
            raise ImproperlyConfigured(
                f"{NAME} {cls.version} is tested with {TESTED_REQUIREMENT} "
                f"({TESTED_BRANCHING}.x), not {installed}: install a tested netbox-branching, "
                f"or remove {NAME!r} from PLUGINS."
            )
        if "netbox_branching" not in registry["plugins"]["installed"]:
            raise ImproperlyConfigured(
                f"{NAME} needs the netbox_branching plugin loaded before it: "
                f'PLUGINS = ["netbox_branching", "{NAME}"].'
            )

    def ready(self) -> None:
        super().ready()
        from django.core.checks import Tags
        from django.core.checks import register

        from branching_ops.contrib.netbox import adapter
        from branching_ops.contrib.netbox import checks
        from branching_ops.contrib.netbox import views  # noqa: F401 - registers the tab
        from branching_ops.contrib.netbox.fanout import NetBoxSource
        from branching_ops.fanout.selection import set_branch_source

        # What the package reads as BRANCHING_OPS: this plugin's settings, and
        # netbox-branching's main schema as every branch's search_path tail.
        settings.BRANCHING_OPS = {
            **settings.PLUGINS_CONFIG[NAME],  # type: ignore[misc]  # NetBox's setting
            "SEARCH_PATH_TAIL": [get_plugin_config("netbox_branching", "main_schema")],
        }
        adapter.install()
        for check in checks.CHECKS:
            register(check, Tags.compatibility)
        set_branch_source(NetBoxSource())  # branch_run selects and activates NetBox's branches
