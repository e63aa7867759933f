"""``branch_create`` and ``branch_drop`` under NetBox: refused, pointing at netbox-branching.

A NetBox branch is a ``Branch`` record whose schema netbox-branching
provisions (tables, triggers, migrations state) and deprovisions; a schema
made or dropped beside it is one NetBox does not know or a record whose
schema is gone. The plugin's commands (``branching_ops_netbox.management``)
take the place of the package's own ones: its app comes before
``branching_ops`` in ``INSTALLED_APPS``.
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
