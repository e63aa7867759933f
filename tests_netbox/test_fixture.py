"""The committed migrated database is the one of the versions tox.ini pins.

Without it the tests still run, after ``netbox migrate`` (minutes of CPU):
a pin bumped without a new fixture fails here instead of slowing CI down.
"""

from __future__ import annotations

import configparser
from importlib.metadata import version

from tests_netbox.instance import FIXTURES
from tests_netbox.instance import REPO
from tests_netbox.instance import fixture_key

PINNED = ("netbox", "netboxlabs-netbox-branching")


def tox_pins() -> dict[str, str]:
    """The exact versions ``[testenv:netbox]`` installs (``name==version`` lines of its deps)."""
    tox = configparser.ConfigParser(interpolation=None)
    tox.read(REPO / "tox.ini")
    pins = {}
    for line in tox["testenv:netbox"]["deps"].split():
        name, _, pinned = line.partition("==")
        if name in PINNED:
            pins[name] = pinned
    return pins


def test_the_env_installs_the_pinned_versions() -> None:
    assert tox_pins() == {name: version(name) for name in PINNED}


def test_the_fixture_is_the_one_of_the_pinned_versions() -> None:
    """Regenerate it with ``tox exec -e netbox -- python -m tests_netbox.fixture``."""
    assert [path.name for path in FIXTURES.iterdir()] == [f"{fixture_key()}.sql.gz"]
