"""benchmarks/conference.py runs at a tiny size and prints one table row per room size."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_prints_a_row_per_room_size() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "benchmarks/conference.py",
            "--parties",
            "2,3",
            "--ticks",
            "5",
            "--runs",
            "1",
        ],
        cwd=ROOT,
        env=os.environ | {"PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    lines = result.stdout.splitlines()
    assert lines[0] == "| parties | tick | receive | per party | share of one core |"
    row = re.compile(r"\| (\d+) \| (\d+) µs \| (\d+) µs \| (\d+) µs \| (\d+\.\d) % \|")
    rows = [row.fullmatch(line) for line in lines[2:]]
    assert [m.group(1) for m in rows if m] == ["2", "3"]
    assert all(m and int(m.group(2)) > 0 for m in rows)
