"""Job functions the tests enqueue; the workers import them from ``PYTHONPATH``."""

from __future__ import annotations

from dcim.models import Site
from django.db import connections
from netbox_branching.models import Branch
from netbox_branching.utilities import activate_branch


def branch_sites(branch: Branch) -> list[str]:
    """The sites the branch's connection reads: the branch's own one, or it is the wrong schema."""
    with activate_branch(branch):
        sites = list(Site.objects.values_list("name", flat=True))
    if sites != [branch.schema_id]:
        raise AssertionError(f"wrong schema: branch {branch.schema_id} read the sites {sites}")
    return sites


def touch_branch(schema_id: str) -> list[str]:
    """What a branch job does: an ORM query routed to the branch's schema."""
    return branch_sites(Branch.objects.get(schema_id=schema_id))


def sleep_in_branch(schema_id: str, seconds: float) -> None:
    """A runaway query on the branch's connection, for ``job_timeout`` to interrupt."""
    branch = Branch.objects.get(schema_id=schema_id)
    with connections[branch.connection_name].cursor() as cursor:
        cursor.execute("SELECT pg_sleep(%s)", [seconds])
