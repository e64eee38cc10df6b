"""benchmarks/cluster.py acd: two node processes over a throwaway Redis offer every caller, the
report has the decision latency, the Redis commands per call and the rebuild time, and the run
ends (its callers node once hung in close(): redis-py swallowed the cancellation of a blocked
XREAD and the read loop went on)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.cluster import redis as throwaway

ROOT = Path(__file__).resolve().parents[2]


def test_the_cluster_benchmark_offers_every_caller_and_ends(tmp_path: Path) -> None:
    throwaway.require()
    out = tmp_path / "cluster.json"
    argv = [sys.executable, str(ROOT / "benchmarks" / "cluster.py"), "acd"]
    argv += ["--duration", "1", "--rebuild", "1000", "--json", str(out)]
    subprocess.run(argv, check=True, timeout=60, stdout=subprocess.DEVNULL)
    report = json.loads(out.read_text())
    latency = report["latency"]
    assert latency["offered"] == latency["calls"] > 0
    assert 0 < latency["offer_ms"]["p50"] <= latency["offer_ms"]["p99"]
    assert latency["redis_commands_per_call"] > 0
    assert [r["entries"] for r in report["rebuild"]] == [1000]
    assert report["rebuild"][0]["replay_seconds"] <= report["rebuild"][0]["rebuild_seconds"]
