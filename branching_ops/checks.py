"""System checks; ids ``branching_ops.E001`` and up."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.apps import AppConfig
from django.conf import settings
from django.core.checks import CheckMessage
from django.core.checks import Error
from django.core.checks import Tags
from django.core.checks import register

from branching_ops.conf import conf
from branching_ops.databases import BRANCH_NAME_RE
from branching_ops.databases import BranchDatabases


@register(Tags.database, Tags.compatibility)
def check_databases(app_configs: Sequence[AppConfig] | None, **kwargs: Any) -> list[CheckMessage]:
    databases = settings.DATABASES
    if not isinstance(databases, BranchDatabases) or "default" not in databases:
        return []
    engine = databases["default"].get("ENGINE", "")
    if engine != "django.db.backends.postgresql":
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
