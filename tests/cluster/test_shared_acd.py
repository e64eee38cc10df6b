"""One ACD across node processes over a real Redis: the cluster's promises under failure.

Each node is a real process (`tests.cluster.acd_node`) running `omlmedia.acd_shared.SharedAcd`
with scripted agents (answer every offer, hang up after a moment) and callers entering on every
node. After each scenario the published decisions (``acd:out``, through a fresh fence) must be
exactly what one engine fed the input stream (``acd:in``) decides: nothing lost, nothing twice,
statistics equal by construction; and the invariant checker must find nothing.
"""

from __future__ import annotations

import asyncio
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis

from benchmarks import harness, redisserver
from omlmedia.acd_shared import SharedAcd
from queueing.config import build_config
from queueing.events import LogEvent, OfferCall, QueueLogEntry
from queueing.replica import (
    AgentLogin,
    Decision,
    DecisionFence,
    ReplicatedAcd,
    check_decisions,
    config_from_dict,
    input_from_dict,
)
from queueing.stats import Statistics
from tests.cluster import redis as throwaway

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class DurableRedis:
    """A Redis that keeps its data across a stop and start (AOF), on one port."""

    directory: Path
    port: int
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process, _ = redisserver.start(self.directory, port=self.port, appendfsync="always")

    def stop(self) -> None:
        if self.process is not None:
            redisserver.stop(self.process)
            self.process = None


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


def wait_for(condition: Callable[[], Any], seconds: float, message: str) -> Any:
    deadline = time.monotonic() + seconds
    while True:
        result = condition()
        if result:
            return result
        assert time.monotonic() < deadline, message
        time.sleep(0.05)


@pytest.fixture
def durable_redis(tmp_path: Path) -> Iterator[DurableRedis]:
    throwaway.require()
    directory = Path(tempfile.mkdtemp(prefix="omlmedia-redis-"))
    server = DurableRedis(directory, harness.free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)


@dataclass
class NodeProcess:
    name: str
    agents: list[str]
    log: Path
    process: subprocess.Popen[bytes]
    entered: list[str] = field(default_factory=list)

    def enter(self, count: int, priority: int = 0) -> None:
        first = len(self.entered) + 1
        self.entered += [f"{self.name}-c{i}" for i in range(first, first + count)]
        assert self.process.stdin is not None
        self.process.stdin.write(f"enter {count} {priority}\n".encode())
        self.process.stdin.flush()

    def lines(self) -> list[dict[str, Any]]:
        if not self.log.exists():
            return []
        text = self.log.read_text()
        return [json.loads(line) for line in text.splitlines() if line.endswith("}")]


