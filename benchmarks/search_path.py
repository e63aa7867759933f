"""What the search_path modes and connect-time verification cost per new connection.

    python -m benchmarks.search_path [--connections 400]

Starts a throw-away PostgreSQL (and, if ``pgbouncer`` is installed, a
PgBouncer in session pooling in front of it), then opens and closes branch
connections, one at a time, in six configurations interleaved round by
round, so drift hits all alike. Prints the median time to open a branch
connection and its ratio to the baseline measured in the same run:
``startup`` mode without verification (what the package did first).

Verification checks the ``search_path`` setting and that the branch's schema
exists, in one statement. "setting only" runs that statement without the
existence part (the package before the check): the difference between the
two is what the existence check costs, and shows it adds no round trip.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from collections.abc import Iterator
from typing import Any

import django
from django.conf import settings

from branching_ops import search_path
from branching_ops.databases import BranchDatabases
from branching_ops.testing.pgbouncer import find_pgbouncer
from branching_ops.testing.pgbouncer import pgbouncer_version
from branching_ops.testing.pgbouncer import running_pgbouncer
from branching_ops.testing.postgres import running_postgres

WARM_UP = 50  # rounds, one per alias: Django checks the server version once per alias
BRANCHES = [f"bench_{i}" for i in range(WARM_UP)]
STARTUP = {"SEARCH_PATH": "startup", "VERIFY_SEARCH_PATH": True}
SESSION = {"SEARCH_PATH": "session", "VERIFY_SEARCH_PATH": True}
# (name, BRANCHING_OPS, whether the check leaves out the schema's existence)
CONFIGURATIONS: list[tuple[str, dict[str, Any], bool]] = [
    ("startup, no verification", {**STARTUP, "VERIFY_SEARCH_PATH": False}, False),
    ("startup + verification, setting only", STARTUP, True),
    ("startup + verification", STARTUP, False),
    ("session, no verification", {**SESSION, "VERIFY_SEARCH_PATH": False}, False),
    ("session + verification, setting only", SESSION, True),
    ("session + verification", SESSION, False),
]


@contextlib.contextmanager
def setting_only() -> Iterator[None]:
    """The verification statement without its existence part: the same round trip.

    The branch comes back as the one schema searched, so the check passes.
    """
    saved = search_path.CHECK_SQL, search_path.SET_AND_CHECK_SQL
    search_path.CHECK_SQL = "SELECT pg_catalog.current_setting('search_path'), ARRAY[%s], true"
    search_path.SET_AND_CHECK_SQL = (
        "SELECT path, ARRAY[branch], true FROM "
        "(SELECT %s AS branch, pg_catalog.set_config('search_path', %s, false) AS path) AS s"
    )
    try:
        yield
    finally:
        search_path.CHECK_SQL, search_path.SET_AND_CHECK_SQL = saved


def open_close(alias: str) -> tuple[float, float]:
    """Seconds to open ``alias``'s connection, and to open it and run a first query.

    The first query on a new backend loads catalog caches: the package's check
    pays that when it runs first, and the caller's query then pays less.
    """
    from django.db import connections

    from branching_ops.tracking import close_branch_connections

    connection = connections[alias]
    start = time.perf_counter()
    connection.ensure_connection()
    opened = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_class")
        cursor.fetchone()
    queried = time.perf_counter()
    close_branch_connections()
    return opened - start, queried - start


def measure(
    host: str, port: int, rounds: int, configurations: list[tuple[str, dict[str, Any], bool]]
) -> dict[str, list[float]]:
    """Per configuration: open times, and open + first query times."""
    from django.test import override_settings

    settings.DATABASES["default"].update(HOST=host, PORT=str(port))
    timings: dict[str, list[float]] = {
        f"{name}{what}": [] for name, _, _ in configurations for what in ("", " + first query")
    }
    for round_number in range(rounds + WARM_UP):
        for name, branching_ops, without_existence in configurations:
            with (
                override_settings(BRANCHING_OPS=branching_ops),
                setting_only() if without_existence else contextlib.nullcontext(),
            ):
                opened, queried = open_close(f"schema_{BRANCHES[round_number % WARM_UP]}")
            if round_number >= WARM_UP:  # every alias has run Django's version check
                timings[name].append(opened)
                timings[f"{name} + first query"].append(queried)
    return timings


def report(title: str, timings: dict[str, list[float]]) -> None:
    baseline_name = next(iter(timings))
    n = len(timings[baseline_name])
    print(f"\n{title}: median per new branch connection, n={n} each")
    print(f"  (ratios against {baseline_name!r} and its first query, same run)")
    for name, values in sorted(timings.items(), key=lambda item: "first query" in item[0]):
        baseline_key = baseline_name + (" + first query" if "first query" in name else "")
        baseline = statistics.median(timings[baseline_key])
        median = statistics.median(values)
        print(
            f"  {name:<40} {median * 1000:7.3f} ms  "
            f"x{median / baseline:5.2f}  ({(median - baseline) * 1e6:+7.1f} µs)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--connections", type=int, default=400, help="per configuration")
    args = parser.parse_args()
    settings.configure(
        DATABASES=BranchDatabases(
            {
                "default": {
                    "ENGINE": "django.db.backends.postgresql",
                    "NAME": "postgres",
                    "USER": "postgres",
                }
            }
        ),
        INSTALLED_APPS=["branching_ops"],
        USE_TZ=True,
    )
    django.setup()
    with running_postgres(max_connections=20) as postgres:
        postgres.create_schemas("postgres", BRANCHES, owner="postgres")
        timings = measure(postgres.host, postgres.port, args.connections, CONFIGURATIONS)
        report("PostgreSQL direct", timings)
        binary = find_pgbouncer()
        if binary is None:
            print("\npgbouncer is not installed: no figures through PgBouncer.")
            return
        # PgBouncer (before 1.20, or without track_extra_parameters) refuses
        # the startup option: only session mode connects through it.
        with running_pgbouncer(postgres.host, postgres.port, users=["postgres"]) as bouncer:
            session_only = [c for c in CONFIGURATIONS if c[1]["SEARCH_PATH"] == "session"]
            timings = measure(bouncer.host, bouncer.port, args.connections, session_only)
            major, minor = pgbouncer_version(binary)
            report(f"Through PgBouncer {major}.{minor}, session pooling", timings)


if __name__ == "__main__":
    main()
