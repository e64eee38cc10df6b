"""Runtime administration of a running `omlmedia serve`: no restart, no dropped call.

A sipp caller (which echoes the audio it gets, `-rtp_echo`) waits in `sales`, whose members the
API removed first; its strategy changes while it waits. An agent created through the API and
added to `sales` logs in on the agent page (headless Chromium), goes Ready and is offered the
waiting caller at once; it answers and the page hears its own tone come back through the caller:
media flows both ways. The agent is disabled while on the call: the call goes on, and ends when
the agent hangs up; then the agent is logged out and its password no longer logs in. Every change
is in the audit log and on the event stream. After a restart the database keeps what the API did.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.interop.browser import ANALYSE_REMOTE_AUDIO, chromium
from tests.interop.harness import SCENARIOS, free_port, run_sipp, start_server
from tests.interop.pages import call, committed, stopped, until, waiting

pytestmark = pytest.mark.interop

AGENT_TONE = 660.0
PASSWORD = "newbie-pass-1"


async def test_an_agent_created_through_the_api_answers_a_caller_already_waiting(
    tmp_path: Path,
) -> None:
    from playwright.async_api import expect

    server = start_server(tmp_path / "server")
    try:
        status, sales = call(server, "PATCH", "/queues/sales", {"members": [], "max_wait": 0})
        assert status == 200, sales
        assert sales["members"] == [] and sales["max_wait"] == 0 and sales["origin"] == "config"
        status, problem = call(server, "PATCH", "/queues/sales", {"strategy": "nope"})
        assert status == 400 and problem["errors"][0]["field"] == "strategy", problem

        loop = asyncio.get_running_loop()
        caller = loop.run_in_executor(
            None,
            lambda: run_sipp(
                [
                    f"127.0.0.1:{server.sip_port}",
                    "-i",
                    "127.0.0.1",
                    "-p",
                    "0",
                    "-sf",
                    str(SCENARIOS / "uac_wait_in_queue.xml"),
                    "-s",
                    "sales",
                    "-rtp_echo",
                    "-mp",
                    str(free_port(pair=True)),
                    "-m",
                    "1",
                ],
                tmp_path,
                timeout=120.0,
            ),
        )
        await until(lambda: waiting(server, "sales") == 1, "the caller to wait in sales")
        status, changed = call(server, "PATCH", "/queues/sales", {"strategy": "linear"})
        assert status == 200 and changed["strategy"] == "linear", changed
        assert waiting(server, "sales") == 1  # the strategy changed, the caller waits on
        status, problem = call(server, "DELETE", "/queues/sales")
        assert status == 409, problem  # the file routes callers to it (and one waits)

        status, agent = call(
            server,
            "POST",
            "/agents",
            {"name": "newbie", "password": PASSWORD, "display_name": "New Agent"},
        )
        assert status == 201, agent
        assert agent["origin"] == "api" and agent["queues"] == []
        status, sales = call(server, "PUT", "/queues/sales/members/newbie", {"penalty": 0})
        assert status == 200 and sales["members"] == [{"agent": "newbie", "penalty": 0}], sales

        async with chromium(tmp_path, AGENT_TONE) as browser:
            page = await browser.new_page()
            await page.goto(f"https://127.0.0.1:{server.http_port}/agent/")
            await page.get_by_label("Username").fill("newbie")
            await page.get_by_label("Password").fill(PASSWORD)
            await page.get_by_role("button", name="Log in", exact=True).click()
            state = page.locator("#state")
            await expect(state).to_contain_text("Paused", timeout=10000)
            await page.get_by_role("button", name="Ready", exact=True).click()
            await expect(page.locator("#caller-number")).to_have_text("sipp", timeout=10000)
            await expect(state).to_have_text("Ringing")
            await page.get_by_role("button", name="Answer", exact=True).click()
            await expect(page.locator("#call-kind")).to_have_text("Connected", timeout=10000)
            # The page's tone went to the caller, which sent it back: heard on the page.
            await page.wait_for_function(
                "() => document.getElementById('remote-audio').srcObject !== null", timeout=10000
            )
            heard: dict[str, float] = {}
            for _ in range(10):
                heard = await page.evaluate(ANALYSE_REMOTE_AUDIO)
                if abs(heard["hz"] - AGENT_TONE) < 10:
                    break
            assert abs(heard["hz"] - AGENT_TONE) < 10, heard

            status, disabled = call(server, "PATCH", "/agents/newbie", {"disabled": True})
            assert status == 200 and disabled["disabled"], disabled
            # The server acted before it answered: a cut call would show now.
            await expect(page.locator("#call-kind")).to_have_text("Connected")
            assert not caller.done()
            status, report = call(server, "GET", "/agents/newbie")
            assert report["state"] == "on-call" and report["call"], report

            await page.get_by_role("button", name="Hang up", exact=True).click()
            result = await caller
            assert result.returncode == 0, result.output + result.errors
            await expect(page.locator("#login-message")).to_contain_text(
                "account-disabled", timeout=10000
            )
            await until(
                lambda: call(server, "GET", "/agents/newbie")[1]["state"] == "logged-out",
                "the disabled agent to be logged out after its call",
            )
            await page.get_by_label("Username").fill("newbie")
            await page.get_by_label("Password").fill(PASSWORD)
            await page.get_by_role("button", name="Log in", exact=True).click()
            await expect(page.locator("#login-message")).to_have_text("Wrong username or password.")

        committed(server)  # the call's record is written in the next batch
        status, records = call(server, "GET", "/calls/records?queue=sales")
        assert status == 200 and [r["agent"] for r in records["records"]] == ["newbie"], records
        status, audit = call(server, "GET", "/audit?target=newbie")
        assert [(e["action"], e["actor"]) for e in audit["entries"]] == [
            ("agent.create", "bootstrap"),
            ("agent.update", "bootstrap"),
        ], audit
        status, audit = call(server, "GET", "/audit?target=sales")
        actions = [e["action"] for e in audit["entries"]]
        assert actions[-3:] == ["queue.update", "queue.update", "queue.member.set"], actions
        member_set = audit["entries"][-1]
        assert member_set["before"]["members"] == [] and member_set["after"]["members"] == [
            {"agent": "newbie", "penalty": 0}
        ]
    finally:
        stopped(server)

    server = start_server(tmp_path / "server")  # the same data directory, the same file
    try:
        status, report = call(server, "GET", "/queues/sales")
        assert status == 200 and report["strategy"] == "linear", report
        assert [m["agent"] for m in report["members"]] == ["newbie"]
        status, report = call(server, "GET", "/agents/newbie")
        assert status == 200 and report["state"] == "logged-out", report
        status, campaign = call(server, "PATCH", "/campaigns/support", {"dispositions": ["sold"]})
        assert status == 200 and campaign["dispositions"] == ["sold"], campaign
        status, problem = call(server, "PATCH", "/campaigns/support", {"queue": "nowhere"})
        assert status == 400 and problem["errors"][0]["field"] == "queue", problem
    finally:
        stopped(server)
