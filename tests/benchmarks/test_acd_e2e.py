"""benchmarks/acd_e2e.py: the schedule, the configuration, the SDP and the per-call figures."""

from __future__ import annotations

import math
import tomllib
from pathlib import Path

import pytest

from benchmarks.acd_e2e import (
    CallRecord,
    _sdp,
    bench_config,
    latency_summary,
    schedule,
    step_figures,
    write_config,
)


def test_latency_summary() -> None:
    empty = latency_summary([])
    assert empty["count"] == 0 and math.isnan(empty["p99"]) and math.isnan(empty["max"])
    figures = latency_summary([float(v) for v in range(101)])
    assert figures["count"] == 101
    assert (figures["p50"], figures["p95"], figures["p99"], figures["max"]) == pytest.approx(
        (50.0, 95.0, 99.0, 100.0)
    )


def test_schedule_is_a_fixed_rate_with_a_warm_up() -> None:
    plan = schedule(rate=4, duration=2, warmup=0.5)
    assert [offset for offset, _ in plan] == pytest.approx([k * 0.25 for k in range(10)])
    assert [counted for _, counted in plan] == [False, False] + [True] * 8
    assert sum(counted for _, counted in schedule(20, 10, 1)) == 200
    with pytest.raises(ValueError):
        schedule(0, 10, 1)


def test_bench_config_adds_the_queue_route_and_agents() -> None:
    base = '[security]\nrate_limit_requests = 50\n\n[[routes]]\nuser = "echo"\ntarget = "echo"\n'
    data = tomllib.loads(bench_config(base, 3, "scrypt$x"))
    assert data["security"]["rate_limit_requests"] == 1_000_000
    assert data["routes"][-1] == {"user": "bench", "target": "queue:bench"}
    queue = data["queues"]["bench"]
    assert queue["members"] == ["bench1", "bench2", "bench3"]
    assert queue["strategy"] == "rrmemory" and queue["wrapup"] == 0
    assert queue["ring_timeout"] >= 60
    assert [a["name"] for a in data["agents"]] == ["bench1", "bench2", "bench3"]
    with pytest.raises(ValueError):
        bench_config("[server]\n", 3, "scrypt$x")


def test_the_written_configuration_loads(tmp_path: Path) -> None:
    from omlmedia.config import load_config

    path = tmp_path / "omlmedia.toml"
    ports = {"rtp_low": 61000, "sip": 5990, "tls": 5991, "http": 5992, "pbx": 5993}
    write_config(path, tmp_path, ports | {"carrier": 5994}, 2)
    config = load_config(path)
    assert config.security.rate_limit_requests == 1_000_000
    assert config.routes[-1].user == "bench"


def test_the_callers_sdp_parses() -> None:
    from sip.sdp import SessionDescription

    sdp = SessionDescription.parse(_sdp(40000, 7))
    assert "m=audio 40000 RTP/AVP 0 101" in str(sdp)


def test_step_figures_count_only_the_measured_calls() -> None:
    records = [
        CallRecord(1, False, invited=0.0, due=0.0, answered=0.5, rung=0.9, agent="bench1"),
        CallRecord(2, True, invited=1.0, due=1.0, answered=1.004, rung=1.010, agent="bench2"),
        CallRecord(3, True, invited=2.001, due=2.0, answered=2.002, rung=2.021, agent="bench2"),
        CallRecord(4, True, invited=3.0, due=3.0, failure="503 Service Unavailable"),
        CallRecord(5, True, invited=4.0, due=4.0, answered=4.01),
    ]
    figures = step_figures(records)
    assert (figures["placed"], figures["rung"], figures["failed"]) == (4, 2, 2)
    assert figures["failures"] == {"503 Service Unavailable": 1, "not rung": 1}
    assert figures["agents_rung"] == 1
    ring = figures["invite_to_ringing_ms"]
    assert ring["count"] == 2 and ring["max"] == pytest.approx(20.0)
    assert figures["invite_to_200_ms"]["count"] == 3
    assert figures["ok_to_ringing_ms"]["max"] == pytest.approx(19.0)
    assert figures["invite_send_lateness_ms"]["max"] == pytest.approx(1.0)


def test_gc_and_stall_logs_are_cut_to_the_window(tmp_path: Path) -> None:
    from benchmarks.acd_e2e import gc_pauses_in, read_gc_log, read_stalls, stalls_in

    log = tmp_path / "gc.log"
    log.write_text("9.5 2 0.100\n10.5 0 0.001\n11.0 2 0.030\n12.0 1 0.004\n30.0 2 0.5\n")
    pauses = read_gc_log(log)
    figures = gc_pauses_in(pauses, 10.0, 20.0)
    assert figures["gen2"] == {"count": 1, "total_ms": pytest.approx(30.0), "max_ms": 30.0}
    assert figures["gen0"]["count"] == 1 and figures["gen1"]["max_ms"] == pytest.approx(4.0)
    assert gc_pauses_in([], 0, 1) == {} and read_gc_log(tmp_path / "none") == []
    stalls_log = tmp_path / "gc.log.stalls"
    stalls_log.write_text("10.2 0.006 0.001 0.005\n11.0 0.150 0.010 0.140\n25.0 0.9 0 0.9\n")
    stalls = stalls_in(read_stalls(stalls_log), 10.0, 20.0)
    assert stalls["count"] == 2 and stalls["total_ms"] == pytest.approx(156.0)
    assert stalls["longest"][0] == {
        "at_s": 1.0, "lag_ms": 150.0, "running_ms": 10.0, "waiting_for_cpu_ms": 140.0
    }  # fmt: skip


async def test_the_stall_probe_sees_a_blocked_loop() -> None:
    import asyncio
    import time

    from benchmarks.acd_e2e import StallProbe

    probe = StallProbe(period=0.005, threshold=0.02)
    probe.start(asyncio.get_running_loop())
    await asyncio.sleep(0.02)
    busy_until = time.monotonic() + 0.06  # the loop is busy: one stall of about 55 ms
    while time.monotonic() < busy_until:
        pass
    await asyncio.sleep(0.02)
    # The first tick after the busy loop is its stall. A loaded machine may add stalls of its
    # own (this process waiting for a CPU, not running): they are not the loop's work.
    ours = [stall for stall in probe.stalls if stall[0] >= busy_until]
    assert ours, probe.stalls
    _, lag, running, _ = ours[0]
    assert 0.04 < lag < 5.0 and running <= lag + 0.01, probe.stalls
    others = [stall for stall in probe.stalls if stall is not ours[0]]
    assert all(run < 0.02 for _, _, run, _ in others), probe.stalls


def test_a_brief_cluster_run_rings_every_call_on_the_other_node(tmp_path: Path) -> None:
    """`--cluster`: callers on node a, agents on node b, one ACD over Redis: every call placed
    rings an agent (on the other node) and the report says so (a subprocess: the benchmark pins
    its own process to a core)."""
    import json
    import subprocess
    import sys

    from tests.cluster import redis

    redis.require()
    out = tmp_path / "report.json"
    run = subprocess.run(
        [
            sys.executable,
            "benchmarks/acd_e2e.py",
            "--cluster",
            "--agents",
            "4",
            "--rates",
            "2",
            "--duration",
            "2",
            "--warmup",
            "0.5",
            "--no-gc-probe",
            "--json",
            str(out),
        ],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert out.exists(), run.stdout[-3000:] + run.stderr[-3000:]
    (step,) = json.loads(out.read_text())["steps"]
    assert step["ok"], step
    assert step["placed"] >= 3 and step["rung"] == step["placed"] and step["failed"] == 0, step
