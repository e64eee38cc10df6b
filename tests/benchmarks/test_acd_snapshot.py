"""benchmarks/acd_snapshot.py at a tiny size: the report has every figure, the takeover from a
snapshot restored the owner's exact image (the benchmark asserts it), and the snapshot is far
smaller than the stream it replaces."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path


def test_reports_snapshot_and_restore_costs_against_replay(
    run_benchmark: Callable[..., str], tmp_path: Path
) -> None:
    out = tmp_path / "snapshot.json"
    args = ["--agents", "20", "--queues", "4", "--waiting", "30", "--history", "3000"]
    run_benchmark("acd_snapshot", *args, "--tail", "500", "--repeat", "1", "--json", str(out))
    report = json.loads(out.read_text())
    for name in ("state_only", "with_history"):
        figures = report[name]
        assert figures["waiting"] == 30 and figures["on_call"] > 10 and figures["ready"] == 0
        for key in ("replay_seconds", "snapshot_seconds", "restore_seconds"):
            assert figures[key] > 0
        assert 0 < figures["snapshot_zlib1_bytes"] < figures["snapshot_bytes"]
    history = report["with_history"]
    assert history["inputs"] >= 3000 and history["tail_inputs"] == 500
    assert history["statistics_buckets"] > report["state_only"]["statistics_buckets"]
