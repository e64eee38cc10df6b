"""Running a real `omlmedia serve` and real peers (sipp) for the interop tests.

The server is started, configured and reached with the benchmarks' code (benchmarks/harness.py),
so that the tests check the server the benchmarks measure; what is added here is pytest's: a peer
that is missing, a server that does not start or a sipp that does not finish fails the test. Peers
are real programs installed by `make test`; a missing tool fails the test (never skips it): a
green run must mean the peer really ran.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from benchmarks import harness
from benchmarks.harness import (
    API_TOKEN,
    DEMO_PASSWORD,
    RunningServer,
    ServerStartError,
    SippResult,
    free_port,
    server_config,
)

__all__ = [
    "API_TOKEN",
    "DEMO_PASSWORD",
    "SCENARIOS",
    "RunningServer",
    "SippResult",
    "free_port",
    "require_tool",
    "run_sipp",
    "start_server",
    "write_test_config",
]

SCENARIOS = Path(__file__).resolve().parent / "scenarios"


def require_tool(name: str) -> str:
    """The tool's path; fails the test when it is missing (make test installs it)."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: run `make test`, which installs the test peers")
    return path


def write_test_config(
    path: Path,
    data_dir: Path,
    ports: dict[str, int],
    t1: float = 0.1,
    carrier: bool = False,
    media_timeout: float = 30.0,
) -> None:
    """A configuration like the demo's, with RFC timers short enough for tests to wait out."""
    path.write_text(
        server_config(data_dir, ports, t1=t1, carrier=carrier, media_timeout=media_timeout)
    )


def start_server(
    workdir: Path,
    t1: float = 0.1,
    extra_args: tuple[str, ...] = (),
    carrier: bool = False,
    media_timeout: float = 30.0,
) -> RunningServer:
    """Start `omlmedia serve` on free ports with the test configuration; wait until it is ready."""
    try:
        return harness.start_server(
            workdir, t1=t1, extra_args=extra_args, carrier=carrier, media_timeout=media_timeout
        )
    except ServerStartError as exc:
        pytest.fail(str(exc))


def run_sipp(
    args: list[str], workdir: Path, timeout: float = 120.0, name: str = "sipp"
) -> SippResult:
    """Run sipp in the foreground (never -bg) with statistics, and collect the outcome."""
    require_tool("sipp")
    try:
        return harness.run_sipp(args, workdir, timeout=timeout, name=name)
    except TimeoutError as exc:
        pytest.fail(str(exc))
