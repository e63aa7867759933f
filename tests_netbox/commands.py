"""Commands that touch every branch, for the in-process ``call_command()`` scenario."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand
from netbox_branching.models import Branch

from branching_ops.management.base import BranchCommand
from tests_netbox.instance import CLOSING
from tests_netbox.instance import PLAIN
from tests_netbox.jobs import branch_sites


class TouchBranches(BaseCommand):
    """A plain command, as an operator's script or a plugin would write it."""

    def handle(self, *args: Any, **options: Any) -> None:
        for branch in Branch.objects.order_by("name"):
            branch_sites(branch)


class ClosingTouchBranches(BranchCommand, TouchBranches):
    """The same command on this package's ``BranchCommand``."""


COMMANDS = {PLAIN: TouchBranches, CLOSING: ClosingTouchBranches}
