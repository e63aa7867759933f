"""The database backend of branch aliases: Django's PostgreSQL backend, plus the branch's
``search_path`` delivered and checked (see :mod:`branching_ops.search_path`)."""
