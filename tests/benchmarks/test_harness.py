"""benchmarks/harness.py and procstat.py: what every benchmark starts, pins and measures with."""

from __future__ import annotations

import ast
import os
import socket
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from benchmarks.harness import (
    RTP_AREA,
    RTP_BLOCKS,
    _claim_rtp_block,
    fmt,
    free_port,
    server_config,
    slope_kib_per_call,
    summarize_py_spy,
)
from benchmarks.procstat import Window, pinned

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def test_benchmarks_do_not_import_the_tests() -> None:
    for path in sorted(BENCHMARKS.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            assert not any(n == "tests" or n.startswith("tests.") for n in names), path.name


def test_the_server_configuration_loads(tmp_path: Path) -> None:
    from omlmedia.config import load_config

    ports = {"rtp_low": 61000, "sip": 5990, "tls": 5991, "http": 5992, "pbx": 5994, "carrier": 5996}
    path = tmp_path / "omlmedia.toml"
    path.write_text(server_config(tmp_path / "data", ports, carrier=True))
    config = load_config(path)
    assert [trunk.name for trunk in config.trunks] == ["pbx", "carrier"]


def test_a_free_pair_starts_on_an_even_port() -> None:
    port = free_port(pair=True)
    assert port % 2 == 0 and 0 < port < 65535


def test_servers_of_concurrent_runs_claim_distinct_rtp_blocks_and_give_them_up() -> None:
    claims = [_claim_rtp_block() for _ in range(3)]
    try:
        lows = [low for low, _ in claims]
        assert len(set(lows)) == 3 and all(claim is not None for _, claim in claims)
        assert all(40000 <= low <= 40000 + (RTP_BLOCKS - 1) * 1000 for low in lows)
        # Another run's server holds every other block: the next claim is a free one.
        others = []
        for block in range(RTP_BLOCKS):
            low = 40000 + block * 1000
            if low in lows:
                continue
            other = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            try:
                other.bind(f"\0omlmedia-test-rtp-{low}")
            except OSError:  # claimed by a server of a run going on now
                other.close()
                continue
            others.append(other)
        given_up, claim = claims.pop(1)
        assert claim is not None
        claim.close()
        low, again = _claim_rtp_block()
        claims.append((low, again))
        assert again is not None and low not in {low for low, _ in claims[:-1]}
        assert len(others) < RTP_BLOCKS - 3 or low == given_up
        for other in others:
            other.close()
    finally:
        for _, claim in claims:
            if claim is not None:
                claim.close()


def test_pinned_prefixes_taskset_only_when_there_are_cores_to_keep_apart() -> None:
    assert pinned(["x"], None) == ["x"]
    command = pinned(["x", "-y"], 1)
    assert command in (["x", "-y"], ["taskset", "-c", "1", "x", "-y"])


def test_a_window_measures_this_process() -> None:
    window = Window(os.getpid())
    window.start()
    sum(i * i for i in range(200_000))
    window.end()
    assert window.seconds > 0 and window.cpu_seconds >= 0
    assert window.rss_kib > 0 and window.run_queue_wait_seconds >= 0
    assert 0 <= window.other_load_on_server_core(window.seconds)
    assert Window(None).other_load_on_server_core(0) == 0.0


def test_figures_and_py_spy_summary(tmp_path: Path) -> None:
    assert (fmt(None), fmt(float("nan")), fmt(float("inf")), fmt(1.25, ".1f")) == (
        "-",
        "-",
        "-",
        "1.2",
    )
    assert slope_kib_per_call([(10, 1000)]) is None
    assert slope_kib_per_call([(10, 1000), (20, 1500), (40, 2500)]) == pytest.approx(50.0)
    raw = tmp_path / "raw.txt"
    raw.write_text("main;encode (x.py:1) 30\nmain;decode (y.py:2) 10\nRunner.run (r.py:1) 60\n")
    lines = summarize_py_spy(raw)
    assert lines[0].startswith(" 60.0 %  native code") and "encode" in lines[1]
    assert summarize_py_spy(tmp_path / "missing")[0].startswith("py-spy wrote nothing")


def test_free_ports_stay_out_of_the_servers_rtp_area_and_the_kernels_ephemeral_ports() -> None:
    """A sipp media port (``-mp``, its audio and video RTP and RTCP) handed out inside a server's
    RTP block was taken by that server and failed a CI run ("Unable to bind video RTP socket");
    a node's HTTP port picked among the kernel's ephemeral ports was taken by another process's
    connection before the node bound it (errno 98, another CI run). A pair is sipp's four."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    for _ in range(200):
        port = free_port(pair=True)
        assert port % 2 == 0
        assert not any(p in RTP_AREA or p >= min(low, 20000) for p in range(port, port + 4))
        single = free_port()
        assert single not in RTP_AREA and single < min(low, 20000)


def test_free_port_gives_no_port_twice_while_its_server_may_not_have_bound_it() -> None:
    """Two cluster nodes started at once (one thread each) could be handed the same free port,
    and a node's SIP port, picked apart from its TLS and HTTP ports, was once its TLS port too
    ("port 12351 clashes with server.sip_port"): a port found free is not bound until the server
    starts. The last 1024 ports given (a pair's four each) are not given again, across threads."""
    with ThreadPoolExecutor(4) as pool:
        given = list(pool.map(lambda n: free_port(pair=n % 3 == 0), range(300)))
    ports = [
        p for n, port in enumerate(given) for p in (range(port, port + 4) if n % 3 == 0 else [port])
    ]
    assert len(ports) == len(set(ports)) == 600
