"""``/metrics`` of the test project: what django-prometheus's view does, and no more.

In multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``) the figures of every
process come from the shared directory; otherwise from this process's
default registry.
"""

from __future__ import annotations

import os

from django.http import HttpRequest
from django.http import HttpResponse
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client import REGISTRY
from prometheus_client import CollectorRegistry
from prometheus_client import generate_latest
from prometheus_client import multiprocess


def metrics(request: HttpRequest) -> HttpResponse:
    registry = REGISTRY
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
