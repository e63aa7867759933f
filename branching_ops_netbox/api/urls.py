"""``/api/plugins/branching-ops/connections/``: list (``?branch=<id>``) and terminate (POST)."""

from __future__ import annotations

from django.urls import path

from branching_ops.contrib.netbox.views import BranchConnectionsAPIView

urlpatterns = [
    path("connections/", BranchConnectionsAPIView.as_view(), name="connections"),
]
