"""Commands that would go around netbox-branching, refused under NetBox, pointing at its way.

netbox-branching provisions, migrates and drops a branch's schema with its
``Branch`` record; the plugin's commands take the place of the package's own.
"""

from __future__ import annotations

import argparse
from typing import Any

from django.core.management.base import BaseCommand
from django.core.management.base import CommandError
from django.core.management.base import CommandParser

NETBOX_WAY = {
    "branch_create": "create a branch in NetBox (Branching > Branches, or POST "
    "/api/plugins/branching/branches/): netbox-branching provisions its schema",
    "branch_drop": "delete the branch in NetBox (or DELETE /api/plugins/branching/branches/"
    "<id>/): netbox-branching drops its schema with its record",
    "branch_migrate": "migrate branches in NetBox (a branch's Migrate button, or select "
    "branches under Branching > Branches and Migrate Selected): netbox-branching runs "
    "its MigrateBranchJob (Branch.migrate()) on each branch pending migrations",
}


class RefusedCommand(BaseCommand):
    name: str

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.help = f"Not available under NetBox: {NETBOX_WAY[cls.name]}."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("arguments", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)

    def handle(self, *args: Any, **options: Any) -> None:
        raise CommandError(
            f"{self.name} would go around netbox-branching's Branch records; nothing was "
            f"changed. Instead, {NETBOX_WAY[self.name]}."
        )
