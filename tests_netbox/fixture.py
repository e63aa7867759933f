"""Write the migrated database the NetBox tests start from: ``python -m tests_netbox.fixture``.

Run it in the ``netbox`` tox environment after changing its pins::

    tox exec -e netbox -- python -m tests_netbox.fixture

It runs ``netbox migrate`` on an empty database (minutes of CPU) and writes
what that leaves (no user, no branch) to ``tests_netbox/fixtures/<key>.sql.gz``,
named for the installed versions, removing the fixture of other versions.
Commit the new file: ``test_fixture.py`` fails until it matches the pins.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from branching_ops.testing.postgres import running_postgres
from branching_ops.testing.redis import running_redis
from tests_netbox.instance import FIXTURES
from tests_netbox.instance import dump
from tests_netbox.instance import empty_netbox
from tests_netbox.instance import fixture_path
from tests_netbox.instance import migrate


def main() -> None:
    path = fixture_path()
    FIXTURES.mkdir(exist_ok=True)
    with (
        running_postgres() as postgres,
        running_redis() as redis,
        tempfile.TemporaryDirectory() as root,
    ):
        netbox = empty_netbox(postgres, redis, Path(root))
        migrate(netbox)
        partial = path.with_name(f"{path.name}.partial")
        dump(netbox, partial)
    for old in FIXTURES.glob("*.sql.gz"):
        old.unlink()
    partial.rename(path)
    sys.stdout.write(f"{path} ({path.stat().st_size} bytes)\n")


if __name__ == "__main__":
    main()
