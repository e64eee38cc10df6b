"""The web caller page in the Debian Chromium (Playwright): audio both ways, DTMF, mute, hang up;
video from a web caller relayed (not transcoded) to the agent page.

Fake media: Chromium captures a 660 Hz tone file and its fake camera; the server sends 440 Hz.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from sip.tls import ensure_self_signed, server_context
from tests.interop.browser import chromium
from tests.webrtc.fakes import FakeCallControl, FakeWebControl, FramePipe
from tests.webrtc.test_browser import PAGE_TONE, SERVER_TONE, dominant, log_in, until
from webrtc.accounts import Account, AccountStore, hash_password
from webrtc.app import create_app
from webrtc.channel import AgentChannel
from webrtc.signaling import AgentHub, CallInfo
from webrtc.webcaller import WebCallerHub, WebCallerInfo

pytestmark = pytest.mark.interop


class BridgingControl(FakeCallControl):
    """Answering a web call rung into an agent bridges audio both ways and relays the video."""

    def __init__(self) -> None:
        super().__init__()
        self.hub: AgentHub | None = None
        self.web: WebCallerHub | None = None
        self.pending: dict[str, WebCallerInfo] = {}

    async def answer(self, agent: str, call_id: str) -> None:
        await super().answer(agent, call_id)
        caller = self.pending.pop(call_id, None)
        assert self.hub is not None and self.web is not None
        channel = self.hub.channel(agent)
        if caller is None or not isinstance(channel, AgentChannel):
            return
        to_agent, to_caller = FramePipe(), FramePipe()
        caller.media.attach(to_caller.source, to_agent.sink)
        channel.attach(to_agent.source, to_caller.sink)
        channel.attach_video(caller.media.video_in)
        caller.media.attach_video(channel.video_in)
        self.web.web_call_answered(call_id)


@dataclass
class Server:
    url: str
    hub: AgentHub
    web: WebCallerHub
    control: BridgingControl
    web_control: FakeWebControl
    received: list[np.ndarray] = field(default_factory=list)


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    from aiohttp import web as aioweb

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    ensure_self_signed(cert, key, ["localhost"], ["127.0.0.1"])
    loop = asyncio.get_running_loop()
    control = BridgingControl()
    web_control = FakeWebControl()
    web = WebCallerHub(web_control, ["sales", "agent-agent1"], clock=loop.time)
    accounts = AccountStore(
        [Account("agent1", "Ana Agent", hash_password("pw-1", n=2**12))], clock=loop.time
    )
    hub = AgentHub(accounts, control, AgentChannel, clock=loop.time, web=web)
    control.hub, control.web = hub, web
    state = Server("", hub, web, control, web_control)
    t = np.arange(960)
    tone = [
        (8000 * np.sin(2 * np.pi * SERVER_TONE * (t + k * 960) / 48000)).astype(np.int16)
        for k in range(50)
    ]

    def on_call(target: str, caller: WebCallerInfo, call_id: str) -> None:
        if target == "sales":  # a tone source answers at once and records the caller
            counter = iter(range(10**9))
            caller.media.attach(lambda: tone[next(counter) % 50], state.received.append)
            loop.call_soon(web.web_call_answered, call_id)
        else:
            control.pending[call_id] = caller
            hub.offer_call("agent1", CallInfo(call_id, "web", caller.name, target, 0))

    web_control.on_call = on_call
    runner = aioweb.AppRunner(create_app(hub), access_log=None, handle_signals=False)
    await runner.setup()
    site = aioweb.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_context(cert, key))
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    state.url = f"https://127.0.0.1:{port}"
    try:
        yield state
    finally:
        await runner.cleanup()


@pytest.fixture
async def browser(tmp_path: Path) -> AsyncIterator[Any]:
    async with chromium(tmp_path, PAGE_TONE) as context:
        yield context


async def test_web_caller_audio_both_ways_dtmf_mute_hangup(server: Server, browser: Any) -> None:
    from playwright.async_api import expect

    page = await browser.new_page()
    missing = await page.goto(f"{server.url}/call/not-allowed")
    assert missing is not None and missing.status == 404
    await page.goto(f"{server.url}/call/sales")
    state = page.locator("#call-state")
    await expect(state).to_have_text("Ready to call")
    await page.get_by_label("Your name (optional)").fill("Juan")
    await page.get_by_role("button", name="Call", exact=True).click()
    await expect(state).to_have_text("Connected", timeout=10000)
    assert server.web_control.calls[0] == ("web_call", "sales", "Juan", "127.0.0.1")
    await until(lambda: len(server.received) >= 60)
    heard = dominant(np.concatenate(server.received[-25:]))
    assert abs(heard - PAGE_TONE) < 5, heard
    page_heard = await page.evaluate(
        """async () => {
            const ctx = new AudioContext();
            const stream = document.getElementById('remote-audio').srcObject;
            const src = ctx.createMediaStreamSource(stream);
            const an = ctx.createAnalyser(); an.fftSize = 8192; src.connect(an);
            await new Promise((r) => setTimeout(r, 600));
            const bins = new Float32Array(an.frequencyBinCount); an.getFloatFrequencyData(bins);
            let best = 0; for (let i = 1; i < bins.length; i++) if (bins[i] > bins[best]) best = i;
            return best * ctx.sampleRate / an.fftSize;
        }"""
    )
    assert abs(page_heard - SERVER_TONE) < 10, page_heard
    await page.get_by_role("button", name="7", exact=True).click()
    await until(lambda: ("web_dtmf", "web-1", "7") in server.web_control.calls)
    mute = page.get_by_role("button", name="Mute", exact=True)
    await mute.click()
    await expect(mute).to_have_attribute("aria-pressed", "true")
    await page.get_by_role("button", name="Hang up", exact=True).click()
    await expect(state).to_contain_text("Call ended")
    await until(lambda: ("web_hangup", "web-1") in server.web_control.calls)
    await until(lambda: server.web.calls() == [])


async def test_web_caller_video_reaches_the_agent_page(server: Server, browser: Any) -> None:
    from playwright.async_api import expect

    agent = await browser.new_page()
    await log_in(agent, server.url)
    await expect(agent.locator("#ice-state")).to_have_text("connected", timeout=10000)
    await expect(agent.locator("#remote-video")).to_be_hidden()
    caller = await browser.new_page()
    await caller.goto(f"{server.url}/call/agent-agent1")
    await caller.get_by_label("Camera (video call)").check()
    await caller.get_by_role("button", name="Call", exact=True).click()
    await expect(caller.locator("#call-state")).to_have_text("Ringing…", timeout=10000)
    await expect(agent.locator("#call-queue")).to_have_text("agent-agent1")
    await agent.get_by_role("button", name="Answer", exact=True).click()
    await expect(caller.locator("#call-state")).to_have_text("Connected")
    await expect(agent.locator("#remote-video")).to_be_visible(timeout=10000)
    stats = await agent.evaluate(
        """async () => {
            for (let i = 0; i < 40; i++) {
                const report = await window.omlAgent.pc.getStats();
                for (const s of report.values())
                    if (s.type === 'inbound-rtp' && s.kind === 'video' && s.framesDecoded > 5)
                        return {frames: s.framesDecoded, width: s.frameWidth, codec: s.codecId};
                await new Promise((r) => setTimeout(r, 250));
            }
            return null;
        }"""
    )
    assert stats is not None and stats["frames"] > 5 and stats["width"] > 0, stats
    media = next(iter(server.web._calls.values())).media
    assert media.video and media.video_in.frames > 5 and media.video_in.keyframes >= 1
    channel = server.hub.channel("agent1")
    assert isinstance(channel, AgentChannel) and channel.video_out is not None
    assert channel.video_out.sent > 5
    await caller.get_by_role("button", name="Hang up", exact=True).click()
    await expect(caller.locator("#call-state")).to_contain_text("Call ended")
