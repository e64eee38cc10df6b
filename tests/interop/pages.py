"""What the interop tests share to drive a running server from the outside: one API request
(the configured administrator's token by default), one that must succeed, polling with a deadline,
a clean stop, an account made through the API, and the pages' login form."""

from __future__ import annotations

import asyncio
import json
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest

from tests.interop.harness import API_TOKEN, DEMO_PASSWORD, RunningServer


def call(
    server: RunningServer,
    method: str,
    path: str,
    body: Any = None,
    token: str = API_TOKEN,
) -> tuple[int, Any]:
    """The status and the JSON answer of one request to ``/api/v1{path}`` as `token` (the
    configured, administrator's one by default; ``""`` sends none)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    request = urllib.request.Request(
        f"https://127.0.0.1:{server.http_port}/api/v1{path}",
        data=json.dumps(body).encode() if body is not None else None,
        method=method,
        headers={"Content-Type": "application/json"}
        | ({"Authorization": f"Bearer {token}"} if token else {}),
    )
    try:
        with urllib.request.urlopen(request, context=context, timeout=5) as response:
            text = response.read()
            return response.status, json.loads(text) if text else None
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def fetch(server: RunningServer, path: str, body: Any = None) -> Any:
    """The JSON answer of GET ``/api/v1{path}`` (a POST of `body` when given), which must
    succeed (the test fails with the status and the answer otherwise)."""
    status, answer = call(server, "GET" if body is None else "POST", path, body)
    assert 200 <= status < 300, f"{path}: {status} {answer!r}"
    return answer


async def until(check: Callable[[], Any], what: str = "", within: float = 15.0) -> Any:
    """Poll `check()` until it returns something true (that value); fails naming `what` after
    `within` seconds."""
    deadline = time.monotonic() + within
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {within} s waiting for {what or check}")
        await asyncio.sleep(0.1)


def waiting(server: RunningServer, queue: str) -> int:
    """How many callers wait in `queue` now (the API's queue status)."""
    status, report = call(server, "GET", f"/queues/{queue}")
    assert status == 200, report
    return int(report["waiting"])


def calls_over(server: RunningServer, within: float = 15.0, ports: bool = False) -> dict[str, Any]:
    """Wait until `server` holds no call and no dialog (a test's calls are over and nothing of
    them is left), and with `ports` no RTP port in use either: its status then; fails naming
    what is left after `within` seconds. Unlike `RunningServer.wait_idle`, it does not wait for
    the ended calls' SIP transactions to run out their RFC 3261 timers (6.4 s at the tests' T1
    of 0.1 s), which nothing after a call needs."""
    deadline = time.monotonic() + within
    while True:
        status: dict[str, Any] = server.status()
        sip, in_use = status["sip"], status["media"]["rtp_ports_in_use"]
        if sip["calls"] == 0 and sip["dialogs"] == 0 and not (ports and in_use):
            return status
        if time.monotonic() > deadline:
            pytest.fail(
                f"the server still holds calls, dialogs or ports after {within} s: {sip}, "
                f"rtp_ports_in_use={in_use}"
            )
        time.sleep(0.05)


def committed(server: RunningServer, within: float = 15.0) -> None:
    """Wait until `server` has committed every write it queued (its store's ``pending_writes``
    is 0): the queue log, the call records and the event log are written in batches, every
    0.2 s, off the event loop, so what calls already over (`calls_over`) wrote is in the
    database only then. Fails with the store's status after `within` seconds."""
    deadline = time.monotonic() + within
    while True:
        storage: dict[str, Any] = server.status()["storage"]
        if storage["pending_writes"] == 0:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"the server's writes were not committed after {within} s: {storage}")
        time.sleep(0.05)


def stopped(server: RunningServer) -> None:
    """Stop `server`: it must exit 0 with no traceback in its log."""
    returncode = server.stop()
    assert returncode == 0, server.log()[-4000:]
    assert "Traceback" not in server.log(), server.log()[-6000:]


def make_account(server: RunningServer, name: str, role: str, password: str) -> None:
    """Create account `name` with `role` and `password` through the API (201 or the test fails)."""
    status, body = call(
        server, "POST", "/accounts", {"name": name, "role": role, "password": password}
    )
    assert status == 201, body


async def log_in(page: Any, name: str, password: str) -> None:
    """Fill and send a page's login form (the agent page's labels: Username, Password, Log in)."""
    await page.get_by_label("Username").fill(name)
    await page.get_by_label("Password").fill(password)
    await page.get_by_role("button", name="Log in", exact=True).click()


async def agent_logged_in(
    page: Any, server: RunningServer, agent: str, password: str = DEMO_PASSWORD
) -> None:
    """Log `agent` in on `server`'s agent page in `page`: paused, its media channel connected."""
    from playwright.async_api import expect

    await page.goto(f"https://127.0.0.1:{server.http_port}/agent/")
    await log_in(page, agent, password)
    await expect(page.locator("#state")).to_contain_text("Paused", timeout=10000)
    await expect(page.locator("#ice-state")).to_have_text("connected", timeout=10000)


async def agent_ready(page: Any, base: str, agent: str = "agent1") -> None:
    """Log `agent` in on the agent page at `base` (``https://host:port``), make it Ready and wait
    for its media channel: an agent waiting for calls."""
    from playwright.async_api import expect

    await page.goto(f"{base}/agent/")
    await log_in(page, agent, DEMO_PASSWORD)
    state = page.locator("#state")
    await expect(state).to_contain_text("Paused", timeout=10000)
    await page.get_by_role("button", name="Ready", exact=True).click()
    await expect(state).to_have_text("Ready")
    await expect(page.locator("#ice-state")).to_have_text("connected", timeout=10000)
