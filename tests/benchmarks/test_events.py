"""benchmarks/events.py: the percentile, the fixed-rate publisher's arithmetic and the cheap SSE
reading its clients do."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from pathlib import Path

from benchmarks.events import dechunk, due, percentile, sip_summary, sse_times, write_calls


def test_percentile_is_nearest_rank() -> None:
    assert math.isnan(percentile([], 0.5))
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.50) == 50.0
    assert percentile(values, 0.99) == 99.0
    assert percentile([3.0, 1.0, 2.0], 1.0) == 3.0


def test_the_publisher_owes_what_the_rate_says_and_never_less_than_nothing() -> None:
    assert due(2000, 0.005, 0) == 10
    assert due(2000, 0.0101, 10) == 10
    assert due(2000, 1.0, 2500) == 0


def test_sse_times_reads_complete_messages_and_keeps_the_rest() -> None:
    buffer = bytearray(
        b": keepalive\n\n"
        b'id: 7\nevent: queue.entered\ndata: {"id":7,"time":1700000000.25,"type":"x"}\n\n'
        b'id: 8\nevent: queue.entered\ndata: {"id":8,"time":1700000000.5,'
    )
    assert sse_times(buffer) == [(7, 1700000000.25)]
    assert buffer.startswith(b"id: 8")
    buffer += b'"type":"x"}\n\n'
    assert sse_times(buffer) == [(8, 1700000000.5)]
    assert buffer == bytearray()


def test_dechunk_takes_whole_chunks_and_sees_the_last() -> None:
    raw = bytearray(b"5\r\nhello\r\n6\r\n world\r\n3\r\nab")
    assert dechunk(raw) == (b"hello world", False)
    raw += b"c\r\n0\r\n\r\n"
    assert dechunk(raw) == (b"abc", True)


def test_interleaved_sip_phases_are_pooled_by_kind() -> None:
    def phase(kind: str, times: list[float], **extra: float) -> dict[str, object]:
        return {
            "kind": kind,
            "setup_ms": times,
            "setup_ms_p99": percentile(times, 0.99),
            "calls": len(times),
            "failed": 0,
            "retransmissions": 0,
            "deliveries": 300 * len(times) if kind == "with_clients" else 0,
            "delivery_ms_p99": 40.0 if kind == "with_clients" else math.nan,
            "server_cpu_us_per_call": 2000 if kind == "with_clients" else 1000,
            **extra,
        }

    hooks = {
        "webhook_duplicates": 0,
        "webhook_ms_p50": 9.0,
        "outbox_depth_max": 4.0,
        "worker_cpu_us_per_delivery": 300.0,
    }
    phases = [
        phase("alone", [4.0] * 99 + [10.0]),
        phase("with_clients", [4.0] * 99 + [11.0]),
        phase("with_webhooks", [4.0] * 100, webhook_deliveries=30, webhook_ms_p99=20.0, **hooks),
        phase("alone", [5.0] * 100),
        phase("with_clients", [4.0] * 100),
        phase("with_webhooks", [6.0] * 100, webhook_deliveries=30, webhook_ms_p99=30.0, **hooks),
    ]
    summary = sip_summary(phases, 50, 8.0)
    assert summary["alone"]["calls"] == summary["with_clients"]["calls"] == 200
    # Pooled: the 99th percentile of all 200 calls of a kind, not of a phase.
    assert summary["alone"]["setup_ms_p99"] == 5.0
    assert summary["with_clients"]["setup_ms_p99"] == 4.0
    assert summary["setup_p99_change_percent"] == -20.0
    assert summary["webhooks_setup_p99_change_percent"] == 20.0
    assert summary["with_clients"]["server_cpu_us_per_call"] == 2000
    assert summary["with_clients"]["deliveries"] == 60_000
    assert summary["with_webhooks"]["webhook_deliveries"] == 60
    assert summary["with_webhooks"]["webhook_ms_p99"] == 30.0
    # Each phase's p99 of a kind: min / median / max over the rounds.
    assert summary["alone"]["setup_ms_p99_min_median_max"] == "4 / 4.5 / 5"
    assert summary["with_webhooks"]["webhook_ms_p99_min_median_max"] == "20 / 25 / 30"
    assert summary["phase_p99_ms"].split() == [
        "alone:4",
        "with_clients:4",
        "with_webhooks:4",
        "alone:5",
        "with_clients:4",
        "with_webhooks:6",
    ]


def test_a_tiny_sip_run_measures_stream_clients_and_webhooks_against_calls_alone(
    run_benchmark: Callable[..., str], tmp_path: Path
) -> None:
    out = tmp_path / "events.json"
    run_benchmark(
        "events",
        "--with-sip",
        "--cps",
        "5",
        "--seconds",
        "2",
        "--rounds",
        "1",
        "--clients",
        "3",
        "--webhooks",
        "2",
        "--json",
        str(out),
    )
    figures = json.loads(out.read_text())
    for kind in ("alone", "with_clients", "with_webhooks"):
        assert figures[kind]["calls"] == 10 and figures[kind]["failed"] == 0, figures
        assert 0 <= figures[kind]["setup_ms_p50"] <= figures[kind]["setup_ms_p99"], figures
    # Every call to echo publishes call.started, call.answered and call.ended.
    assert figures["with_clients"]["deliveries"] >= 3 * 10 * 3, figures
    hooks = figures["with_webhooks"]
    assert hooks["webhook_deliveries"] == 2 * 10 * 3, hooks
    assert 0 < hooks["webhook_ms_p50"] <= hooks["webhook_ms_p99"] < 30_000, hooks
    assert hooks["outbox_depth_max"] >= 0, hooks
    assert figures["phase_p99_ms"].split()[0].startswith("alone:")


def test_write_calls_counts_this_process_s_write_system_calls(tmp_path: Path) -> None:
    before = write_calls(os.getpid())
    fd = os.open(tmp_path / "f", os.O_WRONLY | os.O_CREAT)
    try:
        for _ in range(5):
            os.write(fd, b"x")
    finally:
        os.close(fd)
    assert write_calls(os.getpid()) - before >= 5
    assert write_calls(2**22 + 7) == 0  # no such process
