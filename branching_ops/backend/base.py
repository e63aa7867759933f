"""``ENGINE = "branching_ops.backend"``: set on branch aliases by ``BranchDatabases``.

Django's own PostgreSQL ``DatabaseWrapper`` with two hooks that run on every
new connection, on the thread that opens it, before any query of the caller:
a refused connection gets an error that says why, and an opened one gets its
``search_path`` set and/or checked, its branch's schema included
(:mod:`branching_ops.search_path`). Django's health check also asks whether
the branch's schema is still there. In ``"transaction"`` mode the cursors
send the ``search_path`` with the first statement of every transaction.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Iterator
from typing import Any

import psycopg
from django.db.backends.postgresql import base
from psycopg.pq import TransactionStatus

from branching_ops.backend.introspection import DatabaseIntrospection
from branching_ops.backend.pipeline import sync_only_pipeline
from branching_ops.search_path import TRANSACTION_SQL
from branching_ops.search_path import BranchSearchPath
from branching_ops.search_path import SearchPathError
from branching_ops.search_path import apply_search_path
from branching_ops.search_path import branch_schema_searched
from branching_ops.search_path import startup_rejected_error
from branching_ops.search_path import transaction_refused_error
from branching_ops.signals import branch_connection_failed


class DatabaseWrapper(base.DatabaseWrapper):
    introspection_class = DatabaseIntrospection

    @functools.cached_property
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
        if self.branch_search_path is not None and self.branch_search_path.per_transaction:
            params["cursor_factory"] = per_transaction_cursor(
                params["cursor_factory"], self.alias, self.branch_search_path
            )
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

    def create_cursor(self, name: str | None = None) -> Any:
        if name and self.branch_search_path and self.branch_search_path.per_transaction:
            # A named cursor outlives its transaction on a server connection
            # the pooler gives to others: refused, as check E022 warns.
            raise SearchPathError(
                f"Branch connection {self.alias!r} cannot open a server-side cursor in "
                f"BRANCHING_OPS['SEARCH_PATH'] = 'transaction' mode: set "
                f"DISABLE_SERVER_SIDE_CURSORS = True in DATABASES['default']."
            )
        return super().create_cursor(name)

    def is_usable(self) -> bool:
        if self.connection is None:
            return False  # as Django >= 5.1 answers; 4.2's would raise AttributeError
        search_path = self.branch_search_path
        if search_path is not None and search_path.per_transaction:
            try:
                return bool(super().is_usable())  # its SELECT 1 carries the check
            except SearchPathError:
                return False
        if search_path is None or not search_path.verify:
            return bool(super().is_usable())
        try:
            return branch_schema_searched(self.connection, self.alias, search_path.branch)
        except self.Database.Error:
            return False


class PerTransactionSearchPath:
    """Cursor mixin: the first statement of a transaction carries the branch's ``search_path``.

    With client-side binding (Django's default) the setting is prepended to
    the statement: one simple-protocol Query, one implicit (or the caller's
    explicit) transaction on whichever server connection the pooler picks.
    With server-side binding both go in one pipeline before one Sync. Either
    way a refused setting ends the transaction before the caller's statement.
    """

    _conn: psycopg.Connection[Any]
    alias: str
    search_path: BranchSearchPath
    setting_prefix: str | None = None  # TRANSACTION_SQL bound, per branch: see _prefixed()

    def execute(self, query: Any, params: Any = None, **kwargs: Any) -> Any:
        if not self._starts_transaction():
            return super().execute(query, params, **kwargs)  # type: ignore[misc]
        if isinstance(self, psycopg.ClientCursor) and self._simple_protocol(query, kwargs):
            with self._refused_as_branch_error():
                super().execute(self._prefixed(query, params), params)  # type: ignore[misc]
            self.nextset()  # past the setting's result, to the caller's
            return self
        with self._refused_as_branch_error():
            self._in_pipeline(
                lambda: super(PerTransactionSearchPath, self).execute(  # type: ignore[misc]
                    query, params, **kwargs
                )
            )
        return self

    def executemany(self, query: Any, params_seq: Iterable[Any], **kwargs: Any) -> None:
        # psycopg's executemany syncs its own pipeline before its statements:
        # the setting gets a round trip of its own, in a transaction around both.
        with self._around_statement():
            super().executemany(query, params_seq, **kwargs)  # type: ignore[misc]

    @contextlib.contextmanager
    def copy(self, statement: Any, params: Any = None, **kwargs: Any) -> Iterator[Any]:
        # COPY cannot run in a pipeline: as executemany.
        with self._around_statement(), super().copy(statement, params, **kwargs) as copy:  # type: ignore[misc]
            yield copy

    def _starts_transaction(self) -> bool:
        """No transaction is open on the server: the next statement starts one."""
        return self._conn.pgconn.transaction_status == TransactionStatus.IDLE

    def _simple_protocol(self, query: Any, kwargs: dict[str, Any]) -> bool:
        """psycopg sends this as one Query, and it holds one statement.

        A ``;`` could end the setting's transaction (``...; COMMIT; INSERT``)
        and run the rest on the server connection's own path: such text goes
        to the pipeline, whose extended protocol refuses more than one statement.
        """
        return (
            isinstance(query, str)
            and ";" not in query
            and not kwargs
            and self._conn._pipeline is None
        )

    def _prefixed(self, query: str, params: Any) -> str:
        prefix = type(self).setting_prefix
        if prefix is None:  # the class is the branch's: bound once, the same for every thread
            values = {"branch": self.search_path.branch, "path": self.search_path.path}
            with psycopg.ClientCursor(self._conn) as binder:
                prefix = type(self).setting_prefix = binder.mogrify(TRANSACTION_SQL, values)
        # With parameters, psycopg reads "%" in the whole text as placeholders.
        return f"{prefix if params is None else prefix.replace('%', '%%')}; {query}"

    @contextlib.contextmanager
    def _around_statement(self) -> Iterator[None]:
        if not self._starts_transaction():
            yield
            return
        transaction = (
            self._conn.transaction() if self._conn.autocommit else contextlib.nullcontext()
        )
        with transaction:
            with self._refused_as_branch_error():
                self._in_pipeline(lambda: None)
            yield

    def _in_pipeline(self, send: Callable[[], object]) -> None:
        """The setting, then ``send()``'s statement, in one pipeline."""
        search_path = self.search_path
        setting = psycopg.Cursor(self._conn)
        error: Exception | None = None
        try:
            with sync_only_pipeline(self._conn):
                try:
                    setting.execute(
                        TRANSACTION_SQL,
                        {"branch": search_path.branch, "path": search_path.path},
                        prepare=False,
                    )
                    send()
                except psycopg.Error as exc:
                    error = exc  # kept: the pipeline's exit still syncs, without a warning
        except psycopg.Error as exc:
            error = error or exc
        finally:
            setting.close()
        if error is not None:
            raise error

    @contextlib.contextmanager
    def _refused_as_branch_error(self) -> Iterator[None]:
        """A refused setting becomes the branch's ``SearchPathError``; other errors pass."""
        try:
            yield
        except psycopg.Error as error:
            refused = transaction_refused_error(self._conn, self.alias, self.search_path, error)
            if refused is error:
                raise
            branch_connection_failed.send_robust(
                sender=DatabaseWrapper, alias=self.alias, error=refused
            )
            raise refused from error


@functools.cache
def per_transaction_cursor(cursor: type, alias: str, search_path: BranchSearchPath) -> type:
    """Django's cursor class (server-side binding or not) for one branch, built once.

    A class per branch, not an attribute on the connection: a psycopg pool
    runs Django's ``configure`` on its connections before the wrapper sees them.
    """
    attributes = {"alias": alias, "search_path": search_path}
    return type(cursor.__name__, (PerTransactionSearchPath, cursor), attributes)
