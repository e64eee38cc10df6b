"""`omlmedia.acd_cluster.SharedEngine`: which node acts on which of the shared ACD's decisions.

Two (and three) `SharedAcd` followers on a real throwaway Redis, each with its `SharedEngine`;
agents log in on some nodes, callers enter on others, the callers' nodes answer every offer they
are given and complete the calls. Proved: every node's replica ends in the same state; each
queue-log entry is kept by exactly one node, and all of them together are exactly the log of one
engine fed the stream (so the statistics every node reports are exact); an offer reaches only
the caller's node, an agent's state only the agent's node; an answer that lost the race in
``ringall`` is refused to the node that sent it; an agent whose page moved to another node is
that node's from then on; a node started later learns where everyone is from the stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
import redis as sync_redis

from omlmedia.acd_cluster import SharedEngine, node_of
from omlmedia.acd_shared import EngineMismatch, SharedAcd
from queueing.config import AcdConfig, Destination, DestinationKind, build_config
from queueing.events import AgentState, AgentStateChanged, Event, OfferCall, QueueLogEntry
from queueing.replica import OfferAnswered, ReplicatedAcd, input_from_dict
from tests.cluster import redis as throwaway


@pytest.fixture(scope="module")
def shared() -> Iterator[throwaway.Redis]:
    throwaway.require()
    with throwaway.redis() as instance:
        yield instance


class Node:
    """One node: its follower, its engine, and what it was given to act on."""

    def __init__(self, url: str, name: str, config: AcdConfig, prefix: str, **options: Any) -> None:
        engines: list[SharedEngine] = []
        self.acd = SharedAcd(
            url,
            name,
            config,
            lambda _d: None,
            prefix=prefix,
            on_applied=lambda *entry: engines[0].applied(*entry),
            lease_ttl=1.0,
            renew_every=0.1,
            **options,
        )
        self.engine = SharedEngine(self.acd, time.time)
        engines.append(self.engine)
        self.events: list[Event] = []
        self.engine.on_events = lambda: self.events.extend(self.engine.events())

    async def start(self) -> None:
        await self.acd.start()
        await asyncio.wait_for(self.acd.caught_up.wait(), 10)

    def offers(self) -> list[OfferCall]:
        return [e for e in self.events if isinstance(e, OfferCall)]


@contextlib.asynccontextmanager
async def two_nodes(
    url: str, config: AcdConfig, prefix: str, **options: Any
) -> AsyncIterator[tuple[Node, Node]]:
    """Nodes a and b on `prefix`'s keys, started (a first: it takes the lease); closed after."""
    a, b = Node(url, "a", config, prefix, **options), Node(url, "b", config, prefix, **options)
    try:
        await a.start()
        await b.start()
        yield a, b
    finally:
        await a.acd.close()
        await b.acd.close()


async def until(condition: Callable[[], Any], what: str, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.01)


def stream_log(url: str, prefix: str, config: AcdConfig) -> list[QueueLogEntry]:
    """The queue log one engine writes when fed the whole input stream."""
    client = sync_redis.Redis.from_url(url, decode_responses=True)
    try:
        entries = client.xrange(prefix + "in")
    finally:
        client.close()
    replica = ReplicatedAcd(config, seed=0)
    log: list[QueueLogEntry] = []
    for entry_id, fields in entries:
        item = input_from_dict(json.loads(fields["i"]))
        for decision in replica.apply(entry_id, item, (fields["s"], int(fields["n"]))):
            if isinstance(decision.output, QueueLogEntry):
                log.append(decision.output)
    return log


def last_entry(url: str, prefix: str) -> str:
    """The input stream's last entry ("0-0" when empty)."""
    client = sync_redis.Redis.from_url(url, decode_responses=True)
    try:
        entries = client.xrevrange(prefix + "in", count=1)
    finally:
        client.close()
    return str(entries[0][0]) if entries else "0-0"


def _key(entry: QueueLogEntry) -> tuple[Any, ...]:
    return (entry.time, entry.event, entry.call_id, entry.queue, entry.agent)


CONFIG = {
    "agents": {f"ag{i}": {} for i in range(1, 5)},
    "queues": {
        "q": {"members": ["ag1", "ag2", "ag3", "ag4"], "strategy": "rrmemory", "wrapup": 0},
        "all": {"members": ["ag1", "ag2"], "strategy": "ringall", "wrapup": 0},
    },
}


