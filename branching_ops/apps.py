from __future__ import annotations

from django.apps import AppConfig
from django.core.signals import request_finished
from django.core.signals import request_started

from branching_ops.tracking import close_old_branch_connections


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
