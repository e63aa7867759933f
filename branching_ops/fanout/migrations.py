"""Django's migrations across branches: planned for all of them at once, run on the branch alone.

Planning reads every selected branch's own ``django_migrations`` table,
schema-qualified, in two queries whatever the number of branches, and
compares it with the migration graph loaded once from disk. Running a
branch's migrations uses a connection whose ``search_path`` is the branch's
schema *alone*: with the usual ``<branch>, public``, Django's recorder would
read (and write) ``public``'s ``django_migrations`` on a branch that has none,
and an ``ALTER TABLE`` or a data migration on a table the branch lacks would
change ``public``'s. On the branch alone they fail instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from typing import ClassVar
from typing import TextIO

from django.apps import apps as global_apps
from django.core.management.base import CommandError
from django.core.management.sql import emit_post_migrate_signal
from django.core.management.sql import emit_pre_migrate_signal
from django.db import ProgrammingError
from django.db import connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.migrations.executor import MigrationExecutor
from django.db.migrations.loader import MigrationLoader
from django.db.migrations.migration import Migration
from django.db.migrations.recorder import MigrationRecorder
from django.db.migrations.state import ModelState
from django.db.utils import load_backend
from django.utils.timezone import now
from psycopg import sql

from branching_ops.names import branch_alias
from branching_ops.search_path import BranchSearchPath
from branching_ops.tracking import close_branch_connections

Key = tuple[str, str]  # (app_label, migration name), as Django's graph keys them

RECORDER_TABLE = "django_migrations"
# The branches (of those asked) that have a django_migrations table of their own.
OWN_RECORDER_SQL = """
SELECT n.nspname FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.relname = %s AND c.relkind IN ('r', 'p') AND n.nspname = ANY(%s)
"""
# The search_path is the branch alone: its own table, or an error.
RECORD_SQL = f"INSERT INTO {RECORDER_TABLE} (app, name, applied) VALUES (%s, %s, %s)"
# A branch dropped between the two planning queries: plan again, this many times in all.
PLANNING_ATTEMPTS = 3


@dataclass(frozen=True)
class BranchMigrations:
    """What one branch needs: ``needed`` migrations in the order Django applies them."""

    branch: str
    needed: tuple[Key, ...]

    @property
    def up_to_date(self) -> bool:
        return not self.needed

    @property
    def labels(self) -> list[str]:
        """``app.name`` of each needed migration, as Django's ``migrate`` names them."""
        return [f"{app}.{name}" for app, name in self.needed]


def plan_migrations(
    connection: BaseDatabaseWrapper, branches: Sequence[str]
) -> list[BranchMigrations]:
    """The migrations each branch (schema) still needs, read in two queries for all of them.

    ``branches`` are schema names already checked to be valid branches. A
    branch without a ``django_migrations`` table of its own needs every
    migration, whatever ``public``'s says.
    """
    order, replaced = _full_plan()
    for attempt in range(1, PLANNING_ATTEMPTS + 1):
        try:
            applied = applied_migrations(connection, branches)
            break
        except ProgrammingError:  # UndefinedTable: a branch dropped between the two queries
            if attempt == PLANNING_ATTEMPTS:
                raise
    return [
        BranchMigrations(
            branch,
            tuple(
                key
                for key in order
                if key not in applied[branch]
                and not (key in replaced and replaced[key] <= applied[branch])
            ),
        )
        for branch in branches
    ]


def applied_migrations(
    connection: BaseDatabaseWrapper, branches: Sequence[str]
) -> dict[str, set[Key]]:
    """Each branch's applied migrations, from its own ``django_migrations`` only."""
    applied: dict[str, set[Key]] = {branch: set() for branch in branches}
    with connection.cursor() as cursor:
        cursor.execute(OWN_RECORDER_SQL, [RECORDER_TABLE, list(branches)])
        recorded = sorted(name for (name,) in cursor.fetchall())
        if not recorded:
            return applied
        cursor.execute(
            sql.SQL(" UNION ALL ").join(
                sql.SQL("SELECT {}, app, name FROM {}").format(
                    sql.Literal(branch), sql.Identifier(branch, RECORDER_TABLE)
                )
                for branch in recorded
            )
        )
        for branch, app, name in cursor.fetchall():
            applied[branch].add((app, name))
    return applied


def _full_plan() -> tuple[list[Key], dict[Key, set[Key]]]:
    """Every migration in Django's order on an empty database, and what squashes replace.

    The graph is loaded from disk alone (no connection): a squashed migration
    counts as applied on a branch that applied everything it replaces, as
    Django's loader decides.
    """
    loader = MigrationLoader(None, ignore_no_migrations=True)
    order: list[Key] = []
    seen: set[Key] = set()
    for leaf in loader.graph.leaf_nodes():
        for key in loader.graph.forwards_plan(leaf):
            if key not in seen:
                seen.add(key)
                order.append(key)
    replaced = {key: set(migration.replaces) for key, migration in loader.replacements.items()}
    return order, replaced


# -- running them, in a worker


class ProcessLoader(MigrationLoader):
    """A ``MigrationLoader`` that reads the migration files once per process.

    Django's loader imports and instantiates every migration again for each
    executor; a worker migrating branch after branch keeps the first result
    and only reads each branch's applied migrations (``build_graph`` still
    runs per branch: squashed migrations depend on what is applied).
    """

    _disk: ClassVar[tuple[dict[Key, Migration], set[str], set[str]] | None] = None

    def load_disk(self) -> None:
        cached = ProcessLoader._disk
        if cached is None:
            super().load_disk()
            ProcessLoader._disk = (
                dict(self.disk_migrations),
                set(self.unmigrated_apps),
                set(self.migrated_apps),
            )
            return
        disk, unmigrated, migrated = cached
        self.disk_migrations = dict(disk)
        self.unmigrated_apps = set(unmigrated)
        self.migrated_apps = set(migrated)


