"""Drive Django's real WSGI handler, so every request signal fires.

``django.test.Client`` disconnects Django's own ``close_old_connections``
around requests; the tests compare against it, so they need the real thing.
"""

from __future__ import annotations

from typing import Any
from wsgiref.util import setup_testing_defaults

from django.core.handlers.wsgi import WSGIHandler

_handler: Any = WSGIHandler()  # typed loosely: wsgiref's StartResponse is 3.11+


def get(path: str) -> tuple[int, str]:
    """GET ``path`` through the WSGI handler; return status code and body."""
    environ: dict[str, Any] = {"PATH_INFO": path}
    setup_testing_defaults(environ)
    status: list[str] = []

    def start_response(status_line: str, *args: Any) -> Any:
        status.append(status_line)

    response = _handler(environ, start_response)
    try:
        body = b"".join(response)
    finally:
        response.close()  # sends request_finished
    return int(status[0].split()[0]), body.decode()
