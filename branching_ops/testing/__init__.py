"""Helpers for test suites: leak assertions and a throw-away PostgreSQL server."""

from __future__ import annotations

from branching_ops.testing.leaks import assert_no_branch_connections
from branching_ops.testing.leaks import branch_connection_count

__all__ = ["assert_no_branch_connections", "branch_connection_count"]
