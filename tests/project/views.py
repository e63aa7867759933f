from __future__ import annotations

import gc
import threading
from collections.abc import Iterator

from asgiref.sync import sync_to_async
from django.db import DatabaseError
from django.db import connections
from django.db import transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.http import HttpRequest
from django.http import HttpResponse
from django.http import HttpResponseBadRequest
from django.http import JsonResponse
from django.http import StreamingHttpResponse
from django.utils.connection import ConnectionDoesNotExist

from branching_ops.names import branch_name_error
from branching_ops.routers import activate_branch
from branching_ops.tracking import tracked_aliases
from tests.testapp.models import Note


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


# Views for the real-server tests (tests/test_servers.py, tests/test_faults.py).


def _search_path(name: str) -> str | None:
    """The branch view's work, callable from a thread: ``None`` for an invalid name."""
    try:
        connection = connections[f"schema_{name}"]
    except ConnectionDoesNotExist:
        return None
    with connection.cursor() as cursor:
        cursor.execute("SHOW search_path")
        (search_path,) = cursor.fetchone()
    return str(search_path)


async def branch_async(request: HttpRequest, name: str) -> HttpResponse:
    """The branch view as an async view: the query runs through ``sync_to_async``.

    ``sync_to_async`` is thread-sensitive by default, so the query runs on the
    request's own thread, where ``request_finished`` cleans up.
    """
    error = branch_name_error(name)
    if error is not None:
        return HttpResponseBadRequest(error)
    search_path = await sync_to_async(_search_path)(name)
    assert search_path is not None
    return HttpResponse(search_path)


def live_branch_wrappers() -> int:
    """Branch connection wrappers alive anywhere in this process, any thread."""
    gc.collect()
    return sum(
        isinstance(obj, BaseDatabaseWrapper) and obj.alias.startswith("schema_")
        for obj in gc.get_objects()
    )


def state(request: HttpRequest) -> JsonResponse:
    """What this process holds: honest under WSGI and ASGI alike.

    ``tracked`` is the tracker of the thread serving this request, after the
    ``request_started`` cleanup: meaningful on a WSGI server's pooled threads,
    always 0 on ASGI, where each request's sync code gets a fresh thread. So
    the process-wide figures come with it: live branch wrappers (a wrapper
    dropped by the cleanup is garbage; one kept anywhere is counted) and
    live threads.
    """
    return JsonResponse(
        {
            "thread": threading.get_ident(),
            "tracked": len(tracked_aliases()),
            "branch_wrappers": live_branch_wrappers(),
            "threads": threading.active_count(),
        }
    )


_barriers: dict[int, threading.Barrier] = {}
_barriers_lock = threading.Lock()


def _meet(parties: int) -> None:
    """Wait until ``parties`` requests are here at once.

    ``parties`` concurrent requests can only meet on ``parties`` distinct
    threads: one request per server thread.
    """
    with _barriers_lock:
        barrier = _barriers.setdefault(parties, threading.Barrier(parties))
    barrier.wait(timeout=20)


def hold(request: HttpRequest, parties: int, name: str) -> JsonResponse:
    """Touch a branch once ``parties`` requests are here (``-``: no branch)."""
    _meet(parties)
    status = 200
    if name != "-":
        try:
            _search_path(name)
        except DatabaseError:
            status = 503
    return JsonResponse(
        {"thread": threading.get_ident(), "tracked": len(tracked_aliases())}, status=status
    )


def hold_note(request: HttpRequest, parties: int, name: str) -> JsonResponse:
    """Write a note to the branch through the ORM once ``parties`` requests are here.

    A database error answers 503 and names its class.
    """
    _meet(parties)
    try:
        with activate_branch(name):
            Note.objects.create(text=name)
    except DatabaseError as exc:
        return JsonResponse(
            {"thread": threading.get_ident(), "error": type(exc).__name__}, status=503
        )
    return JsonResponse({"thread": threading.get_ident(), "error": None})


@activate_branch("async_view")
async def note_async(request: HttpRequest, text: str) -> JsonResponse:
    """Write and read notes through the async ORM, the branch active for the whole view."""
    await Note.objects.acreate(text=text)
    return JsonResponse([note.text async for note in Note.objects.order_by("id")], safe=False)


def count_t(request: HttpRequest, name: str) -> HttpResponse:
    """Count the rows of table ``t`` on the branch: fails if its schema is gone."""
    with connections[f"schema_{name}"].cursor() as cursor:
        cursor.execute("SELECT count(*) FROM t")
        (count,) = cursor.fetchone()
    return HttpResponse(str(count))


def stream_in_transaction(request: HttpRequest, name: str) -> StreamingHttpResponse:
    """Stream from inside ``transaction.atomic`` on the branch.

    ``map()`` has no ``close()``, so Django cannot close the generator before
    ``request_finished``: the transaction spans the signal and ends only when
    the response is dropped.
    """
    alias = f"schema_{name}"

    def rows() -> Iterator[int]:
        with transaction.atomic(using=alias), connections[alias].cursor() as cursor:
            for i in range(3):
                cursor.execute("SELECT %s", [i])
                (value,) = cursor.fetchone()
                yield value

    return StreamingHttpResponse(map(str, rows()))
