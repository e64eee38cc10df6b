"""Running a real `omlmedia serve` and real peers (sipp) for the interop tests.

The server is started, configured and reached with the benchmarks' code (benchmarks/harness.py),
so that the tests check the server the benchmarks measure; what is added here is pytest's: a peer
that is missing, a server that does not start or a sipp that does not finish fails the test. Peers
are real programs installed by `make test`; a missing tool fails the test (never skips it): a
green run must mean the peer really ran.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
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
    "caller_to",
    "echoing_pbx",
    "free_port",
    "pbx",
    "pbx_on",
    "pcap_caller",
    "require_tool",
    "run_sipp",
    "sipp_caller",
    "start_server",
    "start_sipp",
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


def start_sipp(args: list[str], workdir: Path, name: str) -> subprocess.Popen[bytes]:
    """sipp in the background (a child to wait for or kill, never -bg), its output in
    ``workdir/<name>.out`` and its errors in ``workdir/<name>-errors.log``."""
    sipp = require_tool("sipp")
    with (workdir / f"{name}.out").open("wb") as log:
        return subprocess.Popen(
            [
                sipp,
                *args,
                "-nostdin",
                "-trace_err",
                "-error_file",
                str(workdir / f"{name}-errors.log"),
            ],
            cwd=workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def echoing_pbx() -> list[str]:
    """The arguments of a PBX (sipp UAS) that answers with PCMA and echoes the RTP it gets."""
    return [
        "-sf",
        str(SCENARIOS / "uas_answer_pcma.xml"),
        "-rtp_echo",
        "-mp",
        str(free_port(pair=True)),
    ]


def pbx_on(server: RunningServer, args: list[str], calls: int) -> list[str]:
    """sipp `args` for a UAS on `server`'s trunk `pbx` address that ends after `calls` calls."""
    return [*args, "-i", "127.0.0.1", "-p", str(server.pbx_port), "-m", str(calls)]


@contextmanager
def pbx(server: RunningServer, workdir: Path, args: list[str], calls: int) -> Iterator[None]:
    """A sipp UAS on the trunk's address for the duration of the block; it must have handled
    its `calls` calls and ended cleanly by 60 s after the block."""
    process = start_sipp(pbx_on(server, args, calls), workdir, "pbx")
    try:
        yield
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, (workdir / "pbx.out").read_text(errors="replace")[-3000:]


def caller_to(server: RunningServer, args: list[str]) -> list[str]:
    """sipp `args` for a UAC calling `server`'s SIP port from an ephemeral port."""
    return [f"127.0.0.1:{server.sip_port}", "-i", "127.0.0.1", "-p", "0", *args]


def sipp_caller(server: RunningServer, workdir: Path, args: list[str]) -> SippResult:
    """A sipp UAC to `server` run to its end (run_sipp)."""
    return run_sipp(caller_to(server, args), workdir)


def pcap_caller(number: str, calls: int = 1, rate: int | None = None) -> list[str]:
    """The arguments of a UAC that dials `number` `calls` times (`rate` a second) and plays
    sipp's 236-packet PCMA pcap on each call."""
    args = ["-sn", "uac_pcap", "-s", number, "-mp", str(free_port(pair=True)), "-m", str(calls)]
    return [*args, "-r", str(rate)] if rate is not None else args
