"""``branching_ops.conf``: the typed ``BRANCHING_OPS`` setting, read at access time."""

from __future__ import annotations

from typing import Any

import pytest
from django.conf import settings
from django.test import override_settings

from branching_ops.conf import DEFAULTS
from branching_ops.conf import Settings
from branching_ops.conf import conf

OVERRIDES: dict[str, Any] = {
    "SEARCH_PATH_TAIL": ["public", "extensions"],
    "MAX_CONNECTIONS_PER_THREAD": 3,
    "BRANCH_POOL_OPTIONS": {"min_size": 0, "max_size": 2},
    "SEARCH_PATH": "session",
    "VERIFY_SEARCH_PATH": False,
    "PGBOUNCER_ADMIN": "host=127.0.0.1 port=6432 dbname=pgbouncer user=postgres",
}


def test_every_key_has_a_typed_property() -> None:
    properties = {name for name, value in vars(Settings).items() if isinstance(value, property)}

    assert properties == set(DEFAULTS)
    assert set(OVERRIDES) == set(DEFAULTS)


@pytest.mark.parametrize("key", DEFAULTS)
def test_default_without_the_setting(key: str) -> None:
    with override_settings():
        delattr(settings, "BRANCHING_OPS")
        assert getattr(conf, key) == DEFAULTS[key]


@pytest.mark.parametrize("key", DEFAULTS)
def test_default_for_a_key_left_out(key: str) -> None:
    others = {other: value for other, value in OVERRIDES.items() if other != key}

    with override_settings(BRANCHING_OPS=others):
        assert getattr(conf, key) == DEFAULTS[key]


@pytest.mark.parametrize("key", DEFAULTS)
def test_read_at_access_time(key: str) -> None:
    """Not cached at import: ``override_settings`` and late settings take effect."""
    with override_settings(BRANCHING_OPS={key: OVERRIDES[key]}):
        assert getattr(conf, key) == OVERRIDES[key]
    assert getattr(conf, key) == DEFAULTS[key]
