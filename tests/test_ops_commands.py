"""The operations commands through call_command, against real server backends."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable
from collections.abc import Iterator
from io import StringIO
from pathlib import Path
from typing import Any

import psycopg
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.core.management.base import CommandParser
from django.db import IntegrityError
from django.db import connections
from django.test import override_settings
from psycopg import sql

from branching_ops.management.base import BranchCommand
from branching_ops.routers import activate_branch
from branching_ops.testing._process import free_port
from branching_ops.testing._process import wait_until
from branching_ops.testing.postgres import PostgresServer
from branching_ops.tracking import tracked_aliases
from tests.backends import BranchBackends
from tests.conftest import APP_ROLE
from tests.conftest import Branches
from tests.testapp.models import Note

Connect = Callable[..., psycopg.Connection[Any]]


@pytest.fixture
def dbname(transactional_db: None) -> str:
    name: str = connections["default"].settings_dict["NAME"]
    return name


@pytest.fixture
def connect(postgres: PostgresServer, dbname: str) -> Iterator[Connect]:
    """Open real client backends, as other processes would: ``connect(app_name, ...)``."""
    opened: list[psycopg.Connection[Any]] = []

    def open_backend(
        application_name: str, *, user: str = APP_ROLE, database: str = "", autocommit: bool = True
    ) -> psycopg.Connection[Any]:
        connection = psycopg.connect(
            postgres.conninfo(database or dbname, user=user),
            application_name=application_name,
            autocommit=autocommit,
        )
        opened.append(connection)
        return connection

    yield open_backend
    for connection in opened:
        connection.cancel()  # a backend in pg_sleep() would outlive its client
        connection.close()


@pytest.fixture(autouse=True)
def _drop_schemas(postgres: PostgresServer, dbname: str) -> Iterator[None]:
    """Flushing the test database keeps schemas; drop the ones a test made."""
    yield
    with postgres.connect(dbname) as cleanup:
        for name in schemas(postgres, dbname):
            if name != "public":
                cleanup.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(name)))


def run(*args: str, **options: Any) -> str:
    out = StringIO()
    call_command(*args, stdout=out, stderr=StringIO(), **options)
    return out.getvalue()


def normalized(text: str, pids: dict[int, str] | None = None) -> str:
    """Durations to ``H:MM:SS``; pids to names, padded back to the column width."""
    text = re.sub(r"\b\d+:\d\d:\d\d\b", "H:MM:SS", text)
    for pid, name in (pids or {}).items():
        text = re.sub(rf"\b{pid}\b", name.rjust(len(str(pid))), text)
    return text


def schemas(postgres: PostgresServer, dbname: str) -> list[str]:
    with postgres.connect(dbname) as monitor:
        rows = monitor.execute(
            "SELECT nspname FROM pg_namespace WHERE nspname !~ '^(pg_|information_schema)' "
            "ORDER BY 1"
        ).fetchall()
    return [str(name) for (name,) in rows]


# -- branch_connections --------------------------------------------------------


def test_connections_none(dbname: str) -> None:
    assert run("branch_connections") == f"No branch connections on database {dbname!r}.\n"


def test_connections_table(three_branches: dict[int, str], dbname: str) -> None:
    output = run("branch_connections")

    assert normalized(output) == (
        "BRANCH  CONNECTIONS  ACTIVE  IDLE  IDLE IN TX  OLDEST   LONGEST IDLE  CLIENTS\n"
        "alpha             2       0     2           0  H:MM:SS  H:MM:SS       127.0.0.1\n"
        "beta              1       0     0           1  H:MM:SS  H:MM:SS       127.0.0.1\n"
        "gamma             1       1     0           0  H:MM:SS  -             127.0.0.1\n"
        "\n"
        f"4 connection(s) on 3 branch(es) of database {dbname!r}.\n"
    )


@pytest.fixture
def three_branches(connect: Connect, branches: Branches) -> dict[int, str]:
    """alpha: 2 idle; beta: 1 idle in transaction (project prefix); gamma: 1 active."""
    branches("mine")
    backends = {
        "a1": connect("branch:alpha"),
        "a2": connect("branch:alpha"),
        "b1": connect("myproject/branch:beta", autocommit=False),
        "g1": connect("branch:gamma"),
    }
    backends["b1"].execute("SELECT 1")
    backends["g1"].pgconn.send_query(b"SELECT pg_sleep(60)")
    connect("myproject")  # not a branch
    connect("branch:alpha", database="postgres")  # another database
    with connections["schema_mine"].cursor() as cursor:  # this thread's own
        cursor.execute("SELECT 1")
    return {connection.info.backend_pid: name for name, connection in backends.items()}


def json_normalized(data: Any, pids: dict[int, str]) -> Any:
    """Durations (checked non-negative) to ``"s"``, pids to names."""
    if isinstance(data, list):
        return [json_normalized(item, pids) for item in data]
    if not isinstance(data, dict):
        return data
    normal = {}
    for key, value in data.items():
        if key.endswith("_seconds") and value is not None:
            assert isinstance(value, float), (key, value)
            assert value >= 0, (key, value)
            value = "s"
        elif key == "pid" or key == "terminated":
            value = pids[value] if key == "pid" else [pids[pid] for pid in value]
        normal[key] = json_normalized(value, pids)
    return normal


BACKEND_ROWS = {  # name: (branch, user, state, idle)
    "a1": ("alpha", "app", "idle", "H:MM:SS"),
    "a2": ("alpha", "app", "idle", "H:MM:SS"),
    "b1": ("beta", "app", "idle in transaction", "H:MM:SS"),
    "g1": ("gamma", "app", "active", "-"),
}


def backend_lines(pids: dict[int, str], *names: str) -> str:
    """The expected backend table; only the pid column's width depends on the run."""
    width = max(len(str(pid)) for pid in pids)
    lines = [f"BRANCH  {'PID':>{width}}  USER  STATE                AGE      IDLE     CLIENT"]
    for name in names:
        branch, user, state, idle = BACKEND_ROWS[name]
        lines.append(
            f"{branch:<6}  {name:>{width}}  {user:<4}  {state:<19}  H:MM:SS  {idle:<7}  127.0.0.1"
        )
    return "\n".join(lines) + "\n"


