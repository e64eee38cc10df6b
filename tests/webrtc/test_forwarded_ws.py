"""The agent page's ``/ws`` login behind a reverse proxy (a real HTTP server and WebSocket): with
the proxy trusted, one client's failed logins (enough to lock a source out) do not lock out a
page carrying another X-Forwarded-For, and the web-caller limit counts each client; without it
the header is ignored, all count as the peer."""

from __future__ import annotations

import ipaddress
import json
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from tests.webrtc.fakes import FakeCallControl, FakeChannel, FakeClock
from tests.webrtc.test_webcaller import OFFER
from tests.webrtc.test_webcaller import make as make_web_hub
from webrtc.accounts import Account, AccountStore, hash_password
from webrtc.app import create_app
from webrtc.forwarded import PROXY_TRUST_KEY, ProxyTrust
from webrtc.signaling import AgentHub

A, B = "203.0.113.10", "2001:db8::20"


async def _login(client: TestClient[Any, Any], source: str, name: str, password: str) -> Any:
    ws = await client.ws_connect("/ws", headers={"X-Forwarded-For": source})
    try:
        await ws.send_str(
            json.dumps({"v": 1, "type": "login", "username": name, "password": password, "id": 1})
        )
        return await ws.receive_json(timeout=10)
    finally:
        await ws.close()


async def _after_failures_from_a(trusted: str) -> tuple[Any, Any, AccountStore]:
    """`max_address_failures` wrong logins (other names) from A, then agent1's right password
    from A and from B: the two replies."""
    clock = FakeClock()
    accounts = AccountStore([Account("agent1", "Ana", hash_password("pw", n=2**10))], clock=clock)
    hub = AgentHub(accounts, FakeCallControl(), FakeChannel, clock=clock)
    app = create_app(hub)
    app[PROXY_TRUST_KEY] = ProxyTrust((ipaddress.ip_network(trusted),))
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        for i in range(accounts.max_address_failures):
            reply = await _login(client, A, f"guess{i}", "x")
            assert reply.get("code") == "bad-credentials", reply
        from_a = await _login(client, A, "agent1", "pw")
        from_b = await _login(client, f"{A}, {B}", "agent1", "pw")
    return from_a, from_b, accounts


async def test_behind_a_trusted_proxy_one_pages_failures_do_not_lock_out_another() -> None:
    from_a, from_b, accounts = await _after_failures_from_a("127.0.0.1/32")
    assert from_a.get("code") == "locked-out", from_a
    assert from_b["type"] == "login-ok", from_b
    assert accounts.locked("agent1", A) and not accounts.locked("agent1", B)


async def test_without_trusting_the_peer_a_spoofed_forwarded_for_changes_nothing() -> None:
    from_a, from_b, accounts = await _after_failures_from_a("192.0.2.0/24")
    assert from_a.get("code") == "locked-out", from_a
    assert from_b.get("code") == "locked-out", from_b
    assert accounts.locked("agent1", "127.0.0.1") and not accounts.locked("agent1", A)


async def _web_call(client: TestClient[Any, Any], source: str) -> tuple[str, Any]:
    """A web call placed on a new socket forwarded for `source`: the answer's code or type
    (the socket stays open, so an admitted call stays counted)."""
    ws = await client.ws_connect("/ws", headers={"X-Forwarded-For": source})
    message = {"v": 1, "type": "web-call", "target": "sales", "sdp": OFFER, "id": 1}
    await ws.send_str(json.dumps(message))
    while True:
        reply = await ws.receive_json(timeout=10)
        if reply.get("ref") == 1:
            return str(reply.get("code") or reply["type"]), ws


async def test_behind_a_trusted_proxy_the_web_caller_limit_counts_each_client() -> None:
    hub, web, _, _ = make_web_hub(calls_per_minute=50, calls_per_address=1)
    app = create_app(hub)
    app[PROXY_TRUST_KEY] = ProxyTrust((ipaddress.ip_network("127.0.0.1/32"),))
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        first, ws1 = await _web_call(client, A)
        again, ws2 = await _web_call(client, A)
        other, ws3 = await _web_call(client, B)
        assert (first, again, other) == ("web-call-answer", "too-many-calls", "web-call-answer")
        assert web.sources() == 2
        for ws in (ws1, ws2, ws3):
            await ws.close()
