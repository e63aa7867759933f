"""``manage.py branch_run`` as a real subprocess: the connection budget, Ctrl-C, real rqworkers."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
from rq import Queue

from branching_ops.testing.postgres import PostgresServer
from tests.backends import BranchBackends
from tests.fanout import note_branches
from tests.fanout import notes
from tests.rqworkers import ROOT
from tests.rqworkers import rqworker

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("drop_schemas")]

WORKER = ["--worker-class", "branching_ops.workers.BranchWorker", "default"]


def start(dbname: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "manage.py", "branch_run", *args],
        cwd=ROOT,
        env={
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "tests.project.settings",
            "BRANCHING_OPS_TEST_DBNAME": dbname,
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def poll(condition: Callable[[], object], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def children(pid: int) -> list[int]:
    """The live child processes of ``pid``, from /proc."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            if int(fields[1]) == pid and fields[0] != "Z":
                found.append(int(entry))
    return found


class Peaks:
    """The most branch and non-branch client backends of the database seen at once."""

    def __init__(self, postgres: PostgresServer, dbname: str) -> None:
        self.monitor = psycopg.connect(postgres.conninfo(dbname), autocommit=True)
        self.branch = self.default = 0
        self.done = threading.Event()
        self.thread = threading.Thread(target=self.watch)

    def watch(self) -> None:
        while not self.done.is_set():
            rows = self.monitor.execute(
                "SELECT application_name LIKE 'branch:%%' FROM pg_stat_activity "
                "WHERE datname = current_database() AND backend_type = 'client backend' "
                "AND pid <> pg_backend_pid()"
            ).fetchall()
            branch = sum(1 for (is_branch,) in rows if is_branch)
            self.branch = max(self.branch, branch)
            self.default = max(self.default, len(rows) - branch)
            time.sleep(0.002)  # a poll rate, not a wait

    def __enter__(self) -> Peaks:
        self.thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.done.set()
        self.thread.join()
        self.monitor.close()


@pytest.fixture
def peaks(postgres: PostgresServer, dbname: str) -> Callable[[], Peaks]:
    return lambda: Peaks(postgres, dbname)


def test_argparse_errors_exit_2(dbname: str) -> None:
    process = start(dbname, "a", "--parallel", "many", "--", "branch_note")
    _, err = process.communicate(timeout=60)

    assert process.returncode == 2
    assert "error: argument --parallel: invalid int value: 'many'" in err


def test_connection_budget(
    dbname: str, peaks: Callable[[], Peaks], branch_backends: BranchBackends, tmp_path: Path
) -> None:
    parallel = 3
    names = [f"b{i}" for i in range(12)]
    note_branches(*names)

    with peaks() as seen:
        process = start(
            dbname, *names, "--parallel", str(parallel), "--log-dir", str(tmp_path),
            "--", "branch_note", "--sleep", "0.3",
        )  # fmt: skip
        _, err = process.communicate(timeout=120)

    assert process.returncode == 0, err
    print(f"\npeak branch backends {seen.branch}, other backends {seen.default}")
    assert 2 <= seen.branch <= parallel  # in parallel, within the budget
    assert seen.default <= parallel + 1
    assert all(notes(name) == ["note"] for name in names)
    branch_backends.wait_for([])


def test_ctrl_c_stops_everything(
    dbname: str, branch_backends: BranchBackends, tmp_path: Path
) -> None:
    names = ["a", "b", "c", "d", "e"]
    note_branches(*names)
    process = start(
        dbname, *names, "--parallel", "2", "--log-dir", str(tmp_path),
        "--", "branch_note", "--pg-sleep", "60",
    )  # fmt: skip
    poll(lambda: len(branch_backends()) == 2)  # both workers inside pg_sleep(60)
    workers = children(process.pid)
    assert len(workers) == 2

    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=30)

    assert process.returncode == 130, err
    lines = out.splitlines()
    assert [line.split()[:2] for line in lines[1:6]] == [
        ["a", "interrupted"], ["b", "interrupted"],
        ["c", "not-started"], ["d", "not-started"], ["e", "not-started"],
    ], out  # fmt: skip
    assert lines[6].startswith("5 branch(es): 2 interrupted, 3 not-started. Interrupted. Logs: ")
    assert err.strip().splitlines()[-1].startswith("CommandError: Interrupted;")
    assert not [pid for pid in workers if Path(f"/proc/{pid}").exists()]
    branch_backends.wait_for([])  # pg_sleep cancelled, connections closed


