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
    "SEARCH_PATH": "startup",
    "VERIFY_SEARCH_PATH": True,
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
    def SEARCH_PATH(self) -> Literal["startup", "session"]:
        """How a branch connection gets its ``search_path``: startup option or ``SET``."""
        value: Literal["startup", "session"] = self._get("SEARCH_PATH")
        return value

    @property
    def VERIFY_SEARCH_PATH(self) -> bool:
        """Check, on every new branch connection, that the server uses the branch's path."""
        value: bool = self._get("VERIFY_SEARCH_PATH")
        return value


conf = Settings()