class Cluster:
    def __init__(self, server: DurableRedis, tmp_path: Path, layout: dict[str, list[str]]):
        self.server = server
        self.tmp_path = tmp_path
        self.members = [a for agents in layout.values() for a in agents]
        self.nodes = {name: self._spawn(name, agents) for name, agents in layout.items()}
        for node in self.nodes.values():
            self._ready(node)
        self.redis: Any = redis.Redis(port=server.port, decode_responses=True, socket_timeout=2)

    def _spawn(self, name: str, agents: list[str]) -> NodeProcess:
        log = self.tmp_path / f"{name}.jsonl"
        argv = [sys.executable, "-m", "tests.cluster.acd_node", "--redis", self.server.url]
        argv += ["--node", name, "--agents", ",".join(agents), "--log", str(log)]
        argv += ["--members", ",".join(self.members)]
        stderr = open(self.tmp_path / f"{name}.err", "wb")
        process = subprocess.Popen(
            argv, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr
        )
        stderr.close()
        return NodeProcess(name, agents, log, process)

    def _ready(self, node: NodeProcess) -> None:
        assert node.process.stdout is not None
        ready, _, _ = select.select([node.process.stdout], [], [], 15)
        assert ready and node.process.stdout.readline() == b"ready\n", self.errors(node)

    def errors(self, node: NodeProcess) -> str:
        return (self.tmp_path / f"{node.name}.err").read_text(errors="replace")[-3000:]

    def owner(self) -> tuple[str, int] | None:
        value = self.redis.get("acd:owner")
        epoch = self.redis.get("acd:epoch")
        return (value.split("/")[0], int(epoch)) if value and epoch else None

    def published(self) -> list[Decision]:
        return [Decision.from_dict(json.loads(f["d"])) for _, f in self.redis.xrange("acd:out")]

    def accepted(self) -> list[Decision]:
        fence = DecisionFence()
        return [d for d in self.published() if fence.accept(d)]

    def finished(self, calls: list[str]) -> bool:
        """Every call in `calls` was answered and completed, as published."""
        done = {
            d.output.call_id
            for d in self.accepted()
            if isinstance(d.output, QueueLogEntry) and d.output.event is LogEvent.COMPLETE
        }
        return done >= set(calls)

    def publication_times(self) -> dict[tuple[int, str, int], float]:
        """When each decision was published: the time of its ``acd:out`` entry id (Redis's
        clock, the machine's), by (epoch, input entry, seq); the earliest if published twice."""
        times: dict[tuple[int, str, int], float] = {}
        for entry_id, fields in self.redis.xrange("acd:out"):
            data = json.loads(fields["d"])
            key = (int(data["epoch"]), str(data["entry"]), int(data["seq"]))
            times.setdefault(key, int(entry_id.split("-")[0]) / 1000)
        return times

    def offers(self, since: float = 0.0) -> int:
        return sum(
            1
            for node in self.nodes.values()
            for line in node.lines()
            if line["own"] and line["decision"]["type"] == "offer" and line["t"] >= since
        )

    def check(self) -> list[Decision]:
        """What every scenario must end with; returns the accepted decisions."""
        accepted = self.accepted()
        stored = json.loads(self.redis.get("acd:config") or "{}")
        config = config_from_dict(stored["config"])
        strategies = {name: q.strategy for name, q in config.queues.items()}
        assert check_decisions([d.output for d in accepted], strategies) == []
        # one engine fed the same stream, up to what was published, decides exactly the same
        published = self.redis.get("acd:published")
        assert published is not None
        entries = [
            (entry_id, input_from_dict(json.loads(f["i"])), (f["s"], int(f["n"])))
            for entry_id, f in self.redis.xrange("acd:in", max=published)
        ]
        single = ReplicatedAcd(config, seed=int(stored["seed"]))
        replayed = single.rebuild(entries, None)
        assert [d.output for d in accepted] == [d.output for d in replayed]
        log = [d.output for d in accepted if isinstance(d.output, QueueLogEntry)]
        levels = {name: q.service_level for name, q in config.queues.items()}
        stats = Statistics.from_log(log, levels)
        assert stats.queue("q") == single.engine.statistics.queue("q")
        for agent in config.agents:
            assert stats.agent(agent) == single.engine.statistics.agent(agent)
        answers = [
            d.output.call_id
            for d in accepted
            if isinstance(d.output, QueueLogEntry) and d.output.event is LogEvent.ANSWER
        ]
        assert len(answers) == len(set(answers)), "a call answered twice"
        for node in self.nodes.values():
            acted = [
                tuple(line["decision"][k] for k in ("epoch", "entry", "seq"))
                for line in node.lines()
                if line["own"]
            ]
            assert len(acted) == len(set(acted)), f"{node.name} acted twice on a decision"
            epochs = [key[0] for key in acted]
            assert epochs == sorted(epochs), f"{node.name} acted on an older epoch"
        return accepted

    def close(self) -> None:
        for node in self.nodes.values():
            process = node.process
            if process.poll() is None:
                os.kill(process.pid, signal.SIGCONT)
                assert process.stdin is not None
                try:
                    process.stdin.write(b"quit\n")
                    process.stdin.flush()
                    process.wait(10)
                except (BrokenPipeError, subprocess.TimeoutExpired):
                    process.kill()
                    process.wait()
            for stream in (process.stdin, process.stdout):
                if stream is not None:
                    stream.close()
        self.redis.close()


@pytest.fixture
def cluster_factory(
    durable_redis: DurableRedis, tmp_path: Path
) -> Iterator[Callable[[dict[str, list[str]]], Cluster]]:
    made: list[Cluster] = []

    def make(layout: dict[str, list[str]]) -> Cluster:
        made.append(Cluster(durable_redis, tmp_path, layout))
        return made[-1]

    yield make
    for cluster in made:
        cluster.close()


