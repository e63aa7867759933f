"""``branch_run`` under NetBox: netbox-branching's ready branches, by their NetBox names.

Each is activated with netbox-branching's own ``activate_branch``, as in a NetBox request.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager

from django.core.management.base import CommandError
from netbox.plugins import get_plugin_config
from netbox_branching.choices import BranchStatusChoices
from netbox_branching.models import Branch as NetBoxBranch
from netbox_branching.utilities import activate_branch

from branching_ops.fanout.selection import Branch
from branching_ops.fanout.selection import SchemaSource


def _prefix() -> str:
    prefix: str = get_plugin_config("netbox_branching", "schema_prefix")
    return prefix


class NetBoxSource:
    """netbox-branching's ready branches; each schema checked to exist, in one query."""

    def select(self, names: Sequence[str], *, every: bool, exclude: Sequence[str]) -> list[Branch]:
        records = NetBoxBranch.objects.order_by("name")
        if every:
            records = records.filter(status=BranchStatusChoices.READY).exclude(name__in=exclude)
        else:
            records = records.filter(name__in=names)
        found = {record.name: record for record in records}
        missing = [name for name in names if name not in found]
        if missing:
            raise CommandError(
                f"No NetBox branch named {', '.join(map(repr, missing))}; nothing was run."
            )
        not_ready = [
            record for record in found.values() if record.status != BranchStatusChoices.READY
        ]
        if not_ready:
            said = ", ".join(f"{record.name!r} is {record.status}" for record in not_ready)
            raise CommandError(f"Only ready branches can run: {said}. Nothing was run.")
        order = list(names) if not every else sorted(found)
        selected = [Branch(name, _prefix() + found[name].schema_id) for name in order]
        SchemaSource().select([branch.schema for branch in selected], every=False, exclude=())
        return selected

    def activate(self, schema: str) -> AbstractContextManager[object]:
        record = NetBoxBranch.objects.get(schema_id=schema.removeprefix(_prefix()))
        manager: AbstractContextManager[object] = activate_branch(record)
        return manager
