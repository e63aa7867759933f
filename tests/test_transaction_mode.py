"""``SEARCH_PATH = "transaction"`` straight to the real PostgreSQL: what each transaction sends.

Behind real PgBouncers in transaction pooling: tests/test_pooler.py.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from django.core.checks import Error
from django.db import connections
from django.db import transaction
from django.db.utils import ProgrammingError
from django.test import override_settings
from psycopg import sql

from branching_ops.checks import check_transaction_server_side_cursors
from branching_ops.databases import BranchDatabases
from branching_ops.routers import activate_branch
from branching_ops.search_path import TRANSACTION_SQL
from branching_ops.search_path import BranchDoesNotExist
from branching_ops.search_path import SearchPathError
from branching_ops.testing.postgres import PostgresServer
from branching_ops.testing.processes import wait_until
from tests.conftest import APP_ROLE
from tests.conftest import Branches
from tests.testapp.models import Note

TRANSACTION = {"SEARCH_PATH": "transaction"}
# "2026-12-02 10:00:00.000 UTC [1234] 3/17 LOG:  execute <unnamed>: SELECT 1"
_LOGGED_RE = re.compile(r"^\S+ \S+ \S+ \[(\d+)\] (\S+) LOG:  (?:statement|execute [^:]*): (.*)$")
SETTING = "SELECT pg_catalog.set_config(CASE WHEN"
pytestmark = pytest.mark.filterwarnings("ignore:Overriding setting DATABASES:UserWarning")


@pytest.fixture
def dbname(transactional_db: None) -> str:
    return str(connections["default"].settings_dict["NAME"])


@pytest.fixture
def transaction_mode(transactional_db: None) -> Iterator[None]:
    with override_settings(BRANCHING_OPS=TRANSACTION):
        yield


@contextlib.contextmanager
def logged_transactions(postgres: PostgresServer, dbname: str) -> Iterator[list[list[str]]]:
    """After the block: the statements the application role ran, grouped by transaction.

    The server's log line prefix carries the virtual transaction id (``%v``)
    for the block: statements of one Sync (one implicit transaction) share it.
    """
    role_in_database = sql.SQL("ALTER ROLE {} IN DATABASE {}").format(
        sql.Identifier(APP_ROLE), sql.Identifier(dbname)
    )
    with postgres.connect() as admin:
        admin.autocommit = True
        admin.execute("ALTER SYSTEM SET log_line_prefix = '%m [%p] %v '")
        admin.execute("SELECT pg_catalog.pg_reload_conf()")
        admin.execute(role_in_database + sql.SQL(" SET log_statement = 'all'"))
    wait_until(_prefix_is("%m [%p] %v ", postgres), timeout=10, what="the new log_line_prefix")
    start = postgres.log_path.stat().st_size
    groups: list[list[str]] = []
    try:
        yield groups
    finally:
        with postgres.connect() as admin:
            admin.autocommit = True
            admin.execute(role_in_database + sql.SQL(" RESET log_statement"))
            admin.execute("ALTER SYSTEM RESET log_line_prefix")
            admin.execute("SELECT pg_catalog.pg_reload_conf()")
        wait_until(_prefix_is("%m [%p] ", postgres), timeout=10, what="the log_line_prefix")
        by_transaction: dict[tuple[str, str], list[str]] = {}
        with postgres.log_path.open(errors="replace") as log:
            log.seek(start)
            for line in log:
                if (match := _LOGGED_RE.match(line)) and match[2] != "-":
                    by_transaction.setdefault((match[1], match[2]), []).append(match[3])
        groups += [g for g in map(_short, by_transaction.values()) if not _time_zone_setup(g)]


def _prefix_is(prefix: str, postgres: PostgresServer) -> Callable[[], bool]:
    def applied() -> bool:
        with postgres.connect() as probe:
            return probe.execute("SHOW log_line_prefix").fetchone() == (prefix,)

    return applied


def _time_zone_setup(statements: list[str]) -> bool:
    """Django's own, on a new connection: it too carries the setting."""
    return any(s.startswith("SELECT set_config('TimeZone'") for s in statements)


def _short(statements: list[str]) -> list[str]:
    """``SET`` for the setting; a simple-protocol Query that carries it is split in two."""
    short = []
    for statement in statements:
        if statement.startswith(SETTING):
            short.append("SET")
            short += statement.split("; ", 1)[1:]
        else:
            short.append(statement)
    return short


