"""A real NetBox instance for the tests: pip-installed NetBox, netbox-branching, our servers.

PostgreSQL and Redis come from the package's own launchers. NetBox runs as
an operator runs it: ``$NETBOX_ROOT/conf/configuration.py``, the ``netbox``
console script, gunicorn, ``netbox rqworker``; every NetBox process is a
subprocess of the test run, so the adapter and stock configurations never
share a Python process.

``netbox migrate`` takes minutes of CPU: the database it leaves is committed
as ``tests_netbox/fixtures/<key>.sql.gz`` (``python -m tests_netbox.fixture``
writes it), keyed by the versions of NetBox, netbox-branching and Django,
and restored in seconds.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from dataclasses import field
from importlib.metadata import version
from pathlib import Path

import psycopg

from branching_ops.names import APPLICATION_NAME_MARKER
from branching_ops.testing.postgres import PostgresServer
from branching_ops.testing.redis import RedisServer

REPO = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().with_name("fixtures")
DBNAME = "netbox"
ROLE = "netbox"
BRANCHES = 10
BIN = Path(sys.executable).parent
CAP = 1  # the adapter's default MAX_CONNECTIONS_PER_THREAD
# The two commands of the call_command() scenario (tests_netbox.commands).
PLAIN = "call_command (BaseCommand)"
CLOSING = "call_command (BranchCommand)"
# A closed backend leaves within milliseconds on an idle machine; CI runs this
# beside other environments on 2 cores, where a process exit can take longer.
# Only a count that never comes down (stock's leaks) waits the whole time.
SETTLE_SECONDS = 3.0
# Branch backends: stock ones are labelled by tests_netbox.labeller.
BRANCH_BACKENDS_SQL = (
    "SELECT pid, application_name, state, query FROM pg_stat_activity "
    f"WHERE datname = '{DBNAME}' AND position('{APPLICATION_NAME_MARKER}' in application_name) > 0"
)


def settled(count: Callable[[], int], allowance: int) -> int:
    """``count()`` of branch backends, once closed ones had time to leave ``pg_stat_activity``.

    A backend leaves it a moment after its client closed the connection:
    wait (at most ``SETTLE_SECONDS``) for the count to come down to
    ``allowance``, and return what it came down to.
    """
    deadline = time.monotonic() + SETTLE_SECONDS
    while (left := count()) > allowance and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


def fixture_key() -> str:
    """What the migrated database depends on: the installed NetBox, netbox-branching, Django."""
    return "-".join(
        [
            f"netbox{version('netbox')}",
            f"branching{version('netboxlabs-netbox-branching')}",
            f"django{version('django')}",
        ]
    )


def fixture_path() -> Path:
    return FIXTURES / f"{fixture_key()}.sql.gz"


@dataclass
class Setting:
    """One configuration of the instance: the adapter on or off, and ``CONN_MAX_AGE``."""

    adapter: bool
    conn_max_age: int


STOCK = Setting(adapter=False, conn_max_age=0)


@dataclass
class NetBox:
    root: Path
    postgres: PostgresServer
    redis: RedisServer
    token: str = ""
    branches: tuple[str, ...] = ()  # schema ids, in the order they were provisioned
    timings: dict[str, float] = field(default_factory=dict)  # seconds per set-up step

    @contextmanager
    def timed(self, step: str) -> Iterator[None]:
        start = time.monotonic()
        yield
        self.timings[step] = time.monotonic() - start

    def env(self, setting: Setting) -> dict[str, str]:
        return {
            **os.environ,
            "NETBOX_ROOT": str(self.root),
            "DJANGO_SETTINGS_MODULE": "netbox.settings",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
            "NETBOX_TEST_PG_PORT": str(self.postgres.port),
            "NETBOX_TEST_REDIS_PORT": str(self.redis.port),
            "NETBOX_TEST_ADAPTER": "1" if setting.adapter else "0",
            "NETBOX_TEST_CONN_MAX_AGE": str(setting.conn_max_age),
            "PYTHONWARNINGS": "ignore",
        }

    def netbox(self, setting: Setting, *args: str, timeout: float = 900) -> str:
        """Run ``netbox ARGS`` (the console script); its output, or ``CalledProcessError``."""
        return _run([str(BIN / "netbox"), *args], self.env(setting), timeout)

    def driver(self, setting: Setting, *args: str, timeout: float = 600) -> object:
        """Run ``tests_netbox.driver ARGS`` inside NetBox; the JSON it prints last."""
        output = _run(
            [sys.executable, "-m", "tests_netbox.driver", *args], self.env(setting), timeout
        )
        return json.loads(output.strip().splitlines()[-1])

    def popen(self, setting: Setting, *command: str) -> subprocess.Popen[bytes]:
        log = (self.root / "logs" / f"{Path(command[0]).name}-{time.monotonic_ns()}.log").open(
            "wb"
        )
        return subprocess.Popen(
            list(command),
            env=self.env(setting),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def monitor(self) -> psycopg.Connection[tuple[object, ...]]:
        """A superuser connection: it gets in even when NetBox used every slot."""
        return self.postgres.connect(DBNAME)

    def branch_backends(self) -> list[tuple[int, str, str | None, str]]:
        """(pid, application_name, state, query) of every branch backend of NetBox."""
        with self.monitor() as monitor:
            rows = monitor.execute(BRANCH_BACKENDS_SQL).fetchall()
        return [(int(p), str(a), None if s is None else str(s), str(q)) for p, a, s, q in rows]

    def errored_netbox_jobs(self, job_ids: list[str]) -> int:
        """How many of these NetBox jobs (``core.Job``, by rq id) did not complete."""
        with self.monitor() as monitor:
            row = monitor.execute(
                "SELECT count(*) FROM core_job WHERE job_id = ANY(%s::uuid[]) "
                "AND status <> 'completed'",
                (job_ids,),
            ).fetchone()
        assert row is not None
        return int(row[0])

    def terminate_backends(self) -> None:
        """Start a scenario on an empty server: end every NetBox backend."""
        with self.monitor() as monitor:
            monitor.execute(
                "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity "
                "WHERE datname = %s AND usename = %s",
                (DBNAME, ROLE),
            )

    def log_offset(self) -> int:
        return self.postgres.log_path.stat().st_size

    def log_since(self, offset: int) -> str:
        with self.postgres.log_path.open("rb") as log:
            log.seek(offset)
            return log.read().decode(errors="replace")


def _run(command: list[str], env: dict[str, str], timeout: float) -> str:
    result = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    if result.returncode != 0:
        raise AssertionError(
            f"{' '.join(command)} exited {result.returncode}:\n"
            f"{result.stdout[-5000:]}\n{result.stderr[-5000:]}"
        )
    return result.stdout


def _pg(postgres: PostgresServer, tool: str, *args: str, stdin: bytes = b"") -> bytes:
    """Run PostgreSQL's ``tool`` as the superuser; its output, or what it said on failure."""
    command = [str(postgres.bindir / tool), "-h", postgres.host, "-p", str(postgres.port)]
    result = subprocess.run(
        [*command, "-U", "postgres", *args], input=stdin, capture_output=True, check=False
    )
    if result.returncode != 0:
        raise AssertionError(f"{tool} exited {result.returncode}: {result.stderr.decode()}")
    return result.stdout


