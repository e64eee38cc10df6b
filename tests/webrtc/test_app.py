"""webrtc.app: the page, its headers, the socket's origin check, the sockets' close at a stop."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from tests.webrtc.fakes import FakeCallControl, FakeChannel, FakeClock
from webrtc.accounts import Account, AccountStore, hash_password
from webrtc.app import HUB_KEY, close_pages, create_app
from webrtc.signaling import AgentHub


def make_hub() -> AgentHub:
    clock = FakeClock()
    accounts = AccountStore([Account("agent1", "Ana", hash_password("pw", n=2**10))], clock=clock)
    return AgentHub(accounts, FakeCallControl(), FakeChannel, clock=clock)


async def client() -> TestClient[Any, Any]:
    test_client: TestClient[Any, Any] = TestClient(TestServer(create_app(make_hub())))
    await test_client.start_server()
    return test_client


async def test_page_and_files_have_security_headers() -> None:
    c = await client()
    try:
        page = await c.get("/agent/")
        assert page.status == 200 and "Log in" in await page.text()
        assert page.headers["X-Frame-Options"] == "DENY"
        assert "script-src 'self'" in page.headers["Content-Security-Policy"]
        assert "no-store" in page.headers["Cache-Control"]
        script = await c.get("/agent/agent.js")
        assert script.status == 200 and script.headers["X-Frame-Options"] == "DENY"
        missing = await c.get("/agent/../../setup.cfg")
        assert missing.status in (403, 404)
        redirect = await c.get("/agent", allow_redirects=False)
        assert redirect.status == 302
    finally:
        await c.close()


async def test_socket_login_and_cross_origin_refused() -> None:
    c = await client()
    try:
        ws = await c.ws_connect("/ws")
        await ws.send_str('{"v":1,"type":"hangup","call_id":"x","id":1}')
        reply = await ws.receive_json()
        assert reply["code"] == "not-authenticated"
        await ws.send_str('{"v":1,"type":"login","username":"agent1","password":"pw","id":2}')
        reply = await ws.receive_json()
        assert reply["type"] == "login-ok" and reply["ref"] == 2
        await ws.close()
        response = await c.get(
            "/ws",
            headers={
                "Origin": "https://evil.example",
                "Upgrade": "websocket",
                "Connection": "Upgrade",
                "Sec-WebSocket-Version": "13",
                "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
            },
        )
        assert response.status == 403
    finally:
        await c.close()


async def test_a_stop_closes_every_socket_with_1001_and_refuses_new_ones_with_1001() -> None:
    app = create_app(make_hub())
    c: TestClient[Any, Any] = TestClient(TestServer(app))
    await c.start_server()
    try:
        agent = await c.ws_connect("/ws")
        await agent.send_str('{"v":1,"type":"login","username":"agent1","password":"pw","id":1}')
        assert (await agent.receive_json())["type"] == "login-ok"
        anonymous = await c.ws_connect("/ws")  # not logged in: the hub does not know it yet
        assert await close_pages(app) == 2
        ended = await agent.receive_json()  # a single node: the session ends first
        assert ended == {"v": 1, "type": "session-ended", "reason": "shutdown"}, ended
        for ws in (agent, anonymous):
            message = await ws.receive()
            assert message.type.name == "CLOSE" and message.data == 1001, message
        assert app[HUB_KEY].agents() == []
        late = await c.ws_connect("/ws")  # the listener still open: closed at once
        message = await late.receive()
        assert message.type.name == "CLOSE" and message.data == 1001, message
    finally:
        await c.close()