async def test_each_decision_reaches_the_node_that_acts_on_it_and_the_log_is_written_once(
    shared: throwaway.Redis,
) -> None:
    config = build_config(CONFIG)
    prefix = "t1:"
    async with two_nodes(shared.url, config, prefix) as (a, b):
        now = time.time()
        for agent, node in (("ag1", b), ("ag2", b), ("ag3", a)):
            node.engine.agent_login(agent, now)
            node.engine.agent_ready(agent, now)
        await until(
            lambda: all(
                n.engine.agent_status(f"ag{i}").state is AgentState.READY
                for n in (a, b)
                for i in (1, 2, 3)
            ),
            "both nodes see the three agents ready",
        )
        assert b.engine.is_local_agent("ag1") and not a.engine.is_local_agent("ag1")
        assert a.engine.agent_node("ag1") == "b" and b.engine.agent_node("ag3") == "a"
        calls = {f"c{i}": (a if i % 2 else b) for i in range(1, 13)}
        answered: set[str] = set()
        for call, node in calls.items():
            node.engine.caller_enter(call, "q", time.time(), caller_number="600")
        # The callers' nodes answer every offer they get, then complete the call.
        deadline = time.monotonic() + 20
        while len(answered) < len(calls):
            assert time.monotonic() < deadline, f"answered only {sorted(answered)}"
            for node in (a, b):
                for offer in node.offers():
                    if offer.call_id in answered:
                        continue
                    assert calls[offer.call_id] is node, "an offer reached another node"
                    answered.add(offer.call_id)
                    ok = await node.engine.decide(
                        OfferAnswered(offer.call_id, offer.agent, time.time())
                    )
                    assert ok, offer
                    node.engine.call_completed(offer.call_id, offer.agent, time.time())
            await asyncio.sleep(0.01)
        # Both followers at the stream's last entry, read from Redis once nothing is left to
        # append: the two at one entry may both still lack the last input appended (the last
        # call's completion), whose log entry the stream then has and the nodes not yet.
        await until(
            lambda: (
                not a.acd.pending
                and not b.acd.pending
                and a.acd.followed == b.acd.followed == last_entry(shared.url, prefix)
            ),
            "both nodes followed the whole stream",
        )
        # Agent states only where the agent is.
        for node in (a, b):
            for changed in (e for e in node.events if isinstance(e, AgentStateChanged)):
                assert node.engine.is_local_agent(changed.agent), (node.acd.node, changed)
        # The same state everywhere, and the log written once.
        for queue in ("q", "all"):
            assert a.engine.queue_status(queue, 0.0) == b.engine.queue_status(queue, 0.0)
        kept = [e for n in (a, b) for e in n.events if isinstance(e, QueueLogEntry)]
        expected = stream_log(shared.url, prefix, config)
        assert Counter(map(_key, kept)) == Counter(map(_key, expected))
        completed = {e.call_id for e in expected if e.event.name == "COMPLETE"}
        assert completed == set(calls)

        # ringall: two agents answer the same offer; the second answer is refused.
        b.engine.caller_enter("race", "all", time.time())
        await until(lambda: len([o for o in b.offers() if o.call_id == "race"]) == 2, "ringall")
        first, second = [o for o in b.offers() if o.call_id == "race"]
        results = await asyncio.gather(
            b.engine.decide(OfferAnswered("race", first.agent, time.time())),
            b.engine.decide(OfferAnswered("race", second.agent, time.time())),
        )
        assert results == [True, False]
        b.engine.call_completed("race", first.agent, time.time())

        # ag3's page moves to node b (its node died, say): from then on ag3 is b's.
        b.engine.agent_login("ag3", time.time())
        await until(  # each node's replica: b's own may apply the log-in after a's
            lambda: a.engine.agent_node("ag3") == b.engine.agent_node("ag3") == "b",
            "ag3 moved to b",
        )
        assert b.engine.is_local_agent("ag3") and not a.engine.is_local_agent("ag3")

        # A node started now learns where everyone is from the stream, and acts on nothing
        # that came before its own first input.
        c = Node(shared.url, "c", config, prefix)
        await c.start()
        try:
            assert c.engine.agent_node("ag1") == "b" and c.engine.agent_node("ag3") == "b"
            assert c.events == []
            assert c.engine.queue_status("q", 0.0) == a.engine.queue_status("q", 0.0)
            c.engine.caller_enter("late", "q", time.time())
            await until(lambda: any(o.call_id == "late" for o in c.offers()), "offer to c")
            assert not any(o.call_id == "late" for n in (a, b) for o in n.offers())
        finally:
            await c.acd.close()


