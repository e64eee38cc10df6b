"""Snapshots of the replicated ACD against replaying its input stream (what a new owner does).

A busy contact center is played through a `ReplicatedAcd` in simulated time, with no I/O:
``--agents`` agents, each a member of three of ``--queues`` queues (strategies of every kind,
some with wrap-up, announcements or escalation), log in; callers arrive at a rate that keeps
about 80 % of the agents talking (answered at once, 200-400 s calls) until the stream holds
``--history`` inputs; then callers keep arriving and nobody hangs up, until every agent is busy
and ``--waiting`` callers wait. Timers that fall due are written as `Tick` inputs, as the owner
does. Measured, each the median CPU time of ``--repeat`` runs on one core (the wall time of the
two takeovers too, which on a shared machine includes waiting for the CPU):

- replay: `ReplicatedAcd.rebuild` of the whole stream (what a new owner does today), and the
  parsing of its inputs from JSON (``input_from_dict(json.loads(...))``, what it does first);
- snapshot: `ReplicatedAcd.snapshot()` (on the event loop: it reads the engine) and
  ``json.dumps`` of it (can go to a thread: the image shares nothing with the engine), its size
  in bytes, and zlib level 1 of it;
- restore: ``json.loads`` of the image and `ReplicatedAcd.restore`, then the tail: ``--tail``
  more inputs applied after it (what a new owner replays when a snapshot is taken every
  ``--tail`` inputs).

The same figures for the state alone (the same agents and waiting callers without the history:
statistics of one period) show what the history costs in the image: the statistics' per-period
buckets, one per queue and per agent and period.

    .venv/bin/python benchmarks/acd_snapshot.py [--agents 500] [--queues 50] [--waiting 2000]
        [--history 100000] [--tail 10000] [--repeat 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import gc
import heapq
import json
import random
import statistics
import sys
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from queueing.config import AcdConfig, Strategy, build_config  # noqa: E402
from queueing.events import LogEvent, OfferCall, QueueLogEntry  # noqa: E402
from queueing.replica import (  # noqa: E402
    AgentLogin,
    CallCompleted,
    CallerEnter,
    Input,
    OfferAnswered,
    ReplicatedAcd,
    Source,
    Tick,
    input_from_dict,
)

Entry = tuple[str, Input, Source]
SEED = 1


def acd_config(agents: int, queues: int) -> AcdConfig:
    names = [f"a{i}" for i in range(agents)]
    strategies = [s.value for s in Strategy]
    members: dict[int, list[dict[str, Any]]] = {q: [] for q in range(queues)}
    for i, name in enumerate(names):
        for n, step in enumerate((1, 7, 13)):
            q = (i * step + n * 3) % queues
            if all(m["agent"] != name for m in members[q]):
                members[q].append({"agent": name, "penalty": n % 2})
    table: dict[str, Any] = {}
    for q in range(queues):
        queue: dict[str, Any] = {
            "strategy": strategies[q % len(strategies)],
            "members": members[q],
            "ring_timeout": 15,
            "wrapup": 5 if q % 3 == 0 else 0,
        }
        if q % 5 == 0:
            queue["announce_frequency"] = 60
        if q % 4 == 0:
            queue["escalation"] = [{"after": 30, "max_penalty": 1}]
            queue["max_penalty"] = 0
        table[f"q{q}"] = queue
    return build_config({"agents": {name: {} for name in names}, "queues": table})


def busy_stream(config: AcdConfig, history: int, waiting: int) -> tuple[list[Entry], ReplicatedAcd]:
    """The stream of a busy contact center (see the module docstring) and its owner at its end."""
    rng = random.Random(SEED)
    acd = ReplicatedAcd(config, seed=SEED, stats_period=900.0)
    agents, queues = list(config.agents), list(config.queues)
    entries: list[Entry] = []
    ends: list[tuple[float, str, str]] = []  # (end of talk, call, agent)
    waiting_now: set[str] = set()
    now, calls = 0.0, 0
    rate = 0.8 * len(agents) / 300.0
    surge = False  # then: callers keep arriving, nobody hangs up

    def feed(item: Input) -> None:
        entry: Entry = (f"{1_000_000 + len(entries)}-0", item, ("bench", len(entries) + 1))
        entries.append(entry)
        offers = []
        for decision in acd.apply(*entry):
            out = decision.output
            if isinstance(out, OfferCall):
                offers.append(out)
            elif isinstance(out, QueueLogEntry) and out.event is LogEvent.ENTER:
                waiting_now.add(out.call_id)
            elif isinstance(out, QueueLogEntry) and out.event in (
                LogEvent.ANSWER,
                LogEvent.ABANDON,
                LogEvent.OVERFLOW,
            ):
                waiting_now.discard(out.call_id)
        for offer in offers:
            feed(OfferAnswered(offer.call_id, offer.agent, now))
            if not surge:
                heapq.heappush(ends, (now + rng.uniform(200, 400), offer.call_id, offer.agent))

    for agent in agents:
        feed(AgentLogin(agent, 0.0))
    while True:
        if not surge and len(entries) >= history:
            surge = True
        if surge and len(waiting_now) >= waiting:
            return entries, acd
        now += rng.expovariate(rate if not surge else 50.0)
        while ends and ends[0][0] <= now and not surge:
            end, call, agent = heapq.heappop(ends)
            feed(CallCompleted(call, agent, end))
        while (due := acd.due()) is not None and due <= now:
            feed(Tick(due))
        calls += 1
        queue = rng.choice(queues)
        feed(CallerEnter(f"c{calls}", queue, now, priority=rng.choice([0, 0, 0, 1])))


WALL: dict[str, float] = {}


def median_seconds(repeat: int, run: Callable[[], object]) -> tuple[float, object]:
    """The median CPU time of `repeat` runs (the machine is shared: wall time is noise) and the
    last result; the median wall time goes in `WALL` under the function's name."""
    cpu, wall, result = [], [], None
    for _ in range(repeat):
        gc.collect()
        started, wall_started = time.process_time(), time.perf_counter()
        result = run()
        cpu.append(time.process_time() - started)
        wall.append(time.perf_counter() - wall_started)
    WALL[getattr(run, "__name__", "")] = statistics.median(wall)
    return statistics.median(cpu), result


