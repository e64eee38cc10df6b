"""Webhooks of a real `omlmedia serve`: events of sipp calls accepted while the receiver is down,
the server stopped before it could deliver them, then delivered after a restart, signed and
exactly as stored."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from sip.tls import ensure_self_signed, server_context
from tests.interop.harness import API_TOKEN, free_port, start_server
from tests.interop.test_events_e2e import CALLS, _insecure, _sipp_to_echo
from tests.omlmedia.test_webhooks import verify

AUTH = {"Authorization": f"Bearer {API_TOKEN}"}


async def _pending(base: str, hook: str, want: int, at_most: bool = False) -> list[dict[str, Any]]:
    """The subscription's pending deliveries (the outbox rows) once at least `want` (with
    `at_most`, at most `want`) are stored, or after 30 s."""
    connector = aiohttp.TCPConnector(ssl=_insecure())
    async with aiohttp.ClientSession(connector=connector, headers=AUTH) as session:
        deadline = time.monotonic() + 30
        while True:
            url = f"{base}/api/v1/webhooks/{hook}/deliveries?status=pending"
            async with session.get(url) as response:
                assert response.status == 200
                rows: list[dict[str, Any]] = (await response.json())["deliveries"]
            if (len(rows) <= want if at_most else len(rows) >= want) or (
                time.monotonic() > deadline
            ):
                return rows
            await asyncio.sleep(0.1)


async def _receive(tmp_path: Path, port: int, handle: Any) -> web.AppRunner:
    """An HTTPS receiver on `port` (a self-signed certificate) posting to `handle`."""
    cert, key = tmp_path / "receiver.crt", tmp_path / "receiver.key"
    ensure_self_signed(cert, key, ["localhost"], ["127.0.0.1"])
    app = web.Application()
    app.router.add_post("/hook", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, ssl_context=server_context(cert, key)).start()
    return runner


async def _subscribe_and_call(
    server: Any, port: int, tmp_path: Path
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Subscribe the receiver on `port` to the call events of `server`, place the sipp calls:
    the subscription and its pending deliveries (three events a call)."""
    base = f"https://127.0.0.1:{server.http_port}"
    connector = aiohttp.TCPConnector(ssl=_insecure())
    async with aiohttp.ClientSession(connector=connector, headers=AUTH) as session:
        body = {"url": f"https://127.0.0.1:{port}/hook", "types": ["call."]}
        async with session.post(
            f"{base}/api/v1/webhooks", json={**body, "verify_tls": False}
        ) as response:
            assert response.status == 201, await response.text()
            hook: dict[str, Any] = await response.json()
    await asyncio.to_thread(_sipp_to_echo, server, tmp_path)
    stored = await _pending(base, hook["id"], 3 * CALLS)
    assert len(stored) == 3 * CALLS
    return hook, stored


async def test_deliveries_accepted_before_a_restart_are_delivered_after_it(
    tmp_path: Path,
) -> None:
    port = free_port()
    server = await asyncio.to_thread(start_server, tmp_path / "omlmedia")
    try:
        hook, stored = await _subscribe_and_call(server, port, tmp_path)
    finally:
        assert await asyncio.to_thread(server.stop) == 0, server.log()[-4000:]
    assert "Traceback" not in server.log()

    received: list[tuple[dict[str, str], bytes]] = []
    arrived = asyncio.Event()

    async def handle(request: web.Request) -> web.Response:
        received.append(({k.lower(): v for k, v in request.headers.items()}, await request.read()))
        if len({h["webhook-id"] for h, _ in received}) >= len(stored):
            arrived.set()
        return web.Response(status=204)

    runner = await _receive(tmp_path, port, handle)
    again = await asyncio.to_thread(start_server, tmp_path / "omlmedia")
    try:
        await asyncio.wait_for(arrived.wait(), 30)
    finally:
        assert await asyncio.to_thread(again.stop) == 0, again.log()[-4000:]
        await runner.cleanup()
    assert "Traceback" not in again.log()
    by_id = {str(row["id"]): row["event"] for row in stored}
    for headers, payload in received:
        event = verify(hook["secret"], headers, payload)
        assert event == by_id[headers["webhook-id"]]  # a duplicate carries the same id
    assert {h["webhook-id"] for h, _ in received} == set(by_id)
    per_call: dict[str, list[int]] = {}
    for _, payload in received:
        event = json.loads(payload)
        ids = per_call.setdefault(event["call_id"], [])
        if event["id"] not in ids:
            ids.append(event["id"])
    assert all(ids == sorted(ids) for ids in per_call.values()), per_call


async def test_a_real_server_starts_its_killed_delivery_worker_again_and_loses_nothing(
    tmp_path: Path,
) -> None:
    received: list[tuple[dict[str, str], bytes]] = []
    # The ids the restarted worker delivered: the killed one's requests, held here, are not
    # cancelled by its death (aiohttp lets a handler run on) and end once released, so they
    # are received too; counted with the new worker's, they would hide a delivery it lost.
    after_kill: set[str] = set()
    release, killed = asyncio.Event(), asyncio.Event()

    async def handle(request: web.Request) -> web.Response:
        sent_after_kill = killed.is_set()  # every request of the new worker comes after it
        body = await request.read()
        await release.wait()  # the deliveries pile up in the worker until the kill
        headers = {k.lower(): v for k, v in request.headers.items()}
        received.append((headers, body))
        if sent_after_kill:
            after_kill.add(headers["webhook-id"])
        return web.Response(status=204)

    port = free_port()
    runner = await _receive(tmp_path, port, handle)
    server = await asyncio.to_thread(start_server, tmp_path / "omlmedia")
    try:
        hook, stored = await _subscribe_and_call(server, port, tmp_path)
        deadline = time.monotonic() + 60  # a worker starts slowly on a loaded machine
        while True:
            status = (await asyncio.to_thread(server.status))["webhooks"]
            if status["worker"] == "running" and status["outbox_depth"] == 3 * CALLS:
                break
            assert time.monotonic() < deadline, status
            await asyncio.sleep(0.1)
        assert status["worker_restarts"] == 0
        killed.set()
        os.kill(status["worker_pid"], signal.SIGKILL)
        while True:
            again = (await asyncio.to_thread(server.status))["webhooks"]
            if again["worker"] == "running" and again["worker_restarts"] == 1:
                break
            assert time.monotonic() < deadline, again
            await asyncio.sleep(0.1)
        assert again["worker_pid"] != status["worker_pid"]
        release.set()
        ids = {str(row["id"]) for row in stored}
        while after_kill != ids:  # the new worker's own deliveries, each pending row's
            assert time.monotonic() < deadline + 30, f"lost after the kill: {ids - after_kill}"
            await asyncio.sleep(0.1)
        # The outbox drains: its rows go (the outcomes reach them through the worker's next
        # report, then the store's batch), and the depth reported says so too.
        base = f"https://127.0.0.1:{server.http_port}"
        left = await _pending(base, hook["id"], 0, at_most=True)
        assert left == [], f"{len(left)} deliveries still pending: {left[:3]}"
        while (await asyncio.to_thread(server.status))["webhooks"]["outbox_depth"]:
            assert time.monotonic() < deadline + 30, "the outbox never drained"
            await asyncio.sleep(0.1)
    finally:
        release.set()
        assert await asyncio.to_thread(server.stop) == 0, server.log()[-4000:]
        await runner.cleanup()
    assert "Traceback" not in server.log()
    assert "webhook worker exited" in server.log()
    for headers, payload in received:
        assert verify(hook["secret"], headers, payload)["id"] == int(headers["webhook-id"])
