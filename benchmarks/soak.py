"""The demo's scenarios at scale, checked against their targets.

The engine of ``python -m branching_ops.demo`` (same flags, larger defaults:
500 branches, 8 threads, 10,000 requests per HTTP scenario, 2,000 jobs, 20
``call_command()`` runs; ``max_connections=40``). Targets: branching_ops
fails nothing and leaves nothing open (with its cap, at most one connection
per thread in the persistent scenario); with ``CONN_MAX_AGE=0`` it never
holds more branch backends than there are threads; plain Django fails in
every scenario; the upstream fix fails wherever request signals do not reach
(persistent connections, the worker, the command loop).

    python -m benchmarks.soak [--only http,worker] [--branches 500] [--threads 8] ...
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from branching_ops.demo import cli
from branching_ops.demo import report
from branching_ops.demo.harness import DemoParams
from branching_ops.demo.harness import RunResult
from branching_ops.demo.run import run_demo
from branching_ops.demo.scenarios import CAP

SCALE = DemoParams(branches=500, threads=8, requests=10_000, jobs=2_000, runs=20)


def targets(results: list[RunResult], params: DemoParams) -> list[tuple[str, int, bool]]:
    """(what, measured, met) for each target, per scenario."""
    checks = []
    by_run = {(r.scenario, r.mode): r for r in results}
    for scenario in params.scenarios:
        ours, plain = by_run[scenario, "branching_ops"], by_run[scenario, "plain"]
        upstream = by_run[scenario, "upstream"]
        kept = params.threads * CAP if scenario == "persistent" else 0
        checks += [
            (f"{scenario}: branching_ops fails nothing", ours.failed, ours.failed == 0),
            (f"{scenario}: branching_ops leaves <= {kept} open", ours.final_backends,
             ours.final_backends <= kept),
            (f"{scenario}: plain Django fails", plain.failed, plain.failed > 0),
        ]  # fmt: skip
        if scenario == "http":
            checks.append(
                (f"http: branching_ops peak <= {params.threads} threads", ours.peak_backends,
                 ours.peak_backends <= params.threads)
            )  # fmt: skip
        else:
            checks.append(
                (f"{scenario}: the upstream fix fails", upstream.failed, upstream.failed > 0)
            )
    return checks


def main() -> int:
    parser = cli.parser(SCALE, prog="python -m benchmarks.soak")
    parser.set_defaults(out=Path("soak.png"))
    args = cli.parse(parser, None)
    params = cli.params_from(args)
    results = run_demo(params, report.ProgressBars())
    report.plot(results, params, args.out)
    if args.json:
        print(json.dumps([dataclasses.asdict(r) for r in results], indent=2))
    print(report.table(results))
    print(f"\nmax_connections={params.max_connections}; plot: {args.out}")
    checks = targets(results, params)
    for text, got, passed in checks:
        print(f"  {'PASS' if passed else 'MISS'}  {text}: {got}")
    return 0 if all(passed for _, _, passed in checks) else 1


if __name__ == "__main__":
    raise SystemExit(main())
