"""The demo's Django project, and the three ways it can treat branch connections.

Settings are configured in-process (:func:`configure`), the URLconf is this
module. The mode can be switched at run time (:func:`use_mode`), so the
benchmarks can interleave modes in one process.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import django
from asgiref.local import Local
from django.conf import settings
from django.db import DatabaseError
from django.db import connections
from django.http import HttpRequest
from django.http import HttpResponse
from django.http import JsonResponse
from django.urls import re_path

from branching_ops import tracking
from branching_ops.apps import REQUEST_RECEIVERS
from branching_ops.databases import BranchDatabases
from branching_ops.names import ALIAS_PREFIX
from branching_ops.names import branch_alias
from branching_ops.names import branch_application_name

# The PostgreSQL role the demo's processes connect as: an ordinary one, so
# they get only the slots PostgreSQL leaves to applications.
APP_ROLE = "demo"

# The upstream approach, as netbox-branching 1.2.2 ships it
# (netbox_branching/utilities.py): every branch alias its DATABASES mapping
# ever served is added to a context-local set, never removed, and at each
# request boundary each one gets close_if_unusable_or_obsolete(). Only the
# request signals are connected: nothing runs it in workers or commands.
_upstream_tracker = Local(thread_critical=False)


def _upstream_aliases() -> set[str]:
    try:
        aliases: set[str] = _upstream_tracker.aliases
    except AttributeError:
        aliases = _upstream_tracker.aliases = set()
    return aliases


def _upstream_track(alias: str) -> None:
    _upstream_aliases().add(alias)


def _upstream_close_old(**kwargs: object) -> None:
    for alias in _upstream_aliases():
        connections[alias].close_if_unusable_or_obsolete()


@dataclass(frozen=True)
class Mode:
    """How branch connections are tracked and closed at each entry point.

    ``worker_class`` and ``command_class`` are dotted paths, so that the
    HTTP server process never imports rq.
    """

    name: str
    label: str
    track: Callable[[str], None] | None
    close_old: Callable[..., object] | None
    tracked: Callable[[], int | None]
    worker_class: str
    command_class: str


PLAIN = Mode(
    "plain",
    "plain Django",
    None,
    None,
    lambda: None,
    "rq.SimpleWorker",
    "django.core.management.base.BaseCommand",
)
UPSTREAM = Mode(
    "upstream",
    "upstream fix (netbox-branching 1.2.2)",
    _upstream_track,
    _upstream_close_old,
    lambda: len(_upstream_aliases()),
    "rq.SimpleWorker",
    "django.core.management.base.BaseCommand",
)
BRANCHING_OPS = Mode(
    "branching_ops",
    "branching_ops",
    tracking.track,
    tracking.close_old_branch_connections,
    lambda: len(tracking.tracked_aliases()),
    "branching_ops.workers.BranchSimpleWorker",
    "branching_ops.management.base.BranchCommand",
)
MODES = {mode.name: mode for mode in (PLAIN, UPSTREAM, BRANCHING_OPS)}

_active = BRANCHING_OPS


def use_mode(mode: Mode) -> None:
    """Put ``mode``'s receivers in place of this package's (same ``dispatch_uid``)."""
    global _active
    for signal, dispatch_uid in REQUEST_RECEIVERS:
        signal.disconnect(dispatch_uid=dispatch_uid)
        if mode.close_old is not None:
            signal.connect(mode.close_old, dispatch_uid=dispatch_uid)
    _active = mode


class DemoDatabases(BranchDatabases):
    """``BranchDatabases`` in ``branching_ops`` mode; else a mapping without it.

    In the other modes a branch's settings are what a project without this
    package builds (as netbox-branching's ``DynamicSchemaDict`` does): the
    ``default`` settings, Django's own engine, the ``search_path`` as a startup
    option; plus the ``application_name`` the demo counts backends by.
    """

    def __getitem__(self, alias: str) -> dict[str, Any]:
        if (
            _active is BRANCHING_OPS
            or dict.__contains__(self, alias)
            or not alias.startswith(ALIAS_PREFIX)
        ):
            return super().__getitem__(alias)
        name = alias.removeprefix(ALIAS_PREFIX)
        branch_alias(name)  # ValueError if invalid, before anything else
        default = dict.__getitem__(self, "default")
        options = {
            **default.get("OPTIONS", {}),
            "options": f"-c search_path={name},public",
            "application_name": branch_application_name(name, None),
        }
        if _active.track is not None:
            _active.track(alias)
        return {**default, "OPTIONS": options}


def configure(
    mode: Mode,
    *,
    host: str,
    port: int,
    dbname: str,
    user: str,
    conn_max_age: int | None,
    max_connections_per_thread: int | None = None,
) -> None:
    """Configure Django for the demo and switch to ``mode``."""
    settings.configure(
        DEBUG=False,
        SECRET_KEY="branching-ops-demo",
        ALLOWED_HOSTS=["*"],
        ROOT_URLCONF="branching_ops.demo.project",
        INSTALLED_APPS=["branching_ops"],
        MIDDLEWARE=[],
        USE_TZ=True,
        DATABASES=DemoDatabases(
            {
                "default": {
                    "ENGINE": "django.db.backends.postgresql",
                    "HOST": host,
                    "PORT": str(port),
                    "NAME": dbname,
                    "USER": user,
                    "CONN_MAX_AGE": conn_max_age,
                    "OPTIONS": {"connect_timeout": 10},
                }
            }
        ),
        BRANCHING_OPS={"MAX_CONNECTIONS_PER_THREAD": max_connections_per_thread},
    )
    django.setup()
    use_mode(mode)


def tracked() -> int | None:
    """Branch aliases the active mode tracks on this thread (``None``: nothing tracks)."""
    return _active.tracked()


def work_on_branch(name: str, seconds: float) -> None:
    """A job's or a command's work: a query on branch ``name`` lasting ``seconds``.

    Real work takes a while; so does this (``pg_sleep``), so that the sampler
    sees every connection it holds.
    """
    with connections[branch_alias(name)].cursor() as cursor:
        cursor.execute("SELECT pg_sleep(%s)", [seconds])


# Tracked-set size per server thread, recorded after each request by the server.
TRACKED_BY_THREAD: dict[int, int | None] = {}


def record_tracked() -> None:
    TRACKED_BY_THREAD[threading.get_ident()] = tracked()


def branch(request: HttpRequest, name: str) -> HttpResponse:
    """Run one query on the branch named in the URL; 503 with the error if it fails."""
    try:
        with connections[branch_alias(name)].cursor() as cursor:
            cursor.execute("SELECT 1")
    except DatabaseError as exc:
        return HttpResponse(str(exc), status=503, content_type="text/plain")
    return HttpResponse("ok", content_type="text/plain")


def stats(request: HttpRequest) -> JsonResponse:
    """Aliases tracked over all server threads (``null`` when nothing tracks)."""
    counts = list(TRACKED_BY_THREAD.values())
    total = None if None in counts else sum(c for c in counts if c is not None)
    return JsonResponse({"tracked": total})


def ok(request: HttpRequest) -> HttpResponse:
    return HttpResponse("ok", content_type="text/plain")


urlpatterns = [
    re_path(r"^branch/(?P<name>[a-z_][a-z0-9_]{0,62})/$", branch),
    re_path(r"^stats/$", stats),
    re_path(r"^ok/$", ok),
]
