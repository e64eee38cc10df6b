"""benchmarks/conference.py runs at a tiny size and prints one table row per room size."""

from __future__ import annotations

import re
from collections.abc import Callable


def test_prints_a_row_per_room_size(run_benchmark: Callable[..., str]) -> None:
    out = run_benchmark("conference", "--parties", "2,3", "--ticks", "5", "--runs", "1")
    lines = out.splitlines()
    assert lines[0] == "| parties | tick | receive | per party | share of one core |"
    row = re.compile(r"\| (\d+) \| (\d+) µs \| (\d+) µs \| (\d+) µs \| (\d+\.\d) % \|")
    rows = [row.fullmatch(line) for line in lines[2:]]
    assert [m.group(1) for m in rows if m] == ["2", "3"]
    assert all(m and int(m.group(2)) > 0 for m in rows)