def test_connections_verbosity_2_lists_backends(
    three_branches: dict[int, str], dbname: str
) -> None:
    output = run("branch_connections", verbosity=2)

    assert normalized(output, three_branches) == (
        "BRANCH  CONNECTIONS  ACTIVE  IDLE  IDLE IN TX  OLDEST   LONGEST IDLE  CLIENTS\n"
        "alpha             2       0     2           0  H:MM:SS  H:MM:SS       127.0.0.1\n"
        "beta              1       0     0           1  H:MM:SS  H:MM:SS       127.0.0.1\n"
        "gamma             1       1     0           0  H:MM:SS  -             127.0.0.1\n"
        "\n" + backend_lines(three_branches, "a1", "a2", "b1", "g1") + "\n"
        f"4 connection(s) on 3 branch(es) of database {dbname!r}.\n"
    )


def test_connections_verbosity_0_is_the_bare_table(three_branches: dict[int, str]) -> None:
    output = run("branch_connections", verbosity=0, branch=["beta"])

    assert normalized(output) == (
        "BRANCH  CONNECTIONS  ACTIVE  IDLE  IDLE IN TX  OLDEST   LONGEST IDLE  CLIENTS\n"
        "beta              1       0     0           1  H:MM:SS  H:MM:SS       127.0.0.1\n"
    )
    assert run("branch_connections", verbosity=0, branch=["nothing_here"]) == ""


def backend_json(pid: str, branch: str, state: str, *, prefix: str = "") -> dict[str, Any]:
    return {
        "pid": pid,
        "branch": branch,
        "application_name": f"{prefix}branch:{branch}",
        "user": APP_ROLE,
        "state": state,
        "client": "127.0.0.1",
        "age_seconds": "s",
        "idle_seconds": None if state == "active" else "s",
    }


