"""System checks; ids ``branching_ops.E001`` and up, ``branching_ops.W001`` and up.

None of them is tagged ``database``: they read settings and never connect, and
Django 6.1 runs ``database``-tagged checks only when ``check --database`` is given.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any
from typing import TypeGuard

from django.apps import AppConfig
from django.apps import apps
from django.conf import settings
from django.core.checks import CheckMessage
from django.core.checks import Error
from django.core.checks import Warning
from django.utils.module_loading import import_string

from branching_ops.conf import DEFAULTS
from branching_ops.conf import conf
from branching_ops.names import BRANCH_NAME_RE

DUMMY_ENGINE = "django.db.backends.dummy"

# The attribute by which a DATABASES mapping says it serves branches.
SERVES_BRANCHES = "branching_ops_serves_branches"


def serves_branches(databases: object) -> TypeGuard[dict[str, dict[str, Any]]]:
    """Whether this package manages the branches ``DATABASES`` serves.

    A mapping says so with a true ``branching_ops_serves_branches`` attribute:
    :class:`~branching_ops.databases.BranchDatabases` has it, and the NetBox
    adapter sets it on netbox-branching's ``DynamicSchemaDict``.
    """
    return isinstance(databases, dict) and getattr(databases, SERVES_BRANCHES, False) is True


def branch_default() -> dict[str, Any] | None:
    """``DATABASES["default"]``, every branch's template, if ``DATABASES`` serves branches."""
    databases = settings.DATABASES
    if serves_branches(databases) and "default" in databases:
        return databases["default"]
    return None


def _is_postgresql(engine: str) -> bool:
    """Django's PostgreSQL backend, or one built on it (django-prometheus', NetBox's metrics).

    Imported here, not at the top: settings modules import this module.
    """
    from django.core.exceptions import ImproperlyConfigured
    from django.db.backends.postgresql.base import DatabaseWrapper as PostgreSQLWrapper
    from django.db.utils import load_backend

    try:
        backend = load_backend(engine)
    except ImproperlyConfigured:
        return False
    return issubclass(backend.DatabaseWrapper, PostgreSQLWrapper)


def check_databases(app_configs: Sequence[AppConfig] | None, **kwargs: Any) -> list[CheckMessage]:
    default = branch_default()
    if default is None:
        return []
    engine = default.get("ENGINE", "")
    if engine != DUMMY_ENGINE and not _is_postgresql(engine):  # dummy: E030
        return [
            Error(
                f"BranchDatabases needs a PostgreSQL 'default' database, not {engine!r}.",
                hint="Branches are PostgreSQL schemas; set ENGINE to "
                "'django.db.backends.postgresql'.",
                id="branching_ops.E001",
            )
        ]
    return []


def check_settings(app_configs: Sequence[AppConfig] | None, **kwargs: Any) -> list[CheckMessage]:
    tail = conf.SEARCH_PATH_TAIL
    if not isinstance(tail, list) or not all(
        isinstance(schema, str) and BRANCH_NAME_RE.fullmatch(schema) for schema in tail
    ):
        return [
            Error(
                f"BRANCHING_OPS['SEARCH_PATH_TAIL'] must be a list of schema names, not {tail!r}.",
                hint="Each name: lowercase ASCII letters, digits and underscores, "
                "not starting with a digit, e.g. ['public'].",
                id="branching_ops.E002",
            )
        ]
    return []


def check_known_settings(
    app_configs: Sequence[AppConfig] | None, **kwargs: Any
) -> list[CheckMessage]:
    """A misspelt key would silently fall back to its default."""
    return [
        Warning(
            f"BRANCHING_OPS has an unknown key {key!r}.",
            hint=f"The keys are: {', '.join(DEFAULTS)}.",
            id="branching_ops.W010",
        )
        for key in getattr(settings, "BRANCHING_OPS", {})
        if key not in DEFAULTS
    ]


