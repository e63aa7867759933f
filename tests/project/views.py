from __future__ import annotations

from django.db import connections
from django.http import HttpRequest
from django.http import HttpResponse
from django.http import HttpResponseBadRequest
from django.utils.connection import ConnectionDoesNotExist


def branch(request: HttpRequest, name: str) -> HttpResponse:
    """Run one query on the branch named in the URL; answer its search_path."""
    try:
        connection = connections[f"schema_{name}"]
    except ConnectionDoesNotExist as exc:
        return HttpResponseBadRequest(str(exc))
    with connection.cursor() as cursor:
        cursor.execute("SHOW search_path")
        (search_path,) = cursor.fetchone()
    return HttpResponse(search_path)


def default(request: HttpRequest) -> HttpResponse:
    with connections["default"].cursor() as cursor:
        cursor.execute("SELECT 1")
    return HttpResponse("default")


def ok(request: HttpRequest) -> HttpResponse:
    return HttpResponse("ok")


def marker(request: HttpRequest, name: str) -> HttpResponse:
    """Read the one row of the ``marker`` table the branch's search_path finds first."""
    with connections[f"schema_{name}"].cursor() as cursor:
        cursor.execute("SELECT name FROM marker")
        (found,) = cursor.fetchone()
    return HttpResponse(found)
