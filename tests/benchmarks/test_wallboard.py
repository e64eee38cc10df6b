"""benchmarks/wallboard.py runs at a tiny size (a few agents and calls, one page) and reports the
event-to-screen latency it measured and the server's CPU."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from benchmarks.wallboard import percentile


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.5) == 50.0 and percentile(values, 0.99) == 99.0


def test_a_tiny_run_measures_each_marker_on_screen(
    run_benchmark: Callable[..., str], tmp_path: Path
) -> None:
    out = tmp_path / "wallboard.json"
    run_benchmark(
        "wallboard",
        "--agents",
        "20",
        "--cps",
        "2",
        "--pages",
        "1",
        "--seconds",
        "3",
        "--warmup",
        "1",
        "--json",
        str(out),
    )
    figures = json.loads(out.read_text())
    latency = figures["latency_ms"]
    # Five markers a second for 3 s: most reach the screen (a frame may show two at once).
    assert latency["samples"] >= latency["expected"] // 2, latency
    assert 0 < latency["p50"] <= latency["p99"] < 5000, latency
    assert figures["server_cpu_percent"]["with_pages"] > 0
