"""``BranchConnection``: what Django's admin and permissions need to show branch backends.

Unmanaged and never queried: the admin reads its rows from
:mod:`branching_ops.activity`, so no table or view exists on any database.
The model gives the admin a place and ``auth`` the permissions to check.
"""

from __future__ import annotations

from django.db import models


class BranchConnection(models.Model):
    pid = models.IntegerField(primary_key=True)
    branch = models.CharField(max_length=63)

    class Meta:
        managed = False
        # Rows are read from the server and ended, never added or edited.
        default_permissions = ("view",)
        permissions = [("terminate_branchconnection", "Can terminate branch connections")]
        verbose_name = "branch connection"
