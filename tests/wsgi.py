"""Drive Django's real WSGI handler, so every request signal fires.

``django.test.Client`` disconnects Django's own ``close_old_connections``
around requests; the tests compare against it, so they need the real thing.
"""

from __future__ import annotations

from typing import Any
from wsgiref.util import setup_testing_defaults

from django.core.handlers.wsgi import WSGIHandler

_handler: Any = WSGIHandler()  # typed loosely: wsgiref's StartResponse is 3.11+


def start(path: str) -> tuple[int, Any]:
    """Run the view of ``path``; return the status code and the unread response.

    Reading the body and closing the response (which sends
    ``request_finished``) are left to the caller, as a server does them.
    """
    environ: dict[str, Any] = {"PATH_INFO": path}
    setup_testing_defaults(environ)
    status: list[str] = []

    def start_response(status_line: str, *args: Any) -> Any:
        status.append(status_line)

    response = _handler(environ, start_response)
    return int(status[0].split()[0]), response


def get(path: str) -> tuple[int, str]:
    """GET ``path`` through the WSGI handler; return status code and body."""
    status, response = start(path)
    try:
        body = b"".join(response)
    finally:
        response.close()  # sends request_finished
    return status, body.decode()
