"""Run the demo: start the servers, then every scenario in every mode, in turn."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from psycopg import sql

from branching_ops.demo.harness import DBNAME
from branching_ops.demo.harness import Backends
from branching_ops.demo.harness import Child
from branching_ops.demo.harness import DemoParams
from branching_ops.demo.harness import Progress
from branching_ops.demo.harness import Run
from branching_ops.demo.harness import RunResult
from branching_ops.demo.harness import child_process
from branching_ops.demo.project import APP_ROLE
from branching_ops.demo.project import MODES
from branching_ops.demo.project import Mode
from branching_ops.demo.scenarios import SCENARIOS
from branching_ops.demo.scenarios import Scenario
from branching_ops.testing.postgres import PostgresServer
from branching_ops.testing.postgres import running_postgres
from branching_ops.testing.processes import wait_until


def run_demo(params: DemoParams, progress: Progress | None = None) -> list[RunResult]:
    """Start PostgreSQL (and Redis if needed), run it all, stop them; clean up on any exit."""
    scenarios = [SCENARIOS[name] for name in params.scenarios]
    results = []
    with running_postgres(max_connections=params.max_connections) as server:
        _create_database(server, params.branches)
        with _redis_url(any(s.needs_redis for s in scenarios)) as redis_url:
            for scenario in scenarios:
                results += _run_scenario(scenario, server, redis_url, params, progress)
    return results


def _create_database(server: PostgresServer, branches: int) -> None:
    """The demo's role and database, and a schema for every branch it uses."""
    with server.connect() as admin:
        admin.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(APP_ROLE)))
        admin.execute(
            sql.SQL("CREATE DATABASE {} OWNER {}").format(
                sql.Identifier(DBNAME), sql.Identifier(APP_ROLE)
            )
        )
    server.create_schemas(DBNAME, [f"b{number}" for number in range(branches)], owner=APP_ROLE)


@contextlib.contextmanager
def _redis_url(needed: bool) -> Iterator[str | None]:
    if not needed:
        yield None
        return
    from branching_ops.testing.redis import running_redis

    with running_redis() as redis:
        yield redis.url


def _run_scenario(
    scenario: Scenario,
    server: PostgresServer,
    redis_url: str | None,
    params: DemoParams,
    progress: Progress | None,
) -> list[RunResult]:
    """Run ``scenario`` in each mode, one after the other.

    The three child processes start together, so that the next one is ready
    when a run ends; each is stopped as soon as its run is over, and its
    backends must be gone before the next run starts.
    """
    results = []
    with contextlib.ExitStack() as stack:
        children = [
            stack.enter_context(
                child_process(
                    scenario.module,
                    [
                        *("--mode", mode.name, "--pg-host", server.host),
                        *("--pg-port", str(server.port), "--dbname", DBNAME),
                        *scenario.flags(params, redis_url),
                    ],
                )
            )
            for mode in MODES.values()
        ]
        for mode, child in zip(MODES.values(), children, strict=True):
            results.append(_run(scenario, mode, child, server, redis_url, params, progress))
    return results


def _run(
    scenario: Scenario,
    mode: Mode,
    child: Child,
    server: PostgresServer,
    redis_url: str | None,
    params: DemoParams,
    progress: Progress | None,
) -> RunResult:
    result = RunResult(scenario.name, mode.name, mode.label, scenario.unit, scenario.total(params))
    ready = child.wait_for_ready()
    backends = Backends(server)
    try:
        scenario.drive(Run(child, ready, redis_url, params, mode, result, backends, progress))
        child.stop()
        result.timeline = backends.timeline
        result.peak_backends = max((n for _, n in result.timeline), default=0)
        wait_until(lambda: backends.count() == 0, timeout=30, what="the backends to exit")
    finally:
        backends.stop()
        backends.close()
    return result
