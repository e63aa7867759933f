"""The NetBox plugin entry: ``PLUGINS = ["netbox_branching", "branching_ops_netbox"]``.

A top-level module, because NetBox looks a plugin's app up by its whole
``PLUGINS`` entry (``apps.get_app_config(plugin)`` in netbox/plugins/views.py)
and by its last dotted part (netbox/plugins/urls.py, utils.py): only a name
without dots can be both. The adapter lives in :mod:`branching_ops.contrib.netbox`;
here is only what Django and NetBox look up by the plugin's name: its
commands, templates and API URLs.
"""

from __future__ import annotations

from branching_ops.contrib.netbox.plugin import BranchingOpsNetBoxConfig

config = BranchingOpsNetBoxConfig
