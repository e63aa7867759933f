"""``manage.py branch_migrate`` through call_command: real worker processes, a real server."""

from __future__ import annotations

import re
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connections
from django.test.utils import CaptureQueriesContext

from tests.conftest import Branches
from tests.test_fanout_migrations import django_full_plan
from tests.test_fanout_migrations import execute
from tests.test_fanout_migrations import public_catalog
from tests.test_fanout_migrations import record

pytestmark = pytest.mark.usefixtures("transactional_db")


def run(*args: str, **options: object) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command("branch_migrate", *args, stdout=out, stderr=err, **options)
    return out.getvalue(), err.getvalue()


def seconds(text: str) -> str:
    return re.sub(r"\b\d+\.\d\d\b", "S", text)


def test_plan_lists_what_each_branch_needs_and_changes_nothing(branches: Branches) -> None:
    everything = django_full_plan()
    branches("fresh", "current", "behind")
    record("current", *everything)
    record("behind", *everything[:-2])
    before = public_catalog()

    with CaptureQueriesContext(connections["default"]) as queries:
        out, _ = run("fresh", "current", "behind", plan=True)

    # The selection's existence query, then the two planning queries.
    assert len(queries.captured_queries) == 3
    labels = [f"{app}.{name}" for app, name in everything]
    assert out == (
        f"fresh: {len(everything)} migration(s)\n"
        + "".join(f"  {label}\n" for label in labels)
        + "current: up to date\n"
        + "behind: 2 migration(s)\n"
        + "".join(f"  {label}\n" for label in labels[-2:])
        + "2 of 3 branch(es) need migrations; nothing was changed.\n"
    )
    assert execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'fresh'") == [(0,)]
    assert public_catalog() == before


def test_plan_is_three_queries_for_many_branches(branches: Branches) -> None:
    names = [f"many_{i}" for i in range(40)]
    branches(*names)
    for name in names[::2]:
        record(name, *django_full_plan())
    with CaptureQueriesContext(connections["default"]) as queries:
        out, _ = run(every=True, plan=True, json=True)
    assert len(queries.captured_queries) == 3
    assert '"branch": "many_39"' in out


def test_migrates_branches_that_need_it_skips_the_others(
    branches: Branches, tmp_path: Path
) -> None:
    everything = django_full_plan()
    branches("one", "two", "done")
    record("done", *everything)
    before = public_catalog()

    out, err = run("one", "two", "done", parallel=2, log_dir=str(tmp_path))

    assert seconds(out) == (
        "BRANCH  RESULT   SECONDS\n"
        "one     ok       S\n"
        "two     ok       S\n"
        "done    skipped  -\n"
        f"3 branch(es): 2 ok, 1 skipped. Logs: {tmp_path}\n"
        "Skipped 1 branch(es) up to date: nothing ran on them.\n"
    )
    progress = seconds(err).splitlines()  # in the order the workers finished
    assert [line.split(" ")[0] for line in progress] == ["[1/2]", "[2/2]"]
    assert sorted(line.split(" ", 1)[1] for line in progress) == [
        "one: ok in S s",
        "two: ok in S s",
    ]
    assert (tmp_path / "one.log").read_text() == "".join(
        f"  Applying {app}.{name}... OK\n" for app, name in everything
    )
    assert not (tmp_path / "done.log").exists()
    for name in ("one", "two"):
        assert sorted(execute(f"SELECT app, name FROM {name}.django_migrations")) == sorted(
            everything
        )
    assert public_catalog() == before

    out, _ = run("one", "two", "done", verbosity=0, json=True)
    assert '"skipped": 3' in out


def test_a_failing_branch_is_reported_and_the_others_go_on(
    branches: Branches, tmp_path: Path
) -> None:
    branches("good", "holey", "also_good")
    record("holey", ("testapp", "0001_initial"), ("testapp", "0002_tag"))
    before = public_catalog()

    with pytest.raises(CommandError) as error:
        run("good", "holey", "also_good", parallel=2, log_dir=str(tmp_path))

    assert error.value.returncode == 1
    assert str(error.value) == "Failed on 1 branch(es): holey."
    assert 'relation "testapp_tag" does not exist' in (tmp_path / "holey.log").read_text()
    for name in ("good", "also_good"):
        assert execute(f"SELECT count(*) FROM {name}.django_migrations") == [
            (len(django_full_plan()),)
        ]
    assert public_catalog() == before


@pytest.mark.parametrize(
    ("args", "options", "message"),
    [
        (("Bad-Name",), {}, "'Bad-Name' is not a valid branch name"),
        (("x", "nowhere"), {}, "No schema for branch(es) 'nowhere'; nothing was run."),
        ((), {}, "No branch selected: give branch names, or --all."),
        (("x",), {"parallel": 0}, "--parallel must be at least 1, not 0."),
        (("x",), {"via_rq": "nope"}, "--via-rq: no queue 'nope' in RQ_QUEUES"),
        (("x", "public"), {}, "'public' is a reserved schema, not a branch."),
    ],
)
def test_bad_input_changes_nothing(
    branches: Branches, args: tuple[str, ...], options: dict[str, object], message: str
) -> None:
    branches("x")
    before = public_catalog()
    with pytest.raises(CommandError, match=re.escape(message)):
        run(*args, **options)
    assert execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'x'") == [(0,)]
    assert public_catalog() == before
