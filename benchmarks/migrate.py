"""``branch_migrate`` vs a loop of Django's ``migrate`` and django-tenants' ``migrate_schemas``.

The test project's three apps (11 migrations, without django_rq's) on ``--branches`` empty
schemas, each side in its own database of one server: (a) one process
calling ``migrate`` per branch alias; (b) django-tenants 4 ``migrate_schemas
--tenant --executor=multiprocessing`` with ``--parallel`` processes, in the
``bench-tenants`` tox environment; (c) ``branch_migrate --parallel``. Then
the no-op run (everything applied) over ``--noop-branches`` for (b) and (c).
Peak client backends of each run are sampled from ``pg_stat_activity``;
CPU seconds are the run's processes' (``RUSAGE_CHILDREN``) plus the
server's (its processes' and reaped children's ``/proc`` times): a figure
that other load on a shared machine changes less than the wall time.

Both sides run with their bytecode compiled beforehand (``compileall``), as
a deployed project has it; on a machine with ``PYTHONDONTWRITEBYTECODE``
set, every process start would otherwise compile every module again (0.8 s
here), which is most of a no-op run.

``tox -e bench-tenants`` once, then ``python -m benchmarks.migrate``.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from benchmarks._targets import report_targets
from branching_ops.testing.postgres import PostgresServer
from branching_ops.testing.postgres import running_postgres

ROLE = "app"
TENANTS_PYTHON = Path(".tox/bench-tenants/bin/python")
PROJECT = ["branching_ops", "benchmarks", "tests"]
# With the compiled bytecode kept, not ignored.
ENVIRONMENT = {key: value for key, value in os.environ.items() if key != "PYTHONDONTWRITEBYTECODE"}
TARGET_VS_TENANTS = 1.5
TARGET_NOOP_SECONDS = 2.0
TARGET_NOOP_VS_TENANTS = 20.0
# Side (a): what a project without this package writes.
LOOP = """
import sys, django
django.setup()
from django.core.management import call_command
from django.db import connections
for schema in sys.argv[1:]:
    call_command("migrate", database="schema_" + schema, verbosity=0)
    connections["schema_" + schema].close()
"""


class PeakBackends(threading.Thread):
    """The most client backends ``dbname`` had at once while the block ran."""

    def __init__(self, server: PostgresServer, dbname: str) -> None:
        super().__init__(daemon=True)
        self.monitor = server.connect()
        self.dbname = dbname
        self.peak = 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            rows = self.monitor.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = %s"
                " AND backend_type = 'client backend' AND pid <> pg_backend_pid()",
                [self.dbname],
            ).fetchall()
            self.peak = max(self.peak, len(rows))
            self.done.wait(0.005)

    def __enter__(self) -> PeakBackends:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        self.join()
        self.monitor.close()


def server_cpu(server: PostgresServer) -> float:
    """CPU seconds of the server so far: the postmaster, its live and its reaped children."""
    assert server.process is not None
    postmaster = server.process.pid
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:  # gone meanwhile: its time is in the postmaster's reaped children
                continue
            if int(entry) == postmaster:
                total += sum(int(value) for value in fields[11:15])  # its own and reaped
            elif int(fields[1]) == postmaster:
                total += int(fields[11]) + int(fields[12])
    return total / tick


def client_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(
    server: PostgresServer, dbname: str, command: Sequence[str], env: dict[str, str]
) -> tuple[float, int, float]:
    """(seconds, peak backends, CPU seconds of client and server) of one command run to success."""
    cpu = client_cpu() + server_cpu(server)
    with PeakBackends(server, dbname) as peak:
        started = time.perf_counter()
        # Progress on stderr is part of what each side costs; nobody reads it here.
        subprocess.run(
            command, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        seconds = time.perf_counter() - started
    return seconds, peak.peak, client_cpu() + server_cpu(server) - cpu


def database(server: PostgresServer, dbname: str, schemas: Sequence[str]) -> None:
    with server.connect() as admin:
        admin.execute(f"CREATE DATABASE {dbname} OWNER {ROLE}")
    server.create_schemas(dbname, schemas, owner=ROLE)


def compiled(python: str | Path) -> None:
    """Compile the interpreter's packages and this project, as installing them would."""
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    subprocess.run(
        [str(python), "-m", "compileall", "-q", "-j", "0", purelib, *PROJECT],
        check=True,
        stdout=subprocess.DEVNULL,
    )


def ours(server: PostgresServer, dbname: str) -> dict[str, str]:
    return {
        **ENVIRONMENT,
        "DJANGO_SETTINGS_MODULE": "benchmarks.migrate_settings",
        "BRANCHING_OPS_TEST_PGHOST": server.host,
        "BRANCHING_OPS_TEST_PGPORT": str(server.port),
        "BRANCHING_OPS_TEST_DBNAME": dbname,
    }