def test_a_terminal_gets_a_progress_bar(dbname: str, tmp_path: Path) -> None:
    """On a TTY, tqdm's bar on stderr in place of one line per branch; the table as ever."""
    names = ["a", "b", "c"]
    note_branches(*names)
    primary, secondary = pty.openpty()
    # A terminal of 80 columns: a new pseudo-terminal has 0, where tqdm draws nothing.
    fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    try:
        process = subprocess.Popen(
            [sys.executable, "manage.py", "branch_run", *names, "--log-dir", str(tmp_path),
             "--", "branch_note", "--sleep", "0.2"],  # longer than tqdm's redraw interval
            cwd=ROOT,
            env={**os.environ, "DJANGO_SETTINGS_MODULE": "tests.project.settings",
                 "BRANCHING_OPS_TEST_DBNAME": dbname},
            stdout=subprocess.PIPE,
            stderr=secondary,
            text=True,
        )  # fmt: skip
        os.close(secondary)
        out, _ = process.communicate(timeout=120)
        terminal = b""
        while chunk := read_pty(primary):
            terminal += chunk
    finally:
        os.close(primary)

    assert process.returncode == 0, terminal
    shown = terminal.decode()
    assert "| 0/3 [" in shown
    assert "| 3/3 [" in shown
    assert "branch/s" in shown or "s/branch" in shown  # tqdm's rate, in our unit
    assert "[1/3]" not in shown  # not the plain lines
    assert out.splitlines()[-1].startswith("3 branch(es): 3 ok.")


def read_pty(fd: int) -> bytes:
    """What is left to read on a pseudo-terminal whose other end closed."""
    try:
        return os.read(fd, 65536)
    except OSError:  # EIO: the writer is gone and everything was read
        return b""


@pytest.mark.rq_processes
def test_via_rq_with_two_workers_one_horse_killed(
    dbname: str, queue: Queue, branch_backends: BranchBackends, tmp_path: Path
) -> None:
    names = ["a", "b", "c", "d", "e", "f"]
    note_branches(*names)
    with rqworker(branch_backends, *WORKER) as first, rqworker(branch_backends, *WORKER) as second:
        process = start(
            dbname, *names, "--via-rq", "default", "--log-dir", str(tmp_path),
            "--", "branch_note", "--fail-on", "b", "--sleep-on", "f", "--sleep", "60",
        )  # fmt: skip
        # f's job sleeps once every other branch is done: its work horse is the only one.
        poll(lambda: notes("f") == ["note"] and all(notes(n) for n in "acde"))
        poll(lambda: len(children(first.process.pid) + children(second.process.pid)) == 1)
        (horse,) = children(first.process.pid) + children(second.process.pid)
        os.kill(horse, signal.SIGKILL)
        out, err = process.communicate(timeout=60)

    assert process.returncode == 1, err
    lines = out.splitlines()
    assert lines[0].split() == ["BRANCH", "RESULT", "SECONDS", "JOB"]
    assert [line.split()[:2] for line in lines[1:7]] == [
        ["a", "ok"], ["b", "failed"], ["c", "ok"], ["d", "ok"], ["e", "ok"], ["f", "failed"]
    ]  # fmt: skip
    assert "b: told to fail on b" in lines
    assert any(
        line.startswith("f: its job failed: Work-horse terminated unexpectedly") for line in lines
    ), out
    assert (tmp_path / "a.log").read_text() == "print() on a\nnote 1 'note' on schema_a\n"
    assert notes("public") == []
    branch_backends.wait_for([])