async def test_while_redis_is_unreachable_for_10_s_nothing_is_offered_then_each_call_once(
    shared: throwaway.Redis,
) -> None:
    """Redis stopped (SIGSTOP: connections hang, as behind a dead link) for 10 s while agents
    become ready and callers enter on both nodes: no offer is made meanwhile; after it returns
    the inputs go in, in order, and each caller is offered exactly once."""
    config = build_config(CONFIG)
    prefix = "t2:"
    async with two_nodes(shared.url, config, prefix) as (a, b):
        try:
            now = time.time()
            for agent, node in (("ag1", a), ("ag2", b)):
                node.engine.agent_login(agent, now, paused_reason="login")
            await until(lambda: b.engine.agent_node("ag1") == "a", "logged in")
            os.kill(shared.process.pid, signal.SIGSTOP)
            stopped = time.monotonic()
            try:
                a.engine.agent_ready("ag1", time.time())
                b.engine.agent_ready("ag2", time.time())
                for i in range(4):
                    (a if i % 2 else b).engine.caller_enter(f"o{i}", "q", time.time())
                while time.monotonic() - stopped < 10:
                    assert not a.offers() and not b.offers(), "an offer while Redis was away"
                    await asyncio.sleep(0.1)
                assert a.acd.pending and b.acd.pending  # kept, in order
            finally:
                os.kill(shared.process.pid, signal.SIGCONT)
            await until(lambda: len(a.offers()) + len(b.offers()) == 2, "two offers", seconds=15)
            for node in (a, b):
                for offer in node.offers():
                    assert await node.engine.decide(
                        OfferAnswered(offer.call_id, offer.agent, time.time())
                    )
                    node.engine.call_completed(offer.call_id, offer.agent, time.time())
            await until(lambda: len(a.offers()) + len(b.offers()) == 4, "four offers", seconds=15)
            offered = [o.call_id for n in (a, b) for o in n.offers()]
            assert sorted(offered) == ["o0", "o1", "o2", "o3"], offered  # each once
            assert a.acd.stats.redis_errors and b.acd.stats.redis_errors  # it was noticed
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(shared.process.pid, signal.SIGCONT)


async def test_the_owner_snapshots_and_trims_the_stream_and_a_new_node_starts_from_it(
    shared: throwaway.Redis,
) -> None:
    """With a snapshot every 20 inputs the stream stays short; a node started afterwards
    restores the latest snapshot, reads only what follows, and has the same engine, knows
    where every agent is and acts on its own callers."""
    config = build_config(CONFIG)
    prefix = "t3:"
    options = {"snapshot_every": 20, "snapshot_interval": 3600.0}
    a = Node(shared.url, "a", config, prefix, **options)
    b = Node(shared.url, "b", config, prefix, **options)
    await a.start()
    await b.start()
    client: Any = sync_redis.Redis.from_url(shared.url, decode_responses=True)
    try:
        await until(lambda: a.acd.is_owner or b.acd.is_owner, "an owner")
        owner = a if a.acd.is_owner else b
        now = time.time()
        for agent, node in (("ag1", a), ("ag2", b)):
            node.engine.agent_login(agent, now)
        for burst in range(4):  # callers come and go: 4 bursts of 30 inputs
            for i in range(15):
                node = a if i % 2 else b
                node.engine.caller_enter(f"s{burst}-{i}", "q", time.time())
                node.engine.caller_abandon(f"s{burst}-{i}", time.time())
            await until(lambda n=burst: owner.acd.stats.snapshots > n, "the owner's snapshot")
        await until(lambda: not a.acd.pending and not b.acd.pending, "all sent")
        assert owner.acd.stats.trimmed > 0
        assert client.xlen(prefix + "in") < 60, "the stream was not trimmed"
        c = Node(shared.url, "c", config, prefix, **options)
        await c.start()
        try:
            assert c.acd.stats.restored_from, "c replayed the whole stream"
            await until(lambda: c.acd.followed == a.acd.followed, "c caught up")
            assert c.engine.agent_node("ag1") == "a" and c.engine.agent_node("ag2") == "b"
            assert c.engine.queue_status("q", 0.0) == a.engine.queue_status("q", 0.0)
            stats = (c.engine.statistics.queue("q", 0.0, time.time() + 1),)
            assert stats == (a.engine.statistics.queue("q", 0.0, time.time() + 1),)
            c.engine.caller_enter("fresh", "q", time.time())
            await until(lambda: any(o.call_id == "fresh" for o in c.offers()), "offer to c")
        finally:
            await c.acd.close()
    finally:
        client.close()
        await a.acd.close()
        await b.acd.close()


async def test_a_node_that_stops_sends_its_last_inputs_first(shared: throwaway.Redis) -> None:
    """A node stopping right after its callers left (the server hangs them up first) still
    tells the ACD: the others do not keep them waiting until the node is found lost."""
    config = build_config(CONFIG)
    prefix = "t4:"
    async with two_nodes(shared.url, config, prefix) as (a, b):
        b.engine.caller_enter("leaving", "q", time.time())
        await until(lambda: a.engine.queue_status("q", 0.0).waiting == 1, "a sees b's caller")
        b.engine.caller_abandon("leaving", time.time())
        await b.acd.close()
        await until(lambda: a.engine.queue_status("q", 0.0).waiting == 0, "the abandon arrived")


