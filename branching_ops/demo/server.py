"""The demo's WSGI server process: waitress, a persistent pool of threads."""

from __future__ import annotations

from collections.abc import Iterable
from collections.abc import Iterator
from typing import Any

from django.core.wsgi import get_wsgi_application
from waitress.server import create_server

from branching_ops.demo import child
from branching_ops.demo import project


class _Recorded:
    """A response that records the thread's tracked-set size once it is closed.

    Closing the response is what sends ``request_finished``, so the record is
    taken after the request boundary, on the thread that served the request.
    """

    def __init__(self, response: Iterable[bytes]) -> None:
        self.response = response

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.response)

    def close(self) -> None:
        try:
            close = getattr(self.response, "close", None)
            if close is not None:
                close()
        finally:
            project.record_tracked()


def main(argv: list[str] | None = None) -> None:
    parser = child.parser(__doc__)
    parser.add_argument("--threads", type=int, required=True)
    args = parser.parse_args(argv)
    child.configure(args)
    django_app = get_wsgi_application()

    def application(environ: dict[str, Any], start_response: Any) -> _Recorded:
        return _Recorded(django_app(environ, start_response))

    server: Any = create_server(
        application, host="127.0.0.1", port=0, threads=args.threads, ident="demo"
    )
    child.emit(ready=True, port=server.effective_port)
    server.run()


if __name__ == "__main__":
    main()
