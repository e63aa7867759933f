"""The demo's soak at scale, checked against its targets.

The engine of ``python -m branching_ops.demo`` (same flags, larger defaults:
8 threads x 500 branches x 20,000 requests, ``max_connections=40``). Targets
for branching_ops: 0 failed requests, peak branch backends <= threads (with
``CONN_MAX_AGE=0``), 0 at the end; plain Django must exhaust the server.

    python -m benchmarks.soak [--threads 8] [--branches 500] [--requests 20000] [--out soak.png]
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from branching_ops.demo import cli
from branching_ops.demo import report
from branching_ops.demo.soak import ModeResult
from branching_ops.demo.soak import SoakParams
from branching_ops.demo.soak import run_soak

SCALE = SoakParams(threads=8, branches=500, requests=20_000, max_connections=40)


def targets(results: dict[str, ModeResult], params: SoakParams) -> list[tuple[str, int, bool]]:
    fixed, plain = results["branching_ops"], results["plain"]
    checks = [("branching_ops: 0 failed requests", fixed.failed, fixed.failed == 0)]
    if params.conn_max_age == 0:
        peak = f"branching_ops: peak branch backends <= {params.threads} threads"
        checks.append((peak, fixed.peak_backends, fixed.peak_backends <= params.threads))
    checks += [
        ("branching_ops: 0 branch backends at the end", fixed.final_backends,
         fixed.final_backends == 0),
        ("plain Django exhausts the server (too-many-clients errors)", plain.too_many_clients,
         plain.too_many_clients > 0),
    ]  # fmt: skip
    return checks


def main() -> int:
    parser = cli.parser(SCALE)
    parser.prog = "python -m benchmarks.soak"
    parser.set_defaults(out=Path("soak.png"))
    args = parser.parse_args()
    params = cli.params_from(args)
    results = run_soak(params, report.ProgressBars())
    report.plot(results, params, args.out)
    if args.json:
        print(json.dumps([dataclasses.asdict(r) for r in results], indent=2))
    print(report.table(results))
    print(
        f"\n{params.threads} threads x {params.branches} branches x {params.requests} "
        f"requests, max_connections={params.max_connections}, "
        f"CONN_MAX_AGE={params.conn_max_age}; plot: {args.out}"
    )
    checks = targets({r.mode: r for r in results}, params)
    for text, got, passed in checks:
        print(f"  {'PASS' if passed else 'MISS'}  {text}: {got}")
    return 0 if all(passed for _, _, passed in checks) else 1


if __name__ == "__main__":
    raise SystemExit(main())
