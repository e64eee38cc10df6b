"""A throwaway Redis: Debian's ``redis-server`` on a loopback port, its files in a directory of
the caller's, for the benchmarks and (through ``tests/cluster/redis.py``) the tests.

Without `appendfsync` nothing is persisted; with it the append-only file is on (``everysec`` as
production should run it, ``always`` for a test that restarts it and must find every write).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from benchmarks import harness

BIN = shutil.which("redis-server") or "/usr/bin/redis-server"


def free_port() -> int:
    """A loopback port to listen on: `harness.free_port`'s, below the kernel's ephemeral range
    (a port the kernel gave out as free may be taken by any outgoing connection before Redis
    binds it)."""
    return harness.free_port()


def start(
    directory: Path, *, port: int | None = None, appendfsync: str | None = None
) -> tuple[subprocess.Popen[bytes], int]:
    """Start redis-server on `port` (a free one by default) and return once it answers PING."""
    port = port or free_port()
    argv = [BIN, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    if appendfsync is None:
        argv += ["--appendonly", "no"]
    else:
        argv += ["--appendonly", "yes", "--appendfsync", appendfsync]
    argv += ["--dir", str(directory), "--daemonize", "no", "--logfile", str(directory / "log")]
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(16).startswith(b"+PONG"):
                    return process, port
        except OSError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            stop(process)
            log = directory / "log"
            raise RuntimeError(
                "redis-server did not start: "
                + (log.read_text(errors="replace") if log.exists() else "")
            )
        time.sleep(0.05)


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def throwaway(appendfsync: str | None = None) -> Iterator[int]:
    """A fresh instance in a temp directory for the block; its port. Stopped and deleted after."""
    directory = Path(tempfile.mkdtemp(prefix="omlmedia-redis-"))
    try:
        process, port = start(directory, appendfsync=appendfsync)
        try:
            yield port
        finally:
            stop(process)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