def tenants(server: PostgresServer, dbname: str, processes: int) -> dict[str, str]:
    return {
        **ENVIRONMENT,
        "DJANGO_SETTINGS_MODULE": "benchmarks.tenants.settings",
        "BENCH_PGHOST": server.host,
        "BENCH_PGPORT": str(server.port),
        "BENCH_PGUSER": ROLE,
        "BENCH_PGDATABASE": dbname,
        "BENCH_PROCESSES": str(processes),
    }


def register_tenants(server: PostgresServer, dbname: str, schemas: Sequence[str]) -> None:
    """django-tenants migrates the schemas its tenant table lists."""
    with server.connect(dbname) as admin:
        admin.execute(
            "INSERT INTO customers_client (schema_name) SELECT unnest(%s::text[])", [list(schemas)]
        )


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--branches", type=int, default=500)
    parser.add_argument("--noop-branches", type=int, default=1000)
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--tenants-python", type=Path, default=TENANTS_PYTHON)
    args = parser.parse_args()
    if not args.tenants_python.exists():
        parser.error(f"{args.tenants_python} does not exist: run `tox -e bench-tenants` first")
    parallel = str(args.parallel)
    fresh = [f"b{i}" for i in range(args.branches)]
    rest = [f"b{i}" for i in range(args.branches, args.noop_branches)]
    python = sys.executable
    tenants_migrate = [
        str(args.tenants_python), "-m", "django", "migrate_schemas", "--tenant",
        "--executor=multiprocessing", "--verbosity", "0",
    ]  # fmt: skip
    branch_migrate = [python, "-m", "django", "branch_migrate", "--parallel", parallel]
    compiled(python)
    compiled(args.tenants_python)
    with running_postgres(max_connections=40) as server:
        with server.connect() as admin:
            admin.execute(f"CREATE ROLE {ROLE} LOGIN")
        database(server, "loop", fresh)
        database(server, "tenants", [*fresh, *rest])
        database(server, "ours", [*fresh, *rest])
        tenants_env = tenants(server, "tenants", args.parallel)
        subprocess.run(
            [str(args.tenants_python), "-m", "django", "migrate_schemas", "--shared", "-v0"],
            env=tenants_env,
            check=True,
        )

        loop = timed(server, "loop", [python, "-c", LOOP, *fresh], ours(server, "loop"))
        register_tenants(server, "tenants", fresh)
        peer = timed(server, "tenants", tenants_migrate, tenants_env)
        mine = timed(server, "ours", [*branch_migrate, *fresh], ours(server, "ours"))

        # Everything applied on every schema, then the no-op runs.
        register_tenants(server, "tenants", rest)
        subprocess.run(tenants_migrate, env=tenants_env, check=True, stdout=subprocess.DEVNULL)
        every = [*branch_migrate, "--all"]
        subprocess.run(every, env=ours(server, "ours"), check=True, capture_output=True)
        peer_noop = timed(server, "tenants", tenants_migrate, tenants_env)
        mine_noop = timed(server, "ours", every, ours(server, "ours"))

    rows = [
        (f"fresh, {args.branches} branches", "loop of migrate (1 process)", loop),
        ("", f"django-tenants multiprocessing x{parallel}", peer),
        ("", f"branch_migrate --parallel {parallel}", mine),
        (f"no-op, {args.noop_branches} branches", f"django-tenants x{parallel}", peer_noop),
        ("", f"branch_migrate --parallel {parallel}", mine_noop),
    ]
    print(f"{'run':<24} {'how':<36} {'seconds':>8} {'CPU s':>7} {'peak backends':>14}")
    for run, how, (seconds, peak, cpu) in rows:
        print(f"{run:<24} {how:<36} {seconds:>8.2f} {cpu:>7.2f} {peak:>14}")
    speedup = peer[0] / mine[0]
    noop_speedup = peer_noop[0] / mine_noop[0]
    targets = [
        (f"fresh: {speedup:.1f}x django-tenants (>= {TARGET_VS_TENANTS})",
         speedup >= TARGET_VS_TENANTS),
        (f"fresh: {peer[2] / mine[2]:.2f}x django-tenants in CPU seconds", True),
        (f"fresh: {loop[0] / mine[0]:.1f}x the loop of migrate", True),
        (f"fresh: peak backends {mine[1]} (<= {args.parallel + 1})", mine[1] <= args.parallel + 1),
        (f"no-op: {mine_noop[0]:.2f} s (<= {TARGET_NOOP_SECONDS})",
         mine_noop[0] <= TARGET_NOOP_SECONDS),
        (f"no-op: {noop_speedup:.0f}x django-tenants (>= {TARGET_NOOP_VS_TENANTS:.0f})",
         noop_speedup >= TARGET_NOOP_VS_TENANTS),
    ]  # fmt: skip
    return report_targets(targets)


if __name__ == "__main__":
    sys.exit(main())