def test_connections_json(three_branches: dict[int, str], dbname: str) -> None:
    output = run("branch_connections", json=True)

    def branch(name: str, backends: list[dict[str, Any]], **counts: int) -> dict[str, Any]:
        return {
            "branch": name,
            "connections": len(backends),
            "active": 0,
            "idle": 0,
            "idle_in_transaction": 0,
            **counts,
            "oldest_seconds": "s",
            "longest_idle_seconds": None if counts.get("active") else "s",
            "clients": ["127.0.0.1"],
            "backends": backends,
        }

    assert json_normalized(json.loads(output), three_branches) == {
        "database": dbname,
        "branches": [
            branch(
                "alpha",
                [
                    backend_json("a1", "alpha", "idle"),
                    backend_json("a2", "alpha", "idle"),
                ],
                idle=2,
            ),
            branch(
                "beta",
                [backend_json("b1", "beta", "idle in transaction", prefix="myproject/")],
                idle_in_transaction=1,
            ),
            branch("gamma", [backend_json("g1", "gamma", "active")], active=1),
        ],
    }


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({"branch": ["alpha"]}, ["a1", "a2"]),
        ({"branch": ["alpha", "gamma"]}, ["a1", "a2", "g1"]),
        ({"state": ["active"]}, ["g1"]),
        ({"state": ["idle in transaction", "active"]}, ["b1", "g1"]),
        ({"idle_longer_than": 0}, ["a1", "a2", "b1"]),
        ({"idle_longer_than": 3600}, []),
        ({"branch": ["alpha"], "state": ["active"]}, []),
        ({"branch": ["nothing_here"]}, []),
    ],
)
def test_connections_filters(
    three_branches: dict[int, str], filters: dict[str, Any], expected: list[str]
) -> None:
    output = json.loads(run("branch_connections", json=True, **filters))

    pids = [b["pid"] for branch in output["branches"] for b in branch["backends"]]
    assert [three_branches[pid] for pid in pids] == expected


def test_connections_filters_from_the_command_line(three_branches: dict[int, str]) -> None:
    output = run(
        "branch_connections", "--json", "--branch", "beta", "--state", "idle in transaction",
        "--idle-longer-than", "0",
    )  # fmt: skip

    [branch] = json.loads(output)["branches"]
    assert [three_branches[b["pid"]] for b in branch["backends"]] == ["b1"]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"state": ["sleeping"]}, "--state: 'sleeping' is not one of 'active', 'idle', "
         "'idle in transaction', 'idle in transaction (aborted)'."),
        ({"idle_longer_than": -1}, "--idle-longer-than: -1 is negative."),
        ({"database": "nope"}, "The connection 'nope' doesn't exist."),
    ],
)  # fmt: skip
@pytest.mark.parametrize("command", ["branch_connections", "branch_terminate"])
def test_filter_refusals(command: str, options: dict[str, Any], message: str) -> None:
    with pytest.raises(CommandError) as raised:
        run(command, **options)

    assert str(raised.value) == message


# -- branch_terminate ------------------------------------------------------------


def test_terminate_is_a_dry_run_by_default(
    three_branches: dict[int, str], branch_backends: BranchBackends, dbname: str
) -> None:
    before = branch_backends()

    output = run("branch_terminate", branch=["alpha", "beta"])

    assert normalized(output, three_branches) == (
        backend_lines(three_branches, "a1", "a2", "b1") + "\n"
        f"Would terminate 3 branch backend(s) of database {dbname!r}. "
        "Run again with --yes to terminate them.\n"
    )
    assert branch_backends() == before


def test_terminate_yes(
    three_branches: dict[int, str], branch_backends: BranchBackends, dbname: str
) -> None:
    output = run("branch_terminate", branch=["alpha", "beta"], yes=True)

    assert normalized(output, three_branches) == (
        backend_lines(three_branches, "a1", "a2", "b1") + "\n"
        f"Terminated 3 branch backend(s) of database {dbname!r}.\n"
    )
    # gamma, and this thread's own branch connection, are still there.
    branch_backends.wait_for(["branch:gamma", "branch:mine"])
    with connections["schema_mine"].cursor() as cursor:
        cursor.execute("SELECT 1")


def test_terminate_json(three_branches: dict[int, str], branch_backends: BranchBackends) -> None:
    dry = json.loads(run("branch_terminate", json=True, state=["active"]))
    done = json.loads(run("branch_terminate", json=True, state=["active"], yes=True))

    expected = {
        "database": connections["default"].settings_dict["NAME"],
        "backends": [backend_json("g1", "gamma", "active")],
    }
    assert json_normalized(dry, three_branches) == {**expected, "dry_run": True, "terminated": []}
    assert json_normalized(done, three_branches) == {
        **expected,
        "dry_run": False,
        "terminated": ["g1"],
    }
    assert "branch:gamma" not in branch_backends()


def test_terminate_nothing_matches(connect: Connect, dbname: str) -> None:
    connect("myproject")

    output = run("branch_terminate", yes=True)

    assert output == f"No branch backends match on database {dbname!r}.\n"


