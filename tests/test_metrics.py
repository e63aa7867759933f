"""Prometheus metrics (``branching_ops.metrics``) against real servers, workers and PostgreSQL.

The figures are compared with what the server saw: ``pg_stat_activity`` for
what is open, its log (``log_connections``) for how many connections were
ever opened.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.db import connections
from django.test import override_settings
from rq import Queue
from rq.job import JobStatus

from branching_ops import activity
from branching_ops import signals
from branching_ops.metrics import exporter
from branching_ops.search_path import SearchPathError
from branching_ops.testing.postgres import PostgresServer
from branching_ops.testing.postgres import running_postgres
from branching_ops.testing.processes import wait_until
from branching_ops.tracking import close_branch_connections
from branching_ops.tracking import close_old_branch_connections
from branching_ops.workers import SPAWN_SUPPORTED
from tests.backends import BranchBackends
from tests.conftest import APP_ROLE
from tests.conftest import Branches
from tests.metrics import Figures
from tests.metrics import read_multiprocess_dir
from tests.metrics import scrape
from tests.rqworkers import JOBS
from tests.rqworkers import ROOT
from tests.rqworkers import rqworker
from tests.rqworkers import run_burst
from tests.servers import Result
from tests.servers import Sampler
from tests.servers import Server
from tests.servers import running_server
from tests.servers import uvicorn
from tests.test_pgbouncer import start_pgbouncer  # noqa: F401 - a fixture
from tests.test_pgbouncer import strict  # noqa: F401 - a fixture
from tests.wsgi import get

WORKERS, THREADS, CLIENTS = 2, 4, 8
DBNAME = "metrics"
BRANCHES = [f"m{i}" for i in range(50)]


def branch_paths(requests: int, branches: int, prefix: str = "/branch/") -> list[str]:
    """Every branch of ``BRANCHES[:branches]`` in turn."""
    return [f"{prefix}{BRANCHES[i % branches]}/" for i in range(requests)]


# In this process: the signals and the receivers, on the suite's test database.


Event = tuple[str, str, str]


@pytest.fixture
def events() -> Iterator[list[Event]]:
    """Every branch connection event of this process, in order: (signal, alias, detail)."""
    received: list[Event] = []

    def recorder(name: str, detail: str = "") -> Callable[..., None]:
        def record(alias: str, **kwargs: Any) -> None:
            value = kwargs.get(detail, "")
            received.append((name, alias, getattr(value, "kind", value)))

        return record

    pairs = [
        (signals.branch_alias_tracked, recorder("tracked")),
        (signals.branch_alias_untracked, recorder("untracked")),
        (signals.branch_connection_opened, recorder("opened")),
        (signals.branch_connection_closed, recorder("closed", "reason")),
        (signals.branch_connection_failed, recorder("failed", "error")),
    ]
    for signal_, receiver in pairs:
        signal_.connect(receiver)
    yield received
    for signal_, receiver in pairs:
        signal_.disconnect(receiver)


def query(name: str, times: int = 1) -> None:
    for _ in range(times):
        with connections[f"schema_{name}"].cursor() as cursor:
            cursor.execute("SELECT 1")


@pytest.mark.usefixtures("transactional_db")
def test_each_connection_opens_and_closes_once_with_its_reason(
    events: list[Event], branches: Branches
) -> None:
    branches("sa", "sb", "sc", "sd")

    query("sa", times=5)  # many queries, one connection
    assert close_old_branch_connections() == 1  # CONN_MAX_AGE=0
    query("sb")
    connections["schema_sb"].close()  # other code closes it, as netbox-branching does
    query("sc")
    connections["schema_sc"].close()
    query("sc")  # ... and it reconnects before any boundary
    query("sd")
    close_old_branch_connections()
    with override_settings(BRANCHING_OPS={"MAX_CONNECTIONS_PER_THREAD": 1}):
        query("sa")
        query("sb")  # makes room: closes sa
    assert close_branch_connections() == 1

    assert events == [
        ("tracked", "schema_sa", ""),
        ("opened", "schema_sa", ""),
        ("closed", "schema_sa", "obsolete"),
        ("untracked", "schema_sa", ""),
        ("tracked", "schema_sb", ""),
        ("opened", "schema_sb", ""),
        ("tracked", "schema_sc", ""),
        ("opened", "schema_sc", ""),
        ("closed", "schema_sc", "external"),
        ("opened", "schema_sc", ""),
        ("tracked", "schema_sd", ""),
        ("opened", "schema_sd", ""),
        ("closed", "schema_sb", "external"),
        ("untracked", "schema_sb", ""),
        ("closed", "schema_sc", "obsolete"),
        ("untracked", "schema_sc", ""),
        ("closed", "schema_sd", "obsolete"),
        ("untracked", "schema_sd", ""),
        ("tracked", "schema_sa", ""),
        ("opened", "schema_sa", ""),
        ("closed", "schema_sa", "cap"),
        ("untracked", "schema_sa", ""),
        ("tracked", "schema_sb", ""),
        ("opened", "schema_sb", ""),
        ("closed", "schema_sb", "shutdown"),
        ("untracked", "schema_sb", ""),
    ]


@pytest.mark.usefixtures("transactional_db")
def test_requests_that_open_and_close_nothing_send_no_signal(
    events: list[Event], conn_max_age: Callable[[int], None], branches: Branches
) -> None:
    """Why metrics cost nothing per request on a persistent connection."""
    conn_max_age(600)
    branches("kept")
    assert get("/branch/kept/") == (200, "kept,public")
    assert [signal for signal, _, _ in events] == ["tracked", "opened"]

    for _ in range(10):
        assert get("/branch/kept/") == (200, "kept,public")

    assert len(events) == 2


@pytest.fixture
def figures() -> Iterator[Callable[[], Figures]]:
    """The exporter's receivers connected in this process; ``figures()`` reads the registry."""
    from prometheus_client import REGISTRY

    exporter.connect()
    yield lambda: Figures.from_families(REGISTRY.collect())
    exporter.disconnect()