class BranchRecorder(MigrationRecorder):
    """Django's recorder, each record one plain ``INSERT`` into the branch's own table.

    The ORM's ``create()`` cost more than the statement, once per migration per branch.
    """

    def record_applied(self, app: str, name: str) -> None:
        self.ensure_schema()
        with self.connection.cursor() as cursor:
            cursor.execute(RECORD_SQL, [app, name, now()])


class BranchExecutor(MigrationExecutor):
    """Django's executor with the per-process loader and the plain recorder."""

    def __init__(self, connection: BaseDatabaseWrapper, progress_callback: Any = None) -> None:
        self.connection = connection
        self.loader = ProcessLoader(connection)
        self.recorder = BranchRecorder(connection)
        self.progress_callback = progress_callback


def branch_only_connection(branch: str) -> BaseDatabaseWrapper:
    """A new connection wrapper for ``branch`` whose ``search_path`` is its schema alone.

    Built from the branch's own settings (so a project's ``branch_settings``
    override and tracking apply), then installed as this thread's
    ``connections["schema_<branch>"]``, so that data migrations using
    ``schema_editor.connection.alias`` or the router get it too. The backend
    sets and verifies the path on connecting and refuses a missing schema.
    """
    alias = branch_alias(branch)
    close_branch_connections([alias])  # one this thread opened before, on the usual path
    settings = dict(connections.settings[alias])
    options = dict(settings["OPTIONS"])
    options.pop("pool", None)  # one connection per branch: no pool
    options.update(BranchSearchPath(branch, True, True).options())
    settings["OPTIONS"] = options
    wrapper: BaseDatabaseWrapper = load_backend(settings["ENGINE"]).DatabaseWrapper(
        settings, alias
    )
    connections[alias] = wrapper
    return wrapper


@dataclass(frozen=True)
class MigrateBranch:
    """The fan-out task of ``branch_migrate``: Django's ``migrate`` on one branch.

    Like ``manage.py migrate`` without arguments: every app to its latest
    migration, ``pre_migrate`` and ``post_migrate`` sent with ``using`` the
    branch's alias, progress written as Django writes it.
    """

    verbosity: int = 1

    def __call__(self, branch: str, stdout: TextIO, stderr: TextIO) -> None:
        migrate_branch(branch, stdout, verbosity=self.verbosity)


def migrate_branch(branch: str, stdout: TextIO, *, verbosity: int = 1) -> list[Key]:
    """Apply ``branch``'s unapplied migrations on the branch alone; return those applied.

    The branch-only connection is closed on every way out: it is this function's.
    """
    connection = branch_only_connection(branch)
    try:
        return _migrate(connection, stdout, verbosity)
    except BaseException as error:
        # Django's schema editor skips its atomic()'s exit when its deferred
        # SQL fails (BaseDatabaseSchemaEditor.__exit__): roll that back here.
        while connection.atomic_blocks:
            connection.atomic_blocks[-1].__exit__(type(error), error, error.__traceback__)
        raise
    finally:
        close_branch_connections([connection.alias])


def _migrate(connection: BaseDatabaseWrapper, stdout: TextIO, verbosity: int) -> list[Key]:
    alias = connection.alias
    connection.prepare_database()
    executor = BranchExecutor(connection, _Progress(stdout, verbosity))
    executor.loader.check_consistent_history(connection)
    conflicts = executor.loader.detect_conflicts()
    if conflicts:
        names = "; ".join(f"{', '.join(names)} in {app}" for app, names in conflicts.items())
        raise CommandError(f"Conflicting migrations detected: {names}.")
    targets = executor.loader.graph.leaf_nodes()
    plan = executor.migration_plan(targets)
    if not plan:
        if verbosity >= 1:
            stdout.write("No migrations to apply.\n")
        return []
    # What Django's migrate command calls; django-stubs do not declare it.
    pre_state = executor._create_project_state(with_applied_migrations=True)  # type: ignore[attr-defined]
    emit_pre_migrate_signal(verbosity, False, alias, stdout=stdout, apps=pre_state.apps, plan=plan)
    post_state = executor.migrate(targets, plan=plan, state=pre_state.clone())
    post_state.clear_delayed_apps_cache()
    post_apps = post_state.apps
    # As Django's migrate: models of apps without migrations, with their relations.
    with post_apps.bulk_update():
        real = [(state.app_label, state.name_lower) for state in post_apps.real_models]
        for key in real:
            post_apps.unregister_model(*key)
    post_apps.render_multiple([ModelState.from_model(global_apps.get_model(*key)) for key in real])
    emit_post_migrate_signal(verbosity, False, alias, stdout=stdout, apps=post_apps, plan=plan)
    return [(migration.app_label, migration.name) for migration, _ in plan]


@dataclass
class _Progress:
    """Django's ``migrate`` progress lines (``Applying app.0002_x... OK``)."""

    stdout: TextIO
    verbosity: int

    def __call__(
        self, action: str, migration: Migration | None = None, fake: bool = False
    ) -> None:
        if self.verbosity < 1:
            return
        if action == "apply_start":
            self.stdout.write(f"  Applying {migration}...")
        elif action == "apply_success":
            self.stdout.write(" OK\n")
