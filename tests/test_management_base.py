"""BranchCommand through call_command and real ``manage.py`` subprocesses."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import OperationalError
from django.db import connections
from django.db import transaction

from branching_ops.management.base import BranchCommand
from branching_ops.testing.postgres import PostgresServer
from branching_ops.testing.postgres import running_postgres
from branching_ops.tracking import tracked_aliases
from tests.backends import BranchBackends
from tests.conftest import APP_ROLE
from tests.conftest import Branches

ROOT = Path(__file__).resolve().parent.parent
BRANCHES = 50
WIDE_DBNAME = "branching_ops_wide"


@pytest.fixture(scope="module")
def wide_postgres(postgres: PostgresServer) -> Iterator[PostgresServer]:
    """A server with room for 50 branch connections at once, to count a whole leak.

    The suite's server stops at 37 application connections on purpose; a
    command that leaks 50 would fail there with "too many clients" instead of
    showing how many it left behind.
    """
    with running_postgres(max_connections=BRANCHES + 20) as server:
        with server.connect() as setup:
            setup.execute(f"CREATE ROLE {APP_ROLE} LOGIN")
            setup.execute(f"CREATE DATABASE {WIDE_DBNAME} OWNER {APP_ROLE}")
        server.create_schemas(WIDE_DBNAME, touch_names(), owner=APP_ROLE)
        yield server


@pytest.fixture
def wide(
    wide_postgres: PostgresServer, monkeypatch: pytest.MonkeyPatch, transactional_db: None
) -> Iterator[BranchBackends]:
    """Branches of this thread connect to the wide server; its branch backends."""
    default = connections["default"].settings_dict
    connections["default"].close()
    monkeypatch.setitem(default, "HOST", wide_postgres.host)
    monkeypatch.setitem(default, "PORT", str(wide_postgres.port))
    monkeypatch.setitem(default, "NAME", WIDE_DBNAME)
    backends = BranchBackends(wide_postgres, WIDE_DBNAME)
    yield backends
    backends.close()
    connections["default"].close()


def touch_names(count: int = BRANCHES) -> list[str]:
    """The branches ``touch_branches --count COUNT`` connects to."""
    return [f"touch_{i}" for i in range(count)]


def touched(count: int = BRANCHES) -> list[str]:
    return [f"branch:{name}" for name in touch_names(count)]


def test_returning_command_leaves_no_backend(wide: BranchBackends) -> None:
    out = StringIO()
    call_command("touch_branches", count=BRANCHES, stdout=out)

    assert out.getvalue() == f"touched {BRANCHES} branches\n"
    wide.wait_for([])
    assert tracked_aliases() == []


@pytest.mark.parametrize(
    ("end", "raised"),
    [
        ("command-error", CommandError),
        ("exception", RuntimeError),
        ("keyboard-interrupt", KeyboardInterrupt),
        ("system-exit", SystemExit),
    ],
)
def test_raising_command_leaves_no_backend(
    wide: BranchBackends, end: str, raised: type[BaseException]
) -> None:
    with pytest.raises(raised):
        call_command("touch_branches", count=BRANCHES, end=end, stdout=StringIO())

    wide.wait_for([])
    assert tracked_aliases() == []


def test_plain_base_command_leaks_every_branch(wide: BranchBackends) -> None:
    call_command("touch_branches_plain", count=BRANCHES, stdout=StringIO())

    wide.wait_for(touched())
    print(f"\nplain BaseCommand left {len(wide())} of {BRANCHES} branch backends open")


def test_callers_branch_connection_and_atomic_survive(
    branch_backends: BranchBackends, branches: Branches
) -> None:
    branches("outer", "outer_0", *touch_names(5))
    outer = connections["schema_outer"]
    with transaction.atomic(using="schema_outer"):
        with outer.cursor() as cursor:
            cursor.execute("CREATE TEMPORARY TABLE kept (x int)")
            cursor.execute("INSERT INTO kept VALUES (1)")

        call_command("touch_branches", count=5, stdout=StringIO())
        # The command also touched the caller's branch, inside its atomic block.
        call_command("touch_branches", count=1, prefix="outer", stdout=StringIO())

        branch_backends.wait_for(["branch:outer"])
        assert outer.in_atomic_block
        with outer.cursor() as cursor:
            cursor.execute("SELECT x FROM kept")
            assert cursor.fetchall() == [(1,)]
    assert not outer.needs_rollback
    assert tracked_aliases() == ["schema_outer"]


def test_a_branch_the_caller_only_looked_up_is_closed_once_the_command_connects_it(
    branch_backends: BranchBackends, branches: Branches
) -> None:
    branches("looked_up_0")
    connections["schema_looked_up_0"]  # the wrapper: tracked, never connected
    assert tracked_aliases() == ["schema_looked_up_0"]

    call_command("touch_branches", count=1, prefix="looked_up", stdout=StringIO())

    branch_backends.wait_for([])
    assert tracked_aliases() == []


def test_command_leaves_its_own_atomic_block_open(
    branch_backends: BranchBackends, branches: Branches
) -> None:
    """A connection left inside atomic() is never closed under the code using it."""
    branches("dangling")
    block = transaction.atomic(using="schema_dangling")

    class Dangling(BranchCommand):
        def handle(self, *args: object, **options: object) -> None:
            block.__enter__()
            with connections["schema_dangling"].cursor() as cursor:
                cursor.execute("SELECT 1")

    call_command(Dangling(), stdout=StringIO())
    try:
        branch_backends.wait_for(["branch:dangling"])
        assert connections["schema_dangling"].in_atomic_block
    finally:
        block.__exit__(None, None, None)


def test_nested_commands_close_only_their_own(
    branch_backends: BranchBackends, branches: Branches
) -> None:
    branches("outer_cmd", *touch_names(3))

    class Outer(BranchCommand):
        def handle(self, *args: object, **options: object) -> None:
            with connections["schema_outer_cmd"].cursor() as cursor:
                cursor.execute("SELECT 1")
            call_command("touch_branches", count=3, stdout=StringIO())
            branch_backends.wait_for(["branch:outer_cmd"])
            assert tracked_aliases() == ["schema_outer_cmd"]

    call_command(Outer(), stdout=StringIO())

    branch_backends.wait_for([])


def test_checkpoint_lets_200_branches_through_40_slots(
    branch_backends: BranchBackends, postgres: PostgresServer, branches: Branches
) -> None:
    count = 200
    assert count > postgres.max_connections
    branches(*touch_names(count))

    call_command("touch_branches", count=count, checkpoint=True, stdout=StringIO())

    branch_backends.wait_for([])


def test_without_checkpoint_200_branches_exhaust_the_server(
    branch_backends: BranchBackends, branches: Branches
) -> None:
    """The checkpoint is what makes the loop above pass: no cap, CONN_MAX_AGE=0."""
    branches(*touch_names(200))
    assert connections["default"].settings_dict["CONN_MAX_AGE"] == 0
    with pytest.raises(OperationalError, match=r"slots are reserved|too many clients"):
        call_command("touch_branches", count=200, stdout=StringIO())

    # ... and even then the command closed what it had opened.
    branch_backends.wait_for([])
    assert tracked_aliases() == []


def test_checkpoint_keeps_young_connections_and_the_callers(
    branch_backends: BranchBackends, monkeypatch: pytest.MonkeyPatch, branches: Branches
) -> None:
    branches("caller", "young")
    with connections["schema_caller"].cursor() as cursor:
        cursor.execute("SELECT 1")
    monkeypatch.setitem(connections["default"].settings_dict, "CONN_MAX_AGE", 60)
    closed: list[int] = []

    class Loop(BranchCommand):
        def handle(self, *args: object, **options: object) -> None:
            with connections["schema_young"].cursor() as cursor:
                cursor.execute("SELECT 1")
            closed.append(self.close_old_branch_connections())
            branch_backends.wait_for(["branch:caller", "branch:young"])

    call_command(Loop(), stdout=StringIO())

    assert closed == [0]
    branch_backends.wait_for(["branch:caller"])


# -- real manage.py subprocesses ---------------------------------------------


def manage(*args: str, env: dict[str, str], stdin: int | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        text=True,
        stdin=stdin,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


@pytest.fixture
def wide_env(wide_postgres: PostgresServer) -> dict[str, str]:
    return {
        **os.environ,
        "BRANCHING_OPS_TEST_PGHOST": wide_postgres.host,
        "BRANCHING_OPS_TEST_PGPORT": str(wide_postgres.port),
        "BRANCHING_OPS_TEST_DBNAME": WIDE_DBNAME,
    }


@pytest.fixture
def wide_monitor(wide_postgres: PostgresServer) -> Iterator[BranchBackends]:
    backends = BranchBackends(wide_postgres, WIDE_DBNAME)
    yield backends
    backends.close()


def test_manage_py_command_exits_cleanly(
    wide_postgres: PostgresServer, wide_env: dict[str, str]
) -> None:
    log_start = len(wide_postgres.log_text())

    done = manage("touch_branches", "--count", str(BRANCHES), env=wide_env)
    stdout, stderr = done.communicate(timeout=60)

    assert (done.returncode, stdout, stderr) == (0, f"touched {BRANCHES} branches\n", "")
    assert "unexpected EOF" not in wide_postgres.log_text()[log_start:]


def test_manage_py_command_error_exits_1_without_traceback(
    wide_postgres: PostgresServer, wide_env: dict[str, str]
) -> None:
    log_start = len(wide_postgres.log_text())

    done = manage(
        "touch_branches", "--count", str(BRANCHES), "--end", "command-error", env=wide_env
    )
    _, stderr = done.communicate(timeout=60)

    assert done.returncode == 1
    assert stderr == f"CommandError: failed after touching {BRANCHES} branches\n"
    assert "unexpected EOF" not in wide_postgres.log_text()[log_start:]


@pytest.mark.parametrize(
    ("command", "left_open"), [("touch_branches", 0), ("touch_branches_plain", BRANCHES)]
)
def test_long_lived_process_killed_after_the_command(
    wide_postgres: PostgresServer,
    wide_env: dict[str, str],
    wide_monitor: BranchBackends,
    command: str,
    left_open: int,
) -> None:
    """A shell session or scheduler runs the command, goes on, and is later killed.

    With BranchCommand nothing is open once the command returns, so the kill
    costs nothing; with BaseCommand every branch stays open until the
    process dies, and then each one ends without a goodbye.
    """
    log_start = len(wide_postgres.log_text())
    code = (
        "import sys; from django.core.management import call_command; "
        f"call_command({command!r}, count={BRANCHES}); sys.stdout.flush(); sys.stdin.read()"
    )
    process = manage("shell", "-v", "0", "-c", code, env=wide_env, stdin=subprocess.PIPE)
    try:
        assert process.stdout is not None
        assert process.stdout.readline() == f"touched {BRANCHES} branches\n"
        wide_monitor.wait_for(touched(left_open))
    finally:
        process.send_signal(signal.SIGKILL)
        process.communicate()

    wide_monitor.wait_for([])
    eofs = wide_postgres.log_text()[log_start:].count("unexpected EOF on client connection")
    print(f"\n{command}: {left_open} branch backends open after the command, {eofs} EOFs")
    assert eofs == left_open
