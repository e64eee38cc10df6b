"""One node of a shared-ACD test cluster: ``python -m tests.cluster.acd_node --redis URL ...``.

It runs `omlmedia.acd_shared.SharedAcd` with scripted agents and callers: its agents log in at
start and answer every offer after ``--answer`` seconds, then end the call after ``--talk``
seconds (a node is lost when silent for three lease times); callers enter queue ``q`` when a line
``enter N [PRIORITY]`` arrives on stdin (``quit`` stops the node). Every decision read from
``acd:out`` is written to ``--log`` as a JSON line ``{"t", "accepted", "own", "decision"}``
(``own``: handed to this node's callback, i.e. acted on), so the test can check what each node
did.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
from typing import IO

from omlmedia.acd_shared import SharedAcd
from queueing.config import build_config
from queueing.events import CallbackDial, CancelOffer, LogEvent, OfferCall, QueueLogEntry
from queueing.replica import AgentLogin, CallCompleted, CallerEnter, Decision, OfferAnswered


class Node:
    def __init__(self, args: argparse.Namespace, log: IO[str]) -> None:
        members = args.members.split(",")
        config = build_config(
            {
                "agents": {name: {} for name in members},
                "queues": {
                    "q": {
                        "strategy": args.strategy,
                        "members": members,
                        "ring_timeout": args.ring_timeout,
                        "retry": 0,
                    }
                },
            }
        )
        self.args = args
        self.log = log
        self.agents = [a for a in args.agents.split(",") if a]
        self.calls = 0
        self.answers: dict[tuple[str, str], asyncio.TimerHandle] = {}
        self.acd = SharedAcd(
            args.redis,
            args.node,
            config,
            self.on_decision,
            seed=7,
            lease_ttl=args.ttl,
            node_timeout=args.ttl * 3,
            renew_every=args.ttl / 6,
            on_any=self.record,
        )

    def record(self, decision: Decision, accepted: bool) -> None:
        own = accepted and self.acd.concerns(decision)
        line = {"t": time.time(), "accepted": accepted, "own": own, "decision": decision.to_dict()}
        self.log.write(json.dumps(line) + "\n")
        self.log.flush()

    def on_decision(self, decision: Decision) -> None:
        out = decision.output
        loop = asyncio.get_running_loop()
        if isinstance(out, OfferCall | CallbackDial) and out.agent in self.agents:
            key = (out.call_id, out.agent)
            self.answers[key] = loop.call_later(
                self.args.answer,
                lambda: self.acd.submit(OfferAnswered(out.call_id, out.agent, time.time())),
            )
        elif isinstance(out, CancelOffer) and out.agent in self.agents:
            handle = self.answers.pop((out.call_id, out.agent), None)
            if handle is not None:
                handle.cancel()
        elif (
            isinstance(out, QueueLogEntry)
            and out.event is LogEvent.ANSWER
            and out.agent in self.agents
        ):
            self.answers.pop((out.call_id, out.agent), None)
            loop.call_later(
                self.args.talk,
                lambda: self.acd.submit(CallCompleted(out.call_id, out.agent, time.time())),
            )

    async def run(self) -> None:
        await self.acd.start()
        for agent in self.agents:
            self.acd.submit(AgentLogin(agent, time.time()))
        print("ready", flush=True)
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        while line := (await reader.readline()).decode():
            words = line.split()
            if words[:1] == ["enter"]:
                priority = int(words[2]) if len(words) > 2 else 0
                for _ in range(int(words[1])):
                    self.calls += 1
                    call = f"{self.args.node}-c{self.calls}"
                    self.acd.submit(CallerEnter(call, "q", time.time(), priority=priority))
            elif words[:1] == ["quit"]:
                break
        await self.acd.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--redis", required=True)
    parser.add_argument("--node", required=True)
    parser.add_argument("--agents", default="", help="this node's agents, comma-separated")
    parser.add_argument("--members", required=True, help="every agent of the cluster")
    parser.add_argument("--log", required=True)
    parser.add_argument("--strategy", default="leastrecent")
    parser.add_argument("--ring-timeout", type=float, default=4.0)
    parser.add_argument("--answer", type=float, default=0.1)
    parser.add_argument("--talk", type=float, default=0.5)
    parser.add_argument("--ttl", type=float, default=2.0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format=f"{args.node} %(levelname)s %(message)s")
    with open(args.log, "a", encoding="utf-8") as log:
        asyncio.run(Node(args, log).run())


if __name__ == "__main__":
    main()
