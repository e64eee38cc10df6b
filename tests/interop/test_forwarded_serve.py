"""A real `omlmedia serve` with ``[security] trusted_proxies`` (the loopback stands for HAProxy):
20 failed agent logins on ``/ws`` from one forwarded client lock that client out, while a page
forwarded for another client logs in; a malformed X-Forwarded-For counts as the proxy and is
counted in the status. A server without the setting ignores the header (a spoof changes
nothing)."""

from __future__ import annotations

import json
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from benchmarks import harness
from tests.interop.harness import API_TOKEN, DEMO_PASSWORD, RunningServer

A, B = "203.0.113.10", "2001:db8::20"
FAILURES = 20  # AccountStore.max_address_failures


def _insecure() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def _serve(workdir: Path, trusted: bool) -> Iterator[RunningServer]:
    line = 'trusted_proxies = ["127.0.0.1/32"]\n' if trusted else ""

    def edit(text: str) -> str:
        return text.replace("[security]\n", f"[security]\n{line}", 1)

    try:
        running = harness.start_server(workdir, edit_config=edit)
    except harness.ServerStartError as exc:
        pytest.fail(str(exc))
    yield running
    assert running.stop() == 0, running.log()[-4000:]
    assert "Traceback" not in running.log(), running.log()[-6000:]


@pytest.fixture
def proxied(tmp_path: Path) -> Iterator[RunningServer]:
    yield from _serve(tmp_path / "proxied", trusted=True)


@pytest.fixture
def direct(tmp_path: Path) -> Iterator[RunningServer]:
    yield from _serve(tmp_path / "direct", trusted=False)


async def _login(
    session: aiohttp.ClientSession, server: RunningServer, forwarded: str, name: str, pw: str
) -> Any:
    ws = await session.ws_connect(
        f"wss://127.0.0.1:{server.http_port}/ws", headers={"X-Forwarded-For": forwarded}
    )
    try:
        message = {"v": 1, "type": "login", "username": name, "password": pw, "id": 1}
        await ws.send_str(json.dumps(message))
        while True:  # the answer to the login (a state update may come first)
            reply = await ws.receive_json(timeout=20)
            if reply.get("ref") == 1:
                return reply
    finally:
        await ws.close()


async def _fail_then_log_in(server: RunningServer) -> tuple[Any, Any]:
    """`FAILURES` wrong logins (unknown names) forwarded for A, then agent1's right password
    forwarded for A and for B."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=_insecure())) as session:
        for i in range(FAILURES):
            reply = await _login(session, server, A, f"guess{i}", "x")
            assert reply.get("code") == "bad-credentials", reply
        from_a = await _login(session, server, A, "agent1", DEMO_PASSWORD)
        from_b = await _login(session, server, B, "agent1", DEMO_PASSWORD)
        return from_a, from_b


async def _status(server: RunningServer) -> Any:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=_insecure())) as session:
        response = await session.get(
            f"https://127.0.0.1:{server.http_port}/api/v1/status",
            headers={"Authorization": f"Bearer {API_TOKEN}"},
        )
        assert response.status == 200
        return await response.json()


async def test_behind_a_trusted_proxy_one_clients_failures_do_not_lock_out_another(
    proxied: RunningServer,
) -> None:
    from_a, from_b = await _fail_then_log_in(proxied)
    assert from_a.get("code") == "locked-out", from_a
    assert from_b["type"] == "login-ok", from_b
    log = proxied.log()
    assert f"SECURITY reason=login-address-locked src={A} port=0" in log, log[-3000:]
    assert "SECURITY reason=login-failed src=127.0.0.1" not in log
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=_insecure())) as session:
        reply = await _login(session, proxied, "garbage", "nobody", "x")
        assert reply.get("code") == "bad-credentials", reply
    assert (await _status(proxied))["webrtc"]["forwarded_for_malformed"] == 1
    assert "SECURITY reason=login-failed src=127.0.0.1" in proxied.log()


async def test_without_trusted_proxies_a_spoofed_forwarded_for_changes_nothing(
    direct: RunningServer,
) -> None:
    from_a, from_b = await _fail_then_log_in(direct)
    assert from_a.get("code") == "locked-out", from_a
    assert from_b.get("code") == "locked-out", from_b
    assert A not in direct.log()
    assert (await _status(direct))["webrtc"]["forwarded_for_malformed"] == 0
