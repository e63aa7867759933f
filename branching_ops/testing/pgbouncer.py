"""A throw-away PgBouncer in front of a PostgreSQL server, for tests.

The binary is the system's (``pgbouncer`` on ``PATH`` or in ``/usr/sbin``,
Debian package ``pgbouncer``; no wheel ships one), or any other command that
runs one (:func:`branching_ops.testing.debian.debian_pgbouncer`). As root it drops to the
same unprivileged user as PostgreSQL. Authentication is ``trust``: every
user the clients name is listed in the auth file with an empty password.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path

import psycopg

from branching_ops import pgbouncer
from branching_ops.pgbouncer import ADMIN_DATABASE
from branching_ops.testing.processes import free_port
from branching_ops.testing.processes import stop_process
from branching_ops.testing.processes import unprivileged_user
from branching_ops.testing.processes import wait_until

__all__ = [
    "PgBouncer",
    "running_pgbouncer",
]


def find_pgbouncer() -> str | None:
    """Path of the ``pgbouncer`` binary, or ``None``."""
    return shutil.which("pgbouncer") or shutil.which(
        "pgbouncer", path=os.pathsep.join(["/usr/sbin", "/usr/local/sbin"])
    )


def pgbouncer_version(command: str | Sequence[str]) -> tuple[int, int]:
    """``(major, minor)`` of the PgBouncer ``command`` runs, from ``pgbouncer --version``."""
    argv = [command] if isinstance(command, str) else list(command)
    output = subprocess.run(
        [*argv, "--version"], capture_output=True, text=True, check=True
    ).stdout
    match = re.search(r"PgBouncer (\d+)\.(\d+)", output)
    if match is None:
        raise RuntimeError(f"Cannot read the PgBouncer version from {output!r}.")
    return int(match[1]), int(match[2])


@dataclass
class PgBouncer:
    """A running PgBouncer: ``host``, ``port``, forwarding every database."""

    workdir: Path
    port: int
    admin_user: str
    host: str = "127.0.0.1"
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def log_path(self) -> Path:
        return self.workdir / "pgbouncer.log"

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    @property
    def admin_conninfo(self) -> str:
        """The admin console's conninfo, e.g. for ``BRANCHING_OPS["PGBOUNCER_ADMIN"]``."""
        return f"host={self.host} port={self.port} dbname={ADMIN_DATABASE} user={self.admin_user}"

    def admin(self) -> psycopg.Connection[tuple[object, ...]]:
        """A connection to the admin console (``SHOW CLIENTS``, ``SHOW SERVERS``, …).

        The console speaks only the simple query protocol: ``ClientCursor``.
        """
        return psycopg.connect(
            self.admin_conninfo, autocommit=True, cursor_factory=psycopg.ClientCursor
        )

    def show(self, what: str) -> list[dict[str, object]]:
        """``SHOW <what>`` on the admin console, as one dict per row."""
        return pgbouncer.show(self.admin_conninfo, what)

    def client_application_names(self, dbname: str) -> list[str]:
        """``application_name`` of every client connected to ``dbname``, sorted."""
        return sorted(
            str(client["application_name"])
            for client in self.show("CLIENTS")
            if client["database"] == dbname
        )

    def _answers(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise RuntimeError(f"PgBouncer exited at start; its log:\n{self.log_text()[-3000:]}")
        try:
            self.admin().close()
        except psycopg.OperationalError:
            return False
        return True

    def stop(self) -> None:
        """Close the server connections cleanly, then shut down.

        An immediate shutdown drops server connections without a goodbye
        (``unexpected EOF`` in the PostgreSQL log, which other tests read), so
        the console first asks for every released server connection to be
        closed (``RECONNECT``). The signals mean different things across
        PgBouncer versions; the console commands do not.
        """
        if self.process is None:
            return
        with contextlib.suppress(psycopg.Error, TimeoutError):
            with self.admin() as console:
                console.execute("RECONNECT")
            wait_until(lambda: not self.show("SERVERS"), timeout=10, what="PgBouncer's servers")
        with contextlib.suppress(psycopg.Error), self.admin() as console:
            console.execute("SHUTDOWN")
        stop_process(self.process, None, timeout=30)
        self.process = None


@contextlib.contextmanager
def running_pgbouncer(
    server_host: str,
    server_port: int,
    *,
    users: Sequence[str],
    pool_mode: str = "session",
    ignore_startup_parameters: str = "",
    default_pool_size: int = 10,
    extra: dict[str, str] | None = None,
    command: Sequence[str] | None = None,
) -> Iterator[PgBouncer]:
    """Start PgBouncer in front of ``server_host:server_port``; stop it and clean up on exit.

    ``users`` are the roles clients connect as; the first one is also the
    admin console's user. ``extra`` adds ``[pgbouncer]`` settings.
    ``command`` runs another PgBouncer than the system's.
    """
    if command is None:
        binary = find_pgbouncer()
        if binary is None:
            raise RuntimeError("No pgbouncer binary found (Debian: apt-get install pgbouncer).")
        command = [binary]
    user = unprivileged_user()
    workdir = Path(tempfile.mkdtemp(prefix="branching-ops-pgbouncer-"))
    bouncer = PgBouncer(workdir, free_port(), admin_user=users[0])
    try:
        (workdir / "userlist.txt").write_text("".join(f'"{name}" ""\n' for name in users))
        settings = {
            "listen_addr": bouncer.host,
            "listen_port": str(bouncer.port),
            "unix_socket_dir": "",
            "auth_type": "trust",
            "auth_file": str(workdir / "userlist.txt"),
            "admin_users": users[0],
            "pool_mode": pool_mode,
            "ignore_startup_parameters": ignore_startup_parameters,
            "default_pool_size": str(default_pool_size),
            "max_client_conn": "500",
            "logfile": str(bouncer.log_path),
            **(extra or {}),
        }
        config = f"[databases]\n* = host={server_host} port={server_port}\n\n[pgbouncer]\n"
        config += "".join(f"{key} = {value}\n" for key, value in settings.items())
        (workdir / "pgbouncer.ini").write_text(config)
        if user is not None:
            for path in [workdir, *workdir.iterdir()]:
                shutil.chown(path, user)
        bouncer.process = subprocess.Popen(
            [*command, str(workdir / "pgbouncer.ini")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            user=user,
            cwd=workdir,
            start_new_session=True,
        )
        wait_until(bouncer._answers, timeout=30, what="PgBouncer to start")
        yield bouncer
    finally:
        bouncer.stop()
        shutil.rmtree(workdir, ignore_errors=True)
