"""The agent page's auto-answer never answers a callback (issue 12 item 9): a callback offer
(direction ``outbound``) dials a number a caller typed, so an agent must start it; an ordinary
call offered after it is auto-answered, which shows the setting is on. Debian Chromium through
Playwright, against `create_app` over HTTPS (the fixtures of tests/webrtc/test_browser.py)."""

from __future__ import annotations

from typing import Any

from tests.webrtc.test_browser import Server, browser, log_in, server, until
from webrtc.signaling import CallInfo

__all__ = ["browser", "server"]  # the fixtures


async def test_auto_answer_takes_calls_but_never_a_callback(server: Server, browser: Any) -> None:
    from playwright.async_api import expect

    page = await browser.new_page()
    await log_in(page, server.url)
    auto = page.get_by_label("Auto-answer (with a beep)")
    await auto.check()
    await expect(auto).to_be_checked()
    await page.get_by_role("button", name="Ready", exact=True).click()
    await expect(page.locator("#state")).to_have_text("Ready")

    callback = CallInfo("cb-1", "1155550001", "", "support", 0, direction="outbound")
    server.hub.offer_call("agent1", callback)
    await expect(page.locator("body")).to_contain_text("1155550001")
    server.hub.offer_call("agent1", CallInfo("call-2", "+5411", "Ana", "support", 3))

    def answered() -> list[tuple[Any, ...]]:
        return [c for c in server.control.calls if c[0] == "answer"]

    await until(answered, limit=10.0)
    assert answered() == [("answer", "agent1", "call-2")]