def test_killing_the_owner_moves_the_acd_within_5_s_and_no_waiting_caller_loses_its_place(
    cluster_factory: Callable[[dict[str, list[str]]], Cluster],
) -> None:
    cluster = cluster_factory({"n1": ["a1", "a2"], "n2": ["a3", "a4"], "n3": ["a5", "a6"]})
    first = wait_for(cluster.owner, 10, "no node took the lease")
    for node in cluster.nodes.values():
        node.enter(8)
    # kill the owner while callers are still waiting (24 callers, 6 agents, 0.5 s calls)
    wait_for(lambda: cluster.offers() >= 6, 10, "no offers were made")
    waiting = len(
        {c for n in cluster.nodes.values() for c in n.entered}
        - {d.call_id for d in cluster.accepted() if isinstance(d.output, OfferCall)}
    )
    assert waiting > 0
    victim = cluster.nodes[first[0]]
    killed = time.monotonic()
    victim.process.kill()
    victim.process.wait()
    second = wait_for(
        lambda: (o := cluster.owner()) and o[0] != first[0] and o, 5, "no new owner within 5 s"
    )
    takeover = time.monotonic() - killed
    assert second[1] > first[1]
    live = [n for n in cluster.nodes.values() if n is not victim]
    for node in live:
        node.enter(4)
    calls = [c for n in live for c in n.entered]
    wait_for(lambda: cluster.finished(calls), 30, "callers on live nodes were not all served")

    def recorded_lost() -> bool:
        log = [d.output for d in cluster.accepted() if isinstance(d.output, QueueLogEntry)]
        logged_out = {
            e.agent
            for e in log
            if e.event is LogEvent.LOGOUT and e.data.get("reason") == "forced by node-lost"
        }
        gone = {e.call_id for e in log if e.event in (LogEvent.COMPLETE, LogEvent.ABANDON)}
        return logged_out == set(victim.agents) and gone >= set(victim.entered)

    wait_for(recorded_lost, 15, "the dead node's agents and callers were not recorded lost")
    accepted = cluster.check()
    epochs = {d.epoch for d in accepted}
    assert epochs >= {first[1], second[1]}
    print(f"takeover {takeover:.2f} s, {waiting} callers waiting at the kill")


def test_an_owner_paused_past_its_lease_is_never_acted_on_after_the_takeover(
    cluster_factory: Callable[[dict[str, list[str]]], Cluster],
) -> None:
    cluster = cluster_factory({"n1": ["a1", "a2"], "n2": ["a3", "a4"]})
    first = wait_for(cluster.owner, 10, "no node took the lease")
    for node in cluster.nodes.values():
        node.enter(3)
    wait_for(lambda: cluster.offers() >= 2, 10, "no offers were made")
    paused = cluster.nodes[first[0]]
    other = next(n for n in cluster.nodes.values() if n is not paused)
    os.kill(paused.process.pid, signal.SIGSTOP)
    second = wait_for(lambda: (o := cluster.owner()) and o[0] != first[0] and o, 5, "no takeover")
    other.enter(4)

    def new_epoch_offers() -> bool:
        return any(
            isinstance(d.output, OfferCall) and d.epoch == second[1] for d in cluster.published()
        )

    wait_for(new_epoch_offers, 10, "the new owner made no offer")
    os.kill(paused.process.pid, signal.SIGCONT)  # before its node timeout: it is not lost
    paused.enter(2)
    everyone = [c for n in cluster.nodes.values() for c in n.entered]
    wait_for(lambda: cluster.finished(everyone), 30, "callers were not all served")
    # nothing of the old epoch was published after the new one (the Lua guard) ...
    epochs = [d.epoch for d in cluster.published()]
    assert epochs == sorted(epochs) and second[1] in epochs
    # ... and a decision forged with the old epoch is fenced off by every node
    forged = Decision(first[1], "9999999999999-0", 0, OfferCall("x", "a3", "q", 4, "", "", 0, 0))
    forged_id = cluster.redis.xadd("acd:out", {"d": json.dumps(forged.to_dict())})

    def fenced() -> bool:
        lines = [
            line
            for node in cluster.nodes.values()
            for line in node.lines()
            if line["decision"]["entry"] == forged.entry_id
        ]
        return len(lines) == 2 and not any(line["accepted"] or line["own"] for line in lines)

    wait_for(fenced, 5, "a node accepted a decision of an old epoch")
    cluster.redis.xdel("acd:out", forged_id)  # keep `check` about what the owners published
    cluster.check()