def change(before: Figures, after: Figures) -> dict[str, float]:
    """The samples that moved, as ``{'name{label=value}': difference}``."""
    moved = {}
    for (name, labels), value in after.samples.items():
        difference = value - before.samples.get((name, labels), 0)
        if difference and not name.endswith("_created"):  # a counter's creation time
            moved[name + "".join(f"{{{key}={val}}}" for key, val in labels)] = difference
    return moved


@pytest.mark.usefixtures("transactional_db")
def test_receivers_move_the_metrics(figures: Callable[[], Figures], branches: Branches) -> None:
    branches("ra", "rb")
    before = figures()

    query("ra", times=3)
    query("rb")
    during = figures()
    close_old_branch_connections()
    after = figures()

    assert change(before, during) == {
        "branching_ops_branch_connections_open": 2,
        "branching_ops_branch_connections_opened_total": 2,
        "branching_ops_tracked_aliases": 2,
    }
    assert change(before, after) == {
        "branching_ops_branch_connections_opened_total": 2,
        "branching_ops_branch_connections_closed_total{reason=obsolete}": 2,
    }
    assert set(after.errors) >= {"search_path_mismatch", "pooler_refused", "missing_schema"}
    assert set(after.closed) <= set(signals.CLOSE_REASONS)


@pytest.mark.parametrize("kind", ["search_path_mismatch", "pooler_refused", "missing_schema"])
def test_a_refused_connection_counts_as_an_error_not_a_connection(
    kind: str,
    request: pytest.FixtureRequest,
    figures: Callable[[], Figures],
    reroute_branches: Callable[..., None],
    events: list[Event],
    transactional_db: None,
) -> None:
    if kind == "pooler_refused":  # PgBouncer refuses the search_path startup option
        bouncer = request.getfixturevalue("strict")
        reroute_branches(HOST=bouncer.host, PORT=str(bouncer.port))
    elif kind == "search_path_mismatch":  # what a pooler that drops the startup option does
        reroute_branches(options={"options": ""})
    # missing_schema: branch "lost" was never created
    before = figures()

    with pytest.raises(SearchPathError):
        query("lost")
    close_old_branch_connections()

    assert change(before, figures()) == {
        f"branching_ops_branch_connection_errors_total{{kind={kind}}}": 1
    }
    assert events == [
        ("tracked", "schema_lost", ""),
        ("failed", "schema_lost", kind),
        ("untracked", "schema_lost", ""),
    ]


# Without the extra: a subprocess in which prometheus_client cannot be imported.

