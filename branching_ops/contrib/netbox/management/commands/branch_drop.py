from __future__ import annotations

from branching_ops.contrib.netbox.management.refused import RefusedCommand


class Command(RefusedCommand):
    name = "branch_drop"
