"""The command line of ``branching-ops-demo`` (``python -m branching_ops.demo``)."""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

from branching_ops.demo import report
from branching_ops.demo.harness import MONITOR_CONNECTIONS
from branching_ops.demo.harness import DemoParams
from branching_ops.demo.harness import usable_slots
from branching_ops.demo.run import run_demo
from branching_ops.demo.scenarios import SCENARIOS
from branching_ops.testing.postgres import SUPERUSER_RESERVED_CONNECTIONS
from branching_ops.testing.postgres import find_bindir

PROG = "branching-ops-demo"
DEFAULT_PLOT = "branching-ops-demo.png"
PLOT_FORMATS = (".png", ".svg", ".pdf")
# A closed connection's slot is free only once its backend has exited, a few
# ms after the close: a thread that closes one and connects at once (every
# mode at CONN_MAX_AGE=0, the cap, a command's checkpoint) can hold two.
# Measured: 4 threads on 4 usable slots failed 2 of 200 requests in
# branching_ops mode, on 8 none of 600.
SLOTS_PER_THREAD = 2
# Room for the worker and the command loop (one thread each) beside the
# superusers' slots and the monitor, at least; at most what a throw-away
# server on a small machine starts with.
MIN_MAX_CONNECTIONS = SUPERUSER_RESERVED_CONNECTIONS + MONITOR_CONNECTIONS + SLOTS_PER_THREAD
MAX_MAX_CONNECTIONS = 10_000


def at_least(minimum: int, maximum: int | None = None) -> Callable[[str], int]:
    """An argparse type: an integer from ``minimum`` to ``maximum``."""

    def number_in_range(value: str) -> int:
        number = int(value)
        if number < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, not {number}")
        if maximum is not None and number > maximum:
            raise argparse.ArgumentTypeError(f"must be at most {maximum}, not {number}")
        return number

    number_in_range.__name__ = "integer"  # argparse's "invalid integer value: 'x'"
    return number_in_range


positive = at_least(1)


def scenario_names(value: str) -> tuple[str, ...]:
    """``http,worker`` -> the scenarios named, in the demo's order."""
    names = {name.strip() for name in value.split(",") if name.strip()}
    if not names:
        raise argparse.ArgumentTypeError("name at least one scenario")
    if unknown := sorted(names - set(SCENARIOS)):
        raise argparse.ArgumentTypeError(
            f"unknown scenario {', '.join(map(repr, unknown))} "
            f"(choose from {', '.join(SCENARIOS)})"
        )
    return tuple(name for name in SCENARIOS if name in names)


def plot_path(value: str) -> Path:
    """Where the plot goes, checked before the demo runs rather than after.

    A directory gets the default file name inside it.
    """
    path = Path(value)
    if path.is_dir():
        path /= DEFAULT_PLOT
    if path.suffix.lower() not in PLOT_FORMATS:
        raise argparse.ArgumentTypeError(
            f"{value!r}: the plot's name must end in "
            f"{', '.join(PLOT_FORMATS[:-1])} or {PLOT_FORMATS[-1]}"
        )
    directory = path.parent
    if not directory.is_dir():
        raise argparse.ArgumentTypeError(f"{value!r}: directory {str(directory)!r} does not exist")
    writable = path if path.exists() else directory
    if not os.access(writable, os.W_OK):
        raise argparse.ArgumentTypeError(f"{value!r}: {str(writable)!r} is not writable")
    return path


def parser(defaults: DemoParams | None = None, prog: str = PROG) -> argparse.ArgumentParser:
    """The demo's flags, with ``defaults`` (the soak benchmark passes larger ones)."""
    defaults = defaults or DemoParams()
    parser = argparse.ArgumentParser(
        prog=prog,
        description=(
            "Run each scenario in three modes against a throw-away PostgreSQL: plain "
            "Django, the upstream fix (netbox-branching 1.2.2: request signals, a "
            "context-local tracker that never forgets), and branching_ops."
        ),
    )
    add = parser.add_argument
    add("--only", type=scenario_names, default=defaults.scenarios, metavar="SCENARIOS",
        help=f"comma-separated scenarios to run, of {', '.join(SCENARIOS)} "
             "(default: all)")  # fmt: skip
    add("--max-connections", type=at_least(MIN_MAX_CONNECTIONS, MAX_MAX_CONNECTIONS),
        default=defaults.max_connections,
        help=f"the server's max_connections, {MIN_MAX_CONNECTIONS} to {MAX_MAX_CONNECTIONS} "
             f"({SUPERUSER_RESERVED_CONNECTIONS} are reserved for superusers, "
             f"{MONITOR_CONNECTIONS} is the demo's monitor; default: %(default)s)")  # fmt: skip
    add("--branches", type=positive, default=defaults.branches,
        help="branches every scenario works on (default: %(default)s)")  # fmt: skip
    add("--threads", type=positive, default=defaults.threads,
        help="HTTP server and client threads (default: %(default)s)")  # fmt: skip
    add("--requests", type=positive, default=defaults.requests,
        help="requests per mode in each HTTP scenario (default: %(default)s)")  # fmt: skip
    add("--conn-max-age", type=positive, default=defaults.conn_max_age,
        help="CONN_MAX_AGE of the persistent scenario (default: %(default)s)")  # fmt: skip
    add("--jobs", type=positive, default=defaults.jobs,
        help="jobs per mode in the worker scenario (default: %(default)s)")  # fmt: skip
    add("--runs", type=positive, default=defaults.runs,
        help="call_command() runs per mode in the command scenario "
             "(default: %(default)s)")  # fmt: skip
    add("--out", type=plot_path, default=DEFAULT_PLOT,
        help="where to write the plot, .png, .svg or .pdf; a directory gets "
             f"{DEFAULT_PLOT} inside it (default: %(default)s)")  # fmt: skip
    add("--json", action="store_true",
        help="print the results as JSON on stdout instead of a table")  # fmt: skip
    return parser