NO_PROMETHEUS = """
import sys

attempts = []


def importer():
    frame = sys._getframe(2)
    while frame.f_globals.get("__name__", "").startswith("importlib"):
        frame = frame.f_back
    return frame.f_globals.get("__name__", "")


class NotInstalled:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "prometheus_client":
            # django_rq's admin (the test project has Django's admin) tries it, optionally.
            if not importer().startswith("django_rq."):
                attempts.append(name)
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)


sys.meta_path.insert(0, NotInstalled())
"""

EXERCISE = """
import importlib
import pkgutil

import django

django.setup()
import branching_ops
from django.core.management import call_command
from tests.wsgi import get

# The metrics app itself, the demo (matplotlib) and the NetBox adapter (NetBox) aside.
skipped = ("branching_ops.metrics", "branching_ops.demo", "branching_ops.contrib.netbox")
for module in pkgutil.walk_packages(branching_ops.__path__, "branching_ops."):
    if not module.name.startswith(skipped):
        importlib.import_module(module.name)
call_command("check")
assert get("/branch/np/") == (200, "np,public")
print("attempts:", attempts)
"""


def run_python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.project.settings",
        "BRANCHING_OPS_TEST_DBNAME": str(connections["default"].settings_dict["NAME"]),
        **env,
    }
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.usefixtures("transactional_db")
def test_without_the_extra_nothing_imports_prometheus_client(branches: Branches) -> None:
    branches("np")

    process = run_python(NO_PROMETHEUS + EXERCISE)

    assert process.returncode == 0, process.stderr
    assert process.stdout.splitlines()[-1] == "attempts: []"


@pytest.mark.usefixtures("transactional_db")
def test_the_app_without_the_extra_says_what_to_install() -> None:
    process = run_python(NO_PROMETHEUS + EXERCISE, BRANCHING_OPS_TEST_METRICS="1")

    assert process.returncode == 1
    assert process.stderr.splitlines()[-1] == (
        "django.core.exceptions.ImproperlyConfigured: 'branching_ops.metrics' is in "
        "INSTALLED_APPS but prometheus-client is not installed: "
        "pip install 'django-branching-ops[metrics]'."
    )


# Real gunicorn: 2 worker processes x 4 threads, one multiprocess directory,
# on a server of its own that logs every connection.


@pytest.fixture(scope="module")
def logging_postgres() -> Iterator[PostgresServer]:
    """A server that logs each connection, with room for every thread and branch."""
    # Room for each thread to keep 10 branches open (CONN_MAX_AGE > 0).
    with running_postgres(max_connections=WORKERS * THREADS * 10 + 20) as server:
        with server.connect() as setup:
            setup.execute("ALTER SYSTEM SET log_connections = on")
            setup.execute("SELECT pg_reload_conf()")
            setup.execute(f"CREATE ROLE {APP_ROLE} LOGIN")
            setup.execute(f"CREATE DATABASE {DBNAME} OWNER {APP_ROLE}")
        server.create_schemas(DBNAME, BRANCHES, owner=APP_ROLE)
        yield server


def gunicorn_workers(port: int) -> list[str]:
    return [
        sys.executable, "-m", "gunicorn", "tests.project.wsgi:application",
        "--bind", f"127.0.0.1:{port}", "--workers", str(WORKERS),
        "--worker-class", "gthread", "--threads", str(THREADS),
        "--config", "python:tests.project.gunicorn_metrics",
        "--graceful-timeout", "10", "--log-level", "warning",
    ]  # fmt: skip


def metrics_env(server: PostgresServer, multiproc_dir: Path, conn_max_age: int) -> dict[str, str]:
    multiproc_dir.mkdir()
    return {
        "BRANCHING_OPS_TEST_METRICS": "1",
        "PROMETHEUS_MULTIPROC_DIR": str(multiproc_dir),
        "BRANCHING_OPS_TEST_PGPORT": str(server.port),
        "BRANCHING_OPS_TEST_CONN_MAX_AGE": str(conn_max_age),
    }


AUTHORIZED_BRANCH = re.compile(
    rf"connection authorized: user={APP_ROLE} database={DBNAME} application_name=branch:"
)


def assert_all_served(results: list[Result]) -> None:
    failed = [(r.path, r.status, r.body[:200]) for r in results if r.status != 200]
    assert failed == [], f"{len(failed)} of {len(results)} requests failed: {failed[:5]}"


def wait_for_figures(port: int, expected: Callable[[Figures], bool], what: str) -> Figures:
    last: list[Figures] = []

    def matches() -> bool:
        last[:] = [scrape(port)]
        return expected(last[0])

    try:
        wait_until(matches, timeout=20, what=what)
    except TimeoutError:
        raise AssertionError(f"{what}: never true of {last[0]}") from None
    return last[0]


