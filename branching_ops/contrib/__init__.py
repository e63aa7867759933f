"""Adapters for the projects that use this package; each imports its project only when used."""
