"""The ``BRANCHING_OPS`` setting, read through a typed object at access time.

Reading at access time (not import time) keeps ``override_settings`` working
in tests and lets ``settings.py`` build ``DATABASES`` before this is imported.
"""

from __future__ import annotations

from typing import Any
from typing import Literal

from django.conf import settings as django_settings

DEFAULTS: dict[str, Any] = {
    "SEARCH_PATH_TAIL": ["public"],
    "MAX_CONNECTIONS_PER_THREAD": None,
    # Each branch alias gets a psycopg pool of its own when ``default`` sets
    # OPTIONS["pool"]: keep each one small and free of idle connections.
    "BRANCH_POOL_OPTIONS": {"min_size": 0, "max_size": 4, "num_workers": 1},
    "SEARCH_PATH": "startup",
    "VERIFY_SEARCH_PATH": True,
    "PGBOUNCER_ADMIN": None,
}


class Settings:
    """Typed view of ``settings.BRANCHING_OPS``; every key is optional."""

    def _get(self, key: str) -> Any:
        return getattr(django_settings, "BRANCHING_OPS", {}).get(key, DEFAULTS[key])

    @property
    def SEARCH_PATH_TAIL(self) -> list[str]:
        value: list[str] = self._get("SEARCH_PATH_TAIL")
        return value

    @property
    def MAX_CONNECTIONS_PER_THREAD(self) -> int | None:
        """The most branch connections one thread keeps open; ``None``: no cap."""
        value: int | None = self._get("MAX_CONNECTIONS_PER_THREAD")
        return value

    @property
    def BRANCH_POOL_OPTIONS(self) -> dict[str, Any]:
        """psycopg ``ConnectionPool`` arguments for branch aliases, over ``default``'s."""
        value: dict[str, Any] = self._get("BRANCH_POOL_OPTIONS")
        return value

    def branch_pool(self, pool: object) -> dict[str, Any]:
        """A branch's pool options: ``BRANCH_POOL_OPTIONS`` over ``default``'s ``pool``."""
        return {**(pool if isinstance(pool, dict) else {}), **self.BRANCH_POOL_OPTIONS}

    @property
    def SEARCH_PATH(self) -> Literal["startup", "session", "transaction"]:
        """How a branch connection gets its ``search_path``: startup option, ``SET``, or
        with the first statement of every transaction (transaction pooling)."""
        value: Literal["startup", "session", "transaction"] = self._get("SEARCH_PATH")
        return value

    @property
    def VERIFY_SEARCH_PATH(self) -> bool:
        """Check, on every new branch connection, that the server uses the branch's path."""
        value: bool = self._get("VERIFY_SEARCH_PATH")
        return value

    @property
    def PGBOUNCER_ADMIN(self) -> str | None:
        """libpq conninfo of PgBouncer's admin console (``branch_connections``); ``None``: off."""
        value: str | None = self._get("PGBOUNCER_ADMIN")
        return value


conf = Settings()
