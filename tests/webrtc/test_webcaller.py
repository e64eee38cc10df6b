"""webrtc.webcaller through the hub: the web-call messages, the allow-list, limits, bad input."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from tests.webrtc.fakes import (
    FakeCallControl,
    FakeChannel,
    FakeClock,
    FakeConnection,
    FakeWebControl,
    FakeWebMedia,
)
from webrtc.accounts import Account, AccountStore, hash_password
from webrtc.config import parse_webrtc
from webrtc.exceptions import CommandError, ConfigError
from webrtc.signaling import AgentHub
from webrtc.webcaller import WebCallerHub

OFFER = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"
ICE = [{"urls": ["stun:stun.example.net:3478"]}]


def make(**options: Any) -> tuple[AgentHub, WebCallerHub, FakeWebControl, FakeClock]:
    clock = FakeClock()
    accounts = AccountStore([Account("agent1", "Ana", hash_password("pw", n=2**10))], clock=clock)
    control = FakeWebControl()
    web = WebCallerHub(
        control,
        ["sales", "agent-agent1"],
        ice_servers=ICE,
        media_factory=FakeWebMedia,  # type: ignore[arg-type]
        clock=clock,
        **options,
    )
    hub = AgentHub(accounts, FakeCallControl(), FakeChannel, clock=clock, ice_servers=ICE, web=web)
    return hub, web, control, clock


async def send(hub: AgentHub, conn: FakeConnection, **message: Any) -> dict[str, Any]:
    await hub.handle_text(conn, json.dumps({"v": 1, **message}))
    return conn.last()


async def test_a_web_call_from_prepare_to_hangup() -> None:
    hub, web, control, _ = make()
    conn = FakeConnection()
    hub.connection_opened(conn)
    ready = await send(hub, conn, type="web-call-prepare", target="sales", id=1)
    assert ready == {
        "type": "web-call-ready",
        "ref": 1,
        "target": "sales",
        "ice_servers": ICE,
        "v": 1,
    }
    await send(hub, conn, type="web-call", target="sales", sdp=OFFER, name="Juan", id=2)
    answer, state = conn.sent[-2:]
    assert answer["type"] == "web-call-answer" and answer["ref"] == 2
    assert answer["sdp"].startswith("v=0") and answer["call_id"] == "web-1"
    assert state == {
        "type": "web-call-state",
        "call_id": "web-1",
        "state": "ringing",
        "reason": "",
        "v": 1,
    }
    assert control.calls == [("web_call", "sales", "Juan", "192.0.2.10")]
    media = web.media("web-1")
    assert isinstance(media, FakeWebMedia)
    early = await send(hub, conn, type="web-call-dtmf", call_id="web-1", digit="5", id=3)
    assert early["code"] == "bad-state"
    web.web_call_answered("web-1")
    assert conn.last()["state"] == "answered"
    assert (await send(hub, conn, type="web-call-dtmf", call_id="web-1", digit="5", id=4))[
        "type"
    ] == "ack"
    assert ("web_dtmf", "web-1", "5") in control.calls
    login = await send(hub, conn, type="login", username="agent1", password="pw", id=5)
    assert login["code"] == "bad-state"
    await send(hub, conn, type="web-call-hangup", call_id="web-1", id=6)
    assert conn.sent[-2]["type"] == "ack"
    assert conn.last()["state"] == "ended" and conn.last()["reason"] == "caller-hangup"
    assert media.closed and web.calls() == [] and control.calls[-1] == ("web_hangup", "web-1")


async def test_far_end_hangup_and_closed_page() -> None:
    hub, web, control, _ = make()
    conn = FakeConnection()
    hub.connection_opened(conn)
    await send(hub, conn, type="web-call", target="agent-agent1", sdp=OFFER, id=1)
    web.web_call_ended("web-1", "agent-hangup")
    await asyncio.sleep(0)
    assert conn.last()["state"] == "ended" and conn.last()["reason"] == "agent-hangup"
    await send(hub, conn, type="web-call", target="sales", sdp=OFFER, id=2)
    media = web.media("web-2")
    hub.connection_closed(conn)
    await asyncio.sleep(0.01)
    assert control.calls[-1] == ("web_hangup", "web-2") and media.closed  # type: ignore[union-attr]
    assert web.calls() == []


@pytest.mark.parametrize(
    ("message", "code"),
    [
        ({"type": "web-call-prepare", "target": "secret-queue"}, "unknown-target"),
        ({"type": "web-call", "target": "nope", "sdp": OFFER}, "unknown-target"),
        ({"type": "web-call", "target": "sales", "sdp": "hello"}, "malformed"),
        ({"type": "web-call", "target": "sales", "sdp": "v=0 bad"}, "bad-sdp"),
        ({"type": "web-call", "target": "sales\u0000", "sdp": OFFER}, "malformed"),
        ({"type": "web-call", "target": "sales", "sdp": OFFER, "name": 7}, "malformed"),
        ({"type": "web-call", "target": "sales", "sdp": OFFER, "extra": 1}, "malformed"),
        ({"type": "web-call", "target": "x" * 65, "sdp": OFFER}, "malformed"),
        ({"type": "web-call-hangup", "call_id": "web-9"}, "unknown-call"),
        ({"type": "web-call-dtmf", "call_id": "web-9", "digit": "x"}, "malformed"),
        ({"type": "web-call-dtmf", "call_id": "web-9", "digit": "1"}, "unknown-call"),
    ],
)
async def test_bad_web_call_messages_change_nothing(message: dict[str, Any], code: str) -> None:
    hub, web, control, _ = make()
    conn = FakeConnection()
    hub.connection_opened(conn)
    reply = await send(hub, conn, id=7, **message)
    assert reply["type"] == "error" and reply["code"] == code, reply
    assert web.calls() == [] and control.calls == []


async def test_another_pages_call_cannot_be_touched_and_agents_cannot_web_call() -> None:
    hub, web, _, _ = make()
    first, second = FakeConnection(), FakeConnection("192.0.2.11")
    hub.connection_opened(first)
    hub.connection_opened(second)
    await send(hub, first, type="web-call", target="sales", sdp=OFFER, id=1)
    reply = await send(hub, second, type="web-call-hangup", call_id="web-1", id=2)
    assert reply["code"] == "unknown-call" and web.state("web-1") == "ringing"
    again = await send(hub, first, type="web-call", target="sales", sdp=OFFER, id=3)
    assert again["code"] == "bad-state"
    agent = FakeConnection("192.0.2.12")
    hub.connection_opened(agent)
    login = await send(hub, agent, type="login", username="agent1", password="pw", id=4)
    assert login["type"] == "login-ok" and login["ice_servers"] == ICE
    refused = await send(hub, agent, type="web-call-prepare", target="sales", id=5)
    assert refused["code"] == "bad-state"


async def test_rate_limit_per_address_and_refusal_by_the_server() -> None:
    hub, web, control, clock = make(calls_per_minute=3, calls_per_address=5)
    codes = []
    for i in range(4):
        conn = FakeConnection()
        hub.connection_opened(conn)
        reply = await send(hub, conn, type="web-call", target="sales", sdp=OFFER, id=i)
        codes.append(reply.get("code") or reply["type"])
    assert codes == ["web-call-state"] * 3 + ["rate-limited"]
    other = FakeConnection("198.51.100.7")
    hub.connection_opened(other)
    control.refuse = CommandError("no-agents", "nobody can take the call")
    reply = await send(hub, other, type="web-call", target="sales", sdp=OFFER, id=9)
    assert reply["code"] == "no-agents" and len(web.calls()) == 3
    clock.now += 61
    conn = FakeConnection()
    hub.connection_opened(conn)
    reply = await send(hub, conn, type="web-call", target="sales", sdp=OFFER, id=10)
    assert reply["type"] == "web-call-state"


async def test_web_calls_disabled_without_a_web_hub() -> None:
    clock = FakeClock()
    accounts = AccountStore([], clock=clock)
    hub = AgentHub(accounts, FakeCallControl(), FakeChannel, clock=clock)
    conn = FakeConnection()
    hub.connection_opened(conn)
    reply = await send(hub, conn, type="web-call-prepare", target="sales", id=1)
    assert reply["code"] == "unknown-type"


def test_web_targets_config() -> None:
    assert parse_webrtc({}).web_targets == ()
    config = parse_webrtc({"web_targets": ["sales", "agent-agent1", "+5411"]})
    assert config.web_targets == ("sales", "agent-agent1", "+5411")
    for bad in ("sales", ["a b"], ["sales", "sales"], [""], [3]):
        with pytest.raises(ConfigError, match=r"webrtc\.web_targets"):
            parse_webrtc({"web_targets": bad})
    server = parse_webrtc(
        {"ice_servers": [{"urls": "turn:t.example:3478", "username": "u", "credential": "c"}]}
    ).ice_servers[0]
    assert server.as_browser() == {
        "urls": ["turn:t.example:3478"],
        "username": "u",
        "credential": "c",
    }
