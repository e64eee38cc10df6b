"""omlmedia.agents: attended transfers between agents, on a real server in this process.

The server is `omlmedia.server.Server` on the interop test configuration (agents agent1 and
agent2, the `support` campaign queue). The caller is our own SIP user agent on a UDP socket
of its own (the server trusts 127.0.0.1 as its PBX). The pages are the hub's connections
(`FakeConnection` records what the server pushes); the agents' channels are real
`AgentChannel`s with no browser behind them, which also keep what the desk attaches to them, so
a test can push a frame into one agent's channel and take it out of the other's.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from omlmedia.config import load_config
from omlmedia.server import Server
from sip.endpoint import Endpoint
from sip.message import URI, Address
from sip.service import SipService
from sip.transport import SipTransports
from sip.ua import Call, CallState, UAEvent, UserAgent
from tests.interop.harness import DEMO_PASSWORD, free_port, write_test_config
from tests.webrtc.fakes import FakeConnection
from webrtc.channel import AgentChannel, Sink, Source

CALLER_SDP = (
    "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    "m=audio {port} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n"
    "a=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n"
)


class ProbeChannel(AgentChannel):
    """A real agent channel (no page connected) that keeps what is attached to it."""

    def __init__(self, agent: str, **options: Any) -> None:
        super().__init__(agent, **options)
        self.source: Source | None = None
        self.sink: Sink | None = None
        self.attached_rate = 0
        self.relay = False

    def attach(
        self, source: Source | None, sink: Sink | None, rate: int = 48000, *, relay: bool = False
    ) -> None:
        super().attach(source, sink, rate, relay=relay)
        self.source, self.sink, self.attached_rate = source, sink, rate
        self.relay = relay

    def detach(self) -> None:
        super().detach()
        self.source = self.sink = None


class Page:
    """An agent page: the hub's view of it is what the server pushed."""

    def __init__(self, world: World, agent: str) -> None:
        self.world, self.agent = world, agent
        self.conn = FakeConnection()

    async def send(self, kind: str, **fields: Any) -> dict[str, Any]:
        await self.world.server_hub.handle_text(
            self.conn, json.dumps({"v": 1, "type": kind, "id": 1, **fields})
        )
        return self.conn.last()

    def pushed(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.conn.sent if m["type"] == kind]

    def ended(self, call_id: str) -> dict[str, Any] | None:
        return next(
            (m["call"] for m in self.pushed("call-ended") if m["call"]["call_id"] == call_id), None
        )

    def state(self) -> str:
        return str(self.pushed("state")[-1]["state"])

    @property
    def channel(self) -> ProbeChannel:
        channel = self.world.server_hub.channel(self.agent)
        assert isinstance(channel, ProbeChannel)
        return channel


class World:
    """The server, a SIP caller, and the agents' pages."""

    def __init__(self, server: Server, caller: SipService, transports: SipTransports) -> None:
        self.server = server
        self.caller = caller
        self.caller_transports = transports
        self.caller_events: list[UAEvent] = []
        self.pages: dict[str, Page] = {}

    @property
    def server_hub(self) -> Any:
        assert self.server.hub is not None
        return self.server.hub

    @property
    def desk(self) -> Any:
        assert self.server.desk is not None
        return self.server.desk

    async def login(self, agent: str, ready: bool = True) -> Page:
        page = Page(self, agent)
        self.server_hub.connection_opened(page.conn)
        reply = await page.send("login", username=agent, password=DEMO_PASSWORD)
        assert reply["type"] == "login-ok", reply
        if ready:
            await page.send("state", state="ready")
            assert page.state() == "ready"
        self.pages[agent] = page
        return page

    def call(self, user: str) -> Call:
        """The caller dials `user` at the server."""
        server = self.server.transports.local_endpoint("udp")
        local = self.caller_transports.local_endpoint("udp")
        placed: list[Call] = []
        sdp = CALLER_SDP.format(port=local.port + 2).encode()
        self.caller.act(
            lambda now: placed.append(
                self.caller.ua.send_invite(
                    destination=Endpoint("udp", "127.0.0.1", server.port),
                    request_uri=URI.parse(f"sip:{user}@127.0.0.1:{server.port}"),
                    from_address=Address.parse('"Test Caller" <sip:tester@127.0.0.1>'),
                    to_address=Address.parse(f"<sip:{user}@127.0.0.1>"),
                    body=sdp,
                    now=now,
                )
            )
        )
        return placed[0]

    def hang_up(self, call: Call) -> None:
        self.caller.act(lambda now: self.caller.ua.hangup(call, now))


