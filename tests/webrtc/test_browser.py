"""The agent page in the Debian Chromium (Playwright) against `create_app` over HTTPS.

Fake media: Chromium captures a 660 Hz tone file; the server sends a 440 Hz tone. A missing
chromium or playwright fails the test (make test installs them).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from sip.tls import ensure_self_signed, server_context
from tests.interop.browser import chromium
from tests.webrtc.fakes import FakeCallControl
from webrtc.accounts import Account, AccountStore, hash_password
from webrtc.app import create_app
from webrtc.channel import AgentChannel
from webrtc.signaling import AgentHub, CallInfo

pytestmark = pytest.mark.interop

PAGE_TONE = 660.0
SERVER_TONE = 440.0


def dominant(samples: np.ndarray, rate: int = 48000) -> float:
    spectrum = np.abs(np.fft.rfft(samples.astype(np.float64) * np.hanning(len(samples))))
    return float(np.argmax(spectrum) * rate / len(samples))


@dataclass
class Server:
    url: str
    hub: AgentHub
    control: FakeCallControl
    channels: dict[str, AgentChannel]


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    from aiohttp import web

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    ensure_self_signed(cert, key, ["localhost"], ["127.0.0.1"])
    control = FakeCallControl()
    channels: dict[str, AgentChannel] = {}

    def factory(agent: str) -> AgentChannel:
        channels[agent] = AgentChannel(agent)
        return channels[agent]

    loop = asyncio.get_running_loop()
    accounts = AccountStore(
        [Account("agent1", "Ana Agent", hash_password("pw-1", n=2**12))], clock=loop.time
    )
    hub = AgentHub(
        accounts,
        control,
        factory,
        clock=loop.time,
        reconnect_grace=30,
        pause_reasons=lambda: ["break", "lunch"],
    )
    control.hub = hub
    runner = web.AppRunner(create_app(hub), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_context(cert, key))
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield Server(f"https://127.0.0.1:{port}", hub, control, channels)
    finally:
        await runner.cleanup()


@pytest.fixture
async def browser(tmp_path: Path) -> AsyncIterator[Any]:
    async with chromium(tmp_path, PAGE_TONE) as context:
        yield context


async def log_in(page: Any, url: str) -> None:
    await page.goto(f"{url}/agent/")
    await page.get_by_label("Username").fill("agent1")
    await page.get_by_label("Password").fill("pw-1")
    await page.get_by_role("button", name="Log in", exact=True).click()
    await page.locator("#agent-name").filter(has_text="Ana Agent").wait_for()


async def until(predicate: Any, limit: float = 20.0) -> None:
    deadline = time.monotonic() + limit
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


async def test_agent_logs_in_takes_a_call_and_hears_both_ways(server: Server, browser: Any) -> None:
    from playwright.async_api import expect

    page = await browser.new_page()
    response = await page.goto(f"{server.url}/agent/")
    headers = response.headers
    assert "script-src 'self'" in headers["content-security-policy"]
    assert headers["x-frame-options"] == "DENY" and "no-store" in headers["cache-control"]
    await log_in(page, server.url)
    button = lambda name: page.get_by_role("button", name=name, exact=True)  # noqa: E731
    state = page.locator("#state")

    await expect(page.get_by_label("Audio processing")).not_to_be_checked()
    reasons = page.get_by_label("Pause reason").locator("option")
    await expect(reasons).to_have_text(["break", "lunch"])  # the server's list, in login-ok
    server.hub.pause_reasons = lambda: ["break", "lunch", "coaching"]  # an admin adds one
    server.hub.pause_reasons_changed()  # the open page's menu follows
    await expect(reasons).to_have_text(["break", "lunch", "coaching"])
    await button("Ready").click()
    await expect(state).to_have_text("Ready")
    await page.get_by_label("Pause reason").select_option("lunch")
    await button("Pause").click()
    await expect(state).to_have_text("Paused (lunch)")
    await expect(page.locator("#ice-state")).to_have_text("connected", timeout=10000)
    channel = server.channels["agent1"]

    t = np.arange(960)
    server_frames = [
        (8000 * np.sin(2 * np.pi * SERVER_TONE * (t + k * 960) / 48000)).astype(np.int16)
        for k in range(50)
    ]
    counter = iter(range(10**9))
    received: list[np.ndarray] = []
    channel.attach(lambda: server_frames[next(counter) % 50], received.append)

    server.hub.offer_call("agent1", CallInfo("call-1", "+541155550000", "Juan Perez", "sales", 14))
    await expect(page.locator("#caller-number")).to_have_text("+541155550000")
    await expect(page.locator("#caller-name")).to_contain_text("Juan Perez")
    await expect(page.locator("#call-queue")).to_have_text("sales")
    await expect(state).to_have_text("Paused (lunch)")
    await button("Answer").click()
    await expect(page.locator("#call-kind")).to_have_text("Connected")
    await button("Hold").click()
    await expect(page.locator("#call-kind")).to_have_text("On hold")
    await button("Resume").click()
    await expect(page.locator("#call-kind")).to_have_text("Connected")
    await button("Mute").click()
    await expect(button("Mute")).to_have_attribute("aria-pressed", "true")
    await page.get_by_role("button", name="5", exact=True).click()
    await until(lambda: "send_dtmf" in server.control.names())

    await until(lambda: len(received) >= 50)
    heard = dominant(np.concatenate(received[-25:]))
    assert abs(heard - PAGE_TONE) < 5, heard
    stats = await page.evaluate(
        """async () => {
            await new Promise((r) => setTimeout(r, 1000));
            const report = await window.omlAgent.pc.getStats();
            for (const s of report.values()) if (s.type === 'inbound-rtp' && s.kind === 'audio')
                return {samples: s.totalSamplesReceived, level: s.audioLevel};
            return null;
        }"""
    )
    assert stats["samples"] > 48000 * 0.5 and stats["level"] > 0.05, stats
    page_heard = await page.evaluate(
        """async () => {
            const ctx = new AudioContext();
            const stream = document.getElementById('remote-audio').srcObject;
            const src = ctx.createMediaStreamSource(stream);
            const an = ctx.createAnalyser(); an.fftSize = 8192; src.connect(an);
            await new Promise((r) => setTimeout(r, 500));
            const bins = new Float32Array(an.frequencyBinCount); an.getFloatFrequencyData(bins);
            let best = 0; for (let i = 1; i < bins.length; i++) if (bins[i] > bins[best]) best = i;
            return best * ctx.sampleRate / an.fftSize;
        }"""
    )
    assert abs(page_heard - SERVER_TONE) < 10, page_heard

    await button("Hang up").click()
    await expect(page.locator("#no-call")).to_be_visible()
    await expect(page.locator("#history li")).to_contain_text("+541155550000")
    await page.get_by_role("button", name="Save disposition").click()
    await until(lambda: "set_disposition" in server.control.names())
    assert server.control.names() == [
        "agent_logged_in",
        "set_agent_state",
        "set_agent_state",
        "answer",
        "hold",
        "resume",
        "mute",
        "send_dtmf",
        "hangup",
        "set_disposition",
    ]
    assert server.control.calls[3] == ("answer", "agent1", "call-1")
    await button("Log out").click()
    await expect(page.get_by_role("button", name="Log in")).to_be_visible()
    await until(lambda: ("agent_gone", "agent1", "logout") in server.control.calls)


async def test_reconnect_banner_and_takeover(server: Server, browser: Any) -> None:
    from playwright.async_api import expect

    first = await browser.new_page()
    await log_in(first, server.url)
    await expect(first.locator("#ice-state")).to_have_text("connected", timeout=10000)
    server.hub.offer_call("agent1", CallInfo("call-2", "+5411", "Ana", "support", 3))
    await first.get_by_role("button", name="Answer", exact=True).click()
    await expect(first.locator("#call-kind")).to_have_text("Connected")

    await first.evaluate("window.omlAgent.signaling.drop()")
    banner = first.locator("#banner")
    await expect(banner).to_contain_text("reconnecting")
    await expect(banner).to_be_hidden(timeout=10000)
    await expect(first.locator("#call-kind")).to_have_text("Connected")
    assert "agent_gone" not in server.control.names()

    second = await browser.new_page()
    await second.evaluate("1")
    await log_in(second, server.url)
    await expect(first.locator("#login-message")).to_have_text(
        "Your session was taken over by a login elsewhere."
    )
    await expect(second.locator("#call-kind")).to_have_text("Connected")
    assert server.control.names().count("agent_logged_in") == 1
