"""Cluster benchmarks. Section ``acd``: one ACD across nodes over Redis (`omlmedia.acd_shared`).

A throwaway ``redis-server`` on loopback (AOF on, ``appendfsync everysec``, as production should
run it). Two node processes: the *agents* node (a child process, started first so it owns the
ACD: it applies the stream and publishes) with ``--agents`` agents that answer every offer at
once and hang up ``--talk`` seconds later, and the *callers* node (this process), where
``--rate`` callers per second enter one queue for ``--duration`` seconds. Measured:

- decision latency at the caller's node: from `SharedAcd.submit(CallerEnter)` to the node
  receiving its ``joined`` decision and its first ``offer`` decision (input appended to
  ``acd:in``, read by the owner, applied, published to ``acd:out``, read back: four Redis
  round trips plus the two event loops), p50 / p99 / max;
- Redis commands per call: ``INFO commandstats`` before and after, all clients together (the
  lease renewals and the idle ``XREAD BLOCK`` polls included), divided by the calls;
- rebuild time (what a new owner does on takeover) for ``--rebuild`` stream sizes: a synthetic
  stream of logins, enters, answers, completions and ticks written to ``acd:in``, then
  ``XRANGE`` of all of it, parsing and replay (`SharedAcd._rebuild`), and the replay alone.

    .venv/bin/python benchmarks/cluster.py acd [--agents 50] [--rate 20] [--duration 10]
        [--talk 1.0] [--rebuild 10000,100000] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import redis  # noqa: E402
import redis.asyncio as aioredis  # noqa: E402

from benchmarks import redisserver  # noqa: E402
from omlmedia.acd_shared import SharedAcd  # noqa: E402
from queueing.config import AcdConfig, build_config  # noqa: E402
from queueing.events import Joined, LogEvent, OfferCall, QueueLogEntry  # noqa: E402
from queueing.replica import (  # noqa: E402
    AgentLogin,
    CallCompleted,
    CallerEnter,
    Decision,
    Input,
    OfferAnswered,
    ReplicatedAcd,
    Tick,
)


def acd_config(agents: int) -> AcdConfig:
    names = [f"a{i}" for i in range(agents)]
    return build_config(
        {
            "agents": {name: {} for name in names},
            "queues": {"q": {"strategy": "leastrecent", "members": names, "ring_timeout": 15}},
        }
    )


def start_redis(directory: Path) -> tuple[subprocess.Popen[bytes], int]:
    return redisserver.start(directory, appendfsync="everysec")


def command_count(client: redis.Redis) -> int:
    stats: dict[str, Any] = client.info("commandstats")
    return sum(
        int(value["calls"])
        for name, value in stats.items()
        if name not in ("cmdstat_info", "cmdstat_ping")
    )


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


# -- the agents node (a child process) --------------------------------------------------------


async def agents_node(url: str, agents: int, talk: float) -> None:
    loop = asyncio.get_running_loop()
    acd: SharedAcd

    def on_decision(decision: Decision) -> None:
        out = decision.output
        if isinstance(out, OfferCall):
            acd.submit(OfferAnswered(out.call_id, out.agent, time.time()))
        elif isinstance(out, QueueLogEntry) and out.event is LogEvent.ANSWER:
            call, agent = out.call_id, out.agent
            loop.call_later(talk, lambda: acd.submit(CallCompleted(call, agent, time.time())))

    acd = SharedAcd(url, "agents", acd_config(agents), on_decision)
    await acd.start()
    for i in range(agents):
        acd.submit(AgentLogin(f"a{i}", time.time()))
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    print("ready", flush=True)
    await stop.wait()
    await acd.close()


# -- the callers node (this process) ----------------------------------------------------------


async def measure_latency(url: str, args: argparse.Namespace) -> dict[str, Any]:
    submitted: dict[str, float] = {}
    joined: dict[str, float] = {}
    offered: dict[str, float] = {}
    everyone_offered = asyncio.Event()
    calls = int(args.rate * args.duration)

    def on_decision(decision: Decision) -> None:
        now = time.perf_counter()
        out = decision.output
        if isinstance(out, Joined):
            joined.setdefault(out.call_id, now)
        elif isinstance(out, OfferCall):
            offered.setdefault(out.call_id, now)
            if len(offered) >= calls:
                everyone_offered.set()

    client = redis.Redis.from_url(url)
    acd = SharedAcd(url, "callers", acd_config(args.agents), on_decision)
    await acd.start()
    await asyncio.sleep(1.0)  # let the lease, logins and polls settle before counting
    ops_before = command_count(client)
    started = time.perf_counter()
    for n in range(calls):
        target = started + n / args.rate
        delay = target - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        call = f"c{n}"
        submitted[call] = time.perf_counter()
        acd.submit(CallerEnter(call, "q", time.time()))
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(everyone_offered.wait(), 30)
    elapsed = time.perf_counter() - started
    ops = command_count(client) - ops_before
    await acd.close()
    client.close()
    to_join = [(joined[c] - t) * 1000 for c, t in submitted.items() if c in joined]
    to_offer = [(offered[c] - t) * 1000 for c, t in submitted.items() if c in offered]
    return {
        "calls": calls,
        "offered": len(offered),
        "joined_ms": summary(to_join),
        "offer_ms": summary(to_offer),
        "redis_commands": ops,
        "redis_commands_per_call": ops / calls,
        "seconds": elapsed,
        "redis_commands_per_second_idle_included": ops / elapsed,
    }


def summary(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    return {
        "p50": round(statistics.median(values), 2),
        "p99": round(percentile(values, 0.99), 2),
        "max": round(max(values), 2),
    }


def synthetic_stream(size: int, agents: int) -> list[tuple[str, Input, tuple[str, int]]]:
    """A stream of `size` inputs like a busy day's (a caller every 0.5 s, 20 s calls, so about
    40 agents busy, no backlog): logins, then callers entering, answered and completed, with
    ticks; built by running an engine so that every input is plausible."""
    acd = ReplicatedAcd(acd_config(agents), seed=1)
    entries: list[tuple[str, Input, tuple[str, int]]] = []
    pending: list[Input] = [AgentLogin(f"a{i}", 0.0) for i in range(agents)]
    now, calls, ms = 0.0, 0, 1_000_000
    talking: list[tuple[float, str, str]] = []
    while len(entries) < size:
        if not pending:
            now += 0.5
            if talking and talking[0][0] <= now:
                _, call, agent = talking.pop(0)
                pending.append(CallCompleted(call, agent, now))
            elif calls % 20 == 19:
                pending.append(Tick(now))
                calls += 1
            else:
                calls += 1
                pending.append(CallerEnter(f"c{calls}", "q", now))
        item = pending.pop(0)
        ms += 1
        entry = (f"{ms}-0", item, ("bench", len(entries) + 1))
        entries.append(entry)
        for decision in acd.apply(*entry):
            out = decision.output
            if isinstance(out, OfferCall):
                pending.append(OfferAnswered(out.call_id, out.agent, now))
            elif isinstance(out, QueueLogEntry) and out.event is LogEvent.ANSWER:
                talking.append((now + 20.0, out.call_id, out.agent))
    return entries


async def measure_rebuild(port: int, sizes: list[int], agents: int) -> list[dict[str, Any]]:
    results = []
    for size in sizes:
        prefix = f"rebuild{size}:"
        entries = synthetic_stream(size, agents)
        client: Any = aioredis.from_url(f"redis://127.0.0.1:{port}/0", socket_timeout=30)
        for first in range(0, len(entries), 1000):
            async with client.pipeline(transaction=False) as pipe:
                for _, item, source in entries[first : first + 1000]:
                    fields = {"s": source[0], "n": source[1], "i": json.dumps(item.to_dict())}
                    pipe.xadd(prefix + "in", fields)
                await pipe.execute()
        await client.aclose()
        print(f"{size} entries written", file=sys.stderr, flush=True)
        acd = SharedAcd(
            f"redis://127.0.0.1:{port}/0", "bench", acd_config(agents), print, prefix=prefix
        )
        started = time.perf_counter()
        await acd._rebuild(1)
        total = time.perf_counter() - started
        await acd._redis.aclose()
        replica = ReplicatedAcd(acd_config(agents), seed=1)
        started = time.perf_counter()
        replica.rebuild(entries, None)
        replay = time.perf_counter() - started
        results.append(
            {
                "entries": size,
                "rebuild_seconds": round(total, 3),
                "replay_seconds": round(replay, 3),
            }
        )
    return results


def run_acd(args: argparse.Namespace) -> dict[str, Any]:
    directory = Path(tempfile.mkdtemp(prefix="omlmedia-bench-redis-"))
    server, port = start_redis(directory)
    url = f"redis://127.0.0.1:{port}/0"
    argv = [sys.executable, __file__, "acd-agents", "--redis", url]
    argv += ["--agents", str(args.agents), "--talk", str(args.talk)]
    child = subprocess.Popen(argv, stdout=subprocess.PIPE)
    try:
        assert child.stdout is not None
        if child.stdout.readline() != b"ready\n":
            raise RuntimeError("the agents node did not start")
        client = redis.Redis(port=port)
        deadline = time.monotonic() + 10
        while not client.get("acd:owner"):
            if time.monotonic() > deadline:
                raise RuntimeError("the agents node did not take the lease")
            time.sleep(0.05)
        client.close()
        latency = asyncio.run(measure_latency(url, args))
        sizes = [int(s) for s in args.rebuild.split(",") if s]
        rebuild = asyncio.run(measure_rebuild(port, sizes, args.agents))
    finally:
        child.send_signal(signal.SIGTERM)
        try:
            child.wait(10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
        server.terminate()
        server.wait(10)
        shutil.rmtree(directory, ignore_errors=True)
    return {
        "section": "acd",
        "agents": args.agents,
        "rate": args.rate,
        "duration": args.duration,
        "cpus": os.cpu_count(),
        "latency": latency,
        "rebuild": rebuild,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sections = parser.add_subparsers(dest="section", required=True)
    acd = sections.add_parser("acd", help="one ACD across nodes over Redis")
    acd.add_argument("--agents", type=int, default=50)
    acd.add_argument("--rate", type=float, default=20.0, help="callers per second")
    acd.add_argument("--duration", type=float, default=10.0)
    acd.add_argument("--talk", type=float, default=1.0)
    acd.add_argument("--rebuild", default="10000,100000", help="stream sizes to rebuild")
    acd.add_argument("--json", type=Path)
    child = sections.add_parser("acd-agents", help="(internal) the agents node of `acd`")
    child.add_argument("--redis", required=True)
    child.add_argument("--agents", type=int, required=True)
    child.add_argument("--talk", type=float, required=True)
    args = parser.parse_args()
    if args.section == "acd-agents":
        asyncio.run(agents_node(args.redis, args.agents, args.talk))
        return 0
    result = run_acd(args)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