def check_connection_lifetime(
    app_configs: Sequence[AppConfig] | None, **kwargs: Any
) -> list[CheckMessage]:
    """The cap, Django's pool and ``CONN_MAX_AGE`` of the ``default`` branches copy."""
    errors: list[CheckMessage] = []
    cap = conf.MAX_CONNECTIONS_PER_THREAD
    if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int) or cap < 1):
        errors.append(
            Error(
                f"BRANCHING_OPS['MAX_CONNECTIONS_PER_THREAD'] must be None or a positive "
                f"integer, not {cap!r}.",
                id="branching_ops.E011",
            )
        )
        cap = None
    default = branch_default()
    if default is None:
        return errors
    max_age = default.get("CONN_MAX_AGE", 0)
    pool = default.get("OPTIONS", {}).get("pool")
    if pool and max_age != 0:
        errors.append(
            Error(
                f"Django's connection pool (OPTIONS['pool']) needs CONN_MAX_AGE = 0, "
                f"not {max_age!r}: every branch connection would fail to open.",
                hint="Set CONN_MAX_AGE to 0 in DATABASES['default']; the pool keeps "
                "connections between requests.",
                id="branching_ops.E010",
            )
        )
    if pool:
        errors += _check_branch_pool_options(pool)
    if max_age is None and cap is not None:
        errors.append(
            Warning(
                f"CONN_MAX_AGE = None keeps branch connections open for the life of each "
                f"thread: only MAX_CONNECTIONS_PER_THREAD = {cap} bounds them, so the server "
                f"needs {cap} connections per thread of every process.",
                hint="Set CONN_MAX_AGE to a number of seconds, or silence this check if "
                "threads x cap fits max_connections.",
                id="branching_ops.W011",
            )
        )
    elif max_age is None:
        errors.append(
            Warning(
                "CONN_MAX_AGE = None keeps branch connections open for the life of each "
                "thread: every thread keeps one per branch it ever touched.",
                hint="Set CONN_MAX_AGE to a number of seconds, or set "
                "BRANCHING_OPS['MAX_CONNECTIONS_PER_THREAD'].",
                id="branching_ops.W012",
            )
        )
    return errors


def _check_branch_pool_options(pool: object) -> list[CheckMessage]:
    """Build (without opening) a pool from the options a branch would get."""
    options = conf.BRANCH_POOL_OPTIONS
    try:
        from psycopg_pool import ConnectionPool

        ConnectionPool(open=False, **conf.branch_pool(pool))
    except ImportError:
        return []  # Django itself reports a missing psycopg_pool at connect time.
    except (TypeError, ValueError) as exc:
        return [
            Error(
                f"A branch's connection pool cannot be built from "
                f"BRANCHING_OPS['BRANCH_POOL_OPTIONS'] = {options!r} over "
                f"OPTIONS['pool']: {exc}",
                hint="Use psycopg_pool.ConnectionPool arguments, e.g. "
                "{'min_size': 0, 'max_size': 4}.",
                id="branching_ops.E012",
            )
        ]
    return []


def check_search_path_settings(
    app_configs: Sequence[AppConfig] | None, **kwargs: Any
) -> list[CheckMessage]:
    errors: list[CheckMessage] = []
    mode = conf.SEARCH_PATH
    if mode not in ("startup", "session", "transaction"):
        errors.append(
            Error(
                f"BRANCHING_OPS['SEARCH_PATH'] must be 'startup', 'session' or 'transaction', "
                f"not {mode!r}.",
                hint="'startup' passes the search_path in the libpq options (no extra round "
                "trip); 'session' sets it right after connecting (PgBouncer session "
                "pooling); 'transaction' sends it with every transaction (transaction "
                "pooling).",
                id="branching_ops.E020",
            )
        )
    verify: object = conf.VERIFY_SEARCH_PATH
    if not isinstance(verify, bool):
        errors.append(
            Error(
                f"BRANCHING_OPS['VERIFY_SEARCH_PATH'] must be True or False, not {verify!r}.",
                id="branching_ops.E021",
            )
        )
    return errors


def check_transaction_server_side_cursors(
    app_configs: Sequence[AppConfig] | None, **kwargs: Any
) -> list[CheckMessage]:
    """A server-side cursor outlives the transaction a transaction pooler lends it."""
    default = branch_default()
    if conf.SEARCH_PATH != "transaction" or default is None:
        return []
    if default.get("DISABLE_SERVER_SIDE_CURSORS") is True:
        return []
    return [
        Error(
            "BRANCHING_OPS['SEARCH_PATH'] = 'transaction' needs DISABLE_SERVER_SIDE_CURSORS "
            "= True in DATABASES['default']: a server-side cursor (QuerySet.iterator()) "
            "would be read on whichever server connection the pooler picks next, and branch "
            "connections refuse to open one.",
            hint="Set DISABLE_SERVER_SIDE_CURSORS = True, as Django's notes on transaction "
            "pooling say.",
            id="branching_ops.E022",
        )
    ]


