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
from django.core.signals import request_finished
from django.core.signals import request_started
from django.db import DatabaseError
from django.db import connections
from django.http import HttpRequest
from django.http import HttpResponse
from django.http import JsonResponse
from django.urls import re_path

from branching_ops import tracking
from branching_ops.databases import BranchDatabases
from branching_ops.names import ALIAS_PREFIX
from branching_ops.names import branch_alias
from branching_ops.names import branch_application_name

# The approach of the original fix (netbox-branching PR #364), emulated here:
# a context-local set of every branch alias ever opened, closed with
# close_if_unusable_or_obsolete() at each request boundary, never forgotten.
_never_untracked = Local()


def _signals_only_aliases() -> set[str]:
    try:
        aliases: set[str] = _never_untracked.aliases
    except AttributeError:
        aliases = _never_untracked.aliases = set()
    return aliases


def _signals_only_track(alias: str) -> None:
    _signals_only_aliases().add(alias)


def _signals_only_close(**kwargs: object) -> None:
    for alias in _signals_only_aliases():
        connections[alias].close_if_unusable_or_obsolete()


@dataclass(frozen=True)
class Mode:
    """How branch connections are tracked and closed at request boundaries."""

    name: str
    label: str
    track: Callable[[str], None] | None
    close_old: Callable[..., object] | None
    tracked: Callable[[], int | None]


PLAIN = Mode("plain", "plain Django", None, None, lambda: None)
SIGNALS_ONLY = Mode(
    "signals_only",
    "request signals, never untracked",
    _signals_only_track,
    _signals_only_close,
    lambda: len(_signals_only_aliases()),
)
BRANCHING_OPS = Mode(
    "branching_ops",
    "branching_ops",
    tracking.track,
    tracking.close_old_branch_connections,
    lambda: len(tracking.tracked_aliases()),
)
MODES = {mode.name: mode for mode in (PLAIN, SIGNALS_ONLY, BRANCHING_OPS)}

_active = BRANCHING_OPS
_RECEIVERS = (
    (request_started, "branching_ops.request_started"),
    (request_finished, "branching_ops.request_finished"),
)


def use_mode(mode: Mode) -> None:
    """Put ``mode``'s receivers in place of this package's (same ``dispatch_uid``)."""
    global _active
    for signal, dispatch_uid in _RECEIVERS:
        signal.disconnect(dispatch_uid=dispatch_uid)
        if mode.close_old is not None:
            signal.connect(mode.close_old, dispatch_uid=dispatch_uid)
    _active = mode


class DemoDatabases(BranchDatabases):
    """``BranchDatabases`` in ``branching_ops`` mode; else a mapping without it.

    In the other modes a branch's settings are what a project without this
    package builds (as netbox-branching's ``DynamicSchemaDict`` does): the
    ``default`` settings, Django's own engine, the ``search_path`` as a startup
    option; plus the ``application_name`` the soak counts backends by.
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
    mode: Mode, *, host: str, port: int, dbname: str, user: str, conn_max_age: int | None
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
    )
    django.setup()
    use_mode(mode)


# Tracked-set size per server thread, recorded after each request by the server.
TRACKED_BY_THREAD: dict[int, int | None] = {}


def record_tracked() -> None:
    TRACKED_BY_THREAD[threading.get_ident()] = _active.tracked()


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
    tracked = None if None in counts else sum(c for c in counts if c is not None)
    return JsonResponse({"tracked": tracked})


def ok(request: HttpRequest) -> HttpResponse:
    return HttpResponse("ok", content_type="text/plain")


urlpatterns = [
    re_path(r"^branch/(?P<name>[a-z_][a-z0-9_]{0,62})/$", branch),
    re_path(r"^stats/$", stats),
    re_path(r"^ok/$", ok),
]
