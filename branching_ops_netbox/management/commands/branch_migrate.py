from __future__ import annotations

from branching_ops.contrib.netbox.refused import RefusedCommand


class Command(RefusedCommand):
    name = "branch_migrate"