async def eventually(check: Callable[[], object], within: float = 20.0) -> None:
    """Wait until `check()` is true; fails after `within` seconds."""
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("the condition never held")
        await asyncio.sleep(0.01)


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    ports = {name: free_port() for name in ("sip", "tls", "http", "pbx", "carrier")}
    ports["rtp_low"] = 20000 + (os.getpid() % 90) * 100  # below the ephemeral ports above
    # Short RFC timers: the server's last transactions end within a second at its stop.
    write_test_config(tmp_path / "omlmedia.toml", tmp_path / "data", ports, t1=0.01)
    server = Server(load_config(tmp_path / "omlmedia.toml"))
    await server.start()
    assert server.hub is not None and server.desk is not None
    server.hub.channel_factory = ProbeChannel
    server.hub.check_password = lambda password, stored: _true()
    transports = SipTransports()
    await transports.start(host="127.0.0.1", udp_port=0)
    ua = UserAgent(
        local_endpoints={"udp": transports.local_endpoint("udp")},
        trusted_source=lambda ip: "server",
    )
    events: list[UAEvent] = []
    caller = SipService(ua, transports, events.append)
    result = World(server, caller, transports)
    result.caller_events = events
    try:
        yield result
    finally:
        await server.stop()
        caller.close()
        await transports.close()


async def _true() -> bool:
    return True


async def answered_call(
    world: World, user: str = "agent-agent1", agent: str = "agent1"
) -> tuple[Call, str]:
    """A caller dials `user`, `agent`'s page answers: the SIP call and its call id."""
    page = world.pages[agent]
    call = world.call(user)
    await eventually(lambda: page.pushed("call-incoming"))
    call_id = page.pushed("call-incoming")[-1]["call"]["call_id"]
    assert (await page.send("answer", call_id=call_id))["type"] == "ack"
    assert page.pushed("call-answered")[-1]["call"]["call_id"] == call_id
    await eventually(lambda: call.state is CallState.CONFIRMED)
    return call, call_id


async def consult(world: World, call_id: str, to: str = "agent-agent2") -> str:
    """agent1 consults `to` about `call_id`: the consultation's call id."""
    page = world.pages["agent1"]
    reply = await page.send("transfer-consult", call_id=call_id, to=to)
    assert reply["type"] == "call-dialing", reply
    assert reply["call"]["direction"] == "consult"
    return str(reply["call"]["call_id"])


def frame(value: int) -> np.ndarray[Any, np.dtype[np.int16]]:
    return np.full(960, value, dtype=np.int16)


async def test_consulting_an_agent_rings_its_page_joins_both_channels_and_completes_to_it(
    world: World,
) -> None:
    first = await world.login("agent1")
    second = await world.login("agent2")
    call, call_id = await answered_call(world)

    consult_id = await consult(world, call_id)
    assert first.pushed("call-held")[-1]["call"]["call_id"] == call_id
    ringing = second.pushed("call-incoming")[-1]["call"]
    assert ringing["call_id"] == consult_id and ringing["direction"] == "consult-in"
    assert (ringing["caller_number"], ringing["caller_name"]) == ("agent1", "Agent One")
    assert ringing["consult_for"] == "tester (Test Caller)"
    assert second.state() == "ringing"

    assert (await second.send("answer", call_id=consult_id))["type"] == "ack"
    assert second.pushed("call-answered")[-1]["call"]["call_id"] == consult_id
    assert first.pushed("call-answered")[-1]["call"]["call_id"] == consult_id
    # Browser to browser: what one agent's page sends, the other's page gets.
    a, b = first.channel, second.channel
    assert (
        a.sink is not None and b.source is not None and b.sink is not None and a.source is not None
    )
    a.sink(frame(7))
    assert (b.source() == frame(7)).all()  # type: ignore[union-attr]
    b.sink(frame(9))
    assert (a.source() == frame(9)).all()  # type: ignore[union-attr]
    assert a.source() is None  # nothing more queued: no standing delay

    assert (await first.send("transfer-complete", call_id=call_id))["type"] == "ack"
    assert first.ended(call_id)["reason"] == "transferred"  # type: ignore[index]
    assert first.ended(consult_id)["reason"] == "transferred"  # type: ignore[index]
    assert second.ended(consult_id)["reason"] == "transferred"  # type: ignore[index]
    taken = second.pushed("call-answered")[-1]["call"]
    assert (taken["call_id"], taken["state"], taken["direction"]) == (call_id, "active", "inbound")
    assert (taken["caller_number"], taken["queue"]) == ("tester", "agent-agent1")
    assert first.state() == "wrapup" and second.state() == "on-call"
    # The caller's leg now feeds agent2's channel at its own rate (G.711: 8 kHz); agent1's
    # channel carries nothing.
    assert b.attached_rate == 8000 and b.source is not None and b.relay  # the leg: on arrival
    assert a.source is None and a.sink is None
    assert world.desk.calls[(call_id, "agent2")].leg is not None
    assert call.state is CallState.CONFIRMED  # the caller never noticed

    world.hang_up(call)
    await eventually(lambda: second.ended(call_id) is not None)
    await eventually(lambda: second.state() == "wrapup")
    assert not world.desk.calls and not world.desk.joined
    assert world.server.pool.in_use == 0