@pytest.fixture
def notes(branches: Branches, transactional_db: None) -> Callable[[str], None]:
    """``notes(name)``: branch ``name`` with its own notes table (else ``public``'s answers)."""

    def create(name: str) -> None:
        branches(name)
        with connections["default"].cursor() as cursor:
            cursor.execute(f"CREATE TABLE {name}.testapp_note (LIKE testapp_note INCLUDING ALL)")

    return create


def rows_of(schema: str) -> list[str]:
    with connections["default"].cursor() as cursor:
        cursor.execute(f"SELECT text FROM {schema}.testapp_note")
        return [text for (text,) in cursor.fetchall()]


def insert(text: str) -> str:
    return f'INSERT INTO "testapp_note" ("text") VALUES (\'{text}\') RETURNING "testapp_note"."id"'


def test_the_statement_says_what_it_checks() -> None:
    assert TRANSACTION_SQL.startswith(SETTING)


def test_autocommit_statements_carry_the_setting_in_their_own_transaction(
    transaction_mode: None, notes: Callable[[str], None], postgres: PostgresServer, dbname: str
) -> None:
    notes("own")
    with logged_transactions(postgres, dbname) as transactions, activate_branch("own"):
        Note.objects.create(text="one")
        Note.objects.create(text="two")
        assert [n.text for n in Note.objects.order_by("id")] == ["one", "two"]

    # One Sync each: the setting and the statement share an implicit transaction.
    assert transactions == [
        ["SET", insert("one")],
        ["SET", insert("two")],
        ["SET", 'SELECT "testapp_note"."id", "testapp_note"."text" FROM "testapp_note" '
         'ORDER BY "testapp_note"."id" ASC'],
    ]  # fmt: skip
    with connections["schema_own"].cursor() as cursor:
        cursor.execute("SHOW search_path")  # its own transaction: set again
        assert cursor.fetchone() == ("own,public",)
    assert not Note.objects.exists()  # nothing in public


def test_atomic_sends_it_once_and_a_savepoint_rollback_keeps_it(
    transaction_mode: None, notes: Callable[[str], None], postgres: PostgresServer, dbname: str
) -> None:
    notes("atomic")
    with logged_transactions(postgres, dbname) as transactions, activate_branch("atomic"):
        with transaction.atomic(using="schema_atomic"):
            Note.objects.create(text="kept")
            with contextlib.suppress(RuntimeError), transaction.atomic(using="schema_atomic"):
                Note.objects.create(text="rolled back")
                raise RuntimeError
            Note.objects.create(text="after")
        assert sorted(Note.objects.values_list("text", flat=True)) == ["after", "kept"]

    (block, read) = transactions
    assert block[:3] == ["BEGIN", "SET", insert("kept")]
    assert block.count("SET") == 1
    assert block[-2:] == [insert("after"), "COMMIT"]
    assert read[0] == "SET"


def test_a_savepoint_first_gets_the_setting_before_it(
    transaction_mode: None, notes: Callable[[str], None], postgres: PostgresServer, dbname: str
) -> None:
    notes("nested")
    with (
        logged_transactions(postgres, dbname) as transactions,
        activate_branch("nested"),
        transaction.atomic(using="schema_nested"),
        transaction.atomic(using="schema_nested"),
    ):
        Note.objects.create(text="inner")

    ((begin, setting, savepoint, *_),) = transactions
    assert (begin, setting) == ("BEGIN", "SET")
    assert savepoint.startswith("SAVEPOINT")


def test_executemany_and_copy_run_in_one_transaction_with_it(
    transaction_mode: None, branches: Branches, postgres: PostgresServer, dbname: str
) -> None:
    branches("bulk")
    connection = connections["schema_bulk"]
    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE bulk.items (name text)")
    connection.close()  # the server logs the statements of sessions opened from here
    with logged_transactions(postgres, dbname) as transactions, connection.cursor() as cursor:
        cursor.executemany("INSERT INTO items VALUES (%s)", [("a",), ("b",)])
        with cursor.copy("COPY items FROM STDIN") as copy:
            copy.write("c\n")
    with connection.cursor() as cursor:
        cursor.execute("SELECT name FROM bulk.items ORDER BY name")
        assert cursor.fetchall() == [("a",), ("b",), ("c",)]

    many, copied = transactions
    assert many[:2] == ["BEGIN", "SET"]
    assert many[-1] == "COMMIT"
    assert copied == ["BEGIN", "SET", "COPY items FROM STDIN", "COMMIT"]


