"""Helpers for test suites: a throw-away PostgreSQL server and leak checks."""

from __future__ import annotations
