"""What the cluster's wallboard costs (`omlmedia.wallboard_cluster`): a node's publish (its calls
and connected agents, once a second) and a snapshot's read of the other nodes' keys, against a
throwaway Redis, for a number of live calls per node.

Four nodes' boards; each call is as the wallboard lists it; 125 connected agents a node. The
times are wall clock on the event loop and include the JSON encoding (publish) and decoding
(read), which is what a node pays.

Run: ``.venv/bin/python benchmarks/wallboard_cluster.py [--calls 0,100,300] [--rounds 200]``;
prints one JSON object per call count.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import redisserver
from omlmedia.wallboard_cluster import ClusterBoard

NODES = ("a", "b", "c", "d")
AGENTS = 125


def calls(count: int) -> list[dict[str, Any]]:
    """`count` calls as `omlmedia.wallboard.calls_of` gives them, half answered."""
    return [
        {
            "call_id": f"call-{i}-0123456789abcdef@10.0.0.1",
            "queue": "support",
            "campaign": "support",
            "caller": "5551234567",
            "entered": 1_796_515_200.0 + i,
            "agent": f"agent{i}" if i % 2 else None,
            "answered": 1_796_515_300.0 + i if i % 2 else None,
        }
        for i in range(count)
    ]


def _ms(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "p50": round(statistics.median(ordered) * 1000, 3),
        "p99": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000, 3),
    }


async def measure(url: str, count: int, rounds: int) -> dict[str, Any]:
    """Publish and read `rounds` times with `count` calls on every node."""
    made = calls(count)
    boards = [
        ClusterBoard(
            url,
            node,
            NODES,
            calls=lambda: made,
            connected=lambda: [f"agent{i}" for i in range(AGENTS)],
            agent_node=lambda agent: None,
        )
        for node in NODES
    ]
    try:
        for board in boards:
            assert await board.publish()
        publish, gather = [], []
        me = boards[0]
        for _ in range(rounds):
            started = time.perf_counter()
            await me.publish()
            publish.append(time.perf_counter() - started)
            started = time.perf_counter()
            seen = await me.gather()
            gather.append(time.perf_counter() - started)
            assert len(seen) == len(NODES) - 1 and all(len(v.calls) == count for v in seen.values())
        return {
            "calls_per_node": count,
            "payload_bytes": len(me.payload()),
            "publish_ms": _ms(publish),
            "read_other_nodes_ms": _ms(gather),
            "errors": sum(b.errors for b in boards),
            "load_average": os.getloadavg(),
        }
    finally:
        for board in boards:
            await board.close()


async def run(counts: list[int], rounds: int) -> list[dict[str, Any]]:
    with redisserver.throwaway() as port:
        url = f"redis://127.0.0.1:{port}/0"
        return [await measure(url, count, rounds) for count in counts]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", default="0,100,300", help="calls per node, comma-separated")
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args(argv)
    counts = [int(c) for c in args.calls.split(",")]
    for row in asyncio.run(run(counts, args.rounds)):
        print(json.dumps(row))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