@pytest.mark.parametrize("server_side_binding", [False, True])
def test_parameters_and_server_side_binding(
    server_side_binding: bool,
    transaction_mode: None,
    notes: Callable[[str], None],
    reroute_branches: object,
) -> None:
    notes("bound")
    reroute_branches(options={"server_side_binding": server_side_binding})  # type: ignore[operator]
    with activate_branch("bound"):
        Note.objects.create(text="it's bound")
        assert Note.objects.get(text="it's bound").text == "it's bound"
    assert not Note.objects.exists()


def test_a_missing_branch_is_refused_per_transaction_and_nothing_runs(
    transaction_mode: None, postgres: PostgresServer, dbname: str
) -> None:
    with (
        logged_transactions(postgres, dbname) as transactions,
        pytest.raises(BranchDoesNotExist) as excinfo,
        activate_branch("typo"),
    ):
        Note.objects.create(text="meant for typo")

    assert str(excinfo.value) == (
        f"Branch 'typo' does not exist: database '{dbname}' has no schema 'typo', so "
        "connection 'schema_typo' would read and write public instead. The transaction was "
        "refused before any statement of it ran. Create the branch first (manage.py "
        "branch_create typo) or correct its name."
    )
    # The connection's first Query (Django's TimeZone) carried the setting and
    # was refused: neither it nor the INSERT ran.
    assert transactions == []
    assert not Note.objects.exists()


@pytest.mark.parametrize("server_side_binding", [False, True])
def test_the_caller_s_own_missing_schema_is_its_own_error(
    server_side_binding: bool,
    transaction_mode: None,
    branches: Branches,
    reroute_branches: Callable[..., None],
) -> None:
    """The setting's error codes from the caller's statement: not called a missing branch."""
    reroute_branches(options={"server_side_binding": server_side_binding})
    branches("own")
    with (
        pytest.raises(ProgrammingError, match='schema "elsewhere" does not exist') as excinfo,
        connections["schema_own"].cursor() as cursor,
    ):
        cursor.execute("CREATE TABLE elsewhere.t (id int)")
    assert not isinstance(excinfo.value, SearchPathError)
    assert not isinstance(excinfo.value.__cause__, SearchPathError)


def test_a_branch_dropped_under_an_open_connection_is_refused_at_its_next_transaction(
    transaction_mode: None, postgres: PostgresServer, dbname: str
) -> None:
    postgres.create_schemas(dbname, ["doomed"], owner=APP_ROLE)
    with connections["default"].cursor() as cursor:
        cursor.execute("CREATE TABLE doomed.testapp_note (LIKE testapp_note INCLUDING ALL)")
    with activate_branch("doomed"):
        Note.objects.create(text="before")
        postgres.drop_schemas(dbname, ["doomed"])
        with pytest.raises(BranchDoesNotExist):
            Note.objects.create(text="after")
        with pytest.raises(BranchDoesNotExist), transaction.atomic(using="schema_doomed"):
            Note.objects.create(text="in a block")
        assert connections["schema_doomed"].connection is not None  # still usable
    assert not Note.objects.exists()


def test_a_branch_the_role_may_not_use_is_refused(
    transaction_mode: None, postgres: PostgresServer, dbname: str
) -> None:
    postgres.create_schemas(dbname, ["locked"], owner="postgres")
    try:
        with (
            pytest.raises(SearchPathError, match="has no USAGE privilege") as excinfo,
            activate_branch("locked"),
        ):
            Note.objects.create(text="meant for locked")
        assert type(excinfo.value) is SearchPathError
        assert not Note.objects.exists()
    finally:
        postgres.drop_schemas(dbname, ["locked"])


def test_server_side_cursors_are_refused(transaction_mode: None, branches: Branches) -> None:
    branches("named")
    with (
        pytest.raises(SearchPathError, match="DISABLE_SERVER_SIDE_CURSORS = True"),
        activate_branch("named"),
    ):
        list(Note.objects.iterator())


def test_the_caller_gets_its_own_statement_s_result(
    transaction_mode: None, notes: Callable[[str], None]
) -> None:
    """Past the setting's result: rows, row counts and RETURNING are the statement's."""
    notes("counted")
    with activate_branch("counted"):
        created = Note.objects.create(text="one")
        Note.objects.create(text="two")
        assert Note.objects.update(text="same") == 2
        assert Note.objects.filter(pk=created.pk).delete() == (1, {"testapp.Note": 1})
        assert list(Note.objects.values_list("text", flat=True)) == ["same"]