async def test_a_node_taken_for_lost_is_told_which_of_its_callers_and_agents_were_dropped(
    shared: throwaway.Redis,
) -> None:
    """The owner records a node lost with the inputs `ReplicatedAcd.lost` makes (its callers
    abandon, its agents are logged out by "node-lost"); a node that was only paused sees them
    in the stream and gets the list, to put back those still there (`AcdRuntime.rejoin`)."""
    config = build_config(CONFIG)
    prefix = "t5:"
    async with two_nodes(shared.url, config, prefix) as (a, b):
        told: list[tuple[list[str], list[str]]] = []
        b.engine.on_lost = lambda calls, agents: told.append((calls, agents))
        b.engine.agent_login("ag4", time.time(), paused_reason="login")
        b.engine.caller_enter("kept", "all", time.time())
        a.engine.caller_enter("other", "all", time.time())
        await until(lambda: a.engine.queue_status("all", 0.0).waiting == 2, "both callers")
        replica = a.acd.replica
        assert replica is not None
        b_incarnation = b.acd.incarnation
        for item in replica.lost(b_incarnation, time.time()):
            a.acd.submit(item)
        await until(lambda: len(told) == 2, "b told")
        assert told == [(["kept"], []), ([], ["ag4"])]
        # a's own follower applies the same inputs on its own connection, maybe after b's
        await until(lambda: a.acd.followed == b.acd.followed, "a followed them too")
        assert a.engine.queue_status("all", 0.0).waiting == 1  # a's caller untouched
        # b puts its caller back: it waits again, everywhere
        b.engine.caller_enter("kept", "all", time.time(), priority=1)
        await until(lambda: a.engine.queue_status("all", 0.0).waiting == 2, "back")


async def test_an_input_the_engine_cannot_apply_is_skipped_and_the_followers_go_on(
    shared: throwaway.Redis,
) -> None:
    """A queue added at run time that overflows into a queue that does not exist (accepted:
    a later change may add it) makes the engine fail on the caller it overflows, on every
    node alike: the input is skipped and counted, and the followers keep applying."""
    config = build_config(CONFIG)
    prefix = "t6:"
    a = Node(shared.url, "a", config, prefix)
    await a.start()
    try:
        broken = dataclasses.replace(
            config.queues["q"],
            name="broken",
            members=(),
            max_callers=1,
            overflow=Destination(DestinationKind.QUEUE, "ghost"),
        )
        a.engine.add_queue(broken, time.time())
        a.engine.caller_enter("first", "broken", time.time())
        a.engine.caller_enter("second", "broken", time.time())  # full: overflows to ghost
        a.engine.caller_enter("after", "q", time.time())
        await until(lambda: a.engine.queue_status("q", 0.0).waiting == 1, "went on")
        assert a.acd.stats.malformed >= 1
    finally:
        await a.acd.close()


def test_a_node_name_is_read_back_from_an_incarnation() -> None:
    assert node_of("node-1/123/abcd") == "node-1"
    assert node_of("a.b/1/ff") == "a.b"


async def test_a_node_running_another_engine_is_refused_while_the_others_live_and_follows_after(
    shared: throwaway.Redis,
) -> None:
    """Every node applies every input: two versions of the engine could decide differently on
    the same stream. A node with another engine is refused at start while a node beats (after
    waiting out the node timeout: a restarted node's previous process); once none does, the new
    engine takes the stream on (the cluster stopped for an upgrade)."""
    config = build_config(CONFIG)
    prefix = "engine-version:"
    a = Node(shared.url, "a", config, prefix, node_timeout=1.0)
    other = Node(shared.url, "b", config, prefix, node_timeout=1.0, engine="0123456789abcdef")
    try:
        await a.start()
        started = time.monotonic()
        with pytest.raises(EngineMismatch, match="same omlmedia version"):
            await other.start()
        assert time.monotonic() - started >= 1.0  # it waited for the live node to lapse first
    finally:
        await a.acd.close()
        await other.acd.close()
    later = Node(shared.url, "c", config, prefix, node_timeout=1.0, engine="0123456789abcdef")
    try:
        await later.start()  # a's heartbeat lapses within its node timeout
        client = sync_redis.Redis.from_url(shared.url, decode_responses=True)
        try:
            stored = json.loads(client.get(prefix + "config"))
        finally:
            client.close()
        assert stored["engine"] == "0123456789abcdef"
        assert later.acd.replica is not None and later.acd.caught_up.is_set()
    finally:
        await later.acd.close()