async def test_cancelling_a_consultation_gives_the_agent_back_the_held_caller(
    world: World,
) -> None:
    first = await world.login("agent1")
    second = await world.login("agent2")
    call, call_id = await answered_call(world)
    consult_id = await consult(world, call_id)
    await second.send("answer", call_id=consult_id)

    assert (await first.send("transfer-cancel", call_id=call_id))["type"] == "ack"
    assert first.ended(consult_id)["reason"] == "consult-cancelled"  # type: ignore[index]
    assert second.ended(consult_id)["reason"] == "consult-cancelled"  # type: ignore[index]
    assert second.state() == "ready"  # no wrap-up after a consultation
    assert first.state() == "on-call"
    assert second.channel.source is None  # agent2's channel carries nothing
    assert first.channel.attached_rate == 8000  # back on the held caller's leg
    assert world.desk.calls[(call_id, "agent1")].held
    assert (await first.send("resume", call_id=call_id))["type"] == "ack"
    assert first.pushed("call-resumed")[-1]["call"]["call_id"] == call_id
    assert call.state is CallState.CONFIRMED

    # The same again, and this time agent2 hangs up: the same for agent1.
    consult_id = await consult(world, call_id)
    await second.send("answer", call_id=consult_id)
    await second.send("hangup", call_id=consult_id)
    assert first.ended(consult_id)["reason"] == "hangup"  # type: ignore[index]
    assert first.state() == "on-call" and second.state() == "ready"
    world.hang_up(call)
    await eventually(lambda: first.state() == "wrapup")
    assert not world.desk.calls


async def test_a_consultation_declined_or_not_answered_ends_with_its_reason(
    world: World,
) -> None:
    first = await world.login("agent1")
    second = await world.login("agent2")
    call, call_id = await answered_call(world)

    consult_id = await consult(world, call_id)
    await second.send("hangup", call_id=consult_id)  # agent2 declines
    assert first.ended(consult_id)["reason"] == "declined"  # type: ignore[index]
    assert second.state() == "ready" and first.state() == "on-call"
    assert world.desk.calls[(call_id, "agent1")].held

    world.desk.ring_timeout = 0.3
    consult_id = await consult(world, call_id)
    await eventually(lambda: first.ended(consult_id) is not None)
    assert first.ended(consult_id)["reason"] == "no-answer"  # type: ignore[index]
    assert second.ended(consult_id)["reason"] == "no-answer"  # type: ignore[index]
    assert second.state() == "ready"
    assert [c.call_id for c in world.desk.calls.values()] == [call_id]
    assert call.state is CallState.CONFIRMED  # still held, still up
    world.hang_up(call)
    await eventually(lambda: not world.desk.calls)


async def test_the_caller_leaving_withdraws_a_ringing_consultation(world: World) -> None:
    first = await world.login("agent1")
    second = await world.login("agent2")
    call, call_id = await answered_call(world)
    consult_id = await consult(world, call_id)

    world.hang_up(call)
    await eventually(lambda: second.ended(consult_id) is not None)
    assert second.ended(consult_id)["reason"] == "caller-gone"  # type: ignore[index]
    assert first.ended(consult_id)["reason"] == "caller-gone"  # type: ignore[index]
    assert first.ended(call_id) is not None
    assert second.state() == "ready" and first.state() == "wrapup"
    assert not world.desk.calls
    assert world.server.pool.in_use == 0


async def test_the_caller_leaving_a_live_consultation_leaves_the_agents_talking(
    world: World,
) -> None:
    first = await world.login("agent1")
    second = await world.login("agent2")
    call, call_id = await answered_call(world)
    consult_id = await consult(world, call_id)
    await second.send("answer", call_id=consult_id)

    world.hang_up(call)
    await eventually(lambda: first.ended(call_id) is not None)
    assert first.ended(consult_id) is None and second.ended(consult_id) is None
    a, b = first.channel, second.channel
    assert a.sink is not None and b.source is not None
    a.sink(frame(3))
    assert (b.source() == frame(3)).all()  # type: ignore[union-attr]
    reply = await first.send("transfer-complete", call_id=call_id)
    assert reply["type"] == "error" and reply["code"] == "unknown-call"

    await first.send("hangup", call_id=consult_id)
    assert second.ended(consult_id)["reason"] == "hangup"  # type: ignore[index]
    assert first.state() == "wrapup" and second.state() == "ready"
    assert not world.desk.calls
    assert a.source is None and b.source is None