@pytest.mark.rq_processes
def test_via_rq_worker_killed_outright(
    dbname: str, queue: Queue, branch_backends: BranchBackends, tmp_path: Path
) -> None:
    note_branches("a", "f")
    with rqworker(branch_backends, *WORKER) as worker:
        process = start(
            dbname, "a", "f", "--via-rq", "default", "--log-dir", str(tmp_path),
            "--", "branch_note", "--sleep-on", "f", "--sleep", "60",
        )  # fmt: skip
        poll(lambda: notes("f") == ["note"] and children(worker.process.pid))
        (horse,) = children(worker.process.pid)
        os.kill(worker.process.pid, signal.SIGKILL)  # nobody left to fail the job
        os.kill(horse, signal.SIGKILL)
        worker.wait()
        # What rq waits for before calling the job abandoned: its heartbeat's
        # expiry (90 s by default). Expire it now rather than wait.
        started = f"rq:wip:{queue.name}"
        for member in queue.connection.zrange(started, 0, -1):
            queue.connection.zadd(started, {member: time.time() - 1})
        out, err = process.communicate(timeout=60)

    assert process.returncode == 1, err
    lines = out.splitlines()
    assert [line.split()[:2] for line in lines[1:3]] == [["a", "ok"], ["f", "failed"]]
    assert any(
        line.startswith("f: its job failed: ") and "AbandonedJobError" in line for line in lines
    ), out


@pytest.mark.rq_processes
def test_via_rq_in_batches(
    dbname: str, queue: Queue, branch_backends: BranchBackends, tmp_path: Path
) -> None:
    """Two branches per job: every branch reported on its own, its log its own."""
    names = ["a", "b", "c", "d", "e"]
    note_branches(*names)
    with rqworker(branch_backends, *WORKER), rqworker(branch_backends, *WORKER):
        process = start(
            dbname, *names, "--via-rq", "default", "--batch-size", "2", "--json",
            "--log-dir", str(tmp_path), "--", "branch_note", "--fail-on", "b",
        )  # fmt: skip
        out, err = process.communicate(timeout=120)

    assert process.returncode == 1, err
    results = json.loads(out)["branches"]
    assert [(r["branch"], r["status"]) for r in results] == [
        ("a", "ok"), ("b", "failed"), ("c", "ok"), ("d", "ok"), ("e", "ok")
    ]  # fmt: skip
    jobs = [r["job_id"] for r in results]
    assert jobs[0] == jobs[1] != jobs[2] == jobs[3] != jobs[4]
    assert results[1]["error"] == "told to fail on b"
    assert (tmp_path / "c.log").read_text() == "print() on c\nnote 1 'note' on schema_c\n"
    assert [notes(name) for name in names] == [["note"], [], ["note"], ["note"], ["note"]]
    assert notes("public") == []
    branch_backends.wait_for([])


@pytest.mark.rq_processes
def test_via_rq_batch_stops_at_its_first_failure_under_fail_fast(
    dbname: str, queue: Queue, branch_backends: BranchBackends, tmp_path: Path
) -> None:
    note_branches("a", "b", "c", "d")
    with rqworker(branch_backends, *WORKER):
        process = start(
            dbname, "a", "b", "c", "d", "--via-rq", "default", "--batch-size", "4",
            "--fail-fast", "--json", "--log-dir", str(tmp_path),
            "--", "branch_note", "--fail-on", "b",
        )  # fmt: skip
        out, err = process.communicate(timeout=120)

    assert process.returncode == 1, err
    results = json.loads(out)["branches"]
    assert [(r["branch"], r["status"]) for r in results] == [
        ("a", "ok"), ("b", "failed"), ("c", "not-started"), ("d", "not-started")
    ]  # fmt: skip
    assert [notes(name) for name in "abcd"] == [["note"], [], [], []]


@pytest.mark.rq_processes
def test_no_wait_only_enqueues(dbname: str, queue: Queue, branch_backends: BranchBackends) -> None:
    note_branches("a", "b", "c")
    process = start(
        dbname, "a", "b", "c", "--via-rq", "default", "--batch-size", "2", "--no-wait",
        "--json", "--", "branch_note",
    )  # fmt: skip
    out, err = process.communicate(timeout=60)

    assert process.returncode == 0, err
    results = json.loads(out)["branches"]
    assert [(r["branch"], r["status"]) for r in results] == [
        ("a", "queued"), ("b", "queued"), ("c", "queued")
    ]  # fmt: skip
    assert sorted(queue.get_job_ids()) == sorted({r["job_id"] for r in results})
    assert [notes(name) for name in "abc"] == [[], [], []]
    with rqworker(branch_backends, "--burst", *WORKER) as worker:
        worker.wait()
    assert [notes(name) for name in "abc"] == [["note"]] * 3
    assert notes("public") == []
