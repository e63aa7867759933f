"""``ENGINE = "branching_ops.backend"``: set on branch aliases by ``BranchDatabases``.

Django's own PostgreSQL ``DatabaseWrapper`` with two hooks that run on every
new connection, on the thread that opens it, before any query of the caller:
a refused connection gets an error that says why, and an opened one gets its
``search_path`` set and/or checked, its branch's schema included
(:mod:`branching_ops.search_path`). Django's health check also asks whether
the branch's schema is still there.
"""

from __future__ import annotations

import contextlib
from functools import cached_property
from typing import Any

from django.db.backends.postgresql import base

from branching_ops.search_path import BranchSearchPath
from branching_ops.search_path import SearchPathError
from branching_ops.search_path import apply_search_path
from branching_ops.search_path import branch_schema_searched
from branching_ops.search_path import startup_rejected_error
from branching_ops.signals import branch_connection_failed


class DatabaseWrapper(base.DatabaseWrapper):
    @cached_property
    def branch_search_path(self) -> BranchSearchPath | None:
        return BranchSearchPath.from_options(self.settings_dict["OPTIONS"])

    def connect(self) -> None:
        try:
            super().connect()
        except SearchPathError as error:
            # Every refused or wrong-schema branch connection passes here, once.
            branch_connection_failed.send_robust(sender=type(self), alias=self.alias, error=error)
            raise

    def get_connection_params(self) -> dict[str, Any]:
        params: dict[str, Any] = super().get_connection_params()
        for key in BranchSearchPath.KEYS:
            params.pop(key, None)
        return params

    def get_new_connection(self, conn_params: dict[str, Any]) -> Any:
        try:
            return super().get_new_connection(conn_params)
        except self.Database.OperationalError as exc:
            error = startup_rejected_error(self.alias, self.branch_search_path, exc)
            if error is exc:
                raise
            raise error from exc

    def init_connection_state(self) -> None:
        super().init_connection_state()
        try:
            apply_search_path(self.connection, self.alias, self.branch_search_path)
            if not self.get_autocommit():
                # A session-level SET inside a transaction the caller rolls
                # back would be undone: commit it, as Django does for TimeZone.
                self.connection.commit()
        except BaseException:
            # Never hand out (or leak) a connection on the wrong schema.
            with contextlib.suppress(Exception):
                self.close()
            raise

    def is_usable(self) -> bool:
        search_path = self.branch_search_path
        if self.connection is None or search_path is None or not search_path.verify:
            return bool(super().is_usable())
        try:
            return branch_schema_searched(self.connection, self.alias, search_path.branch)
        except self.Database.Error:
            return False