def show(label: str, figures: Figures) -> None:
    print(f"\n{label}:")
    for (name, labels), value in sorted(figures.samples.items()):
        label_text = ",".join(f'{key}="{val}"' for key, val in labels)
        print(f"  {name}{{{label_text}}} {value:g}" if labels else f"  {name} {value:g}")


def worker_pids(server: Server) -> list[int]:
    """The gunicorn master's children: its worker processes."""
    pid = server.process.pid
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(child) for child in children]


def gauge_files(multiproc_dir: Path) -> list[str]:
    return sorted(path.name for path in multiproc_dir.glob("gauge_*.db"))


def wait_for_workers(server: Server, multiproc_dir: Path, dead: int | None = None) -> None:
    """Wait until each live gunicorn worker, and only those, has its gauge file written.

    A scrape that reads a file while its process is creating it fails
    (prometheus/client_python#1199): the tests scrape once the workers are up.
    ``dead``: a worker killed, which must have been replaced.
    """

    def ready() -> bool:
        pids = worker_pids(server)
        files = [f"gauge_livesum_{pid}.db" for pid in pids]
        return (
            len(files) == WORKERS
            and dead not in pids
            and gauge_files(multiproc_dir) == sorted(files)
            and all((multiproc_dir / name).stat().st_size > 0 for name in files)
        )

    wait_until(ready, timeout=60, what="every gunicorn worker to be up")


def live_backends(server: PostgresServer) -> int:
    with server.connect() as monitor:
        return len(activity.branch_backends(monitor, database=DBNAME, include_own=True))


@pytest.mark.slow
def test_gunicorn_workers_conn_max_age_0(logging_postgres: PostgresServer, tmp_path: Path) -> None:
    multiproc_dir = tmp_path / "prometheus"
    env = metrics_env(logging_postgres, multiproc_dir, conn_max_age=0)
    log_start = logging_postgres.log_path.stat().st_size
    with running_server(gunicorn_workers, DBNAME, tmp_path, **env) as server:
        wait_for_workers(server, multiproc_dir)
        with Sampler(lambda: scrape(server.port).open) as sampler:
            results = server.load(branch_paths(1500, len(BRANCHES)), CLIENTS)
        after = wait_for_figures(server.port, lambda f: f.open == 0, "open back to 0")

    assert_all_served(results)
    print(f"\nopen during the load: peak {sampler.peak} over {len(sampler.samples)} scrapes")
    show("after the load", after)
    assert 0 < sampler.peak <= WORKERS * THREADS
    with logging_postgres.log_path.open("rb") as log:
        log.seek(log_start)
        seen_by_server = len(AUTHORIZED_BRANCH.findall(log.read().decode(errors="replace")))
    assert after.closed == {"obsolete": after.opened}  # CONN_MAX_AGE=0: at each request's end
    assert after.opened == seen_by_server >= len(results)
    assert after.tracked == 0
    assert set(after.errors.values()) == {0}


