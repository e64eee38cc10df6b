"""Where events come from: the SIP core's calls (`CallEvents`, in front of the router), the
ACD runtime's queue log and call records, and the desk's agent states. No sockets."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from omlmedia.callevents import CallEvents
from omlmedia.config import Campaign, Route, RouteAction, load_demo_config
from omlmedia.events import Event, EventLog
from omlmedia.server import Server
from omlmedia.storage import AsyncStore, Store
from sip.message import Response, parse_message
from sip.ua import CallConfirmed, CallEnded, CallProgress, IncomingCall, UAEvent
from tests.omlmedia.deskfakes import inbound_call, outbound_call
from tests.omlmedia.test_desk import World


def routes(user: str) -> tuple[Route, str] | None:
    if user == "sales":
        return Route(RouteAction.CAMPAIGN, user="sales", trunk="sales"), user
    if user == "600":
        return Route(RouteAction.ECHO, user="600"), user
    return None


def ringing() -> Response:
    response = parse_message(
        b"SIP/2.0 180 Ringing\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bK-x\r\n"
        b"From: <sip:a@h>;tag=1\r\nTo: <sip:b@h>;tag=2\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\n"
        b"Content-Length: 0\r\n\r\n"
    )
    assert isinstance(response, Response)
    return response


def test_calls_start_are_answered_and_end_around_the_router() -> None:
    log = EventLog(clock=lambda: 7.0)
    forwarded: list[tuple[str, int]] = []

    def router(ev: UAEvent) -> None:
        forwarded.append((type(ev).__name__, log.last_id))
        if isinstance(ev, CallEnded) and ev.call is call:
            log.publish("queue.completed", call_id=ev.call.call_id)  # the owner's last word

    tap = CallEvents(log, routes, router, campaigns={"sales": Campaign("sales", "support")})
    call = inbound_call("sales", number="5551234")
    tap.on_event(IncomingCall(call))
    tap.on_event(CallConfirmed(call))
    tap.on_event(CallEnded(call, "bye"))
    events = list(log.recent)
    assert [ev.type for ev in events] == [
        "call.started",
        "call.answered",
        "queue.completed",
        "call.ended",
    ]
    started = events[0]
    assert (started.call_id, started.queue, started.campaign) == (call.call_id, "support", "sales")
    assert started.data["from"] == "5551234" and started.data["to"] == "sales"
    assert started.data["target"] == "campaign:sales"
    assert started.data["direction"] == "inbound"
    assert events[-1].data == {"cause": "bye", "direction": "inbound"}
    assert (events[-1].queue, events[-1].campaign) == ("support", "sales")
    # The router saw each event once, the start before and the end after being published.
    assert forwarded == [("IncomingCall", 1), ("CallConfirmed", 1), ("CallEnded", 2)]

    echo = inbound_call("600")
    tap.on_event(IncomingCall(echo))
    tap.on_event(CallEnded(echo, "bye"))
    assert [(ev.type, ev.queue) for ev in log.recent if ev.call_id == echo.call_id] == [
        ("call.started", ""),
        ("call.ended", ""),
    ]


def test_an_outbound_call_starts_at_its_first_response() -> None:
    log = EventLog()
    tap = CallEvents(log, routes, lambda ev: None)
    call = outbound_call("5550000")
    tap.on_event(CallProgress(call, ringing()))
    tap.on_event(CallProgress(call, ringing()))
    tap.on_event(CallEnded(call, "rejected"))
    assert [(ev.type, ev.data.get("direction")) for ev in log.recent] == [
        ("call.started", "outbound"),
        ("call.ended", "outbound"),
    ]


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[tuple[World, EventLog]]:
    w = World()
    store = AsyncStore(Store(tmp_path / "omlmedia.db"))
    log = EventLog(store, clock=w.clock)
    # The World builds its ACD and desk without a log; they take one as any constructor does.
    w.acd.store, w.acd.events, w.desk.events = store, log, log
    yield w, log
    w.close()
    await log.close()
    await store.close()


def of(log: EventLog, call_id: str) -> list[Event]:
    return [ev for ev in log.recent if ev.call_id == call_id]


async def test_a_queue_call_publishes_its_queue_log_quality_and_agent_states(
    world: tuple[World, EventLog],
) -> None:
    w, log = world
    await w.ready("agent1", "agent2")
    states = [(ev.agent, ev.data["state"]) for ev in log.recent if ev.type == "agent.state"]
    assert ("agent1", "ready") in states and ("agent2", "ready") in states
    call = await w.queue_call()
    await w.desk.answer("agent1", call.call_id)
    w.caller_hangs_up(call)
    types = [ev.type for ev in of(log, call.call_id)]
    assert types[0] == "queue.entered"
    assert "queue.offered" in types and "queue.answered" in types
    assert sorted(types[-2:]) == ["call.quality", "queue.completed"]
    (quality,) = [ev for ev in of(log, call.call_id) if ev.type == "call.quality"]
    assert quality.queue == "support" and quality.agent == "agent1"
    assert quality.data["leg"] == "caller" and "mos" in quality.data
    wrapup = [ev for ev in log.recent if ev.type == "agent.state" and ev.agent == "agent1"][-1]
    assert wrapup.data["state"] == "wrapup"
    ids = [ev.id for ev in log.recent]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)


async def test_calls_a_crash_left_open_end_with_call_ended_at_the_next_start(
    tmp_path: Path,
) -> None:
    store = Store(tmp_path / "omlmedia.db")
    store.call_started("left-open", 1.0, {"queue": "support"})
    store.close()
    demo = load_demo_config()
    server = Server(
        dataclasses.replace(demo, server=dataclasses.replace(demo.server, data_dir=tmp_path))
    )
    log = server._open_events()
    try:
        (ended,) = [ev for ev in log.recent if ev.call_id == "left-open"]
        assert ended.type == "call.ended" and ended.data == {"cause": "server-restart"}
    finally:
        server.pool.close()
        await log.close()
        assert server.store is not None
        await server.store.close()
    reader = Store(tmp_path / "omlmedia.db")
    assert [row[2] for row in reader.events(0, 10)] == ["call.ended"]
    reader.close()
