"""A SIP caller (baresip) rings a browser agent (Chromium) through `omlmedia serve`.

The agent logs in on the page the server serves, goes Ready, answers; the caller's tone is heard
on the page and the page's tone in the caller's recording; hold plays music to the caller; the
caller hangs up and the call is in the agent's history.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.interop.baresip import dial, dominant_frequency
from tests.interop.browser import chromium, remote_tone
from tests.interop.harness import DEMO_PASSWORD, RunningServer
from tests.interop.pages import agent_ready, calls_over, until

pytestmark = pytest.mark.interop

CALLER_TONE = 440.0
AGENT_TONE = 660.0


async def test_a_sip_caller_and_a_browser_agent_hear_each_other(
    server: RunningServer, tmp_path: Path
) -> None:
    from playwright.async_api import expect

    async with chromium(tmp_path, AGENT_TONE) as browser:
        page = await browser.new_page()
        await agent_ready(page, f"https://127.0.0.1:{server.http_port}")
        state = page.locator("#state")
        # A page waiting for a call sends no audio (the server would drop 50 packets a second).
        await asyncio.sleep(0.5)
        idle = server.status()["webrtc"]["audio_fast_path"]["received"]
        await asyncio.sleep(1.0)
        assert server.status()["webrtc"]["audio_fast_path"]["received"] - idle < 5

        caller = asyncio.get_running_loop().run_in_executor(
            None,
            lambda: dial(
                tmp_path / "caller",
                f"sip:agent-agent1@127.0.0.1:{server.sip_port}",
                9,
                tone_hz=CALLER_TONE,
                codecs="PCMU",
            ),
        )
        await expect(page.locator("#caller-number")).to_have_text("tester", timeout=10000)
        await expect(state).to_have_text("Ringing")
        await page.get_by_role("button", name="Answer", exact=True).click()
        await expect(page.locator("#call-kind")).to_have_text("Connected")
        await expect(state).to_have_text("On call")
        heard = await remote_tone(page, CALLER_TONE)  # once its audio reached the page
        assert abs(heard["hz"] - CALLER_TONE) < 10, heard

        # Chromium's audio went through the server's fast path (webrtc.fastpath), both ways.
        def both_ways() -> dict[str, int] | None:
            fast: dict[str, int] = server.status()["webrtc"]["audio_fast_path"]
            return fast if fast["sent"] > 20 and fast["received"] > 20 else None

        fast = await until(both_ways, "20 packets each way through the fast path", within=10)
        assert fast["active"] == 1, fast
        assert fast["srtp_errors"] == 0 and fast["malformed"] == 0, fast

        await page.get_by_role("button", name="Hold", exact=True).click()
        await expect(page.locator("#call-kind")).to_have_text("On hold")
        await asyncio.sleep(1.0)
        await page.get_by_role("button", name="Resume", exact=True).click()
        await expect(page.locator("#call-kind")).to_have_text("Connected")
        await page.get_by_role("button", name="5", exact=True).click()

        run = await caller  # the caller hangs up after 9 s
        await expect(page.locator("#no-call")).to_be_visible(timeout=10000)
        await expect(page.locator("#history li").first).to_contain_text("tester")
        await expect(state).to_have_text("Ready", timeout=10000)  # after wrap-up

    assert run.established, run.output[-3000:]
    frequency, share = dominant_frequency(run.decoded())
    assert abs(frequency - AGENT_TONE) < 5, (frequency, share)
    log = server.log()
    assert "event=agent-answered" in log and "agent=agent1" in log
    assert "event=agent-hold" in log and "event=agent-resume" in log
    calls_over(server)


async def test_a_web_caller_reaches_an_agent_with_audio_both_ways_and_video(
    server: RunningServer, tmp_path: Path
) -> None:
    from playwright.async_api import expect

    base = f"https://127.0.0.1:{server.http_port}"
    async with (
        chromium(tmp_path / "agent", AGENT_TONE) as agent_browser,
        chromium(tmp_path / "visitor", CALLER_TONE) as visitor_browser,
    ):
        agent = await agent_browser.new_page()
        await agent.goto(f"{base}/agent/")
        await agent.get_by_label("Username").fill("agent2")
        await agent.get_by_label("Password").fill(DEMO_PASSWORD)
        await agent.get_by_role("button", name="Log in", exact=True).click()
        await agent.get_by_role("button", name="Ready", exact=True).click()
        await expect(agent.locator("#state")).to_have_text("Ready", timeout=10000)
        await expect(agent.locator("#ice-state")).to_have_text("connected", timeout=10000)

        visitor = await visitor_browser.new_page()
        assert (await visitor.goto(f"{base}/call/agent-agent1")).status == 404  # not allowed
        await visitor.goto(f"{base}/call/agent-agent2")
        await visitor.get_by_label("Your name (optional)").fill("Lucia")
        await visitor.get_by_label("Camera (video call)").check()
        await visitor.get_by_role("button", name="Call", exact=True).click()
        await expect(agent.locator("#caller-name")).to_contain_text("Lucia", timeout=10000)
        await agent.get_by_role("button", name="Answer", exact=True).click()
        await expect(visitor.locator("#call-state")).to_have_text("Connected", timeout=10000)

        agent_heard = await remote_tone(agent, CALLER_TONE)
        assert abs(agent_heard["hz"] - CALLER_TONE) < 10, agent_heard
        visitor_heard = await remote_tone(visitor, AGENT_TONE)
        assert abs(visitor_heard["hz"] - AGENT_TONE) < 10, visitor_heard
        await expect(agent.locator("#remote-video")).to_be_visible(timeout=10000)
        # The agent turns the camera on: the visitor's page decodes the agent's video.
        camera = agent.get_by_role("button", name="Camera", exact=True)
        await camera.click()
        await expect(camera).to_have_attribute("aria-pressed", "true")
        await expect(visitor.locator("#remote-video")).to_be_visible(timeout=10000)
        await visitor.wait_for_function(
            "document.getElementById('remote-video').videoWidth > 0", timeout=10000
        )

        await visitor.get_by_role("button", name="Hang up", exact=True).click()
        await expect(agent.locator("#no-call")).to_be_visible(timeout=10000)
    log = server.log()
    assert "source=web" in log and "agent=agent2" in log
    calls_over(server)
