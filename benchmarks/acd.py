"""ACD engine throughput: 1,000 agents, 10,000 waiting callers, one core, simulated time.

The engine (`queueing.AcdEngine`) runs alone, with no I/O: a driver plays the call layer in
simulated time. All agents log in; `--calls` callers enter in the first minute and are kept at
that level (a new caller enters whenever one leaves); offered agents answer after 1-8 s (or let
`--no-answer` of the offers ring out), talk 30-300 s, wrap up 10 s; `--abandon` of the callers hang
up after a random patience; some agents pause and come back. Callers hear an announcement every
60 s and escalate to penalty 2 after 30 s. Every agent is a member of two of `--queues`
queues with a random penalty, and callers have random priorities, so dispatch merges queues,
priorities and penalties.

An *input* is one engine call (``caller_enter``, ``offer_answered``, ``call_completed``,
``caller_abandon``, ``agent_pause``..., or ``handle_timer``); *events* are what it emits (offers,
cancels, agent states, queue log entries...). The rate is inputs per second of CPU time of the
whole loop, driver included, so the engine alone is faster. Memory is the peak RSS of the process
(interpreter included) and, with ``--tracemalloc``, the peak of Python allocations in a second,
slower run.

    .venv/bin/python benchmarks/acd.py [--agents 1000] [--calls 10000] [--inputs 300000]
                                       [--strategy rrmemory] [--tracemalloc] [--json out.json]

``--e2e`` runs the end-to-end benchmark instead (benchmarks/acd_e2e.py: a real server, N
WebSocket agents, SIP callers; INVITE -> ``call-incoming`` on an agent's socket, target p99 <=
100 ms with 100 agents); the other arguments are then acd_e2e.py's:

    .venv/bin/python benchmarks/acd.py --e2e [--agents 100] [--rates 5,10,20] [--duration 10]

Measured on the 2-core development machine (shared with other work, so figures vary by about
+-30 %), Python 3.11, with ``.venv/bin/python benchmarks/acd.py --tracemalloc``: rrmemory, 4
queues, 1,000 agents, 10,000 callers waiting, 300,000 inputs (mostly timers: announcements, ring
timeouts, retries, wrap-up ends) -> about 45,000-60,000 inputs/s and 65,000-70,000 events/s on
one core, peak RSS 29 MiB, traced peak 11 MiB. Dispatch costs O(log n) per offer: per-priority
heaps of callers per queue merged by a small heap, ready members kept per queue, positions from
a Fenwick tree; no step scans every caller or every agent.
"""

from __future__ import annotations

import argparse
import heapq
import json
import random
import resource
import sys
import time
import tracemalloc
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from queueing.config import build_config  # noqa: E402
from queueing.engine import AcdEngine  # noqa: E402
from queueing.events import CallbackDial, OfferCall  # noqa: E402


@dataclass
class Result:
    strategy: str
    agents: int
    waiting_calls: int
    queues: int
    inputs: int
    events: int
    cpu_seconds: float
    simulated_seconds: float
    answered: int
    abandoned: int
    peak_rss_mib: float
    traced_peak_mib: float | None
    inputs_by_kind: dict[str, int]
    waiting_at_end: int

    @property
    def inputs_per_second(self) -> float:
        return self.inputs / self.cpu_seconds

    @property
    def events_per_second(self) -> float:
        return self.events / self.cpu_seconds


def build(agents: int, queues: int, strategy: str, rng: random.Random) -> AcdEngine:
    names = [f"agent{i}" for i in range(agents)]
    queue_names = [f"queue{i}" for i in range(queues)]
    members: dict[str, list[dict[str, Any]]] = {q: [] for q in queue_names}
    for name in names:
        for queue in rng.sample(queue_names, min(2, queues)):
            members[queue].append({"agent": name, "penalty": rng.choice((0, 0, 1, 2))})
    data = {
        "agents": {name: {} for name in names},
        "queues": {
            q: {
                "strategy": strategy,
                "members": members[q],
                "ring_timeout": 15,
                "retry": 5,
                "wrapup": 10,
                "announce_frequency": 60,
                "max_penalty": 1,
                "escalation": [{"after": 30, "max_penalty": 2}],
            }
            for q in queue_names
        },
    }
    return AcdEngine(build_config(data), rng=rng)


