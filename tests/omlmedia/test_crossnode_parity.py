"""A call across nodes behaves like a local one (issue 13), on the sans-IO level: node b's desk
and `CrossNode` over an in-memory shared ACD (one input stream, a `ReplicatedAcd` per node, each
node following it when the test says so), SIP and pages through the desk fakes.

- A queue offer is rung only once node b's replica has applied the offer's input (its ``pos``),
  so the agent's page never shows an older state after it rang (the load-only race "Ringing,
  Ready, Ringing"); without ``pos`` (before) it did, which the control test shows. An offer b's
  replica saw withdrawn is refused (480), and a replica too far behind refuses after
  `REPLICA_WAIT`.
- The agent's page gone while another node's offer rings declines it at once, as a local
  agent's: the engine's offer rejected before the logout, 486 with ``Reason: agent-gone``.
- The recording's pauses on node b go to node a in signed UPDATEs; node a takes them only for
  the leg and segment they name, once each, and they end in the caller's record as a local
  recording's (a requeued caller's too).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from omlmedia import crossnode
from omlmedia.acd import AGENT_GONE_REASON
from omlmedia.acd_cluster import SharedEngine
from omlmedia.config import Campaign
from omlmedia.crossnode import (
    GAPS_HEADER,
    HEADER,
    ClusterEnd,
    CrossNode,
    OfferHeader,
    RemoteGaps,
    sign_gaps,
    sign_offer,
    verify_gaps,
    verify_offer,
)
from omlmedia.recording import MAX_GAPS, format_gaps, parse_gaps
from queueing.config import build_config
from queueing.engine import CallerState
from queueing.events import AgentState, LogEvent, OfferCall, QueueLogEntry
from queueing.replica import (
    AgentLogout,
    CallerAbandon,
    CallerEnter,
    Decision,
    Input,
    OfferRejected,
    ReplicatedAcd,
    Source,
)
from sip.endpoint import Endpoint
from sip.ua import Call

from .deskfakes import DeskWorld, FakeClock, FakeHub, inbound_call, until

SECRET = b"k" * 32
CALLER = "c1@a"
CONFIG = build_config(
    {
        "agents": {"agent1": {}, "agent2": {}},
        "queues": {
            "support": {
                "members": ["agent1", "agent2"],
                "strategy": "linear",
                "ring_timeout": 15,
                "retry": 5,
            }
        },
    }
)
NODES = {"a": Endpoint("udp", "127.0.0.1", 5070), "b": Endpoint("udp", "127.0.0.1", 5072)}


class Stream:
    """The shared ACD's input stream (``acd:in``), in memory: entries ``1-0``, ``2-0``..."""

    def __init__(self) -> None:
        self.entries: list[tuple[str, Input, Source]] = []


class Node:
    """What `SharedEngine` reads of a node's `SharedAcd`: its incarnation, its replica, how far
    it followed the stream, and `submit`; `follow` applies what the test lets it read."""

    def __init__(self, stream: Stream, name: str, clock: FakeClock) -> None:
        self.stream = stream
        self.incarnation = f"{name}/1/0"
        self.replica = ReplicatedAcd(CONFIG, seed=1)
        self.followed = "0-0"
        self.applied: dict[str, list[Decision]] = {}
        self._count = 0
        self.engine = SharedEngine(self, clock)  # type: ignore[arg-type]

    def submit(self, item: Input) -> int:
        self._count += 1
        self.stream.entries.append(
            (f"{len(self.stream.entries) + 1}-0", item, (self.incarnation, self._count))
        )
        return self._count

    def follow(self, upto: int | None = None) -> None:
        """Apply the entries after `followed`, up to entry `upto` (all by default)."""
        done = len(self.applied)
        for entry_id, item, source in self.stream.entries[done:upto]:
            self.followed = entry_id
            decisions = self.replica.apply(entry_id, item, source)
            self.applied[entry_id] = decisions
            self.engine.applied(entry_id, item, source, decisions)

    def sent(self) -> list[Input]:
        """The inputs this node appended, in order."""
        return [item for _, item, (who, _) in self.stream.entries if who == self.incarnation]