def empty_netbox(postgres: PostgresServer, redis: RedisServer, root: Path) -> NetBox:
    """A NetBox root (its ``configuration.py``) and an empty database for it."""
    with postgres.connect() as admin:
        admin.execute(f"CREATE ROLE {ROLE} LOGIN")
        admin.execute(f"CREATE DATABASE {DBNAME} OWNER {ROLE}")
    (root / "conf").mkdir(parents=True)
    (root / "logs").mkdir()
    shutil.copy(Path(__file__).with_name("configuration.py"), root / "conf" / "configuration.py")
    return NetBox(root, postgres, redis)


def migrate(netbox: NetBox) -> None:
    # The checks load NetBox's URLconf and GraphQL schema: the tests run them.
    netbox.netbox(STOCK, "migrate", "--no-input", "--skip-checks", timeout=3600)


def dump(netbox: NetBox, path: Path) -> None:
    """The database as gzipped SQL: it is mostly DDL, which ``pg_dump -Fc`` does not compress."""
    sql = _pg(netbox.postgres, "pg_dump", DBNAME)
    path.write_bytes(gzip.compress(sql, mtime=0))


def restore(netbox: NetBox, path: Path) -> None:
    sql = gzip.decompress(path.read_bytes())
    _pg(netbox.postgres, "psql", "--quiet", "--set=ON_ERROR_STOP=1", DBNAME, stdin=sql)


def start_netbox(postgres: PostgresServer, redis: RedisServer, root: Path) -> NetBox:
    """A migrated NetBox with ``BRANCHES`` provisioned branches, an admin and an API token.

    The migrated database is the committed fixture of these versions, else
    (a version changed without a new fixture) the output of ``netbox migrate``.
    """
    netbox = empty_netbox(postgres, redis, root)
    fixture = fixture_path()
    if fixture.is_file():
        with netbox.timed(f"restore {fixture.relative_to(REPO)}"):
            restore(netbox, fixture)
    else:
        with netbox.timed(f"migrate: no {fixture.relative_to(REPO)}, see tests_netbox/fixture.py"):
            migrate(netbox)
    with netbox.timed(f"provision {BRANCHES} branches"):
        facts = netbox.driver(STOCK, "setup", str(BRANCHES))
    assert isinstance(facts, dict)
    netbox.token = facts["token"]
    netbox.branches = tuple(facts["branches"])
    return netbox
