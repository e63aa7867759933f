"""The one report of a fan-out: each branch's result, as a table, as JSON, from RQ results.

Local workers send :class:`BranchResult` objects through their pipes; RQ
jobs return them as plain data (:meth:`BranchResult.to_json`), rebuilt with
:meth:`BranchResult.from_json`; both end in the same :class:`Report`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict
from dataclasses import dataclass
from dataclasses import field
from typing import Any
from typing import Literal

from branching_ops.management.output import format_table

Status = Literal["ok", "failed", "interrupted", "not-started", "skipped", "queued"]
"""``ok``; ``failed`` (raised, or its worker died); ``interrupted`` (Ctrl-C while it ran);
``not-started`` (after ``--fail-fast``'s first failure, or Ctrl-C); ``skipped``
(nothing to do: ``branch_migrate``'s up-to-date branches); ``queued`` (``--no-wait``)."""

STATUSES: tuple[Status, ...] = (
    "ok",
    "failed",
    "interrupted",
    "not-started",
    "skipped",
    "queued",
)

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for Ctrl-C


@dataclass(frozen=True)
class BranchResult:
    """What happened on one branch. ``branch`` is the name the operator typed."""

    branch: str
    schema: str
    status: Status
    seconds: float | None = None
    error: str | None = None  # one line: "CommandError: ...", "RuntimeError: ..."
    log: str | None = None  # the path of the branch's log file
    job_id: str | None = None  # --via-rq

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BranchResult:
        fields: dict[str, Any] = {key: data.get(key) for key in cls.__dataclass_fields__}
        return cls(**fields)


@dataclass
class Report:
    """Every selected branch's result, in the selection's order."""

    results: list[BranchResult]
    log_dir: str | None = None
    interrupted: bool = False
    executor: str = "local"  # "local" or "rq:<queue>"
    notes: list[str] = field(default_factory=list)  # extra lines for people

    def count(self, status: Status) -> int:
        return sum(result.status == status for result in self.results)

    @property
    def failed(self) -> list[BranchResult]:
        return [result for result in self.results if result.status == "failed"]

    @property
    def exit_status(self) -> int:
        if self.interrupted:
            return EXIT_INTERRUPTED
        return EXIT_FAILED if self.failed else EXIT_OK

    def table(self) -> str:
        """For people: one line per branch, then the failures and a summary."""
        with_schema = any(result.branch != result.schema for result in self.results)
        with_job = any(result.job_id for result in self.results)
        headers = [
            "BRANCH",
            *(["SCHEMA"] if with_schema else []),
            "RESULT",
            "SECONDS",
            *(["JOB"] if with_job else []),
        ]
        rows = [
            [
                result.branch,
                *([result.schema] if with_schema else []),
                result.status,
                "-" if result.seconds is None else f"{result.seconds:.2f}",
                *([result.job_id or "-"] if with_job else []),
            ]
            for result in self.results
        ]
        lines = [format_table(headers, rows)]
        for result in self.failed:
            lines.append(f"{result.branch}: {result.error}")
        lines.append(self.summary())
        lines.extend(self.notes)
        return "\n".join(lines)

    def summary(self) -> str:
        counts = ", ".join(
            f"{self.count(status)} {status}" for status in STATUSES if self.count(status)
        )
        line = f"{len(self.results)} branch(es): {counts or 'none'}."
        if self.interrupted:
            line += " Interrupted."
        if self.log_dir:
            line += f" Logs: {self.log_dir}"
        return line

    def to_json(self) -> dict[str, Any]:
        """For machines: ``--json``."""
        return {
            "executor": self.executor,
            "interrupted": self.interrupted,
            "exit_status": self.exit_status,
            "log_dir": self.log_dir,
            "counts": {status: self.count(status) for status in STATUSES},
            "branches": [result.to_json() for result in self.results],
        }

    def json(self) -> str:
        return json.dumps(self.to_json(), indent=2)


def not_started(branches: Sequence[Any], status: Status = "not-started") -> list[BranchResult]:
    """Results for branches nothing ran on (``Branch`` objects of :mod:`.selection`)."""
    return [BranchResult(branch.name, branch.schema, status) for branch in branches]
