"""``manage.py branch_drop`` through call_command, against a real server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.core.management.base import CommandParser
from django.db import connections
from django.test import override_settings

from branching_ops.management.base import BranchCommand
from branching_ops.routers import activate_branch
from branching_ops.testing.postgres import PostgresServer
from branching_ops.tracking import tracked_aliases
from tests.backends import BranchBackends
from tests.conftest import Connect
from tests.operations import execute
from tests.operations import public_tables
from tests.operations import run
from tests.operations import schemas
from tests.testapp.models import Note

pytestmark = pytest.mark.usefixtures("drop_schemas")


def test_drop_terminates_the_branch_backends_first(
    connect: Connect, branch_backends: BranchBackends, postgres: PostgresServer, dbname: str
) -> None:
    run("branch_create", "doomed", from_schema="public")
    connect("branch:doomed")
    # Holds a lock on a table of the branch: DROP SCHEMA would wait forever.
    connect("branch:doomed", autocommit=False).execute("SELECT * FROM doomed.testapp_note")
    connect("branch:kept")

    output = run("branch_drop", "doomed", interactive=False)

    tables = public_tables()
    assert output == f"Dropped branch 'doomed' ({tables} table(s)); terminated 2 backend(s).\n"
    assert "doomed" not in schemas(postgres, dbname)
    branch_backends.wait_for(["branch:kept"])


@pytest.mark.parametrize(("answer", "dropped"), [("yes", True), ("no", False), ("", False)])
def test_drop_asks_first(
    connect: Connect,
    monkeypatch: pytest.MonkeyPatch,
    postgres: PostgresServer,
    branch_backends: BranchBackends,
    dbname: str,
    answer: str,
    dropped: bool,
) -> None:
    run("branch_create", "asked", from_schema="public")
    connect("branch:asked")
    prompts: list[str] = []

    def answer_prompt(prompt: str) -> str:
        prompts.append(prompt)
        return answer

    monkeypatch.setattr("builtins.input", answer_prompt)
    output = run("branch_drop", "asked")

    tables = public_tables()
    assert prompts == [
        "This will terminate 1 backend(s) of branch 'asked' and drop its schema with "
        f"everything in it ({tables} table(s)).\nType 'yes' to continue, or 'no' to cancel: "
    ]
    if dropped:
        assert output == f"Dropped branch 'asked' ({tables} table(s)); terminated 1 backend(s).\n"
        assert "asked" not in schemas(postgres, dbname)
        branch_backends.wait_for([])
    else:
        assert output == "Drop cancelled.\n"
        assert "asked" in schemas(postgres, dbname)
        assert branch_backends() == ["branch:asked"]


def test_drop_missing(postgres: PostgresServer, dbname: str) -> None:
    with pytest.raises(CommandError, match=r"^Branch 'nope' does not exist\.$"):
        run("branch_drop", "nope", interactive=False)
    assert run("branch_drop", "nope", "--if-exists", "--noinput") == (
        "Branch 'nope' does not exist; nothing to do.\n"
    )


def test_drop_refuses_the_search_path_tail(postgres: PostgresServer, dbname: str) -> None:
    execute("CREATE SCHEMA shared")

    with (
        override_settings(BRANCHING_OPS={"SEARCH_PATH_TAIL": ["shared", "public"]}),
        pytest.raises(CommandError, match=r"^'shared' is a reserved schema, not a branch\.$"),
    ):
        run("branch_drop", "shared", interactive=False)

    assert "shared" in schemas(postgres, dbname)


def test_drop_someone_elses_schema(postgres: PostgresServer, dbname: str) -> None:
    with postgres.connect(dbname) as setup:
        setup.execute("CREATE SCHEMA theirs")

    with pytest.raises(CommandError) as raised:
        run("branch_drop", "theirs", interactive=False)

    assert str(raised.value) == (
        "Role 'app' may not drop branch 'theirs': its schema belongs to 'postgres'. "
        "Nothing was changed."
    )
    assert "theirs" in schemas(postgres, dbname)


def test_drop_without_privilege_to_terminate(
    connect: Connect, branch_backends: BranchBackends, postgres: PostgresServer, dbname: str
) -> None:
    run("branch_create", "guarded")
    connect("branch:guarded")
    superuser_pid = connect("branch:guarded", user="postgres").info.backend_pid

    with pytest.raises(CommandError) as raised:
        run("branch_drop", "guarded", interactive=False)

    assert str(raised.value) == (
        f"Role 'app' may not terminate 1 of 2 branch backend(s) (pid {superuser_pid}, "
        "role 'postgres'); nothing was terminated. Connect as a superuser, as the "
        "backends' role, or as a member of pg_signal_backend."
    )
    assert "guarded" in schemas(postgres, dbname)
    assert branch_backends() == ["branch:guarded", "branch:guarded"]


class UseBranch(BranchCommand):
    """One unit of work on a branch, as a command: write and read through the ORM."""

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name")

    def handle(self, *args: Any, name: str, **options: Any) -> None:
        with activate_branch(name):
            Note.objects.create(text=name)
            assert Note.objects.count() == 1


def server_processes(postgres: PostgresServer) -> list[int]:
    """The postmaster and every process it forked (backends, checkpointer, ...)."""
    assert postgres.process is not None
    postmaster = postgres.process.pid
    children = Path(f"/proc/{postmaster}/task/{postmaster}/children").read_text().split()
    return [postmaster, *map(int, children)]


def private_kib(pid: int) -> int:
    """Memory only this process uses: its anonymous pages.

    Not ``Private_*``: a page of shared buffers touched by one process alone
    counts as private there, so a checkpoint would look like growth.
    """
    try:
        rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return 0  # exited while we looked
    (anonymous,) = (line for line in rollup.splitlines() if line.startswith("Anonymous:"))
    return int(anonymous.split()[1])


def server_footprint(postgres: PostgresServer, instruments: set[int]) -> tuple[int, int]:
    """(client backends, private memory of the server in KiB), without our instruments.

    ``instruments`` are the backends of the test's own monitoring connections:
    a session that polls ``pg_stat_activity`` thousands of times grows too,
    and it is not part of what is measured.
    """
    with postgres.connect() as monitor:
        instruments = {*instruments, monitor.info.backend_pid}
        rows = monitor.execute("SELECT pid, backend_type FROM pg_stat_activity").fetchall()
        clients = [
            pid for pid, kind in rows if kind == "client backend" and pid not in instruments
        ]
        # An autovacuum worker comes and goes on the server's own schedule
        # (the cycles churn the catalogs); the checkpointer's table of files
        # to sync grows with the files made since the last checkpoint, up to
        # a high-water mark it reuses. Neither is memory the cycles kept.
        transient = {pid for pid, kind in rows if kind in ("autovacuum worker", "checkpointer")}
        memory = sum(
            private_kib(pid)
            for pid in server_processes(postgres)
            if pid not in instruments and pid not in transient
        )
    return len(clients), memory


@pytest.mark.slow
def test_create_use_drop_200_times_does_not_grow_the_server(
    postgres: PostgresServer, branch_backends: BranchBackends
) -> None:
    """netbox-branching #357: this cycle ran the server out of memory.

    Each cycle is what separate ``manage.py`` runs (or requests with
    ``CONN_MAX_AGE=0``) do: the ops connection ends with the command. Then the
    same cycles in one long-lived session, whose backend grows PostgreSQL's
    per-session catalog cache; that memory goes when the session ends.
    """
    default = connections["default"]
    instruments = {branch_backends.monitor.info.backend_pid}

    def cycles(start: int, count: int, *, one_session: bool = False) -> None:
        for i in range(start, start + count):
            run("branch_create", f"cycle_{i}", from_schema="public")
            call_command(UseBranch(), f"cycle_{i}")
            run("branch_drop", f"cycle_{i}", interactive=False)
            if not one_session:
                default.close()
        branch_backends.wait_for([])

    cycles(0, 20)  # warm up: the server's caches and free lists
    backends_0, memory_0 = server_footprint(postgres, instruments)
    cycles(20, 200)
    backends_1, memory_1 = server_footprint(postgres, instruments)

    cycles(220, 10, one_session=True)  # warm up the session
    session_pid = default.connection.info.backend_pid
    session_0 = private_kib(session_pid)
    cycles(230, 100, one_session=True)
    session_1 = private_kib(session_pid)
    default.close()
    branch_backends.wait_for([])
    backends_2, memory_2 = server_footprint(postgres, instruments)

    print(
        f"\n200 x create/use/drop: client backends {backends_0} -> {backends_1}, "
        f"server private memory {memory_0} -> {memory_1} KiB"
        f"\n100 more in one session: its backend {session_0} -> {session_1} KiB "
        f"({(session_1 - session_0) / 100:.1f} KiB per cycle); after it closed: "
        f"client backends {backends_2}, server private memory {memory_2} KiB"
    )
    assert backends_1 == backends_0
    assert backends_2 == backends_0
    assert tracked_aliases() == []
    assert memory_1 - memory_0 < 1024
    assert memory_2 - memory_0 < 1024
