"""Cross-node calls: what the internal SIP leg costs, in CPU and one-way latency.

Two scenarios, the same N calls and the same load generator (benchmarks/webrtc_load.py: N
headless aiortc agents ``bench1..N`` and N SIP callers, PCMU, tone bursts both ways):

- ``local``: one node (b); the agents log in to b and the callers dial b (``agent-benchK``);
- ``cross``: two nodes (a and b) sharing a throwaway Redis; the agents log in to b, the callers
  dial a, which finds each agent on b and bridges the caller to b over an internal SIP leg
  (`omlmedia.crossnode`, passthrough PCMU on a, the agent's channel on b).

Measured over a window after the warm-up: each node's CPU (``/proc/PID/stat``, all threads) as
µs per call-second, and the one-way latency p50/p99 both ways (sample-accurate, from the tone
bursts; see webrtc_load.py). What the hop costs: node a's CPU (the relay), b's CPU against the
local case (should be the same work), and the latency against the local case (a's relay and
the extra UDP hop each way). Each scenario runs `--runs` times, alternating, so that the
machine's load weighs on both alike.

    .venv/bin/python benchmarks/crossnode.py [--calls 10] [--duration 10] [--warmup 2]
        [--runs 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import harness  # noqa: E402
from benchmarks.harness import RunningServer  # noqa: E402
from benchmarks.procstat import Window  # noqa: E402
from benchmarks.webrtc_bridge import edit_config as bench_agents  # noqa: E402

SECRET = b"crossnode-benchmark-secret-32-by"
REDIS = shutil.which("redis-server") or "/usr/bin/redis-server"


@contextmanager
def throwaway_redis() -> Iterator[str]:
    """Debian's redis-server on a free loopback port, no persistence; its URL."""
    directory = Path(tempfile.mkdtemp(prefix="omlmedia-bench-redis-"))
    port = harness.free_port()
    argv = [REDIS, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    process = subprocess.Popen(
        [*argv, "--dir", str(directory), "--logfile", str(directory / "log")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(10)
        shutil.rmtree(directory, ignore_errors=True)


def start_nodes(
    workdir: Path, names: list[str], calls: int, redis_url: str
) -> dict[str, RunningServer]:
    """The nodes `names` (of a and b), each knowing both, agents bench1..N on each."""
    secret = workdir / "cluster.secret"
    workdir.mkdir(parents=True, exist_ok=True)
    secret.write_bytes(SECRET)
    ports = {"a": harness.free_port(), "b": harness.free_port()}
    nodes_toml = "".join(f'[cluster.nodes.{n}]\nsip = "127.0.0.1:{p}"\n' for n, p in ports.items())
    started: dict[str, RunningServer] = {}

    def edit(name: str, text: str) -> str:
        text = re.sub(r"(?m)^sip_port = \d+$", f"sip_port = {ports[name]}", text, count=1)
        cluster = (
            f'\n[cluster]\nredis_url = "{redis_url}"\nnode = "{name}"\n'
            f'secret_file = "{secret}"\n{nodes_toml}'
        )
        return bench_agents(text, calls, stock=False) + cluster

    try:
        for name in names:
            server = harness.start_server(
                workdir / name,
                t1=0.5,
                media_timeout=600,
                edit_config=lambda text, name=name: edit(name, text),
                extra_args=("--log-level", "warning"),
            )
            server.ports["sip"] = ports[name]
            started[name] = server
    except BaseException:
        for server in started.values():
            server.stop()
        raise
    return started


def run_scenario(
    scenario: str, args: argparse.Namespace, workdir: Path, redis_url: str
) -> dict[str, Any]:
    """One scenario with fresh nodes and a fresh generator; its measurements."""
    from benchmarks.webrtc_bridge import PASSWORD
    from benchmarks.webrtc_load import generator_main

    names = ["b"] if scenario == "local" else ["a", "b"]
    nodes = start_nodes(workdir, names, args.calls, redis_url)
    caller_node = nodes["a"] if scenario == "cross" else nodes["b"]
    spec = {
        "calls": args.calls,
        "http_port": nodes["b"].http_port,
        "sip_port": caller_node.sip_port,
        "password": PASSWORD,
        "warmup": args.warmup,
        "duration": args.duration,
        "stagger": args.stagger,
        "setup_timeout": 30 + 1.0 * args.calls,
        "core": None,
    }
    windows = {name: Window(server.pid) for name, server in nodes.items()}
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    process = context.Process(target=generator_main, args=(child, spec), daemon=True)
    process.start()
    result: dict[str, Any] = {}
    try:
        deadline = time.monotonic() + spec["setup_timeout"] * 3 + args.duration + 60
        while time.monotonic() < deadline:
            if not parent.poll(1.0):
                if not process.is_alive():
                    raise RuntimeError("the generator died")
                continue
            message = parent.recv()
            if isinstance(message, dict):
                result = message
                break
            if message[0] == "window-start":
                for window in windows.values():
                    window.start()
            elif message[0] == "window-end":
                for window in windows.values():
                    window.end()
        else:
            raise RuntimeError("the generator did not finish in time")
    except RuntimeError as exc:
        result = {"error": str(exc)}
    finally:
        process.join(10)
        if process.is_alive():
            process.kill()
        for server in nodes.values():
            server.stop()
    if "error" in result:
        return {"scenario": scenario, "error": result["error"]}
    seconds = result["window_seconds"]
    return {
        "scenario": scenario,
        "cpu_us_per_call_second": {
            name: round(1e6 * window.cpu_seconds / seconds / args.calls, 1)
            for name, window in windows.items()
        },
        "latency_ms": result["latency_ms"],
        "calls_without_two_way": result["calls_without_two_way"],
        "wire": result["wire"],
    }


def _median(values: list[float]) -> float:
    ordered = sorted(v for v in values if not math.isnan(v))
    if not ordered:
        return math.nan
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over the runs of each scenario, and the hop's cost from them."""
    good = [r for r in runs if "error" not in r and not r["calls_without_two_way"]]
    by = {s: [r for r in good if r["scenario"] == s] for s in ("local", "cross")}
    out: dict[str, Any] = {}
    for scenario, rows in by.items():
        if not rows:
            continue
        cpu = {
            node: _median([r["cpu_us_per_call_second"][node] for r in rows])
            for node in rows[0]["cpu_us_per_call_second"]
        }
        latency = {
            direction: {
                q: _median([r["latency_ms"][direction][q] for r in rows]) for q in ("p50", "p99")
            }
            for direction in ("caller_to_agent", "agent_to_caller")
        }
        out[scenario] = {"cpu_us_per_call_second": cpu, "latency_ms": latency, "runs": len(rows)}
    if "local" in out and "cross" in out:
        local, cross = out["local"], out["cross"]
        before, after = local["latency_ms"], cross["latency_ms"]
        out["hop"] = {
            "node_a_cpu_us_per_call_second": cross["cpu_us_per_call_second"]["a"],
            "node_b_cpu_change_us_per_call_second": round(
                cross["cpu_us_per_call_second"]["b"] - local["cpu_us_per_call_second"]["b"], 1
            ),
            "added_latency_ms": {
                direction: {
                    q: round(after[direction][q] - before[direction][q], 2) for q in ("p50", "p99")
                }
                for direction in ("caller_to_agent", "agent_to_caller")
            },
        }
    return out


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=10)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--stagger", type=float, default=0.05)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    runs: list[dict[str, Any]] = []
    with (
        tempfile.TemporaryDirectory(prefix="omlmedia-crossnode-") as tmp,
        throwaway_redis() as redis_url,
    ):
        for index in range(args.runs):
            for scenario in ("local", "cross"):
                row = run_scenario(scenario, args, Path(tmp) / f"{scenario}-{index}", redis_url)
                runs.append(row)
                print(json.dumps(row), flush=True)
    report = {"command": " ".join(sys.argv), "calls": args.calls, "runs": runs}
    report["summary"] = summarize(runs)
    print(json.dumps(report["summary"], indent=2))
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2))
    return 0 if "hop" in report["summary"] else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
