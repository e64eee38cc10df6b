"""The web callers' per-source limiter (issue 12 item 8): counted per IPv4 address and IPv6 /64,
a call counts from its admission (parallel web-call messages cannot all pass), a failed call
gives its place back, and the table of sources forgets idle ones and stays bounded."""

from __future__ import annotations

import asyncio
import json

from tests.webrtc.fakes import FakeConnection, FakeWebMedia
from tests.webrtc.test_webcaller import OFFER, make
from webrtc.exceptions import CommandError
from webrtc.signaling import AgentHub
from webrtc.webcaller import MAX_SOURCES


class SlowMedia(FakeWebMedia):
    """Answers only when the test says so: the calls are in flight together."""

    gate: asyncio.Event

    async def accept_offer(self, sdp: str) -> str:
        await SlowMedia.gate.wait()
        return await super().accept_offer(sdp)


async def place(hub: AgentHub, source: str, n: int) -> str:
    conn = FakeConnection(source)
    hub.connection_opened(conn)
    message = {"v": 1, "type": "web-call", "target": "sales", "sdp": OFFER, "id": n}
    await hub.handle_text(conn, json.dumps(message))
    reply = conn.sent[-1]
    return str(reply.get("code") or reply["type"])


async def test_parallel_calls_from_one_source_cannot_pass_the_cap_together() -> None:
    SlowMedia.gate = asyncio.Event()
    hub, web, control, _ = make(calls_per_minute=50, calls_per_address=2)
    web.media_factory = SlowMedia  # type: ignore[assignment]
    tasks = [asyncio.ensure_future(place(hub, "192.0.2.10", n)) for n in range(6)]
    await asyncio.sleep(0)  # every message reaches the limiter before any offer is answered
    SlowMedia.gate.set()
    codes = await asyncio.gather(*tasks)
    assert sorted(codes) == ["too-many-calls"] * 4 + ["web-call-state"] * 2
    assert len(web.calls()) == 2 and len(control.calls) == 2
    assert await place(hub, "192.0.2.11", 9) == "web-call-state"  # another source


async def test_an_ipv6_64_is_one_source_and_a_failed_call_gives_its_place_back() -> None:
    hub, web, control, _ = make(calls_per_minute=50, calls_per_address=2)
    assert await place(hub, "2001:db8:1:2::a", 1) == "web-call-state"
    control.refuse = CommandError("no-agents", "nobody can take the call")
    assert await place(hub, "2001:db8:1:2::b", 2) == "no-agents"
    assert await place(hub, "2001:db8:1:2::c", 3) == "web-call-state"
    assert await place(hub, "2001:db8:1:2:ffff::d", 4) == "too-many-calls"
    assert await place(hub, "2001:db8:1:3::a", 5) == "web-call-state"
    web.web_call_ended(web.calls()[0])
    await asyncio.sleep(0)
    assert await place(hub, "2001:db8:1:2::e", 6) == "web-call-state"


async def test_the_table_of_sources_forgets_idle_ones_and_stays_bounded() -> None:
    hub, web, _, clock = make(calls_per_minute=50, calls_per_address=1, max_calls=10**6)
    for n in range(50):
        assert await place(hub, f"198.51.100.{n}", n) == "web-call-state"
    assert web.sources() == 50
    for call_id in web.calls():
        web.web_call_ended(call_id)
    await asyncio.sleep(0)
    clock.now += 61
    assert await place(hub, "203.0.113.1", 99) == "web-call-state"
    assert web.sources() == 1  # the 50 idle sources are forgotten
    for n in range(MAX_SOURCES + 20):
        web._admit(f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}")
    assert web.sources() == MAX_SOURCES
