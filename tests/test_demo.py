"""``python -m branching_ops.demo`` end to end, as a user runs it (tiny numbers)."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
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
from branching_ops.testing._process import wait_until

THREADS = 2


@pytest.fixture
def demo_tmp() -> Iterator[Path]:
    """The demo's ``TMPDIR``: one the unprivileged server user can enter."""
    path = Path(tempfile.mkdtemp(prefix="branching-ops-demo-test-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _demo(demo_tmp: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "branching_ops.demo", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "TMPDIR": str(demo_tmp)},
    )


@pytest.mark.slow
def test_demo_shows_the_leak_and_the_fix(tmp_path: Path, demo_tmp: Path) -> None:
    plot = tmp_path / "demo.png"
    demo = _demo(
        demo_tmp,
        *("--threads", str(THREADS), "--branches", "20", "--requests", "80"),
        *("--max-connections", "10", "--out", str(plot), "--json"),
    )
    stdout, stderr = demo.communicate(timeout=120)
    assert demo.returncode == 0, stderr

    document = json.loads(stdout)
    results = {result["mode"]: result for result in document["results"]}
    assert list(results) == ["plain", "signals_only", "branching_ops"]
    plain, signals_only, fixed = results.values()

    # Plain Django: every thread keeps a connection per branch until the server is full.
    assert plain["too_many_clients"] > 0
    assert plain["failed"] >= plain["too_many_clients"]
    assert plain["final_backends"] > THREADS
    # Never untracking closes the connections but keeps every alias.
    assert signals_only["failed"] == 0
    assert signals_only["final_backends"] == 0
    assert signals_only["tracked_aliases"] > THREADS
    # branching_ops: nothing fails, nothing is left, nothing is remembered.
    assert fixed["ok"] == 80
    assert fixed["failed"] == 0
    assert fixed["final_backends"] == 0
    # A closed backend stays in pg_stat_activity until its process has exited,
    # which on a loaded machine can overlap its thread's next connection; the
    # strict "peak <= threads" target is the soak benchmark's.
    assert 0 < fixed["peak_backends"] <= 2 * THREADS < plain["final_backends"]
    assert fixed["tracked_aliases"] == 0
    assert fixed["timeline"]

    assert plot.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert document["plot"] == str(plot)
    assert list(demo_tmp.iterdir()) == []  # the server's files are gone


def _cmdlines() -> list[bytes]:
    lines = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            lines.append(cmdline.read_bytes())
        except OSError:
            continue
    return lines


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads processes from /proc")
def test_ctrl_c_stops_everything(tmp_path: Path, demo_tmp: Path) -> None:
    demo = _demo(demo_tmp, "--requests", "1000000", "--out", str(tmp_path / "demo.png"))
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

        wait_until(lambda: branch_backends() > 0, timeout=60, what="the soak to run")
        demo.send_signal(signal.SIGINT)
        _, stderr = demo.communicate(timeout=60)
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()

    assert demo.returncode == 130, stderr
    assert "Interrupted" in stderr
    assert list(demo_tmp.iterdir()) == []
    marker = f"--pg-port\0{port}\0".encode()
    assert not [line for line in _cmdlines() if marker in line], "WSGI server still running"
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(f"host=127.0.0.1 port={port} user=postgres dbname=postgres").close()
    assert not (tmp_path / "demo.png").exists()


def test_missing_extra_is_named_before_anything_starts(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *args: None if name == "waitress" else real_find_spec(name, *args),
    )
    monkeypatch.setattr(cli, "run_soak", None)  # would fail if reached

    assert cli.main([]) == 2

    assert capsys.readouterr().err == (
        'The demo needs waitress: python -m pip install "django-branching-ops[demo]"\n'
    )


@pytest.mark.parametrize(
    ("flag", "message"),
    [
        ("--threads=0", "argument --threads: must be at least 1, not 0"),
        ("--conn-max-age=-1", "argument --conn-max-age: must not be negative, not -1"),
        ("--requests=x", "argument --requests: invalid positive value: 'x'"),
    ],
)
def test_bad_flags_are_refused(
    flag: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main([flag])

    assert exit_info.value.code == 2
    assert capsys.readouterr().err.endswith(f"error: {message}\n")
