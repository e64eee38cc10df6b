"""A throwaway Redis for the tests: Debian's ``redis-server`` (in ``TEST_DEBS``) on a free
loopback port, no persistence, its directory in a temp dir; stopped (and deleted) after."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

BIN = shutil.which("redis-server") or "/usr/bin/redis-server"


@dataclass
class Redis:
    """A running throwaway instance."""

    port: int
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def redis() -> Iterator[Redis]:
    """Start a fresh instance; stop it and delete its files on exit."""
    directory = Path(tempfile.mkdtemp(prefix="omlmedia-redis-"))
    port = _free_port()
    argv = [BIN, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    argv += ["--dir", str(directory), "--daemonize", "no", "--logfile", str(directory / "log")]
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        break
            except OSError:
                pass
            assert process.poll() is None, (directory / "log").read_text(errors="replace")
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)
        yield Redis(port, process)
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.rmtree(directory, ignore_errors=True)


def require() -> None:
    """Skip the calling test when redis-server is not installed; fail it under CI, where
    ``make test`` installs it."""
    if os.path.exists(BIN):
        return
    message = "redis-server is not installed: run make setup-test"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)