def test_terminate_without_privilege_changes_nothing(
    three_branches: dict[int, str], connect: Connect, branch_backends: BranchBackends
) -> None:
    superuser_pid = connect("branch:alpha", user="postgres").info.backend_pid
    before = branch_backends()

    with pytest.raises(CommandError) as raised:
        run("branch_terminate", branch=["alpha"], yes=True)

    assert str(raised.value) == (
        f"Role 'app' may not terminate 1 of 3 branch backend(s) (pid {superuser_pid}, "
        "role 'postgres'); nothing was terminated. Connect as a superuser, as the "
        "backends' role, or as a member of pg_signal_backend."
    )
    assert branch_backends() == before


@pytest.fixture
def other_role(postgres: PostgresServer, dbname: str) -> Iterator[str]:
    """A second ordinary role; ``app`` is granted pg_signal_backend only inside the test."""
    with postgres.connect() as setup:
        if not setup.execute("SELECT 1 FROM pg_roles WHERE rolname = 'other'").fetchone():
            setup.execute("CREATE ROLE other LOGIN")
        yield "other"
        setup.execute(f"REVOKE pg_signal_backend FROM {APP_ROLE}")


def test_terminate_another_roles_backend_needs_pg_signal_backend(
    connect: Connect, other_role: str, postgres: PostgresServer, branch_backends: BranchBackends
) -> None:
    pid = connect("branch:alpha", user=other_role).info.backend_pid

    with pytest.raises(CommandError, match=rf"\(pid {pid}, role 'other'\); nothing was"):
        run("branch_terminate", yes=True)
    assert branch_backends() == ["branch:alpha"]

    with postgres.connect() as setup:
        setup.execute(f"GRANT pg_signal_backend TO {APP_ROLE}")
    output = run("branch_terminate", yes=True, json=True)

    assert json.loads(output)["terminated"] == [pid]
    branch_backends.wait_for([])


# -- branch_create ---------------------------------------------------------------


def execute(sql: str) -> list[tuple[Any, ...]]:
    with connections["default"].cursor() as cursor:
        cursor.execute(sql)
        return cursor.fetchall() if cursor.description else []


def test_create(postgres: PostgresServer, dbname: str) -> None:
    assert run("branch_create", "feat") == "Created branch 'feat'.\n"

    assert "feat" in schemas(postgres, dbname)
    assert execute(
        "SELECT pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname = 'feat'"
    ) == [(APP_ROLE,)]


def test_create_existing(postgres: PostgresServer, dbname: str) -> None:
    run("branch_create", "feat")
    before = schemas(postgres, dbname)

    with pytest.raises(CommandError, match=r"^Branch 'feat' already exists\.$"):
        run("branch_create", "feat", "--from-schema", "public")
    assert run("branch_create", "feat", if_not_exists=True) == (
        "Branch 'feat' already exists; nothing to do.\n"
    )
    assert execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'feat'") == [(0,)]
    assert schemas(postgres, dbname) == before


SOURCE_SCHEMA = """
CREATE SCHEMA src;
CREATE TABLE src.item (
    id serial PRIMARY KEY,
    name text NOT NULL DEFAULT 'unnamed' CHECK (name <> ''),
    code bigint GENERATED BY DEFAULT AS IDENTITY UNIQUE
);
CREATE INDEX item_name ON src.item (lower(name));
CREATE TABLE src.log (id bigserial, item_id integer, at timestamptz DEFAULT now());
INSERT INTO src.item (name) VALUES ('a'), ('b'), ('c');
"""