def parse(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Parse ``argv``; exit 2 (argparse's error) if the server could not serve the scenarios."""
    args = parser.parse_args(argv)
    if problem := unservable(params_from(args)):
        parser.error(problem)
    return args


def unservable(params: DemoParams) -> str | None:
    """Why no mode could serve the chosen sizes, or ``None``.

    The HTTP scenarios' server threads each need a connection at once, in any
    mode: with too few slots even branching_ops would fail requests, for want
    of slots rather than from a leak. The worker and the command loop are one
    thread each, which ``MIN_MAX_CONNECTIONS`` leaves room for.
    """
    usable = usable_slots(params.max_connections)
    needed = SLOTS_PER_THREAD * params.threads
    threaded = [name for name in params.scenarios if SCENARIOS[name].server_threads]
    if not threaded or needed <= usable:
        return None
    return (
        f"--threads {params.threads} needs up to {needed} connections at once for the "
        f"{' and '.join(threaded)} scenario{'s' * (len(threaded) > 1)} "
        f"({SLOTS_PER_THREAD} per server thread: a closed connection's slot is free only "
        f"once its backend has exited), and --max-connections {params.max_connections} "
        f"leaves {usable} ({SUPERUSER_RESERVED_CONNECTIONS} are reserved for superusers, "
        f"{MONITOR_CONNECTIONS} is the demo's monitor): use --max-connections "
        f"{params.max_connections + needed - usable} or more, or --threads "
        f"{max(usable // SLOTS_PER_THREAD, 1)} or fewer"
    )


def params_from(args: argparse.Namespace) -> DemoParams:
    return DemoParams(
        scenarios=args.only,
        max_connections=args.max_connections,
        branches=args.branches,
        threads=args.threads,
        requests=args.requests,
        conn_max_age=args.conn_max_age,
        jobs=args.jobs,
        runs=args.runs,
    )


def missing_dependencies(params: DemoParams) -> list[str]:
    """The ``demo`` extra's packages that are not installed."""
    names = ["matplotlib", "waitress"]
    if any(SCENARIOS[name].needs_redis for name in params.scenarios):
        names.append("rq")
    return [name for name in names if importlib.util.find_spec(name) is None]


def missing_servers(params: DemoParams) -> str | None:
    """Why PostgreSQL or Redis cannot be started, or ``None``."""
    try:
        find_bindir()
        if any(SCENARIOS[name].needs_redis for name in params.scenarios):
            from branching_ops.testing.redis import find_redis_server

            find_redis_server()
    except RuntimeError as exc:
        return str(exc)
    return None


def main(argv: list[str] | None = None, prog: str = PROG) -> int:
    args = parse(parser(prog=prog), argv)
    params = params_from(args)
    if missing := missing_dependencies(params):
        print(
            f"The demo needs {' and '.join(missing)}: "
            'python -m pip install "django-branching-ops[demo]"',
            file=sys.stderr,
        )
        return 2
    if problem := missing_servers(params):
        print(problem, file=sys.stderr)
        return 2
    try:
        results = run_demo(params, report.ProgressBars())
    except KeyboardInterrupt:
        print("\nInterrupted; the servers and their files are gone.", file=sys.stderr)
        return 130
    report.plot(results, params, args.out)
    if args.json:
        document = {
            "params": dataclasses.asdict(params),
            "plot": str(args.out),
            "results": [dataclasses.asdict(result) for result in results],
        }
        print(json.dumps(document, indent=2))
    else:
        print()
        print(report.table(results))
        print(f"\nPlot: {args.out}")
    return 0
