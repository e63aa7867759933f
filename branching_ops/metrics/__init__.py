"""Prometheus metrics of branch connections, for the people on call.

Switched on by adding ``"branching_ops.metrics"`` to ``INSTALLED_APPS``; needs
the ``metrics`` extra (``prometheus-client``). Without it nothing of this
package imports ``prometheus_client`` and the signals it listens to have no
receiver. See ``docs/metrics.md``.
"""
