"""The demo's WSGI server process: waitress, a persistent pool of threads.

Started by :mod:`branching_ops.demo.soak`, one process per mode, so each mode
starts from a clean process (its RSS is its own) and a clean server state.
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Iterable
from collections.abc import Iterator
from types import FrameType
from typing import Any

from django.core.wsgi import get_wsgi_application
from waitress.server import create_server

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
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mode", choices=sorted(project.MODES), required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--pg-host", required=True)
    parser.add_argument("--pg-port", type=int, required=True)
    parser.add_argument("--dbname", required=True)
    parser.add_argument("--user", required=True)
    parser.add_argument("--conn-max-age", type=int, required=True)
    args = parser.parse_args(argv)

    project.configure(
        project.MODES[args.mode],
        host=args.pg_host,
        port=args.pg_port,
        dbname=args.dbname,
        user=args.user,
        conn_max_age=args.conn_max_age,
    )
    django_app = get_wsgi_application()

    def application(environ: dict[str, Any], start_response: Any) -> _Recorded:
        return _Recorded(django_app(environ, start_response))

    def stop(signum: int, frame: FrameType | None) -> None:
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    server = create_server(
        application, host="127.0.0.1", port=args.port, threads=args.threads, ident="demo"
    )
    server.run()


if __name__ == "__main__":
    main()
