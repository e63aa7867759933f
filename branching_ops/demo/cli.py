"""The command line of ``python -m branching_ops.demo`` (``branching-ops-demo``)."""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import sys
from pathlib import Path

from branching_ops.demo import report
from branching_ops.demo.soak import SoakParams
from branching_ops.demo.soak import run_soak


def parser(defaults: SoakParams | None = None) -> argparse.ArgumentParser:
    """The soak's flags, with ``defaults`` (the benchmark passes larger ones)."""
    defaults = defaults or SoakParams()
    parser = argparse.ArgumentParser(
        prog="python -m branching_ops.demo",
        description=(
            "Run one soak in three modes against a throw-away PostgreSQL: plain Django "
            "(the leak), request signals with aliases never untracked, and branching_ops."
        ),
    )

    def positive(value: str) -> int:
        number = int(value)
        if number < 1:
            raise argparse.ArgumentTypeError(f"must be at least 1, not {number}")
        return number

    def not_negative(value: str) -> int:
        number = int(value)
        if number < 0:
            raise argparse.ArgumentTypeError(f"must not be negative, not {number}")
        return number

    add = parser.add_argument
    add("--threads", type=positive, default=defaults.threads,
        help="server and client threads (default: %(default)s)")  # fmt: skip
    add("--branches", type=positive, default=defaults.branches,
        help="distinct branches the requests go to (default: %(default)s)")  # fmt: skip
    add("--requests", type=positive, default=defaults.requests,
        help="requests per mode (default: %(default)s)")  # fmt: skip
    add("--max-connections", type=positive, default=defaults.max_connections,
        help="the server's max_connections (default: %(default)s)")  # fmt: skip
    add("--conn-max-age", type=not_negative, default=defaults.conn_max_age,
        help="CONN_MAX_AGE of the branch connections (default: %(default)s)")  # fmt: skip
    add("--out", type=Path, default=Path("branching-ops-demo.png"),
        help="where to write the plot (default: %(default)s)")  # fmt: skip
    add("--json", action="store_true",
        help="print the results as JSON on stdout instead of a table")  # fmt: skip
    return parser


def params_from(args: argparse.Namespace) -> SoakParams:
    return SoakParams(
        threads=args.threads,
        branches=args.branches,
        requests=args.requests,
        max_connections=args.max_connections,
        conn_max_age=args.conn_max_age,
    )


def missing_dependencies() -> list[str]:
    """The ``demo`` extra's packages that are not installed."""
    return [name for name in ("matplotlib", "waitress") if importlib.util.find_spec(name) is None]


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if missing := missing_dependencies():
        print(
            f"The demo needs {' and '.join(missing)}: "
            'python -m pip install "django-branching-ops[demo]"',
            file=sys.stderr,
        )
        return 2
    params = params_from(args)
    try:
        results = run_soak(params, report.ProgressBars())
    except KeyboardInterrupt:
        print("\nInterrupted; the server and its files are gone.", file=sys.stderr)
        return 130
    args.out.parent.mkdir(parents=True, exist_ok=True)
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