@pytest.mark.parametrize("server_side_binding", [False, True])
@pytest.mark.parametrize(
    "statements",
    ["SELECT 1; SELECT 2", "SELECT 1; COMMIT; INSERT INTO testapp_note (text) VALUES ('out')"],
)
def test_several_statements_in_one_execute_are_refused(
    statements: str,
    server_side_binding: bool,
    transaction_mode: None,
    notes: Callable[[str], None],
    reroute_branches: Callable[..., None],
) -> None:
    """A COMMIT among them would end the setting's transaction: the rest would miss it."""
    reroute_branches(options={"server_side_binding": server_side_binding})
    notes("multi")
    with (
        pytest.raises(ProgrammingError, match="cannot insert multiple commands"),
        connections["schema_multi"].cursor() as cursor,
    ):
        cursor.execute(statements)
    assert rows_of("public") == rows_of("multi") == []


def test_the_session_keeps_no_search_path(transaction_mode: None, branches: Branches) -> None:
    """Nothing session-level is left for the next client of the server connection."""
    branches("clean")
    connection = connections["schema_clean"]
    with connection.cursor() as cursor:
        cursor.execute("SHOW search_path")
        assert cursor.fetchone() == ("clean,public",)
    with psycopg.ClientCursor(connection.connection) as plain:  # no setting sent
        plain.execute("SHOW search_path")
        assert plain.fetchone() == ('"$user", public',)


@pytest.mark.parametrize(
    ("mode", "disable", "expected"), [("transaction", None, 1), ("transaction", True, 0),
                                     ("session", None, 0)]
)  # fmt: skip
def test_e022_server_side_cursors_under_transaction_mode(
    mode: str, disable: bool | None, expected: int
) -> None:
    default: dict[str, object] = {"ENGINE": "django.db.backends.postgresql", "NAME": "app"}
    if disable is not None:
        default["DISABLE_SERVER_SIDE_CURSORS"] = disable
    with (
        override_settings(DATABASES=BranchDatabases({"default": default})),
        override_settings(BRANCHING_OPS={"SEARCH_PATH": mode}),
    ):
        errors = check_transaction_server_side_cursors(None)

    assert (
        errors
        == [
            Error(
                "BRANCHING_OPS['SEARCH_PATH'] = 'transaction' needs DISABLE_SERVER_SIDE_CURSORS "
                "= True in DATABASES['default']: a server-side cursor (QuerySet.iterator()) "
                "would be read on whichever server connection the pooler picks next, and branch "
                "connections refuse to open one.",
                hint="Set DISABLE_SERVER_SIDE_CURSORS = True, as Django's notes on transaction "
                "pooling say.",
                id="branching_ops.E022",
            )
        ][:expected]
    )


@pytest.mark.parametrize(
    ("server_side_binding", "expected"),
    [(False, ["Query"]), (True, [*["Parse", "Bind", "Describe", "Execute"] * 2, "Sync"])],
)
def test_one_message_or_one_sync_and_nothing_after(
    server_side_binding: bool,
    expected: list[str],
    transaction_mode: None,
    notes: Callable[[str], None],
    reroute_branches: Callable[..., None],
    tmp_path: Path,
) -> None:
    """What an autocommit statement sends: no Flush, which PgBouncer would pin a server to."""
    reroute_branches(options={"server_side_binding": server_side_binding})
    notes("traced")
    connection = connections["schema_traced"]
    connection.ensure_connection()
    pgconn = connection.connection.pgconn
    trace = tmp_path / "trace"
    with trace.open("w") as file:
        pgconn.trace(file.fileno())
        pgconn.set_trace_flags(psycopg.pq.Trace.SUPPRESS_TIMESTAMPS)
        with activate_branch("traced"):
            Note.objects.create(text="traced")
        pgconn.untrace()
    messages = [line.split("\t")[:3] for line in trace.read_text().splitlines()]
    assert [name.split()[0] for side, _, name in messages if side == "F"] == expected
    assert messages[-1][2].startswith("ReadyForQuery")
    with activate_branch("traced"):
        assert list(Note.objects.values_list("text", flat=True)) == ["traced"]
