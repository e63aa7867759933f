"""The NetBox adapter: netbox-branching's branch connections, managed by this package.

``PLUGINS = ["netbox_branching", "branching_ops_netbox"]`` turns it on (see
docs/netbox.md). The plugin itself is :mod:`branching_ops.contrib.netbox.plugin`;
importing this package imports nothing of NetBox.
"""

from __future__ import annotations

NAME = "branching_ops_netbox"
"""The plugin's name in ``PLUGINS`` and ``PLUGINS_CONFIG``."""
