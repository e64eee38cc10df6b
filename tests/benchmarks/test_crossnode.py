"""benchmarks/crossnode.py at a tiny size: both scenarios run, and the hop's cost is reported."""

from __future__ import annotations

import json
from collections.abc import Callable

from benchmarks.crossnode import summarize
from tests.cluster import redis


def _run(scenario: str, a: float | None, b: float, latency: float) -> dict[str, object]:
    cpu = {"b": b} if a is None else {"a": a, "b": b}
    lat = {"p50": latency, "p99": 2 * latency}
    return {
        "scenario": scenario,
        "cpu_us_per_call_second": cpu,
        "latency_ms": {"caller_to_agent": lat, "agent_to_caller": lat},
        "calls_without_two_way": 0,
    }


def test_the_hop_is_the_cross_scenario_minus_the_local_one_over_the_medians() -> None:
    runs = [
        _run("local", None, 100.0, 10.0),
        _run("cross", 40.0, 104.0, 11.0),
        _run("local", None, 120.0, 12.0),
        _run("cross", 60.0, 118.0, 12.5),
        {"scenario": "cross", "error": "the generator died"},
    ]
    hop = summarize(runs)["hop"]
    assert hop["node_a_cpu_us_per_call_second"] == 50.0
    assert hop["node_b_cpu_change_us_per_call_second"] == 1.0
    assert hop["added_latency_ms"]["caller_to_agent"] == {"p50": 0.75, "p99": 1.5}


def test_prints_the_hops_cpu_and_latency(run_benchmark: Callable[..., str]) -> None:
    redis.require()
    out = run_benchmark(
        "crossnode", "--calls", "2", "--duration", "2", "--warmup", "1", "--runs", "1"
    )
    summary = json.loads(out[out.index("{\n") :])
    assert summary["hop"]["node_a_cpu_us_per_call_second"] > 0
    assert set(summary["hop"]["added_latency_ms"]) == {"caller_to_agent", "agent_to_caller"}
