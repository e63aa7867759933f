"""``manage.py branch_run`` through call_command, on local worker processes, real PostgreSQL."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
from django.db import connections
from django.db import transaction

from branching_ops import fanout
from tests.fanout import branch_run
from tests.fanout import note_branches
from tests.fanout import notes

pytestmark = pytest.mark.usefixtures("drop_schemas")


def test_each_branch_gets_its_own_row_and_public_none(tmp_path: Path) -> None:
    names = [f"n{i}" for i in range(8)]
    note_branches(*names)

    ran = branch_run(
        *names, "--parallel", "3", "--log-dir", str(tmp_path), "--", "branch_note", "--text", "hi"
    )

    assert ran.error is None, ran.err
    for name in names:
        assert notes(name) == ["hi"]
        assert (tmp_path / f"{name}.log").read_text() == (
            f"print() on {name}\nnote 1 'hi' on schema_{name}\n"
        )
    assert notes("public") == []


def test_the_report_exactly(tmp_path: Path) -> None:
    note_branches("alpha", "beta", "gamma")

    ran = branch_run(
        "alpha", "beta", "gamma", "--log-dir", str(tmp_path),
        "--", "branch_note", "--fail-on", "beta", "--crash-on", "gamma",
    )  # fmt: skip

    assert ran.out == (
        "BRANCH  RESULT  SECONDS\n"
        "alpha   ok      S.SS\n"
        "beta    failed  S.SS\n"
        "gamma   failed  S.SS\n"
        "beta: told to fail on beta\n"
        "gamma: RuntimeError: told to crash on gamma\n"
        f"3 branch(es): 1 ok, 2 failed. Logs: {tmp_path}\n"
    )
    assert ran.err == (
        "[1/3] alpha: ok in S.SS s\n[2/3] beta: failed in S.SS s\n[3/3] gamma: failed in S.SS s\n"
    )
    assert ran.error is not None
    assert ran.error.returncode == 1
    assert str(ran.error) == "Failed on 2 branch(es): beta, gamma."
    assert (tmp_path / "beta.log").read_text() == "CommandError: told to fail on beta\n"
    gamma_log = (tmp_path / "gamma.log").read_text()
    assert gamma_log.startswith("Traceback (most recent call last):\n")
    assert gamma_log.endswith("RuntimeError: told to crash on gamma\n")
    assert notes("alpha") == ["note"]
    assert notes("beta") == notes("gamma") == notes("public") == []


def test_fail_fast_starts_no_branch_after_the_first_failure(tmp_path: Path) -> None:
    note_branches("a", "b", "c", "d")

    ran = branch_run(
        "a", "b", "c", "d", "--fail-fast", "--log-dir", str(tmp_path),
        "--", "branch_note", "--fail-on", "b",
    )  # fmt: skip

    assert ran.out == (
        "BRANCH  RESULT       SECONDS\n"
        "a       ok           S.SS\n"
        "b       failed       S.SS\n"
        "c       not-started  -\n"
        "d       not-started  -\n"
        "b: told to fail on b\n"
        f"4 branch(es): 1 ok, 1 failed, 2 not-started. Logs: {tmp_path}\n"
    )
    assert ran.error is not None
    assert ran.error.returncode == 1
    assert notes("c") == notes("d") == []
    assert sorted(path.name for path in tmp_path.iterdir()) == ["a.log", "b.log"]


def test_json_report(tmp_path: Path) -> None:
    note_branches("a", "b")

    ran = branch_run(
        "a", "b", "--json", "--parallel", "2", "--log-dir", str(tmp_path),
        "--", "branch_note", "--fail-on", "b",
    )  # fmt: skip

    report = json.loads(ran.stdout)
    for branch in report["branches"]:
        assert isinstance(branch.pop("seconds"), float)
    assert report == {
        "executor": "local",
        "interrupted": False,
        "exit_status": 1,
        "log_dir": str(tmp_path),
        "counts": {
            "ok": 1,
            "failed": 1,
            "interrupted": 0,
            "not-started": 0,
            "skipped": 0,
            "queued": 0,
        },
        "branches": [
            {
                "branch": "a",
                "schema": "a",
                "status": "ok",
                "error": None,
                "log": str(tmp_path / "a.log"),
                "job_id": None,
            },
            {
                "branch": "b",
                "schema": "b",
                "status": "failed",
                "error": "told to fail on b",
                "log": str(tmp_path / "b.log"),
                "job_id": None,
            },
        ],
    }
    assert ran.error is not None
    assert ran.error.returncode == 1


def test_all_with_exclude(tmp_path: Path) -> None:
    note_branches("a", "b", "c")

    ran = branch_run(
        "--all", "--exclude", "b", "-v", "0", "--log-dir", str(tmp_path), "--", "branch_note"
    )

    assert (ran.out, ran.err, ran.error) == ("", "", None)
    assert notes("a") == notes("c") == ["note"]
    assert notes("b") == notes("public") == []


def test_default_log_dir_is_new_and_named_in_the_report() -> None:
    note_branches("a")

    ran = branch_run("a", "--", "branch_note")

    log_dir = Path(ran.out.rsplit("Logs: ", 1)[1].strip())
    assert log_dir.name.startswith("branch_run-")
    assert (log_dir / "a.log").read_text() == "print() on a\nnote 1 'note' on schema_a\n"
    shutil.rmtree(log_dir)


def test_dry_run_lists_and_changes_nothing() -> None:
    note_branches("a", "b")

    ran = branch_run("--all", "--dry-run", "--", "branch_note", "--text", "x")

    assert ran.out == (
        "a: branch_note --text x\nb: branch_note --text x\n"
        "Would run on 2 branch(es); nothing was run.\n"
    )
    assert ran.error is None
    assert notes("a") == notes("b") == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(
            ["Robert'); DROP TABLE", "--", "branch_note"],
            '"Robert\'); DROP TABLE" is not a valid branch name',
            id="hostile-name",
        ),
        pytest.param(
            ["a", "ghost", "--", "branch_note"],
            "No schema for branch(es) 'ghost'; nothing was run.",
            id="missing-schema",
        ),
        pytest.param(
            ["public", "--", "branch_note"],
            "'public' is a reserved schema, not a branch.",
            id="public",
        ),
        pytest.param(
            ["a", "--", "no_such_command"],
            "Unknown command: 'no_such_command'. Type 'manage.py help' for usage.",
            id="unknown-command",
        ),
        pytest.param(
            ["a", "--", "branch_note", "--no-such-option"],
            "branch_note: Error: unrecognized arguments: --no-such-option",
            id="bad-command-arguments",
        ),
        pytest.param(["a"], "No command given: put it after --", id="no-command"),
        pytest.param(
            ["a", "--", "branch_run", "a", "--", "check"],
            "branch_run cannot run once per branch",
            id="itself",
        ),
        pytest.param(
            ["a", "--parallel", "0", "--", "branch_note"],
            "--parallel must be at least 1, not 0.",
            id="parallel-0",
        ),
        pytest.param(
            ["--", "branch_note"],
            "No branch selected: give branch names, or --all.",
            id="no-branch",
        ),
        pytest.param(
            ["--all", "--exclude", "a", "--", "branch_note"],
            "No branch selected: --all found none (after --exclude).",
            id="all-excluded",
        ),
        pytest.param(
            ["a", "--all", "--", "branch_note"], "Give branch names or --all, not both.", id="both"
        ),
        pytest.param(
            ["a", "--exclude", "a", "--", "branch_note"],
            "--exclude goes with --all.",
            id="exclude-without-all",
        ),
        pytest.param(
            ["a", "--no-wait", "--", "branch_note"],
            "--no-wait goes with --via-rq.",
            id="no-wait-without-via-rq",
        ),
        pytest.param(
            ["a", "--batch-size", "2", "--", "branch_note"],
            "--batch-size goes with --via-rq.",
            id="batch-size-without-via-rq",
        ),
        pytest.param(
            ["a", "--via-rq", "default", "--batch-size", "0", "--", "branch_note"],
            "--batch-size must be at least 1, not 0.",
            id="batch-size-0",
        ),
        pytest.param(
            ["a", "--via-rq", "nope", "--", "branch_note"],
            "--via-rq: no queue 'nope' in RQ_QUEUES (known: 'default'). Nothing was enqueued.",
            id="unknown-queue",
        ),
        pytest.param(
            ["a", "--log-dir", "/proc/no/such", "--", "branch_note"],
            "--log-dir: cannot create '/proc/no/such'",
            id="log-dir",
        ),
    ],
)
def test_bad_input_starts_nothing(args: list[str], message: str) -> None:
    note_branches("a")

    ran = branch_run(*args)

    assert ran.error is not None
    assert message in str(ran.error)
    assert ran.error.returncode == 1
    assert ran.out == ran.err == ""
    assert notes("a") == notes("public") == []


def test_without_django_rq(monkeypatch: pytest.MonkeyPatch) -> None:
    note_branches("a")
    monkeypatch.setitem(sys.modules, "django_rq", None)  # import django_rq raises ImportError
    monkeypatch.delitem(sys.modules, "branching_ops.fanout.via_rq", raising=False)
    monkeypatch.delattr(fanout, "via_rq", raising=False)

    ran = branch_run("a", "--via-rq", "default", "--", "branch_note")

    assert ran.error is not None
    assert str(ran.error).startswith("--via-rq needs django-rq")
    assert "pip install 'django-branching-ops[rq]'. Nothing was run." in str(ran.error)
    assert notes("a") == []


def test_refused_inside_a_transaction() -> None:
    note_branches("a")

    with transaction.atomic():
        ran = branch_run("a", "--", "branch_note")
        assert connections["default"].in_atomic_block

    assert ran.error is not None
    assert str(ran.error).startswith("Cannot run branches inside a transaction (atomic block)")
    assert notes("a") == []
