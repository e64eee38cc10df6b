"""A throwaway PostgreSQL for the tests and the benchmarks: its own data directory and socket
in a temp dir, on a free loopback port, started with Debian's ``initdb``/``pg_ctl`` and stopped
(and deleted) after.

PostgreSQL refuses to run as root: as root the server runs as the ``postgres`` system user (the
Debian package creates it); as anyone else, as that user. The database user is ``omlmedia``,
trusted on loopback (no password: the instance lives only as long as the tests).
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from benchmarks import harness

BIN = Path("/usr/lib/postgresql/15/bin")
"""Debian 12's PostgreSQL server programs (package ``postgresql``, in ``TEST_DEBS``)."""


def available() -> bool:
    """True when the PostgreSQL server programs are installed."""
    return (BIN / "initdb").is_file() and (BIN / "pg_ctl").is_file()


def free_port() -> int:
    """A TCP port free on loopback now, below the kernel's ephemeral range (`harness.free_port`:
    a port from that range may be taken by any outgoing connection before the server binds it)."""
    return harness.free_port()


@dataclass
class Postgres:
    """A running throwaway instance."""

    directory: Path
    port: int

    @property
    def dsn(self) -> str:
        """Its DSN (database ``postgres``)."""
        return self.database("postgres")

    def database(self, name: str) -> str:
        """The DSN of database `name` on it."""
        return f"postgresql://omlmedia@127.0.0.1:{self.port}/{name}"

    def _as_owner(self, *argv: str) -> list[str]:
        if os.geteuid() == 0:
            return ["runuser", "-u", "postgres", "--", *argv]
        return list(argv)

    def pg_ctl(self, *args: str, timeout: float = 60) -> None:
        """Run ``pg_ctl`` on this instance (``start``, ``stop -m immediate``...)."""
        data = self.directory / "data"
        options = f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1"
        argv = [str(BIN / "pg_ctl"), "-D", str(data), "-o", options]
        argv += ["-l", str(self.directory / "log"), "-w", "-t", str(int(timeout)), *args]
        subprocess.run(self._as_owner(*argv), check=True, capture_output=True, timeout=timeout)

    def create_database(self, name: str) -> str:
        """Create database `name`; returns its DSN."""
        argv = [str(BIN / "createdb"), "-h", "127.0.0.1", "-p", str(self.port)]
        argv += ["-U", "omlmedia", name]
        subprocess.run(argv, check=True, capture_output=True, timeout=30)
        return self.database(name)


@contextmanager
def postgres() -> Iterator[Postgres]:
    """Start a fresh instance; stop it and delete its files on exit."""
    directory = Path(tempfile.mkdtemp(prefix="omlmedia-pg-"))
    if os.geteuid() == 0:
        shutil.chown(directory, "postgres")
    instance = Postgres(directory, free_port())
    initdb = [str(BIN / "initdb"), "-D", str(directory / "data"), "-A", "trust", "-U", "omlmedia"]
    try:
        subprocess.run(
            instance._as_owner(*initdb, "--no-sync"), check=True, capture_output=True, timeout=120
        )
        instance.pg_ctl("start")
        yield instance
    finally:
        try:
            instance.pg_ctl("stop", "-m", "immediate")
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired):
            pass
        shutil.rmtree(directory, ignore_errors=True)


_databases = itertools.count(1)


def fresh_database(instance: Postgres) -> str:
    """A new, empty database on `instance`; its DSN."""
    return instance.create_database(f"test{next(_databases)}")