def test_create_from_schema_copies_structure_not_rows(dbname: str) -> None:
    execute(SOURCE_SCHEMA)

    output = run("branch_create", "copy", from_schema="src")

    assert output == "Created branch 'copy' with the structure of 2 table(s) from schema 'src'.\n"
    assert execute("SELECT count(*) FROM copy.item") == [(0,)]
    assert execute(
        "SELECT indexdef FROM pg_indexes WHERE schemaname = 'copy' ORDER BY indexname"
    ) == [
        ("CREATE UNIQUE INDEX item_code_key ON copy.item USING btree (code)",),
        ("CREATE INDEX item_lower_idx ON copy.item USING btree (lower(name))",),
        ("CREATE UNIQUE INDEX item_pkey ON copy.item USING btree (id)",),
    ]
    # Serial columns draw from sequences of their own, owned by the new columns.
    assert execute(
        "SELECT c.relname, a.attname, pg_get_expr(d.adbin, d.adrelid) FROM pg_attrdef d "
        "JOIN pg_class c ON c.oid = d.adrelid JOIN pg_attribute a "
        "ON a.attrelid = d.adrelid AND a.attnum = d.adnum "
        "WHERE c.relnamespace = 'copy'::regnamespace ORDER BY 1, 2"
    ) == [
        ("item", "id", "nextval('copy.item_id_seq'::regclass)"),
        ("item", "name", "'unnamed'::text"),
        ("log", "at", "now()"),
        ("log", "id", "nextval('copy.log_id_seq'::regclass)"),
    ]
    assert execute(
        "SELECT pg_get_serial_sequence('copy.item', 'id'), "
        "pg_get_serial_sequence('copy.item', 'code'), pg_get_serial_sequence('copy.log', 'id')"
    ) == [("copy.item_id_seq", "copy.item_code_seq", "copy.log_id_seq")]
    assert execute("SELECT data_type FROM pg_sequences WHERE schemaname = 'copy' ORDER BY 1") == [
        ("bigint",),
        ("bigint",),
        ("integer",),
    ]

    # Using the branch leaves the source alone, and survives the source's drop.
    with connections["schema_copy"].cursor() as cursor:
        cursor.execute("INSERT INTO item (name) VALUES ('x') RETURNING id, code")
        assert cursor.fetchall() == [(1, 1)]
        with pytest.raises(IntegrityError):
            cursor.execute("INSERT INTO item (name) VALUES ('')")
    assert execute("SELECT nextval('src.item_id_seq')") == [(4,)]
    execute("DROP SCHEMA src CASCADE")
    with connections["schema_copy"].cursor() as cursor:
        cursor.execute("INSERT INTO item (name) VALUES ('y') RETURNING id")
        assert cursor.fetchall() == [(3,)]  # the failed insert used 2


def test_create_from_public_serves_the_orm(dbname: str) -> None:
    run("branch_create", "orm", from_schema="public")

    with activate_branch("orm"):
        Note.objects.create(text="only in orm")
        assert list(Note.objects.values_list("text", flat=True)) == ["only in orm"]
    assert not Note.objects.exists()


def test_create_from_missing_schema(postgres: PostgresServer, dbname: str) -> None:
    before = schemas(postgres, dbname)

    with pytest.raises(CommandError, match=r"^Schema 'nope' does not exist\.$"):
        run("branch_create", "feat", from_schema="nope")

    assert schemas(postgres, dbname) == before


def test_create_is_one_transaction(postgres: PostgresServer, dbname: str) -> None:
    """A failure half-way (here: no privilege on a source table) leaves nothing behind."""
    with postgres.connect(dbname) as setup:
        setup.execute("CREATE SCHEMA locked AUTHORIZATION app")
        setup.execute("CREATE TABLE locked.a (x int)")
        setup.execute("CREATE TABLE locked.b (x int)")
        setup.execute("ALTER TABLE locked.a OWNER TO app")  # b stays the superuser's
    before = schemas(postgres, dbname)

    with pytest.raises(CommandError, match=r"^The server refused: permission denied for table b$"):
        run("branch_create", "feat", from_schema="locked")

    assert schemas(postgres, dbname) == before


# -- branch_drop -----------------------------------------------------------------


def test_drop_terminates_the_branch_backends_first(
    connect: Connect, branch_backends: BranchBackends, postgres: PostgresServer, dbname: str
) -> None:
    run("branch_create", "doomed", from_schema="public")
    connect("branch:doomed")
    # Holds a lock on a table of the branch: DROP SCHEMA would wait forever.
    connect("branch:doomed", autocommit=False).execute("SELECT * FROM doomed.testapp_note")
    connect("branch:kept")

    output = run("branch_drop", "doomed", interactive=False)

    assert output == "Dropped branch 'doomed' (2 table(s)); terminated 2 backend(s).\n"
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

    assert prompts == [
        "This will terminate 1 backend(s) of branch 'asked' and drop its schema with "
        "everything in it (2 table(s)).\nType 'yes' to continue, or 'no' to cancel: "
    ]
    if dropped:
        assert output == "Dropped branch 'asked' (2 table(s)); terminated 1 backend(s).\n"
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


