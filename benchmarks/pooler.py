"""``SEARCH_PATH = "transaction"`` behind PgBouncer transaction pooling vs ``"session"`` direct.

    python -m benchmarks.pooler [--statements 20]

Starts a throw-away PostgreSQL (``max_connections`` 40) and the system's
PgBouncer in transaction pooling with 3 server connections in front of it.
Prints, measured in one run:

- statements/s of autocommit INSERTs from 8 threads over 4 branches (it
  fits the server directly): "session" direct, the baseline, vs
  "transaction" direct (the setting's own cost) and through the pooler
  (plus PgBouncer's hop), and their ratios;
- round trips per autocommit statement in "transaction" mode: distinct
  virtual transaction ids (``%v`` in the server's log line prefix) per
  statement: each implicit transaction is one Query (or one Sync);
- 8 threads x 40 branches (320 connections for a 40-slot server): failed
  statements direct in "session" mode vs through the pooler.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import django
from django.conf import settings

from benchmarks._targets import report_targets
from branching_ops.databases import BranchDatabases
from branching_ops.testing.pgbouncer import running_pgbouncer
from branching_ops.testing.postgres import running_postgres

THREADS = 8
BRANCHES = [f"pb_{i}" for i in range(40)]
CONFIGURATIONS = [
    ("session direct", "session", "direct"),
    ("transaction direct", "transaction", "direct"),
    ("transaction pooled", "transaction", "pooled"),
]
# A simple-protocol Query is logged as "statement:", a pipeline's statements as "execute".
_VXID_RE = re.compile(r"^\S+ \S+ \S+ \[(\d+)\] (\S+) LOG:  (?:statement|execute [^:]*): (.*)$")


def run(branches: list[str], statements: int) -> tuple[int, int, float]:
    """Each thread: ``statements`` INSERTs into every branch. (done, failed, seconds)."""
    from django.db import connections

    from branching_ops.tracking import close_branch_connections

    counts = {"done": 0, "failed": 0}
    lock = threading.Lock()

    def work(thread: int) -> None:
        try:
            for _ in range(statements):
                for name in branches:
                    try:
                        with connections[f"schema_{name}"].cursor() as cursor:
                            cursor.execute("INSERT INTO t VALUES (%s)", [thread])
                        key = "done"
                    except Exception:
                        key = "failed"
                    with lock:
                        counts[key] += 1
        finally:
            close_branch_connections()

    start = time.perf_counter()
    with ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(work, range(THREADS)))
    return counts["done"], counts["failed"], time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--statements", type=int, default=20, help="per thread and branch")
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    with running_postgres(max_connections=40) as pg:
        with pg.connect() as setup:
            setup.autocommit = True
            setup.execute("CREATE ROLE app LOGIN")
            setup.execute("CREATE DATABASE bench OWNER app")
        pg.create_schemas("bench", BRANCHES, owner="app")
        with pg.connect("bench") as setup:
            setup.autocommit = True
            for name in BRANCHES:
                setup.execute(
                    f"CREATE TABLE {name}.t (thread int); ALTER TABLE {name}.t OWNER TO app"
                )
        with running_pgbouncer(
            pg.host, pg.port, users=["postgres", "app"], pool_mode="transaction",
            ignore_startup_parameters="options", default_pool_size=3,
        ) as bouncer:  # fmt: skip
            default = {"ENGINE": "django.db.backends.postgresql", "NAME": "bench", "USER": "app",
                       "HOST": pg.host, "PORT": str(pg.port), "CONN_MAX_AGE": None,
                       "DISABLE_SERVER_SIDE_CURSORS": True}  # fmt: skip
            settings.configure(
                DATABASES=BranchDatabases({"default": default}),
                INSTALLED_APPS=["branching_ops"],
                BRANCHING_OPS={"SEARCH_PATH": "session"},
                USE_TZ=True,
            )
            django.setup()
            direct = {"HOST": pg.host, "PORT": str(pg.port)}
            pooled = {"HOST": bouncer.host, "PORT": str(bouncer.port)}
            routes = {"direct": direct, "pooled": pooled}

            def configure(mode: str, route: dict[str, str]) -> None:
                settings.BRANCHING_OPS = {"SEARCH_PATH": mode}
                settings.DATABASES["default"].update(route)

            few = BRANCHES[:4]
            rates: dict[str, list[float]] = {}
            for _ in range(2):  # interleaved rounds: drift hits both alike
                for label, mode, route in CONFIGURATIONS:
                    configure(mode, routes[route])
                    done, failed, seconds = run(few, args.statements)
                    assert failed == 0, (label, failed)
                    rates.setdefault(label, []).append(done / seconds)
            base = max(rates["session direct"])
            pooled_ratio = max(rates[CONFIGURATIONS[2][0]]) / base
            for label, values in rates.items():
                print(
                    f"{label:20} {max(values):8.0f} statements/s  ratio {max(values) / base:.2f}"
                )

            with pg.connect() as admin:
                admin.autocommit = True
                admin.execute("ALTER SYSTEM SET log_line_prefix = '%m [%p] %v '")
                admin.execute("ALTER ROLE app SET log_statement = 'all'")
                admin.execute("SELECT pg_reload_conf()")
            time.sleep(0.5)  # the reload reaches the postmaster; a benchmark, not a test
            bouncer_reset = bouncer.admin()
            bouncer_reset.execute("RECONNECT")  # new server sessions pick up log_statement
            bouncer_reset.close()
            start = pg.log_path.stat().st_size
            configure("transaction", pooled)
            done, failed, _ = run(few, 2)
            with pg.log_path.open(errors="replace") as log:
                log.seek(start)
                matches = [m for line in log if (m := _VXID_RE.match(line))]
            inserts = [m for m in matches if "INSERT INTO" in m[3]]
            syncs = {(m[1], m[2]) for m in inserts}
            round_trips = len(syncs) / len(inserts)
            print(f"round trips per autocommit statement: {round_trips:.2f} "
                  f"({len(inserts)} INSERTs in {len(syncs)} implicit transactions)")  # fmt: skip

            failures = {}
            for label, mode, route in (CONFIGURATIONS[0], CONFIGURATIONS[2]):
                configure(mode, routes[route])
                done, failed, seconds = run(BRANCHES, 1)
                failures[route] = failed
                print(f"8 threads x 40 branches, {label:18}: {done} done, {failed} failed")
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    targets = [
        (f"round trips per autocommit statement {round_trips:.2f} (1.00)", round_trips == 1),
        (f"pooled {pooled_ratio:.2f}x session direct (>= 0.90)", pooled_ratio >= 0.90),
        (f"8 x 40 direct fails ({failures['direct']}), pooled does not ({failures['pooled']})",
         failures["direct"] > 0 and failures["pooled"] == 0),
    ]  # fmt: skip
    return report_targets(targets)


if __name__ == "__main__":
    sys.exit(main())
