from __future__ import annotations

from django.apps import AppConfig
from django.core.checks import Tags
from django.core.checks import register
from django.core.signals import request_finished
from django.core.signals import request_started
from django.db.backends.signals import connection_created

from branching_ops import checks
from branching_ops.tracking import close_old_branch_connections
from branching_ops.tracking import on_connection_created

# The same boundaries at which Django runs close_old_connections().
REQUEST_RECEIVERS = (
    (request_started, "branching_ops.request_started"),
    (request_finished, "branching_ops.request_finished"),
)


class BranchingOpsConfig(AppConfig):
    name = "branching_ops"
    verbose_name = "Branching ops"

    def ready(self) -> None:
        for check in checks.CHECKS:
            register(check, Tags.compatibility)
        for signal, dispatch_uid in REQUEST_RECEIVERS:
            signal.connect(close_old_branch_connections, dispatch_uid=dispatch_uid)
        # Knows when a tracked branch connects: recency for the cap, debug logs.
        connection_created.connect(
            on_connection_created, dispatch_uid="branching_ops.connection_created"
        )
