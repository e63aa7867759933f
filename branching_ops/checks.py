"""System checks; ids ``branching_ops.E001`` and up."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.apps import AppConfig
from django.apps import apps
from django.conf import settings
from django.core.checks import CheckMessage
from django.core.checks import Error
from django.core.checks import Tags
from django.core.checks import register

from branching_ops.conf import conf
from branching_ops.databases import BRANCH_NAME_RE
from branching_ops.databases import BranchDatabases

DUMMY_ENGINE = "django.db.backends.dummy"


@register(Tags.database, Tags.compatibility)
def check_databases(app_configs: Sequence[AppConfig] | None, **kwargs: Any) -> list[CheckMessage]:
    databases = settings.DATABASES
    if not isinstance(databases, BranchDatabases) or "default" not in databases:
        return []
    engine = databases["default"].get("ENGINE", "")
    if engine not in ("django.db.backends.postgresql", DUMMY_ENGINE):  # dummy: E030
        return [
            Error(
                f"BranchDatabases needs a PostgreSQL 'default' database, not {engine!r}.",
                hint="Branches are PostgreSQL schemas; set ENGINE to "
                "'django.db.backends.postgresql'.",
                id="branching_ops.E001",
            )
        ]
    return []


@register(Tags.compatibility)
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


@register(Tags.compatibility)
def check_search_path_settings(
    app_configs: Sequence[AppConfig] | None, **kwargs: Any
) -> list[CheckMessage]:
    errors: list[CheckMessage] = []
    mode = conf.SEARCH_PATH
    if mode not in ("startup", "session"):
        errors.append(
            Error(
                f"BRANCHING_OPS['SEARCH_PATH'] must be 'startup' or 'session', not {mode!r}.",
                hint="'startup' passes the search_path in the libpq options (no extra round "
                "trip); 'session' sets it right after connecting (behind PgBouncer).",
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


# Misconfigurations of a whole project (E030 and up). These checks must also
# run when "branching_ops" is missing from INSTALLED_APPS, when the app's
# ready() never imports this module: branching_ops.databases imports it, and
# a settings module that builds a BranchDatabases has imported that.


@register(Tags.database, Tags.compatibility)
def check_default_database(
    app_configs: Sequence[AppConfig] | None, **kwargs: Any
) -> list[CheckMessage]:
    databases: object = settings.DATABASES
    if not isinstance(databases, BranchDatabases):
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


@register(Tags.compatibility)
def check_installed(app_configs: Sequence[AppConfig] | None, **kwargs: Any) -> list[CheckMessage]:
    if apps.is_installed("branching_ops"):
        return []
    uses = []
    if isinstance(settings.DATABASES, BranchDatabases):
        uses.append("DATABASES is a BranchDatabases")
    worker_class = getattr(settings, "RQ", {}).get("WORKER_CLASS")
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
