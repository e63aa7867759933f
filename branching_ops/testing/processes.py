"""Shared plumbing for the throw-away servers: ports, users, waiting."""

from __future__ import annotations

import os
import pwd
import socket
import subprocess
import time
from collections.abc import Callable

__all__ = [
    "free_port",
    "runnable_by",
    "stop_process",
    "unprivileged_user",
    "wait_until",
]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def unprivileged_user() -> str | None:
    """The user to run a server as: ``None`` unless we are root.

    PostgreSQL refuses to run as root; Redis should not. ``postgres`` if that
    account exists (Debian's package makes it), else ``nobody``.
    """
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
        except KeyError:
            continue
        return name
    raise RuntimeError("Running as root, and there is no 'postgres' or 'nobody' user to drop to.")


def runnable_by(binary: str, user: str | None) -> bool:
    """Whether ``user`` (``None``: ourselves) can execute ``binary --version``."""
    try:
        subprocess.run([binary, "--version"], user=user, capture_output=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return False
    return True


def stop_process(
    process: subprocess.Popen[bytes], signal_number: int | None, *, timeout: float
) -> None:
    """Send ``signal_number`` (``None``: it was asked to stop some other way),
    give the process ``timeout`` seconds to exit, then kill it."""
    if signal_number is not None and process.poll() is None:
        process.send_signal(signal_number)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def wait_until(condition: Callable[[], bool], *, timeout: float, what: str) -> None:
    """Poll ``condition`` until it is true; ``TimeoutError`` naming ``what``."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"Timed out after {timeout:g} s waiting for {what}.")
        time.sleep(0.02)