@pytest.mark.parametrize(
    "name", ["public", "information_schema", "pg_catalog", "pg_toast", "pg_x"]
)
@pytest.mark.parametrize("command", ["branch_create", "branch_drop"])
def test_reserved_schemas(command: str, name: str, postgres: PostgresServer, dbname: str) -> None:
    before = schemas(postgres, dbname)

    with pytest.raises(CommandError) as raised:
        run(command, name, *(["--noinput", "--if-exists"] if command == "branch_drop" else []))

    assert str(raised.value) == f"{name!r} is a reserved schema, not a branch."
    assert schemas(postgres, dbname) == before
    assert execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'") != [(0,)]


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


# -- the create -> use -> drop cycle ----------------------------------------------


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
    """Memory only this process uses (not the shared buffers every backend maps)."""
    try:
        rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return 0  # exited while we looked
    return sum(int(line.split()[1]) for line in rollup.splitlines() if line.startswith("Private_"))


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
        # (the cycles churn the catalogs): it is not memory the cycles kept.
        transient = {pid for pid, kind in rows if kind == "autovacuum worker"}
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


def test_create_loses_a_race_cleanly(postgres: PostgresServer, dbname: str) -> None:
    """Created by someone else between the existence check and CREATE SCHEMA."""
    errors: list[BaseException] = []

    def create() -> None:
        try:
            run("branch_create", "racy", from_schema="public")
        except BaseException as exc:
            errors.append(exc)
        finally:
            connections.close_all()

    with postgres.connect(dbname) as other, postgres.connect() as monitor:
        other.execute("BEGIN")
        other.execute("CREATE SCHEMA racy")  # not visible to others until committed
        racer = threading.Thread(target=create)
        racer.start()
        wait_until(
            lambda: bool(
                monitor.execute(
                    "SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                    "AND query LIKE 'CREATE SCHEMA %'"
                ).fetchone()
            ),
            timeout=30,
            what="branch_create to wait for the other transaction",
        )
        other.execute("COMMIT")
        racer.join()

    assert [str(error) for error in errors] == ["Branch 'racy' already exists."]
    assert isinstance(errors[0], CommandError)
    assert execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'racy'") == [(0,)]


def test_other_roles_backends_are_listed_with_what_is_visible(
    connect: Connect, dbname: str
) -> None:
    """Without pg_read_all_stats, another role's backend shows no state, times or address."""
    pid = connect("branch:hidden", user="postgres").info.backend_pid

    table = run("branch_connections", verbosity=2)
    data = json.loads(run("branch_connections", json=True))

    width = len(str(pid))
    assert table == (
        "BRANCH  CONNECTIONS  ACTIVE  IDLE  IDLE IN TX  OLDEST  LONGEST IDLE  CLIENTS\n"
        "hidden            1       0     0           0  -       -\n"
        "\n"
        f"BRANCH  {'PID':>{width}}  USER      STATE  AGE  IDLE  CLIENT\n"
        f"hidden  {pid}  postgres  -      -    -     -\n"
        "\n"
        f"1 connection(s) on 1 branch(es) of database {dbname!r}.\n"
    )
    assert data["branches"][0]["backends"] == [
        {
            "pid": pid,
            "branch": "hidden",
            "application_name": "branch:hidden",
            "user": "postgres",
            "state": None,
            "client": None,
            "age_seconds": None,
            "idle_seconds": None,
        }
    ]
    assert data["branches"][0]["oldest_seconds"] is None
    assert data["branches"][0]["clients"] == []


# -- a server that cannot be reached -------------------------------------------


@pytest.mark.parametrize(
    ("command", "options"),
    [
        (["branch_connections"], {}),
        (["branch_terminate"], {"yes": True}),
        (["branch_create", "down_a"], {}),
        (["branch_drop", "down_a"], {"interactive": False}),
    ],
)
def test_server_down_is_a_command_error(
    postgres: PostgresServer, dbname: str, command: list[str], options: dict[str, Any]
) -> None:
    default = connections["default"]
    default.close()
    port = default.settings_dict["PORT"]
    default.settings_dict["PORT"] = str(free_port())  # nothing listens there
    try:
        with pytest.raises(CommandError) as excinfo:
            run(*command, **options)
    finally:
        default.close()
        default.settings_dict["PORT"] = port
    assert str(excinfo.value).startswith(
        "Cannot connect to database 'default'; nothing was changed. connection failed: "
    )
    assert tracked_aliases() == []
    assert schemas(postgres, dbname) == ["public"]
