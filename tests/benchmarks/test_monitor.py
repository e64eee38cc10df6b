"""benchmarks/monitor.py runs at a tiny size and prints one table row per leg rate."""

from __future__ import annotations

import re
from collections.abc import Callable


def test_prints_the_rooms_cost_per_rate_and_mode(run_benchmark: Callable[..., str]) -> None:
    out = run_benchmark("monitor", "--rates", "8000,16000", "--ticks", "5", "--runs", "1")
    lines = out.splitlines()
    assert lines[0] == "| rate | listen | whisper | barge | share of one core |"
    row = re.compile(r"\| (\d+) \| ([\d.]+) µs \| ([\d.]+) µs \| ([\d.]+) µs \| ([\d.]+) % \|")
    rows = [row.fullmatch(line) for line in lines[2:]]
    assert [m.group(1) for m in rows if m] == ["8000", "16000"]
    assert all(m and float(m.group(2)) > 0 for m in rows)
