from __future__ import annotations

from django.apps import AppConfig
from django.core.exceptions import ImproperlyConfigured


class MetricsConfig(AppConfig):
    name = "branching_ops.metrics"
    label = "branching_ops_metrics"
    verbose_name = "Branching ops metrics"

    def ready(self) -> None:
        # Fail at start-up, not silently: under gunicorn no system check runs.
        try:
            from branching_ops.metrics import exporter
        except ModuleNotFoundError as exc:
            if exc.name != "prometheus_client":
                raise
            raise ImproperlyConfigured(
                "'branching_ops.metrics' is in INSTALLED_APPS but prometheus-client is not "
                "installed: pip install 'django-branching-ops[metrics]'."
            ) from exc
        exporter.connect()