def test_a_10_s_redis_outage_makes_no_offer_and_converges_without_duplicates_after(
    cluster_factory: Callable[[dict[str, list[str]]], Cluster], durable_redis: DurableRedis
) -> None:
    cluster = cluster_factory({"n1": ["a1", "a2"], "n2": ["a3"]})
    first = wait_for(cluster.owner, 10, "no node took the lease")
    for node in cluster.nodes.values():
        node.enter(2)
    before = [c for n in cluster.nodes.values() for c in n.entered]
    wait_for(lambda: cluster.finished(before), 15, "callers were not served")
    before_epoch = int(cluster.redis.get("acd:epoch"))
    cluster.redis.close()
    durable_redis.stop()
    stopped = time.time()  # Redis has exited: nothing can be published from here on
    for node in cluster.nodes.values():
        node.enter(3)
    outage_end = time.monotonic() + 10
    while time.monotonic() < outage_end:  # the outage itself: the nodes carry on meanwhile
        assert all(n.process.poll() is None for n in cluster.nodes.values())
        time.sleep(0.2)
    restarting = time.time()  # Redis may serve (and decisions be published) from here on
    during = [
        (n.name, line)
        for n in cluster.nodes.values()
        for line in n.lines()
        if stopped <= line["t"] < restarting
    ]
    durable_redis.start()
    cluster.redis = redis.Redis(port=durable_redis.port, decode_responses=True, socket_timeout=2)
    everyone = [c for n in cluster.nodes.values() for c in n.entered]
    wait_for(lambda: cluster.finished(everyone), 30, "no convergence after Redis returned")
    # A node stamps a line when it reads the decision (its own clock), so under load it may log,
    # a few ms after `stopped`, a decision Redis handed it before exiting. What must hold is
    # about when the decisions were made: judged by the time Redis gave each one as it was
    # published (its acd:out entry id), never by when a node got round to logging it.
    published = cluster.publication_times()
    made_in_outage = [t for t in published.values() if stopped <= t < restarting]
    assert made_in_outage == [], "a decision was published while Redis was down"
    for name, line in during:  # nothing read during the outage was made during it: no offer
        d = line["decision"]
        key = (int(d["epoch"]), str(d["entry"]), int(d["seq"]))
        assert key in published and published[key] < stopped, (name, line, stopped)
    # nothing decided under the lease held before the outage was buffered and published after
    # it: every decision published after Redis returned carries a later epoch
    after = [key for key, t in published.items() if t >= restarting]
    assert after and all(epoch > before_epoch for epoch, _, _ in after)
    owner = cluster.owner()
    assert owner is not None and owner[1] > first[1]
    cluster.check()


async def test_an_owner_whose_epoch_was_superseded_cannot_publish_even_with_time_left(
    durable_redis: DurableRedis,
) -> None:
    """The Lua guard alone: the old owner's clock says its lease is still good (a process
    paused between its check and its publication), yet Redis refuses its decisions."""
    config = build_config({"agents": {"a1": {}}, "queues": {"q": {"members": ["a1"]}}})
    frozen = [100.0]
    old = SharedAcd(
        durable_redis.url,
        "old",
        config,
        lambda d: None,
        monotonic=lambda: frozen[0],
        renew_every=60.0,  # no renewal during the test: only the script decides
    )
    await old.start()
    client: Any = aioredis.from_url(durable_redis.url, decode_responses=True)
    try:
        # the owner's engine is rebuilt just after the lease is taken
        await wait_async(
            lambda: old.epoch > 0 and old._acd is not None, "the node did not take the lease"
        )
        assert old._acd is not None
        epoch = old.epoch
        decisions = old._acd.apply("1-0", AgentLogin("a1", 1.0))
        # another node takes over: the lease moves and the epoch goes up
        await client.set("acd:owner", "new/1/x")
        await client.incr("acd:epoch")
        before = await client.xlen("acd:out")
        await old._publish_decisions(epoch, "1-0", decisions)
        assert old.stats.refused_publish == 1 and old.epoch == 0
        assert await client.xlen("acd:out") == before
    finally:
        await old.close()
        await client.aclose()


async def wait_async(condition: Callable[[], bool], message: str, seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, message
        await asyncio.sleep(0.02)