def measure(
    config: AcdConfig, entries: list[Entry], acd: ReplicatedAcd, tail: int, repeat: int
) -> dict[str, Any]:
    wired = [(e, json.dumps(item.to_dict()), s) for e, item, s in entries]
    parse, _ = median_seconds(
        repeat, lambda: [input_from_dict(json.loads(text)) for _, text, _ in wired]
    )

    def replay_all() -> list[Any]:
        return ReplicatedAcd(config, seed=SEED).rebuild(entries, None)

    replay, _ = median_seconds(repeat, replay_all)
    take, image = median_seconds(repeat, acd.snapshot)
    dumps, text = median_seconds(repeat, lambda: json.dumps(image))
    assert isinstance(text, str)
    loads, data = median_seconds(repeat, lambda: json.loads(text))

    def restore() -> ReplicatedAcd:
        restored = ReplicatedAcd(config, seed=SEED)
        restored.restore(data)
        return restored

    restore_seconds, restored = median_seconds(repeat, restore)
    assert isinstance(restored, ReplicatedAcd) and restored.snapshot() == image
    # a new owner's takeover when the last snapshot is `tail` inputs old: read it, restore it,
    # apply the tail (the last `tail` inputs of the stream)
    cut = max(0, len(entries) - tail)
    older = ReplicatedAcd(config, seed=SEED)
    older.rebuild(entries[:cut], None)
    older_text = json.dumps(older.snapshot())

    def takeover() -> ReplicatedAcd:
        owner = ReplicatedAcd(config, seed=SEED)
        owner.rebuild(entries[cut:], None, snapshot=json.loads(older_text))
        return owner

    takeover_seconds, owner = median_seconds(repeat, takeover)
    assert isinstance(owner, ReplicatedAcd) and owner.snapshot() == image
    engine = image["engine"] if isinstance(image, dict) else {}
    stats = engine.get("statistics", {})
    buckets = len(stats.get("queue_buckets", [])) + len(stats.get("agent_buckets", []))
    encoded = text.encode()
    return {
        "inputs": len(entries),
        "waiting": sum(len(q["calls"]) for q in engine.get("queues", [])),
        "on_call": sum(1 for a in engine.get("agents", []) if a["state"] == "on-call"),
        "ready": sum(1 for a in engine.get("agents", []) if a["state"] == "ready"),
        "parse_seconds": round(parse, 4),
        "replay_seconds": round(replay, 4),
        "snapshot_seconds": round(take, 4),
        "dumps_seconds": round(dumps, 4),
        "snapshot_bytes": len(encoded),
        "snapshot_zlib1_bytes": len(zlib.compress(encoded, 1)),
        "statistics_bytes": len(json.dumps(stats)),
        "statistics_buckets": buckets,
        "loads_seconds": round(loads, 4),
        "restore_seconds": round(restore_seconds, 4),
        "tail_inputs": len(entries) - cut,
        "takeover_from_snapshot_seconds": round(takeover_seconds, 4),
        "takeover_by_replay_seconds": round(parse + replay, 4),
        "takeover_from_snapshot_wall_seconds": round(WALL["takeover"], 4),
        "replay_wall_seconds": round(WALL["replay_all"], 4),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--agents", type=int, default=500)
    parser.add_argument("--queues", type=int, default=50)
    parser.add_argument("--waiting", type=int, default=2000)
    parser.add_argument("--history", type=int, default=100_000)
    parser.add_argument("--tail", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    config = acd_config(args.agents, args.queues)
    report: dict[str, Any] = {
        "agents": args.agents,
        "queues": args.queues,
        "python": sys.version.split()[0],
    }
    for name, history in (("state_only", 0), ("with_history", args.history)):
        entries, acd = busy_stream(config, history, args.waiting)
        print(f"{name}: {len(entries)} inputs", file=sys.stderr, flush=True)
        report[name] = measure(config, entries, acd, args.tail, args.repeat)
        print(json.dumps({name: report[name]}, indent=2), flush=True)
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
