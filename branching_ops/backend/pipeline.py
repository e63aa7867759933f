"""psycopg's pipeline without the Flush message it sends after its closing Sync.

PgBouncer (through 1.25) in transaction pooling hands a server connection to
a lone Flush and never takes it back: a kept client would hold it for good.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import psycopg
from psycopg.abc import PQGen
from psycopg.generators import send


class SyncOnlyPipeline(psycopg.Pipeline):
    def _exit_gen(self) -> PQGen[None]:
        # psycopg's own, with the output buffer sent (psycopg #685) but no Flush:
        # the Sync already makes the server send every result.
        try:
            self._enqueue_sync()
            yield from self._communicate_gen()
        finally:
            if self.result_queue:
                yield from send(self.pgconn)
            yield from self._fetch_gen(flush=False)


@contextlib.contextmanager
def sync_only_pipeline(conn: psycopg.Connection[Any]) -> Iterator[psycopg.Pipeline]:
    """``conn.pipeline()`` with a :class:`SyncOnlyPipeline` (nested: the caller's own)."""
    with conn.lock:
        pipeline = conn._pipeline
        if pipeline is None:
            pipeline = conn._pipeline = SyncOnlyPipeline(conn)
    try:
        with pipeline:
            yield pipeline
    finally:
        if pipeline.level == 0:
            with conn.lock:
                conn._pipeline = None
