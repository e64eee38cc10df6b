"""A server stopped with pages and streams connected tells each of them it is going away and
exits at once (issue 13: a node stopped with its pages connected spent ~8 s after its SIP part,
its HTTP server waiting for a supervisor's socket that nothing closed).

One server, SIGTERM with: two agent pages in Chromium (Ready), a supervisor's socket, a socket
not logged in yet, the event stream over SSE and over a WebSocket, and a SIP call in progress.
The stop must take less than the HTTP server's stop grace (`omlmedia.api.HTTP_STOP_GRACE`, 5 s:
what a socket nothing closed would hold it for; 0.13 s on a quiet machine), not a fixed time a
loaded machine may miss; every socket closes with 1001 ("going away"), the SSE stream ends with
its ``error`` event (code 1001), and the call still gets its BYE (sipp ends successfully)."""

from __future__ import annotations

import asyncio
import json
import signal
import ssl
import time
from pathlib import Path
from typing import Any

import aiohttp

from omlmedia.api import HTTP_STOP_GRACE
from tests.interop.browser import chromium
from tests.interop.harness import API_TOKEN, SCENARIOS, RunningServer, start_server, start_sipp
from tests.interop.pages import agent_ready, call, make_account, until

TLS = ssl.create_default_context()
TLS.check_hostname = False
TLS.verify_mode = ssl.CERT_NONE

RECORD_CLOSES = """
window.__closes = [];
const Native = window.WebSocket;
window.WebSocket = class extends Native {
  constructor(...args) {
    super(...args);
    this.addEventListener("close", (event) => window.__closes.push(event.code));
  }
};
"""
"""Every page keeps the close code of each of its sockets in ``window.__closes``."""

SUPERVISOR_PASSWORD = "supervisor-secret-1"


async def _socket(http: aiohttp.ClientSession, server: RunningServer) -> Any:
    port = server.http_port
    return await http.ws_connect(
        f"wss://127.0.0.1:{port}/ws", ssl=TLS, origin=f"https://127.0.0.1:{port}"
    )


async def _close_code(ws: Any) -> int | None:
    """Read `ws` until it closes: its close code."""
    while True:
        message = await ws.receive(timeout=10)
        if message.type is aiohttp.WSMsgType.CLOSE:
            return int(message.data)  # the code in the server's close frame
        if message.type is aiohttp.WSMsgType.CLOSED:
            return ws.close_code  # type: ignore[no-any-return]
        if message.type is aiohttp.WSMsgType.ERROR:
            return None


async def _sse_end(http: aiohttp.ClientSession, server: RunningServer, opened: Any) -> str:
    """Follow the event stream over SSE until the server ends it: its last message's data."""
    async with http.get(
        f"https://127.0.0.1:{server.http_port}/api/v1/events",
        headers={"Authorization": f"Bearer {API_TOKEN}", "Accept": "text/event-stream"},
        ssl=TLS,
    ) as response:
        assert response.status == 200
        opened.set()
        last = ""
        async for line in response.content:
            if line.startswith(b"data: "):
                last = line[6:].decode().strip()
        return last


async def test_a_stop_with_pages_and_streams_connected_closes_each_with_1001_at_once(
    tmp_path: Path,
) -> None:
    server = start_server(tmp_path / "server")
    sipp = None
    try:
        make_account(server, "sue", "supervisor", SUPERVISOR_PASSWORD)
        status, session = call(
            server, "POST", "/sessions", {"name": "sue", "password": SUPERVISOR_PASSWORD}, token=""
        )
        assert status == 201, session
        base = f"https://127.0.0.1:{server.http_port}"
        async with (
            chromium(tmp_path / "browser", 440.0) as browser,
            aiohttp.ClientSession() as http,
        ):
            await browser.add_init_script(RECORD_CLOSES)
            pages = []
            for agent in ("agent1", "agent2"):
                page = await browser.new_page()
                await agent_ready(page, base, agent)
                pages.append(page)
            supervisor = await _socket(http, server)
            await supervisor.send_json(
                {"v": 1, "type": "supervisor-auth", "id": 1, "token": session["token"]}
            )
            reply = await supervisor.receive_json(timeout=10)
            assert reply["type"] == "supervisor-auth-ok", reply
            anonymous = await _socket(http, server)
            stream = await http.ws_connect(
                f"{base}/api/v1/events", ssl=TLS, headers={"Authorization": f"Bearer {API_TOKEN}"}
            )
            sse_opened = asyncio.Event()
            sse = asyncio.ensure_future(_sse_end(http, server, sse_opened))
            await asyncio.wait_for(sse_opened.wait(), 10)
            sipp = start_sipp(
                [
                    "-sf",
                    str(SCENARIOS / "uac_wait_for_bye.xml"),
                    f"127.0.0.1:{server.sip_port}",
                    "-s",
                    "echo",
                    "-m",
                    "1",
                    "-timeout",
                    "30",
                ],
                tmp_path,
                "caller",
            )
            # Answered, not only offered: `sip.calls` counts the call from its INVITE, before
            # the echo (its RTP ports bound) answers; one still binding gets a 480, not a BYE.
            await until(
                lambda: server.status()["calls"]["answered"] == 1, "the call answered", within=10
            )
            assert server.status()["sip"]["calls"] == 1
            closes = [
                asyncio.ensure_future(_close_code(ws)) for ws in (supervisor, anonymous, stream)
            ]

            began = time.monotonic()
            server.process.send_signal(signal.SIGTERM)
            while server.process.poll() is None:
                assert time.monotonic() - began < 10, "the server did not stop in 10 s"
                await asyncio.sleep(0.02)
            took = time.monotonic() - began

            assert server.process.returncode == 0, server.log()[-3000:]
            supervisor_code, anonymous_code, stream_code = await asyncio.gather(*closes)
            assert (supervisor_code, anonymous_code, stream_code) == (1001, 1001, 1001)
            ended = json.loads(await asyncio.wait_for(sse, 5))
            assert ended["code"] == 1001, ended
            for page in pages:  # the close reaches the page's script in a task of its own
                await page.wait_for_function("() => window.__closes.length > 0", timeout=10000)
                codes = await page.evaluate("() => window.__closes")
                assert codes and codes[0] == 1001, codes
        assert sipp.wait(10) == 0, (tmp_path / "caller.out").read_text(errors="replace")[-2000:]
    finally:
        server.stop()
        if sipp is not None and sipp.poll() is None:
            sipp.kill()
            sipp.wait(10)
    log = server.log()
    # Under the grace: no socket held the HTTP server's stop (0.13 s on a quiet machine).
    assert took < HTTP_STOP_GRACE, f"the stop took {took:.2f} s:\n{log[-3000:]}"
    assert "event=stopping calls=1" in log
    assert "event=pages-closed sockets=4" in log, log[-3000:]
    assert "Traceback" not in log, log[-6000:]
