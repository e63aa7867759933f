"""``BranchDatabases``: the ``DATABASES`` mapping that serves branch aliases.

Django's connection hygiene (``close_old_connections()``, ``close_all()``,
the test framework) walks the aliases it can *iterate*. This mapping answers
``schema_<name>`` for any valid branch name while iterating only the static
aliases, so Django keeps managing those and :mod:`branching_ops.tracking`
manages the branches.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.core.checks import Tags
from django.core.checks import register
from django.utils.connection import ConnectionDoesNotExist

from branching_ops import tracking
from branching_ops.checks import check_installed
from branching_ops.conf import conf
from branching_ops.names import ALIAS_PREFIX
from branching_ops.names import branch_application_name
from branching_ops.names import check_branch_name
from branching_ops.search_path import BranchSearchPath

__all__ = [
    "BranchDatabases",
    "build_branch_settings",
]

# Django's PostgreSQL backend plus the search_path hooks (branching_ops.backend).
BRANCH_ENGINE = "branching_ops.backend"

# E031 says "branching_ops" is missing from INSTALLED_APPS, when its ready()
# never runs: a settings module that builds a BranchDatabases imports this.
register(check_installed, Tags.compatibility)


def alias_branch_name(alias: str) -> str:
    """The branch name of ``schema_<name>``; ``ConnectionDoesNotExist`` saying why if invalid."""
    return check_branch_name(
        alias.removeprefix(ALIAS_PREFIX),
        lambda error: ConnectionDoesNotExist(f"The connection '{alias}' doesn't exist: {error}"),
    )


class BranchDatabases(dict[str, dict[str, Any]]):
    """``DATABASES`` that also answers ``schema_<name>`` for every valid name.

    Iteration, ``len()`` and ``keys()`` see only the static aliases given to
    the constructor. ``alias in databases`` is true for every alias with the
    ``schema_`` prefix so that an invalid name reaches :meth:`__getitem__`
    and fails there with a message that says why.
    """

    branching_ops_serves_branches = True  # read by the system checks (checks.SERVES_BRANCHES)

    def __contains__(self, alias: object) -> bool:
        return super().__contains__(alias) or (
            isinstance(alias, str) and alias.startswith(ALIAS_PREFIX)
        )

    def __getitem__(self, alias: str) -> dict[str, Any]:
        if super().__contains__(alias) or not alias.startswith(ALIAS_PREFIX):
            return super().__getitem__(alias)
        name = alias_branch_name(alias)
        # Django asks for an alias' settings once per thread, when it creates
        # the connection wrapper: that is the moment to start tracking it.
        branch_settings = self.branch_settings(name)
        tracking.track(alias)
        return branch_settings

    def branch_settings(self, name: str) -> dict[str, Any]:
        """Build the settings of branch ``name`` from the configured ``default``.

        Override to change how a branch connects; :func:`build_branch_settings`
        says what the result holds.
        """
        return build_branch_settings(super().__getitem__("default"), name)


def build_branch_settings(default: Mapping[str, Any], name: str) -> dict[str, Any]:
    """The settings of branch ``name``, built from a plain ``default`` settings dict.

    Public for projects that keep their own dynamic ``DATABASES`` mapping
    (netbox-branching's ``DynamicSchemaDict``, through the NetBox adapter):
    their branch connections get the same ``application_name``, name check
    and ``search_path`` delivery as :class:`BranchDatabases`' own.

    The result keeps every key and ``OPTIONS`` entry of ``default`` and adds
    only the branch's ``search_path`` (``name`` then ``SEARCH_PATH_TAIL``, as
    a startup option or, in ``"session"`` and ``"transaction"`` modes, for the
    backend to set),
    an ``application_name`` that names the branch, and the ``ENGINE`` that
    delivers and checks the ``search_path``; a ``pool`` option gets
    ``BRANCHING_OPS["BRANCH_POOL_OPTIONS"]`` over it. ``ValueError`` for an
    invalid ``name``: nothing unchecked reaches libpq options.
    """
    check_branch_name(name)
    options = dict(default.get("OPTIONS", {}))
    search_path = ",".join([name, *conf.SEARCH_PATH_TAIL])
    branch_search_path = BranchSearchPath(
        search_path,
        set_after_connecting=conf.SEARCH_PATH == "session",
        verify=conf.VERIFY_SEARCH_PATH,
        per_transaction=conf.SEARCH_PATH == "transaction",
    )
    if branch_search_path.at_startup:
        options["options"] = " ".join(
            part for part in (options.get("options"), f"-c search_path={search_path}") if part
        )
    options["application_name"] = branch_application_name(name, options.get("application_name"))
    if pool := options.get("pool"):
        # Django keeps a pool per alias: branch pools get their own, small options.
        options["pool"] = conf.branch_pool(pool)
    # Read by the branch backend, which delivers and checks the path.
    options.update(branch_search_path.options())
    return {
        **default,
        "ENGINE": BRANCH_ENGINE,
        "OPTIONS": options,
        "TEST": dict(default.get("TEST", {})),
    }
