"""``GET /api/v1/events`` against a real aiohttp server: WebSocket and SSE, the token, filters,
resuming after a reconnect (every missed event exactly once, in order, from the store and from
memory), and a slow client cut off while the others keep receiving."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import WSMsgType
from aiohttp.test_utils import TestClient, TestServer

from omlmedia import eventstream
from omlmedia.accounts import AccountBook
from omlmedia.api import create_app
from omlmedia.authz import Identity, Role
from omlmedia.events import EventFilter, EventLog
from omlmedia.storage import AsyncStore, Store
from tests.omlmedia.test_api import AUTH, config
from tests.omlmedia.test_authz import demo

SSE = {**AUTH, "Accept": "text/event-stream"}


class Running:
    def __init__(self, client: TestClient[Any, Any], log: EventLog, store: AsyncStore) -> None:
        self.client = client
        self.log = log
        self.store = store


@pytest.fixture
async def running(
    tmp_path: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Running]:
    monkeypatch.setattr(eventstream, "STREAM_QUEUE", getattr(request, "param", 2000))
    monkeypatch.setattr(eventstream, "LINGER", 0.0)  # batching is measured by the benchmark
    store = AsyncStore(Store(tmp_path / "omlmedia.db"))
    log = EventLog(store, keep=4)
    async with TestClient(TestServer(create_app(config(), dict, events=log))) as client:
        yield Running(client, log, store)
    await log.close()
    await store.close()


async def ws_events(ws: aiohttp.ClientWebSocketResponse, count: int) -> list[dict[str, Any]]:
    events = []
    for _ in range(count):
        msg = await ws.receive(timeout=10)
        assert msg.type is WSMsgType.TEXT, msg
        events.append(json.loads(msg.data))
    return events


async def sse_events(response: aiohttp.ClientResponse, count: int) -> list[dict[str, Any]]:
    """`count` SSE messages, checking that id: and event: agree with the JSON."""
    events: list[dict[str, Any]] = []
    fields: dict[str, str] = {}
    while len(events) < count:
        line = (await response.content.readline()).decode().rstrip("\n")
        if line.startswith(":"):
            continue
        if line:
            name, _, value = line.partition(": ")
            fields[name] = value
            continue
        if not fields:
            continue
        body = json.loads(fields["data"])
        if fields.get("event") != "error":
            assert fields["id"] == str(body["id"]) and fields["event"] == body["type"]
        events.append({"sse_event": fields.get("event"), **body})
        fields = {}
    return events


async def until_subscribed(log: EventLog, count: int) -> None:
    """The server's handlers run on this loop: let them run until `count` clients listen."""
    for _ in range(10_000):
        if len(log.subscribers) >= count:
            return
        await asyncio.sleep(0)
    raise AssertionError("the client never subscribed")


async def test_the_stream_needs_the_token_and_a_stream_transport(running: Running) -> None:
    client = running.client
    assert (await client.get("/api/v1/events")).status == 401
    plain = await client.get("/api/v1/events", headers=AUTH)
    assert (
        plain.status == 406
        and "text/event-stream" in (await plain.json(content_type=None))["error"]
    )
    bad = await client.get("/api/v1/events?since_id=x", headers=SSE)
    assert bad.status == 400 and "since_id" in (await bad.json(content_type=None))["error"]
    assert bad.content_type == "application/problem+json"
    with pytest.raises(aiohttp.WSServerHandshakeError):
        await client.ws_connect("/api/v1/events")


async def test_websocket_clients_get_live_events_filtered(running: Running) -> None:
    client, log = running.client, running.log
    every = await client.ws_connect("/api/v1/events", headers=AUTH, compress=15)
    assert every.compress == 0  # asked for permessage-deflate, not given: events are small
    calls = await client.ws_connect("/api/v1/events?type=call.&queue=support", headers=AUTH)
    agent = await client.ws_connect("/api/v1/events?agent=agent1&type=agent.", headers=AUTH)
    campaign = await client.ws_connect("/api/v1/events?campaign=sales", headers=AUTH)
    await until_subscribed(log, 4)
    log.publish("call.started", call_id="c1", queue="support", campaign="sales")
    log.publish("call.started", call_id="c2", queue="billing")
    log.publish("agent.state", agent="agent1", data={"state": "ready"})
    log.publish("call.ended", call_id="c1", queue="support", campaign="sales")
    assert [e["id"] for e in await ws_events(every, 4)] == [1, 2, 3, 4]
    assert [(e["id"], e["type"]) for e in await ws_events(calls, 2)] == [
        (1, "call.started"),
        (4, "call.ended"),
    ]
    (state,) = await ws_events(agent, 1)
    assert state["data"] == {"state": "ready"} and state["agent"] == "agent1"
    assert [e["id"] for e in await ws_events(campaign, 2)] == [1, 4]
    for ws in (every, calls, agent, campaign):
        await ws.close()


