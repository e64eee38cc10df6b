"""A throwaway Redis for the tests: Debian's ``redis-server`` (in ``TEST_DEBS``) on a free
loopback port, no persistence, its directory in a temp dir; stopped (and deleted) after."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from benchmarks import redisserver

BIN = redisserver.BIN


@dataclass
class Redis:
    """A running throwaway instance."""

    port: int
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"


@contextmanager
def redis() -> Iterator[Redis]:
    """Start a fresh instance; stop it and delete its files on exit."""
    directory = Path(tempfile.mkdtemp(prefix="omlmedia-redis-"))
    try:
        process, port = redisserver.start(directory)
        try:
            yield Redis(port, process)
        finally:
            redisserver.stop(process)
    finally:
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