@pytest.mark.slow
def test_gunicorn_persistent_connections_match_the_server(
    logging_postgres: PostgresServer, tmp_path: Path
) -> None:
    multiproc_dir = tmp_path / "prometheus"
    env = metrics_env(logging_postgres, multiproc_dir, conn_max_age=600)
    wait_until(lambda: live_backends(logging_postgres) == 0, timeout=10, what="no backends")
    with running_server(gunicorn_workers, DBNAME, tmp_path, **env) as server:
        wait_for_workers(server, multiproc_dir)
        results = server.load(branch_paths(400, len(BRANCHES) // 5), CLIENTS)
        assert_all_served(results)
        held = scrape(server.port)
        backends = live_backends(logging_postgres)
        show("after the load, CONN_MAX_AGE=600", held)
        assert held.open == backends > 0  # each thread keeps what it served
        assert held.opened - sum(held.closed.values()) == held.open
        assert held.tracked == held.open

        # A worker killed with its connections open: gunicorn's child_exit
        # marks it dead, and its share leaves the gauge as its backends go.
        killed = worker_pids(server)[0]
        os.kill(killed, signal.SIGKILL)
        wait_for_workers(server, multiproc_dir, dead=killed)
        after_kill = wait_for_figures(
            server.port,
            lambda f: f.open == live_backends(logging_postgres) < backends,
            "open to follow the backends of the killed worker",
        )
        print(f"\nkilled a worker: open {held.open} -> {after_kill.open}")


@pytest.mark.slow
def test_uvicorn_single_process(logging_postgres: PostgresServer, tmp_path: Path) -> None:
    """ASGI: no multiprocess directory, the default registry of the one process."""
    env = metrics_env(logging_postgres, tmp_path / "unused", conn_max_age=0)
    del env["PROMETHEUS_MULTIPROC_DIR"]
    with running_server(uvicorn, DBNAME, tmp_path, **env) as server:
        results = server.load(branch_paths(300, len(BRANCHES), "/async/branch/"), CLIENTS)
        after = wait_for_figures(server.port, lambda f: f.open == 0, "open back to 0")

    assert_all_served(results)
    assert after.closed == {"obsolete": after.opened}
    assert after.opened >= len(results)
    assert after.tracked == 0


# RQ workers: manage.py rqworker subprocesses, one multiprocess directory.


def worker_env(multiproc_dir: Path) -> dict[str, str]:
    multiproc_dir.mkdir()
    return {"BRANCHING_OPS_TEST_METRICS": "1", "PROMETHEUS_MULTIPROC_DIR": str(multiproc_dir)}


@pytest.mark.slow
@pytest.mark.rq_processes
@pytest.mark.parametrize(
    ("worker_class", "reason"),
    [
        ("BranchWorker", "shutdown"),
        ("BranchSimpleWorker", "obsolete"),
        pytest.param(
            "BranchSpawnWorker",
            "shutdown",
            marks=pytest.mark.skipif(not SPAWN_SUPPORTED, reason="BranchSpawnWorker needs rq 3"),
        ),
    ],
)
def test_rq_workers_report_their_connections(
    worker_class: str,
    reason: str,
    queue: Queue,
    branch_backends: BranchBackends,
    branches: Branches,
    tmp_path: Path,
) -> None:
    names = [f"mw{i}" for i in range(10)]
    branches(*names)
    jobs = [queue.enqueue(f"{JOBS}.touch_branch", name) for name in names]
    multiproc_dir = tmp_path / "prometheus"

    run = run_burst(
        branch_backends,
        f"--worker-class=branching_ops.workers.{worker_class}",
        **worker_env(multiproc_dir),
    )

    assert run.returncode == 0, run.output
    assert [job.get_status() for job in jobs] == [JobStatus.FINISHED] * len(jobs)
    figures = read_multiprocess_dir(multiproc_dir)
    show(worker_class, figures)
    # A job process ends with os._exit(): its counts were in the directory already
    # (a spawned one's too, from its own interpreter).
    assert figures.opened == len(jobs)
    assert figures.closed == {reason: len(jobs)}
    assert figures.open == figures.tracked == 0
    # Every job process was marked dead: only the worker's own gauges are left.
    assert gauge_files(multiproc_dir) == [f"gauge_livesum_{run.process.pid}.db"]


@pytest.mark.slow
@pytest.mark.rq_processes
def test_a_killed_job_process_leaves_the_gauge(
    queue: Queue, branch_backends: BranchBackends, branches: Branches, tmp_path: Path
) -> None:
    branches("killed")
    job = queue.enqueue(f"{JOBS}.query_reporting_pid", "killed", 60)
    multiproc_dir = tmp_path / "prometheus"

    with rqworker(branch_backends, "--burst", **worker_env(multiproc_dir)) as run:
        wait_until(
            lambda: queue.connection.get(f"pid:{job.id}") is not None, timeout=30, what="the job"
        )
        # The job process holds its connection (in a 60 s query), and says so.
        wait_until(
            lambda: read_multiprocess_dir(multiproc_dir).open == 1, timeout=30, what="open 1"
        )
        branch_backends.wait_for(["branch:killed"])
        os.kill(int(queue.connection.get(f"pid:{job.id}") or 0), signal.SIGKILL)
        run.wait()

    assert run.returncode == 0, run.output
    assert job.get_status() == JobStatus.FAILED
    after = read_multiprocess_dir(multiproc_dir)
    assert (after.open, after.opened, after.closed) == (0, 1, {})
    assert gauge_files(multiproc_dir) == [f"gauge_livesum_{run.process.pid}.db"]
    # The server notices the dead client only when the query ends: end it now.
    branch_backends.monitor.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
        ("branch:killed",),
    )
    branch_backends.wait_for([])