async def test_an_agent_who_is_not_ready_cannot_be_consulted(world: World) -> None:
    first = await world.login("agent1")
    second = await world.login("agent2", ready=False)  # paused since login
    call, call_id = await answered_call(world)

    reply = await first.send("transfer-consult", call_id=call_id, to="agent-agent2")
    assert reply["type"] == "error" and reply["code"] == "unavailable", reply
    assert "agent2" in reply["reason"]
    reply = await first.send("transfer-consult", call_id=call_id, to="agent-agent1")
    assert reply["type"] == "error" and reply["code"] == "unavailable", reply
    reply = await first.send("transfer-consult", call_id=call_id, to="support")
    assert reply["type"] == "error" and reply["code"] == "bad-target", reply
    assert not second.pushed("call-incoming")
    assert first.pushed("call-held") == []  # the caller was not held for nothing
    assert [c.call_id for c in world.desk.calls.values()] == [call_id]
    world.hang_up(call)
    await eventually(lambda: not world.desk.calls)


async def test_a_queue_caller_completed_to_another_agent_leaves_the_queue_books(
    world: World,
) -> None:
    first = await world.login("agent1")
    second = await world.login("agent2", ready=False)
    call, call_id = await answered_call(world, "support")
    assert first.pushed("call-answered")[-1]["call"]["queue"] == "support"
    await second.send("state", state="ready")
    consult_id = await consult(world, call_id)
    await second.send("answer", call_id=consult_id)
    await first.send("transfer-complete", call_id=call_id)

    taken = second.pushed("call-answered")[-1]["call"]
    assert (taken["call_id"], taken["queue"], taken["caller_number"]) == (
        call_id,
        "support",
        "tester",
    )
    assert "solved" in taken["dispositions"]  # the campaign's, as agent1 had them
    await eventually(lambda: first.state() == "wrapup")
    await second.send("hangup", call_id=call_id)
    await eventually(lambda: call.state is CallState.ENDED)
    db = world.server.config.server.data_dir / "omlmedia.db"
    rows: list[Any] = [None, None]

    def committed() -> bool:  # the queue log is committed every 0.2 s: read until it is there
        conn = sqlite3.connect(db)
        try:
            rows[0] = conn.execute(
                "SELECT agent, data FROM queue_log WHERE event = 'transfer' AND call_id = ?",
                (call_id,),
            ).fetchone()
            rows[1] = conn.execute(
                "SELECT queue, agent, hangup_by, cause FROM cdr WHERE call_id = ?", (call_id,)
            ).fetchone()
        finally:
            conn.close()
        return None not in rows

    await eventually(committed)
    transfer, record = rows
    assert transfer is not None and transfer[0] == "agent1" and "agent:agent2" in transfer[1]
    assert record == ("support", "agent1", "transfer", "transferred"), record


async def test_completing_before_the_consulted_agent_answers_rings_it_with_the_caller(
    world: World,
) -> None:
    first = await world.login("agent1")
    second = await world.login("agent2")
    call, call_id = await answered_call(world)
    consult_id = await consult(world, call_id)

    assert (await first.send("transfer-complete", call_id=call_id))["type"] == "ack"
    assert second.ended(consult_id)["reason"] == "transferred"  # type: ignore[index]
    ringing = second.pushed("call-incoming")[-1]["call"]
    assert (ringing["call_id"], ringing["caller_number"]) == (call_id, "tester")
    assert first.state() == "wrapup" and second.state() == "ringing"
    assert (await second.send("answer", call_id=call_id))["type"] == "ack"
    assert second.state() == "on-call" and second.channel.attached_rate == 8000
    world.hang_up(call)
    await eventually(lambda: not world.desk.calls)
    assert world.server.pool.in_use == 0


async def test_the_consulted_agent_logging_out_ends_the_consultation(world: World) -> None:
    first = await world.login("agent1")
    second = await world.login("agent2")
    call, call_id = await answered_call(world)
    consult_id = await consult(world, call_id)
    await second.send("answer", call_id=consult_id)

    await second.send("logout")
    assert first.ended(consult_id)["reason"] == "agent-logout"  # type: ignore[index]
    assert first.state() == "on-call" and world.desk.calls[(call_id, "agent1")].held
    assert first.channel.attached_rate == 8000  # back on the held caller's leg
    world.hang_up(call)
    await eventually(lambda: not world.desk.calls)