def run(args: argparse.Namespace, trace: bool) -> Result:
    rng = random.Random(args.seed)
    engine = build(args.agents, args.queues, args.strategy, rng)
    queue_names = list(engine.config.queues)
    agent_names = list(engine.config.agents)
    plan: list[tuple[float, int, str, str, str]] = []
    order = 0
    call_ids = 0
    inputs = 0
    kinds: Counter[str] = Counter()
    events = 0
    answered = 0
    abandoned = 0
    now = 0.0

    def later(when: float, action: str, call_id: str = "", agent: str = "") -> None:
        nonlocal order
        order += 1
        heapq.heappush(plan, (when, order, action, call_id, agent))

    def drain() -> None:
        nonlocal events
        for event in engine.events():
            events += 1
            if isinstance(event, OfferCall | CallbackDial):
                if rng.random() >= args.no_answer:
                    later(now + rng.uniform(1, 8), "answer", event.call_id, event.agent)

    def enter() -> None:
        nonlocal call_ids, inputs
        call_ids += 1
        call_id = f"call{call_ids}"
        priority = rng.choice((0, 0, 0, 1))
        engine.caller_enter(call_id, rng.choice(queue_names), now, priority=priority)
        inputs += 1
        kinds["enter"] += 1
        if rng.random() < args.abandon:
            later(now + rng.uniform(20, 600), "abandon", call_id)

    if trace:
        tracemalloc.start()
    started = time.process_time()
    for name in agent_names:
        engine.agent_login(name, now)
        inputs += 1
        kinds["login"] += 1
        drain()
    for _ in range(args.calls):
        later(rng.uniform(0, 60), "enter")
    for _ in range(args.agents // 20):
        later(rng.uniform(0, 600), "pause", "", rng.choice(agent_names))
    while inputs < args.inputs:
        timer = engine.get_timer()
        if plan and (timer is None or plan[0][0] <= timer):
            now, _, action, call_id, agent = heapq.heappop(plan)
            kinds[action] += 1
            if action == "enter":
                kinds["enter"] -= 1
                inputs -= 1
                enter()
            elif action == "answer":
                if engine.offer_answered(call_id, agent, now):
                    answered += 1
                    later(now + rng.uniform(30, 300), "complete", call_id, agent)
            elif action == "complete":
                engine.call_completed(call_id, agent, now)
                enter()
            elif action == "abandon":
                if engine.caller_abandon(call_id, now):
                    abandoned += 1
                    enter()
            elif action == "pause":
                if engine.agent_status(agent).state.value != "logged-out":
                    engine.agent_pause(agent, "break", now)
                    later(now + rng.uniform(60, 300), "unpause", "", agent)
            elif action == "unpause":
                engine.agent_unpause(agent, now)
                later(now + rng.uniform(300, 900), "pause", "", agent)
        elif timer is not None:
            now = timer
            engine.handle_timer(now)
            kinds["timer"] += 1
        else:
            break
        inputs += 1
        drain()
    cpu = time.process_time() - started
    traced = None
    if trace:
        traced = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return Result(
        args.strategy,
        args.agents,
        args.calls,
        args.queues,
        inputs,
        events,
        cpu,
        now,
        answered,
        abandoned,
        rss,
        traced,
        dict(kinds.most_common()),
        sum(engine.queue_status(q, now).waiting for q in queue_names),
    )


def main() -> int:
    if "--e2e" in sys.argv[1:]:
        from benchmarks.acd_e2e import main as e2e_main

        return e2e_main([a for a in sys.argv[1:] if a != "--e2e"])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--e2e", action="store_true", help="the end-to-end benchmark instead")
    parser.add_argument("--agents", type=int, default=1000)
    parser.add_argument("--calls", type=int, default=10_000, help="callers kept waiting")
    parser.add_argument("--queues", type=int, default=4)
    parser.add_argument("--strategy", default="rrmemory")
    parser.add_argument("--inputs", type=int, default=300_000, help="engine inputs to run")
    parser.add_argument("--no-answer", type=float, default=0.1, help="share of offers let ring")
    parser.add_argument("--abandon", type=float, default=0.3, help="share of callers who hang up")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--tracemalloc", action="store_true", help="also measure Python allocations (slower run)"
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    result = run(args, trace=False)
    if args.tracemalloc:
        result.traced_peak_mib = run(args, trace=True).traced_peak_mib
    rows = [
        ("strategy", result.strategy),
        ("agents / queues", f"{result.agents} / {result.queues}"),
        ("callers kept waiting", f"{result.waiting_calls} ({result.waiting_at_end} at the end)"),
        ("engine inputs", f"{result.inputs}"),
        ("events emitted", f"{result.events}"),
        ("CPU seconds", f"{result.cpu_seconds:.2f}"),
        ("simulated seconds", f"{result.simulated_seconds:.0f}"),
        ("answered / abandoned", f"{result.answered} / {result.abandoned}"),
        ("inputs per second", f"{result.inputs_per_second:,.0f}  (target >= 20,000)"),
        ("events per second", f"{result.events_per_second:,.0f}"),
        ("inputs by kind", ", ".join(f"{k} {v}" for k, v in result.inputs_by_kind.items())),
        ("peak RSS", f"{result.peak_rss_mib:.0f} MiB  (target < 200 MiB)"),
    ]
    if result.traced_peak_mib is not None:
        rows.append(("traced peak (tracemalloc)", f"{result.traced_peak_mib:.0f} MiB"))
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")
    report = asdict(result) | {
        "command": " ".join(sys.argv),
        "inputs_per_second": result.inputs_per_second,
        "events_per_second": result.events_per_second,
    }
    line = json.dumps(report, sort_keys=True)
    print(line)
    if args.json:
        args.json.write_text(line + "\n")
    ok = result.inputs_per_second >= 20_000 and result.peak_rss_mib < 200
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
