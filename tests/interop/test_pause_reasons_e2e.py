"""Pause reasons administered through the API of a running `omlmedia serve`, no restart.

An agent logged in on the agent page and a supervisor on the supervisor page (headless Chromium)
see the server's reasons in their pause menus; a reason an admin adds appears in both open pages'
menus at once, and the supervisor pauses the agent with it. The admin removes it while the agent
is paused with it: the agent stays paused, shown with that reason on its page and in the API, and
the reason leaves both menus; a pause with it through the API is then refused (400 naming
``reason``).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.interop.browser import chromium
from tests.interop.harness import start_server
from tests.interop.pages import call, log_in, make_account, stopped
from tests.interop.test_supervisor_page import SUPERVISOR_PASSWORD

pytestmark = pytest.mark.interop

PASSWORD = "pauser-pass-1"


async def test_a_reason_added_and_removed_through_the_api_reaches_the_pages_at_once(
    tmp_path: Path,
) -> None:
    from playwright.async_api import expect

    server = start_server(tmp_path / "server")
    try:
        status, listed = call(server, "GET", "/pause-reasons")
        assert status == 200, listed
        seeded = listed["reasons"]  # the file's ([wallboard] pause_reasons, or the default)
        assert seeded and "coaching" not in seeded, listed
        status, agent = call(
            server,
            "POST",
            "/agents",
            {"name": "pauser", "password": PASSWORD, "queues": ["support"]},
        )
        assert status == 201, agent
        make_account(server, "sue", "supervisor", SUPERVISOR_PASSWORD)

        async with chromium(tmp_path, 440.0) as browser:
            page = await browser.new_page()
            await page.goto(f"https://127.0.0.1:{server.http_port}/agent/")
            await page.get_by_label("Username").fill("pauser")
            await page.get_by_label("Password").fill(PASSWORD)
            await page.get_by_role("button", name="Log in", exact=True).click()
            state = page.locator("#state")
            await expect(state).to_contain_text("Paused", timeout=10000)
            options = page.get_by_label("Pause reason").locator("option")
            await expect(options).to_have_text(seeded)
            await page.get_by_role("button", name="Ready", exact=True).click()
            await expect(state).to_have_text("Ready")

            board = await browser.new_page()
            await board.goto(f"https://127.0.0.1:{server.http_port}/supervisor/")
            await log_in(board, "sue", SUPERVISOR_PASSWORD)
            await board.get_by_role("button", name="Agent pauser", exact=True).click()
            menu = board.get_by_label("Pause reason").locator("option")
            await expect(menu).to_have_text(seeded)

            status, added = call(server, "POST", "/pause-reasons", {"name": "coaching"})
            assert status == 201 and added["reasons"] == [*seeded, "coaching"], added
            await expect(options).to_have_text([*seeded, "coaching"])  # both open pages
            await expect(menu).to_have_text([*seeded, "coaching"])
            status, snapshot = call(server, "GET", "/wallboard")
            assert status == 200 and snapshot["pause_reasons"] == [*seeded, "coaching"]

            await board.get_by_label("Pause reason").select_option("coaching")
            await board.get_by_role("button", name="Pause agent", exact=True).click()
            await expect(state).to_have_text("Paused (coaching)")

            status, _ = call(server, "DELETE", "/pause-reasons/coaching")
            assert status == 200
            await expect(options).to_have_text(seeded)
            await expect(menu).to_have_text(seeded)
            await expect(state).to_have_text("Paused (coaching)")  # still, and said so
            status, report = call(server, "GET", "/agents/pauser")
            assert (report["state"], report["reason"]) == ("paused", "coaching"), report
            status, snapshot = call(server, "GET", "/wallboard")
            assert snapshot["pause_reasons"] == seeded, snapshot
            status, problem = call(server, "POST", "/agents/pauser/pause", {"reason": "coaching"})
            assert status == 400 and problem["errors"][0]["field"] == "reason", problem
    finally:
        stopped(server)