async def test_a_websocket_client_resumes_with_every_missed_event_once(running: Running) -> None:
    client, log, store = running.client, running.log, running.store
    ws = await client.ws_connect("/api/v1/events", headers=AUTH)
    await until_subscribed(log, 1)
    for i in range(3):
        log.publish("call.started", call_id=f"c{i}")
    seen = await ws_events(ws, 3)
    await ws.close()
    # Missed while away: some committed to the store, some only in memory (keep=4).
    for i in range(3, 12):
        log.publish("call.started", call_id=f"c{i}")
        if i == 8:
            await store.flush()
    ws = await client.ws_connect(f"/api/v1/events?since_id={seen[-1]['id']}", headers=AUTH)
    missed = await ws_events(ws, 9)
    log.publish("call.ended", call_id="c0")
    (live,) = await ws_events(ws, 1)
    ids = [e["id"] for e in seen + missed + [live]]
    assert ids == list(range(1, 14))
    assert [e["call_id"] for e in missed] == [f"c{i}" for i in range(3, 12)]
    await ws.close()


async def test_an_sse_client_resumes_with_last_event_id(running: Running) -> None:
    client, log, store = running.client, running.log, running.store
    for i in range(6):
        log.publish("queue.entered" if i % 2 else "call.started", call_id=f"c{i}")
    await store.flush()
    log.publish("queue.abandoned", call_id="c1")
    response = await client.get("/api/v1/events?type=queue.", headers={**SSE, "Last-Event-ID": "2"})
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/event-stream")
    replay = await sse_events(response, 3)
    assert [(e["id"], e["type"]) for e in replay] == [
        (4, "queue.entered"),
        (6, "queue.entered"),
        (7, "queue.abandoned"),
    ]
    log.publish("call.ended", call_id="c1")
    log.publish("queue.entered", call_id="c9")
    (live,) = await sse_events(response, 1)
    assert live["id"] == 9
    response.close()


async def test_since_id_zero_replays_the_whole_log_then_goes_live(running: Running) -> None:
    client, log = running.client, running.log
    for _ in range(5):
        log.publish("call.started")
    ws = await client.ws_connect("/api/v1/events?since_id=0", headers=AUTH)
    assert [e["id"] for e in await ws_events(ws, 5)] == [1, 2, 3, 4, 5]
    log.publish("call.ended")
    assert [e["id"] for e in await ws_events(ws, 1)] == [6]
    await ws.close()


def tiny_receive_buffer(addr_info: Any) -> socket.socket:
    family, kind, proto, _, _ = addr_info
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    return sock


@pytest.mark.parametrize("running", [8], indirect=True)
@pytest.mark.parametrize("transport", ["websocket", "sse"])
async def test_a_slow_client_is_cut_off_with_a_reason_and_the_others_keep_receiving(
    running: Running, transport: str
) -> None:
    client, log = running.client, running.log
    url = client.make_url("/api/v1/events")
    connector = aiohttp.TCPConnector(socket_factory=tiny_receive_buffer)
    async with aiohttp.ClientSession(connector=connector) as slow_session:
        if transport == "websocket":
            slow_ws = await slow_session.ws_connect(url, headers=AUTH)
        else:
            slow_sse = await slow_session.get(url, headers=SSE)
        fast = await client.ws_connect("/api/v1/events", headers=AUTH)
        await until_subscribed(log, 2)
        padding = "x" * 4000
        received = 0
        for _ in range(2000):
            if log.overflowed:
                break
            for _ in range(8):
                log.publish("call.quality", data={"padding": padding})
            received += len(await ws_events(fast, 8))  # the fast one keeps up, never blocked
        assert log.overflowed == 1, "the slow client was never cut off"
        assert len(log.subscribers) == 1
        log.publish("call.ended")
        last = (await ws_events(fast, 1))[0]
        assert last["id"] == received + 1 and last["type"] == "call.ended"
        # The slow client, reading at last, finds the reason at the end of what it was sent.
        if transport == "websocket":
            while (msg := await slow_ws.receive(timeout=10)).type is WSMsgType.TEXT:
                pass
            assert msg.type is WSMsgType.CLOSE
            assert slow_ws.close_code == 1013
            assert "too slow" in str(msg.extra) and "since_id" in str(msg.extra)
        else:
            while True:
                (ev,) = await sse_events(slow_sse, 1)
                if ev["sse_event"] == "error":
                    break
            assert "too slow" in ev["error"] and ev["code"] == 1013
        await fast.close()


