"""Job functions the tests enqueue; the workers import them from ``PYTHONPATH``."""

from __future__ import annotations

from dcim.models import Site
from django.db import connections
from netbox_branching.models import Branch
from netbox_branching.utilities import activate_branch


def touch_branch(schema_id: str) -> int:
    """What a branch job does: an ORM query routed to the branch's schema."""
    branch = Branch.objects.get(schema_id=schema_id)
    with activate_branch(branch):
        return Site.objects.count()


def sleep_in_branch(schema_id: str, seconds: float) -> None:
    """A runaway query on the branch's connection, for ``job_timeout`` to interrupt."""
    branch = Branch.objects.get(schema_id=schema_id)
    with connections[branch.connection_name].cursor() as cursor:
        cursor.execute("SELECT pg_sleep(%s)", [seconds])
