"""Disposition sets administered through the API of a running `omlmedia serve`, no restart.

A baresip caller dials ``support`` (a campaign of the test configuration, its own dispositions
``solved`` and ``escalated``); agent1 answers on the agent page (headless Chromium). While the
call goes on, an admin makes the campaign name a set created through the API: when the agent
hangs up, the wrap-up menu offers the set's dispositions. The admin then changes the set while
the agent is in wrap-up: the open page's menu follows at once, and the disposition the agent saves
from the new list is accepted and lands in the call's record.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.interop.baresip import dial
from tests.interop.browser import chromium
from tests.interop.harness import start_server
from tests.interop.pages import agent_logged_in, call, stopped, until

pytestmark = pytest.mark.interop


async def test_a_set_named_and_changed_during_a_call_reaches_the_agent_pages_wrap_up_at_once(
    tmp_path: Path,
) -> None:
    from playwright.async_api import expect

    server = start_server(tmp_path / "server")
    try:
        status, made = call(
            server, "POST", "/disposition-sets", {"name": "outcomes", "dispositions": ["sold"]}
        )
        assert status == 201 and made["campaigns"] == [], made
        async with chromium(tmp_path / "agent", 660.0) as browser:
            page = await browser.new_page()
            await agent_logged_in(page, server, "agent1")
            state = page.locator("#state")
            await page.get_by_role("button", name="Ready", exact=True).click()
            await expect(state).to_have_text("Ready")

            loop = asyncio.get_running_loop()
            caller = loop.run_in_executor(
                None,
                lambda: dial(tmp_path / "caller", f"sip:support@127.0.0.1:{server.sip_port}", 30),
            )
            await expect(state).to_have_text("Ringing", timeout=15000)
            await page.get_by_role("button", name="Answer", exact=True).click()
            await expect(state).to_have_text("On call", timeout=5000)

            status, campaign = call(
                server, "PATCH", "/campaigns/support", {"disposition_set": "outcomes"}
            )
            assert status == 200 and campaign["dispositions"] == ["sold"], campaign
            await page.get_by_role("button", name="Hang up", exact=True).click()
            run = await caller
            assert run.established
            options = page.get_by_label("Disposition").locator("option")
            await expect(options).to_have_text(["sold"], timeout=10000)  # the set's, not its own

            status, changed = call(
                server, "PATCH", "/disposition-sets/outcomes", {"dispositions": ["sold", "later"]}
            )
            assert status == 200 and changed["campaigns"] == ["support"], changed
            await expect(options).to_have_text(["sold", "later"])  # the open page, at once
            await page.get_by_label("Disposition").select_option("later")
            await page.get_by_role("button", name="Save disposition").click()
            await expect(state).to_have_text("Ready", timeout=10000)

        def saved() -> bool:
            status, records = call(server, "GET", "/calls/records?queue=support")
            return status == 200 and [r["disposition"] for r in records["records"]] == ["later"]

        await until(saved, "the call's record with the disposition saved from the new list")
        status, problem = call(server, "DELETE", "/disposition-sets/outcomes")
        assert status == 409 and "campaign support" in problem["detail"], problem
    finally:
        stopped(server)