async def test_a_scoped_token_sees_only_its_queues_campaigns_and_their_agents(
    tmp_path: Path,
) -> None:
    config = demo()
    book = AccountBook(tmp_path / "accounts.db", config.api.token_matches)
    token, _ = book.create_token(
        Identity("test", Role.ADMIN),
        integration="crm",
        role=Role.REPORTING,
        scope=frozenset({"support"}),
    )
    agent_token, _ = book.create_token(
        Identity("test", Role.ADMIN), integration="page", role=Role.AGENT
    )
    log = EventLog()
    app = create_app(config, dict, events=log, accounts=book)
    async with TestClient(TestServer(app)) as client:
        headers = {"Authorization": f"Bearer {token}"}
        accept = {"Accept": "text/event-stream"}
        out = await client.get("/api/v1/events?queue=sales", headers={**headers, **accept})
        assert out.status == 403
        denied = await client.get(
            "/api/v1/events", headers={"Authorization": f"Bearer {agent_token}", **accept}
        )
        assert denied.status == 403  # the agent role does not read the stream
        ws = await client.ws_connect("/api/v1/events", headers=headers)
        log.publish("call.started", call_id="echo-1")  # no queue: only unscoped tokens
        log.publish("queue.entered", call_id="c1", queue="sales")
        log.publish("queue.entered", call_id="c2", queue="support", campaign="support")
        log.publish("agent.state", agent="agent1", data={"state": "ready"})  # in support
        log.publish("agent.state", agent="nobody", data={"state": "ready"})
        log.publish("call.ended", call_id="c2", queue="support")
        seen = await ws_events(ws, 3)
        assert [(e["type"], e["call_id"] or e["agent"]) for e in seen] == [
            ("queue.entered", "c2"),
            ("agent.state", "agent1"),
            ("call.ended", "c2"),
        ]
        await ws.close()
    await log.close()
    book.close()


def test_an_event_is_encoded_once_for_every_sse_client_of_its_log() -> None:
    log, other = EventLog(), EventLog()
    ev = log.publish("queue.entered", queue="support", data={"position": 1})
    first = eventstream.sse_message(log, ev)
    assert first.startswith(f"id: {ev.id}\nevent: queue.entered\ndata: {{".encode())
    assert json.loads(first.split(b"data: ", 1)[1]) == ev.view()
    assert eventstream.sse_message(log, ev) is first  # the same bytes for the next client
    # Another log's event with the same id is its own message.
    same_id = other.publish("call.started", call_id="c1")
    assert same_id.id == ev.id
    assert b"call.started" in eventstream.sse_message(other, same_id)


def test_many_clients_write_less_often_so_the_stream_keeps_within_its_budget() -> None:
    assert eventstream.linger(1) == eventstream.LINGER
    period = eventstream.linger(100)
    assert eventstream.LINGER < period <= eventstream.MAX_LINGER
    assert 100 / period <= eventstream.WRITES_PER_SECOND
    assert eventstream.linger(10_000) == eventstream.MAX_LINGER
    assert eventstream.MAX_LINGER < 0.1  # the delivery target (p99 <= 100 ms)


async def test_an_unfiltered_unscoped_reader_gets_every_event_without_a_match_per_event() -> None:
    log = EventLog()
    everything, calls = EventFilter(), EventFilter.parse(["call."])
    assert everything.everything and not calls.everything
    assert not EventFilter(scope=lambda ev: True).everything
    all_sub, call_sub = log.subscribe(everything), log.subscribe(calls)
    for kind in ("call.started", "queue.entered", "call.ended"):
        log.publish(kind, call_id="c1", queue="support")
    assert [ev.type for ev in await log.read(all_sub)] == [
        "call.started",
        "queue.entered",
        "call.ended",
    ]
    assert [ev.type for ev in await log.read(call_sub)] == ["call.started", "call.ended"]
    assert all_sub.cursor == call_sub.cursor == log.last_id


async def test_a_stream_opened_after_the_log_closed_ends_at_once_with_1001(tmp_path: Path) -> None:
    # A client reconnecting at once to a stopping server (its stream just ended with 1001) is
    # told 1001 again at once: a stream kept open there held the server's stop for 5 s.
    log = EventLog()
    async with TestClient(TestServer(create_app(config(), dict, events=log))) as client:
        log.publish("call.started", call_id="c1")
        await log.close()
        started = asyncio.get_running_loop().time()
        response = await client.get("/api/v1/events?since_id=0", headers=SSE)
        body = await asyncio.wait_for(response.text(), 5)
        assert asyncio.get_running_loop().time() - started < 2.0
        assert "event: error" in body and '"code": 1001' in body, body
        ws = await client.ws_connect("/api/v1/events", headers=AUTH)
        msg = await ws.receive(timeout=5)
        assert msg.type is WSMsgType.CLOSE and msg.data == 1001, msg
        await ws.close()
