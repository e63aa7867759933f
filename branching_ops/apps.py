from __future__ import annotations

from django.apps import AppConfig
from django.core.signals import request_finished
from django.core.signals import request_started
from django.db.backends.signals import connection_created

from branching_ops.tracking import close_old_branch_connections
from branching_ops.tracking import on_connection_created


class BranchingOpsConfig(AppConfig):
    name = "branching_ops"
    verbose_name = "Branching ops"

    def ready(self) -> None:
        from branching_ops import checks  # noqa: F401 - registers the checks

        # The same boundaries at which Django runs close_old_connections().
        request_started.connect(
            close_old_branch_connections, dispatch_uid="branching_ops.request_started"
        )
        request_finished.connect(
            close_old_branch_connections, dispatch_uid="branching_ops.request_finished"
        )
        # Knows when a tracked branch connects: recency for the cap, debug logs.
        connection_created.connect(
            on_connection_created, dispatch_uid="branching_ops.connection_created"
        )