class PageLog(FakeHub):
    """The fake hub, noting how far node b's replica had followed at each push."""

    node: Node

    def state_changed(self, agent: str, state: AgentState, reason: str | None = None) -> None:
        before = len(self.pushes)
        super().state_changed(agent, state, reason)
        if len(self.pushes) > before:
            self.pushes[-1] = (*self.pushes[-1], self.node.followed)

    def offer_call(self, agent: str, call: Any) -> bool:
        taken = super().offer_call(agent, call)
        if taken:
            self.pushes[-1] = (*self.pushes[-1], self.node.followed)
        return taken

    def page(self, agent: str) -> list[str]:
        """What the agent's page showed, in order: its states and ``offered``."""
        shown = []
        for push in self.pushes:
            if push[0] == "state" and push[1] == agent:
                shown.append(push[2])
            elif push[0] == "call-incoming" and push[1] == agent:
                shown.append("offered")
        return shown


class World(DeskWorld):
    """Node b (desk, ACD runtime over the shared engine, `CrossNode`) and node a's replica."""

    hub: PageLog

    def __init__(self, recordings: Path) -> None:
        super().__init__(PageLog())
        self.stream = Stream()
        self.a = Node(self.stream, "a", self.clock)
        self.b = Node(self.stream, "b", self.clock)
        self.hub.node = self.b
        self.acd = self.runtime(
            self.b.engine,
            campaigns={"support": Campaign(name="support", queue="support", recording=True)},
        )
        self.b.engine.on_events = self.acd.pump
        self.desk = self.agent_desk(recordings=recordings)
        end = ClusterEnd(
            node="b",
            secret=SECRET,
            nodes=NODES,
            service=self.service,  # type: ignore[arg-type]
            clock=self.clock,
        )
        self.crossnode = CrossNode(
            end,
            b2bua=None,  # type: ignore[arg-type]
            desk=self.desk,
            locator=None,
        )

    async def offered(self) -> str:
        """agent1 logs in on b and becomes Ready while node a's caller waits: node a's replica
        offers it the caller; the position of the input that did."""
        await self.hub.login("agent1")
        self.b.follow()
        self.a.submit(CallerEnter(CALLER, "support", self.clock(), caller_number="5551234"))
        self.b.follow()
        await self.desk.set_agent_state("agent1", AgentState.READY, None)
        self.a.follow()
        (position,) = [
            entry
            for entry, decisions in self.a.applied.items()
            if any(isinstance(d.output, OfferCall) for d in decisions)
        ]
        return position

    def invite(self, position: str, campaign: str = "") -> Call:
        """Node a's internal INVITE of its caller to agent1 (signed, with `position`)."""
        call = inbound_call("agent1", "5551234")
        offer = OfferHeader(CALLER, "support", "5551234", "a", campaign, position)
        call.invite.headers.add(HEADER, sign_offer(SECRET, "agent1", offer, self.clock()))
        return call


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    w = World(tmp_path)
    yield w
    await w.crossnode.close()
    w.close()


def _rung(world: World, call: Call) -> bool:
    return ("ring", call.call_id, 180) in world.service.ua.actions


# -- the agent's node rings once its replica reached the offer ------------------------------------


async def test_a_queue_offer_rings_only_once_the_replica_applied_it_and_no_older_state_follows(
    world: World,
) -> None:
    position = await world.offered()
    world.b.follow(upto=int(position.split("-")[0]) - 1)  # b lags: the Ready not applied yet
    call = world.invite(position)
    world.crossnode.take_internal(call)
    for _ in range(3):
        await asyncio.sleep(0)
    assert not _rung(world, call) and "offered" not in world.hub.page("agent1")
    world.b.follow()
    await until(lambda: _rung(world, call))
    # Ready and Ringing (the engine's, from the Ready's input) reached the page before the
    # desk rang, and nothing older came after it.
    assert world.hub.page("agent1") == ["paused", "ready", "ringing", "offered"]
    (offered,) = world.hub.of("call-incoming", "agent1")
    assert offered[-1] == position  # b's replica had applied the offer's input


async def test_without_the_position_an_older_ready_reached_the_page_after_it_rang(
    world: World,
) -> None:
    # The control: an offer without ``pos`` (as before) rings at once, and the lagging
    # replica's Ready then reaches the page after Ringing: the race the position prevents.
    position = await world.offered()
    world.b.follow(upto=int(position.split("-")[0]) - 1)
    call = world.invite("")
    world.crossnode.take_internal(call)
    assert _rung(world, call)
    world.b.follow()
    assert world.hub.page("agent1") == ["paused", "offered", "ringing", "ready", "ringing"]


