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

from django.utils.connection import ConnectionDoesNotExist

# Registers the system checks even when "branching_ops" is missing from
# INSTALLED_APPS (its ready() never runs then): a settings module that builds
# a BranchDatabases has imported this module, so the checks can say so.
from branching_ops import checks  # noqa: F401
from branching_ops import tracking
from branching_ops.conf import conf
from branching_ops.names import ALIAS_PREFIX
from branching_ops.names import branch_application_name
from branching_ops.names import branch_name_error
from branching_ops.search_path import BranchSearchPath

# Django's PostgreSQL backend plus the search_path hooks (branching_ops.backend).
BRANCH_ENGINE = "branching_ops.backend"


class BranchDatabases(dict[str, dict[str, Any]]):
    """``DATABASES`` that also answers ``schema_<name>`` for every valid name.

    Iteration, ``len()`` and ``keys()`` see only the static aliases given to
    the constructor. ``alias in databases`` is true for every alias with the
    ``schema_`` prefix so that an invalid name reaches :meth:`__getitem__`
    and fails there with a message that says why.
    """

    def __contains__(self, alias: object) -> bool:
        return super().__contains__(alias) or (
            isinstance(alias, str) and alias.startswith(ALIAS_PREFIX)
        )

    def __getitem__(self, alias: str) -> dict[str, Any]:
        if super().__contains__(alias) or not alias.startswith(ALIAS_PREFIX):
            return super().__getitem__(alias)
        name = alias.removeprefix(ALIAS_PREFIX)
        error = branch_name_error(name)
        if error is not None:
            raise ConnectionDoesNotExist(f"The connection '{alias}' doesn't exist: {error}")
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
    a startup option or, in ``"session"`` mode, for the backend to ``SET``),
    an ``application_name`` that names the branch, and the ``ENGINE`` that
    delivers and checks the ``search_path``; a ``pool`` option gets
    ``BRANCHING_OPS["BRANCH_POOL_OPTIONS"]`` over it. ``ValueError`` for an
    invalid ``name``: nothing unchecked reaches libpq options.
    """
    error = branch_name_error(name)
    if error is not None:
        raise ValueError(error)
    options = dict(default.get("OPTIONS", {}))
    search_path = ",".join([name, *conf.SEARCH_PATH_TAIL])
    at_startup = conf.SEARCH_PATH != "session"
    if at_startup:
        options["options"] = " ".join(
            part for part in (options.get("options"), f"-c search_path={search_path}") if part
        )
    options["application_name"] = branch_application_name(name, options.get("application_name"))
    if pool := options.get("pool"):
        # Django keeps a pool per alias: branch pools get their own, small options.
        options["pool"] = {
            **(pool if isinstance(pool, dict) else {}),
            **conf.BRANCH_POOL_OPTIONS,
        }
    # Read by the branch backend, which delivers and checks the path.
    options.update(
        BranchSearchPath(search_path, not at_startup, conf.VERIFY_SEARCH_PATH).options()
    )
    return {
        **default,
        "ENGINE": BRANCH_ENGINE,
        "OPTIONS": options,
        "TEST": dict(default.get("TEST", {})),
    }