def check_pgbouncer_admin(
    app_configs: Sequence[AppConfig] | None, **kwargs: Any
) -> list[CheckMessage]:
    """Parsed, not connected to: checks never connect."""
    from branching_ops.pgbouncer import conninfo_error  # psycopg: not at settings import time

    value: object = conf.PGBOUNCER_ADMIN
    error = None if value is None else conninfo_error(value)
    if error is None:
        return []
    return [
        Error(
            f"BRANCHING_OPS['PGBOUNCER_ADMIN'] {error}.",
            hint="None, or the admin console of the PgBouncer in front of the database, "
            "e.g. 'host=127.0.0.1 port=6432 dbname=pgbouncer user=pgbouncer'.",
            id="branching_ops.E023",
        )
    ]


# Misconfigurations of a whole project (E030 and up).


def check_default_database(
    app_configs: Sequence[AppConfig] | None, **kwargs: Any
) -> list[CheckMessage]:
    databases = settings.DATABASES
    if not serves_branches(databases):
        return []
    # Django stands a dummy 'default' in for an empty DATABASES (and refuses a
    # non-empty one without 'default' at start-up, before any check runs).
    default = dict.get(databases, "default", {})
    if default.get("ENGINE", DUMMY_ENGINE) == DUMMY_ENGINE:
        return [
            Error(
                "BranchDatabases has no 'default' database: every branch is derived from it.",
                hint="Pass the project's PostgreSQL database as 'default': "
                "BranchDatabases({'default': {'ENGINE': 'django.db.backends.postgresql', ...}}).",
                id="branching_ops.E030",
            )
        ]
    return []


def check_installed(app_configs: Sequence[AppConfig] | None, **kwargs: Any) -> list[CheckMessage]:
    if apps.is_installed("branching_ops"):
        return []
    uses = []
    if serves_branches(settings.DATABASES):
        uses.append("DATABASES is a BranchDatabases")
    worker_class = _worker_class_path()
    if isinstance(worker_class, str) and worker_class.startswith("branching_ops."):
        uses.append(f"RQ['WORKER_CLASS'] is {worker_class!r}")
    if not uses:
        return []
    return [
        Error(
            f"'branching_ops' is not in INSTALLED_APPS, but {' and '.join(uses)}.",
            hint="Add 'branching_ops' to INSTALLED_APPS: without it no request boundary "
            "closes branch connections, and its checks and commands are missing.",
            id="branching_ops.E031",
        )
    ]


def _worker_class_path() -> object:
    """django-rq's ``RQ["WORKER_CLASS"]``, or ``None``."""
    return getattr(settings, "RQ", {}).get("WORKER_CLASS")


def check_worker_class(
    app_configs: Sequence[AppConfig] | None, **kwargs: Any
) -> list[CheckMessage]:
    """``BranchSpawnWorker`` on an rq whose job process would run none of its hooks."""
    path = _worker_class_path()
    try:
        worker_class = import_string(path) if isinstance(path, str) else None
    except ImportError:
        return []  # django-rq reports a class it cannot import.
    # A subclass of ours has imported our workers module (and so rq); any
    # other class has not, and must not make this check import rq.
    workers = sys.modules.get("branching_ops.workers")
    if (
        workers is not None
        and isinstance(worker_class, type)
        and issubclass(worker_class, workers.BranchSpawnWorker)
        and not workers.SPAWN_SUPPORTED
    ):
        return [
            Error(
                f"RQ['WORKER_CLASS'] is {path!r}: {workers.SPAWN_UNSUPPORTED}",
                hint="Upgrade to rq >= 3, or set RQ['WORKER_CLASS'] to "
                "'branching_ops.workers.BranchWorker'.",
                id="branching_ops.E032",
            )
        ]
    return []


CHECKS = (
    check_databases,
    check_settings,
    check_known_settings,
    check_connection_lifetime,
    check_search_path_settings,
    check_transaction_server_side_cursors,
    check_pgbouncer_admin,
    check_default_database,
    check_installed,
    check_worker_class,
)
"""Registered by the app's ``ready()``; ``check_installed`` also by ``branching_ops.databases``."""
