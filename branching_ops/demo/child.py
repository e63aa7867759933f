"""What the demo's child processes share: command line, Django setup, events.

Each scenario runs its Django side (a WSGI server, an RQ worker, a loop of
``call_command()``) in a process of its own, one per mode, so that every
mode starts from a fresh process with its own settings. Each tells the demo
on stdout, one JSON object per line, when it is ready and (workers and
commands) how each job or run went.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from types import FrameType
from typing import Any

from django.db.utils import load_backend

from branching_ops.databases import BRANCH_ENGINE
from branching_ops.demo import project


def parser(description: str | None) -> argparse.ArgumentParser:
    """The flags every child takes: the mode and where its database is."""
    parser = argparse.ArgumentParser(description=description)
    add = parser.add_argument
    add("--mode", choices=sorted(project.MODES), required=True)
    add("--pg-host", required=True)
    add("--pg-port", type=int, required=True)
    add("--dbname", required=True)
    add("--conn-max-age", type=int, required=True)
    add("--max-connections-per-thread", type=int)
    return parser


def configure(args: argparse.Namespace) -> project.Mode:
    """Configure Django for ``args.mode``; stop cleanly (``sys.exit``) on SIGTERM."""
    # stdout carries the events: logs go to stderr (rq would log to stdout).
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING)
    mode = project.MODES[args.mode]
    project.configure(
        mode,
        host=args.pg_host,
        port=args.pg_port,
        dbname=args.dbname,
        user=project.APP_ROLE,
        conn_max_age=args.conn_max_age,
        max_connections_per_thread=args.max_connections_per_thread,
    )

    # Import the database backends now rather than in the first request.
    load_backend("django.db.backends.postgresql")
    load_backend(BRANCH_ENGINE)

    def stop(signum: int, frame: FrameType | None) -> None:
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    return mode


def emit(**event: Any) -> None:
    """Tell the demo about an event: one JSON object on one line of stdout."""
    print(json.dumps(event), flush=True)


def emit_outcome(error: str | None) -> None:
    """One job or command run is over: how it went, and what is still tracked."""
    emit(ok=error is None, error=error, tracked=project.tracked())
