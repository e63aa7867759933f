"""Keep per-branch PostgreSQL connections in Django from leaking."""

from __future__ import annotations

__version__ = "0.1.0"