async def test_an_offer_the_replica_saw_withdrawn_is_refused_not_rung(world: World) -> None:
    position = await world.offered()
    world.a.submit(CallerAbandon(CALLER, world.clock()))  # the caller left meanwhile
    world.b.follow()
    call = world.invite(position)
    world.crossnode.take_internal(call)
    assert world.service.ua.of(call) == [("reject", call.call_id, 480)]
    assert "offered" not in world.hub.page("agent1")


async def test_a_replica_too_far_behind_refuses_the_offer(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(crossnode, "REPLICA_WAIT", 0.05)
    position = await world.offered()
    call = world.invite(position)  # b follows nothing more
    world.crossnode.take_internal(call)
    await until(lambda: bool(world.service.ua.of(call)))
    assert world.service.ua.of(call) == [("reject", call.call_id, 480)]


def test_the_position_is_signed_and_must_be_a_stream_entry() -> None:
    offer = OfferHeader(CALLER, "support", "555", "a", "", "1733500000000-7")
    value = sign_offer(SECRET, "agent1", offer, 1000.0, "n1")
    assert verify_offer(SECRET, "agent1", value, 1000.0) == (offer, "n1")
    forged = value.replace("pos=1733500000000-7", "pos=1733500000000-9")
    assert verify_offer(SECRET, "agent1", forged, 1000.0) is None
    bad = OfferHeader(CALLER, "support", "555", "a", "", "$")
    assert verify_offer(SECRET, "agent1", sign_offer(SECRET, "agent1", bad, 1000.0), 1000.0) is None


# -- the agent's page gone while the offer rings ---------------------------------------------------


async def test_the_page_gone_while_another_nodes_offer_rings_declines_it_at_once(
    world: World,
) -> None:
    position = await world.offered()
    world.b.follow()
    call = world.invite(position)
    world.crossnode.take_internal(call)
    assert _rung(world, call)
    await world.hub.logout("agent1", "closed")
    # 486 with the reason, and the engine's offer rejected from here before the logout: the
    # same order of inputs as a local agent's page gone while rung.
    assert world.service.ua.of(call)[-1] == (
        "reject",
        call.call_id,
        486,
        ("Reason", AGENT_GONE_REASON),
    )
    assert [type(i) for i in world.b.sent()[-2:]] == [OfferRejected, AgentLogout]
    world.a.follow()
    rejected = next(e for e, item, _ in world.stream.entries if isinstance(item, OfferRejected))
    (log,) = [
        d.output
        for d in world.a.applied[rejected]
        if isinstance(d.output, QueueLogEntry) and d.output.event is LogEvent.NO_ANSWER
    ]
    assert log.data["reason"] == "rejected" and log.agent == "agent1"
    assert world.a.replica.engine.call_state(CALLER) is CallerState.WAITING
    assert crossnode.outcome_of(486) is crossnode.Outcome.REJECTED


# -- recording pauses across nodes ----------------------------------------------------------------


def test_gaps_text_round_trips_and_anything_else_is_refused() -> None:
    gaps = [(1.5, 2.25), (3.0, None)]
    assert format_gaps(gaps) == "1.5-2.25,3-"
    assert parse_gaps(format_gaps(gaps)) == gaps
    assert parse_gaps("") == []
    for bad in ("3-1", "1-,2-3", "2-3,1-2", "1-2,1.5-3", "-1-2", "1e3-2", "nan-1", "1-2,", " 1-2"):
        assert parse_gaps(bad) is None, bad
    many = [(float(i), float(i)) for i in range(MAX_GAPS + 5)]
    assert len(parse_gaps(format_gaps(many)) or []) == MAX_GAPS  # the first ones are sent
    assert parse_gaps(",".join(["1-1"] * (MAX_GAPS + 1))) is None


def test_a_gaps_header_is_signed_for_its_call_and_file_and_bounded() -> None:
    value = sign_gaps(SECRET, CALLER, "2026/12/06/s.opus", [(1.0, 2.0)], 1000.0, "n1")
    assert verify_gaps(SECRET, value, 1000.0) == (CALLER, "2026/12/06/s.opus", [(1.0, 2.0)], "n1")
    assert verify_gaps(SECRET, value.replace("gaps=1-2", "gaps=1-3"), 1000.0) is None
    assert verify_gaps(SECRET, value, 1031.0) is None  # stale
    assert verify_gaps(b"x" * 32, value, 1000.0) is None
    offer = sign_offer(SECRET, "gaps", OfferHeader(CALLER, "q", "1", "a"), 1000.0)
    assert verify_gaps(SECRET, offer, 1000.0) is None  # an offer never passes for pauses
    assert verify_gaps(SECRET, value + ";" + "x" * 5000, 1000.0) is None


def test_the_callers_node_takes_pauses_only_for_its_leg_and_segment_once() -> None:
    now = [1000.0]
    ticks = [50.0]
    gaps = RemoteGaps(SECRET, lambda: now[0], lambda: ticks[0])
    file = "2026/12/06/support-c1.opus"
    closed = sign_gaps(SECRET, CALLER, file, [(1.0, 2.0)], now[0])
    assert not gaps.take("leg1", "other@a", file, closed)
    assert not gaps.take("leg1", CALLER, "2026/12/06/other.opus", closed)
    assert not gaps.take("leg1", CALLER, "", closed)  # no segment named: nothing to add to
    assert gaps.take("leg1", CALLER, file, closed)
    assert not gaps.take("leg1", CALLER, file, closed)  # replayed
    running = sign_gaps(SECRET, CALLER, file, [(1.0, 2.0), (5.0, None)], now[0])
    assert gaps.take("leg1", CALLER, file, running)
    ticks[0] += 2.5  # the leg ends 2.5 s after the last pause began: closed then
    assert gaps.pop("leg1") == [{"start": 1.0, "end": 2.0}, {"start": 5.0, "end": 7.5}]
    assert gaps.pop("leg1") == [] and gaps.refused == 4


async def test_the_agents_node_sends_its_recording_pauses_to_the_callers_node(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    position = await world.offered()
    world.b.follow()
    call = world.invite(position, campaign="support")
    world.crossnode.take_internal(call)
    await world.desk.answer("agent1", CALLER)
    (ac,) = world.desk.calls.values()
    assert ac.recording and ac.recorder is not None
    await world.desk.set_recording("agent1", CALLER, True)
    await world.desk.set_recording("agent1", CALLER, False)
    updates = [a for a in world.service.ua.of(call) if a[0] == "in-dialog"]
    assert [a[2] for a in updates] == ["UPDATE", "UPDATE"]
    values = [dict(a[3])[GAPS_HEADER] for a in updates]
    told = [verify_gaps(SECRET, v, world.clock()) for v in values]
    assert [t[:3] if t else None for t in told] == [
        (CALLER, ac.recording, [(0.0, None)]),
        (CALLER, ac.recording, [(0.0, 0.0)]),
    ]
    # Node a keeps the last for the leg; the leg's end gives the caller's record its pauses.
    remote = RemoteGaps(SECRET, world.clock)
    assert all(remote.take(call.call_id, CALLER, ac.recording, v) for v in values)
    assert remote.pop(call.call_id) == [{"start": 0.0, "end": 0.0}]
    # Node b writes no gaps of its own for another node's call (no record here to go to).
    await world.desk.hangup("agent1", CALLER)
    world.timers.advance(1)
    assert ("hangup", call.call_id) in world.service.ua.of(call)
    assert "have no record to go to" not in caplog.text


class Records:
    """The store's `call_ended`: the records written, in order."""

    def __init__(self) -> None:
        self.written: list[Any] = []

    def call_ended(self, record: Any) -> None:
        self.written.append(record)


async def test_a_requeued_callers_pauses_are_kept_with_it_and_in_its_record(tmp_path: Path) -> None:
    from tests.omlmedia.test_desk import World as LocalWorld

    local = LocalWorld()
    try:
        store = Records()
        local.acd.store = store  # type: ignore[assignment]
        call = await local.queue_call()
        local.acd.note_gaps(call.call_id, [{"start": 1.0, "end": 2.0}], "2026/12/06/s.opus")
        local.acd.note_gaps(call.call_id, [{"start": 0.5, "end": 0.75}], "2026/12/06/s-2.opus")
        local.caller_hangs_up(call)
        (record,) = store.written
        recording = [leg for leg in record.legs if leg.get("role") == "recording"]
        assert recording == [
            {
                "role": "recording",
                "gaps": [{"start": 1.0, "end": 2.0}],
                "file": "2026/12/06/s.opus",
            },
            {
                "role": "recording",
                "gaps": [{"start": 0.5, "end": 0.75}],
                "file": "2026/12/06/s-2.opus",
            },
        ]
        # after the record is written, a late segment's pauses are added to it
        local.acd.note_gaps(call.call_id, [{"start": 3.0, "end": 4.0}], "2026/12/06/s-3.opus")
        assert len(store.written) == 2 and store.written[-1].legs[-1]["file"].endswith("s-3.opus")
    finally:
        local.close()
