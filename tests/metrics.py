"""Read the metrics as Prometheus would: a ``/metrics`` page, or a multiprocess directory."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

PREFIX = "branching_ops_"


@dataclass(frozen=True)
class Figures:
    """This package's samples, by name and labels."""

    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float]

    @classmethod
    def from_families(cls, families: Iterable[Metric]) -> Figures:
        return cls(
            {
                (sample.name, tuple(sorted(sample.labels.items()))): sample.value
                for family in families
                if family.name.startswith(PREFIX)
                for sample in family.samples
            }
        )

    def value(self, name: str, **labels: str) -> float:
        return self.samples[(PREFIX + name, tuple(sorted(labels.items())))]

    @property
    def open(self) -> int:
        return int(self.value("branch_connections_open"))

    @property
    def tracked(self) -> int:
        return int(self.value("tracked_aliases"))

    @property
    def opened(self) -> int:
        return int(self.value("branch_connections_opened_total"))

    def by_label(self, name: str, label: str) -> dict[str, int]:
        """The samples of counter ``name``, by the value of ``label``."""
        return {
            dict(labels)[label]: int(value)
            for (sample, labels), value in self.samples.items()
            if sample == PREFIX + name
        }

    @property
    def closed(self) -> dict[str, int]:
        """``closed_total`` by reason, the reasons that counted something."""
        by_reason = self.by_label("branch_connections_closed_total", "reason")
        return {reason: count for reason, count in by_reason.items() if count}

    @property
    def errors(self) -> dict[str, int]:
        """``errors_total`` by kind, every kind (0 included)."""
        return self.by_label("branch_connection_errors_total", "kind")


def scrape(port: int) -> Figures:
    """GET ``/metrics`` of the server on ``port``."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as response:
        text = response.read().decode()
    return Figures.from_families(text_string_to_metric_families(text))


def read_multiprocess_dir(path: Path) -> Figures:
    """What a scrape of any process sharing ``PROMETHEUS_MULTIPROC_DIR`` would show."""
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(path))  # type: ignore[no-untyped-call]
    return Figures.from_families(registry.collect())
