"""A newer PgBouncer than the system's, from Debian's archive, without installing it.

``apt-get download`` with a sources list and state directory of our own
(never the system's), the packages unpacked into a private directory, and
the binary run through the unpacked dynamic loader with the unpacked
libraries first: nothing is installed over the system. Cached per machine.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

__all__ = [
    "debian_pgbouncer",
]

SUITE = "trixie"  # Debian 13: PgBouncer 1.24
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
# pgbouncer and the libraries it needs newer than Debian 12's (glibc 2.38 and up).
PACKAGES = ("pgbouncer", "libc6", "libcares2", "libevent-2.1-7t64", "libssl3t64", "libsystemd0")
LIBDIR = "usr/lib/x86_64-linux-gnu"


def cache_dir() -> Path:
    """``$BRANCHING_OPS_CACHE`` or ``/var/tmp/branching-ops``: kept across runs, readable by
    the unprivileged user the servers run as."""
    return Path(os.environ.get("BRANCHING_OPS_CACHE") or "/var/tmp/branching-ops")


def debian_pgbouncer(suite: str = SUITE) -> list[str]:
    """The command that runs ``suite``'s PgBouncer, fetched and unpacked on first use.

    ``RuntimeError`` with apt's message when it cannot be fetched (no
    ``apt-get``, no network to the archive).
    """
    root = cache_dir() / f"pgbouncer-{suite}"
    if not (root / "ready").exists():
        cache_dir().mkdir(parents=True, exist_ok=True)
        cache_dir().chmod(0o755)
        with (cache_dir() / f"pgbouncer-{suite}.lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # parallel tox environments fetch once
            if not (root / "ready").exists():
                _fetch(suite, root)
    loader = root / LIBDIR / "ld-linux-x86-64.so.2"
    library_path = f"{root / LIBDIR}:/lib/x86_64-linux-gnu:/usr/lib/x86_64-linux-gnu"
    return [str(loader), "--library-path", library_path, str(root / "usr/sbin/pgbouncer")]


def _fetch(suite: str, root: Path) -> None:
    if shutil.which("apt-get") is None:
        raise RuntimeError(f"Cannot fetch Debian {suite}'s pgbouncer: no apt-get.")
    # Beside the cache, so that the finished tree is renamed into place at once.
    with tempfile.TemporaryDirectory(prefix="apt-", dir=cache_dir()) as work:
        apt = Path(work)
        for directory in ("state/lists/partial", "cache/archives/partial", "debs", "root"):
            (apt / directory).mkdir(parents=True)
        (apt / "state/status").touch()
        (apt / "sources.list").write_text(
            f"deb [signed-by={KEYRING}] http://deb.debian.org/debian {suite} main\n"
        )
        options = [
            f"-oDir::Etc::SourceList={apt / 'sources.list'}",
            f"-oDir::Etc::SourceParts={apt / 'none'}",
            f"-oDir::State={apt / 'state'}",
            f"-oDir::State::status={apt / 'state/status'}",
            f"-oDir::Cache={apt / 'cache'}",
            "-oDebug::NoLocking=1",
            "-oAPT::Sandbox::User=root",
        ]
        _run(["apt-get", *options, "-qq", "update"], apt)
        _run(["apt-get", *options, "-qq", "download", *PACKAGES], apt / "debs")
        for deb in sorted((apt / "debs").glob("*.deb")):
            _run(["dpkg-deb", "-x", str(deb), str(apt / "root")], apt)
        (apt / "root/ready").touch()
        shutil.rmtree(root, ignore_errors=True)
        (apt / "root").rename(root)
        root.chmod(0o755)


def _run(command: list[str], cwd: Path) -> None:
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command[:1] + command[-2:])} failed: {result.stderr}")
