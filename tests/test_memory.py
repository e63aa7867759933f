"""Memory follows the branches a thread has open, Django's own bookkeeping included."""

from __future__ import annotations

from django.db import connections
from django.db.backends.base.base import RAN_DB_VERSION_CHECK

from branching_ops.tracking import close_branch_connections
from tests.backends import BranchBackends
from tests.conftest import Branches


def test_closing_forgets_the_server_version_check(
    branch_backends: BranchBackends, branches: Branches
) -> None:
    """Django adds every alias it connects to a process-wide set, forever."""
    branches("versioned")
    with connections["schema_versioned"].cursor() as cursor:
        cursor.execute("SELECT 1")
    assert "schema_versioned" in RAN_DB_VERSION_CHECK

    assert close_branch_connections() == 1

    assert "schema_versioned" not in RAN_DB_VERSION_CHECK
    with connections["schema_versioned"].cursor() as cursor:  # connects and checks again
        cursor.execute("SELECT 1")
    assert "schema_versioned" in RAN_DB_VERSION_CHECK
