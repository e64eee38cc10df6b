"""The supervisor page (``/supervisor/``) in Chromium against a real `omlmedia serve`.

A supervisor logs in; a baresip caller dials ``support`` and is shown waiting on the wallboard
live, brought by the event stream (the page read its snapshot once, before the call; how fast is
for benchmarks/wallboard.py to measure, against its 1 s target); a browser agent (Chromium on
``/agent/``) answers and the wallboard shows the call; the supervisor pauses, readies and logs out
the agent from the wallboard and the agent's page shows each. Accounts of other roles are refused
by the page, and the wallboard API names the field of a bad request.
"""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path
from typing import Any

import pytest

from tests.interop.baresip import dial
from tests.interop.browser import chromium
from tests.interop.harness import DEMO_PASSWORD, RunningServer
from tests.interop.pages import call, calls_over, log_in, make_account

pytestmark = pytest.mark.interop

SUPERVISOR_PASSWORD = "supervise-well-1"
MOS = re.compile(r"^[1-4]\.\d\d( low)?$")


WATCH_WAITING = """() => new Promise((resolve) => {
    const find = () => document.querySelector(
        '#queue-rows tr[data-queue="support"] td:nth-child(2)');
    const check = () => {
        const cell = find();
        if (cell && cell.textContent === '1') { resolve(Date.now() / 1000); return true; }
        return false;
    };
    if (check()) return;
    new MutationObserver((_, observer) => { if (check()) observer.disconnect(); })
        .observe(document.getElementById('wallboard'),
                 {subtree: true, childList: true, characterData: true});
})"""
"""Resolves with the wall time at which the support queue's Waiting cell first reads 1."""


async def test_a_supervisor_sees_a_caller_wait_and_be_answered_and_controls_the_agent(
    server: RunningServer, tmp_path: Path
) -> None:
    from playwright.async_api import expect

    make_account(server, "sue", "supervisor", SUPERVISOR_PASSWORD)
    base = f"https://127.0.0.1:{server.http_port}"
    async with (
        chromium(tmp_path / "supervisor", 880.0) as supervisor_browser,
        chromium(tmp_path / "agent", 660.0) as agent_browser,
    ):
        board = await supervisor_browser.new_page()
        problems: list[str] = []
        board.on(
            "response",
            lambda r: (
                problems.append(f"{r.status} {r.url}")
                if r.status >= 400 and not r.url.endswith("/favicon.ico")
                else None
            ),
        )
        board.on("pageerror", lambda e: problems.append(str(e)))
        snapshots: list[str] = []
        board.on(
            "request",
            lambda r: snapshots.append(r.url) if "/api/v1/wallboard" in r.url else None,
        )
        response = await board.goto(f"{base}/supervisor/")
        assert response is not None and response.status == 200
        csp = response.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "connect-src 'self'" in csp
        await log_in(board, "sue", SUPERVISOR_PASSWORD)
        await expect(board.get_by_role("navigation", name="Supervisor")).to_be_visible()
        support = board.locator('#queue-rows tr[data-queue="support"]')
        await expect(support).to_be_visible(timeout=10000)
        await expect(board.locator("#stream-state")).to_have_text("live", timeout=10000)

        agent = await agent_browser.new_page()
        await agent.goto(f"{base}/agent/")
        await log_in(agent, "agent1", DEMO_PASSWORD)
        agent_state = agent.locator("#state")
        await expect(agent_state).to_contain_text("Paused", timeout=10000)
        await expect(agent.locator("#ice-state")).to_have_text("connected", timeout=10000)
        agent1 = board.locator('#agent-rows tr[data-agent="agent1"]')
        await expect(agent1.locator(".state")).to_have_text("Paused", timeout=5000)

        shown = asyncio.ensure_future(board.evaluate(WATCH_WAITING))
        caller = asyncio.get_running_loop().run_in_executor(
            None,
            # The agent hangs up (below): 30 s only bound what the board shows meanwhile.
            lambda: dial(tmp_path / "caller", f"sip:support@127.0.0.1:{server.sip_port}", 30),
        )
        seen_at = await asyncio.wait_for(shown, 15)
        # The queue log is committed in batches: poll until the caller's entry is stored.
        deadline = time.monotonic() + 10
        entered: list[dict[str, Any]] = []
        while not entered and time.monotonic() < deadline:
            status, log = call(server, "GET", f"/queue-log?since={time.time() - 60}&queue=support")
            assert status == 200, log
            entered = [e for e in log["entries"] if e["event"] == "enter"]
            if not entered:
                await asyncio.sleep(0.1)
        assert entered, log
        # Live: the stream brought the caller to the board read before the call (a standalone
        # node's page reads no snapshot again). Not timed here: a loaded machine delays it.
        assert len(snapshots) == 1, snapshots
        latency = seen_at - entered[-1]["time"]
        print(f"\nthe waiting caller reached the wallboard {latency:.3f} s after it entered")
        await expect(support.locator("td").nth(7)).to_have_text("1")  # offered today
        # [wallboard.thresholds.support] waiting = [1, 2] (the test configuration): amber.
        await expect(support.locator("td").nth(1)).to_have_class(re.compile(r"\bamber\b"))

        await agent.get_by_role("button", name="Ready", exact=True).click()
        await agent.get_by_role("button", name="Answer", exact=True).click(timeout=10000)
        await expect(agent_state).to_have_text("On call", timeout=10000)
        call_row = board.locator("#call-rows tr")
        await expect(call_row).to_have_count(1, timeout=5000)
        await expect(call_row.locator("td").nth(2)).to_have_text("agent1")
        await expect(agent1.locator(".state")).to_have_text("On call")
        await expect(agent1.locator("td").nth(7)).to_have_text("1")  # calls handled
        await expect(support.locator("td").nth(1)).to_have_text("0")  # no one waits
        await expect(support.locator("td").nth(1)).not_to_have_class(re.compile(r"\bamber\b"))

        # Live quality of both legs, from RTCP, every few seconds (call.live_quality: every 5 s;
        # the deadline leaves a loaded machine a sample more).
        await expect(call_row.locator("td").nth(4)).to_have_text(MOS, timeout=15000)
        await expect(call_row.locator("td").nth(5)).to_have_text(MOS, timeout=15000)

        # Selecting the call tells the monitoring module (ui contract: oml:select-call).
        await board.evaluate(
            """() => document.addEventListener('oml:select-call',
                   (e) => { window.selectedCall = e.detail; }, {once: true})"""
        )
        await call_row.get_by_role("button").click()
        detail = await (await board.wait_for_function("() => window.selectedCall")).json_value()
        assert detail["agent"] == "agent1" and detail["queue"] == "support", detail
        # ... and shows its quality over time (uPlot) and both legs' figures.
        await expect(board.locator("#quality-chart canvas")).to_be_visible()
        await expect(board.locator("#call-detail-rows tr")).to_have_count(2)
        await expect(board.locator("#call-detail-rows tr").first.locator("td").first).to_have_text(
            re.compile(r"^\d\.\d\d$")
        )

        await agent.get_by_role("button", name="Hang up", exact=True).click()
        run = await caller
        assert run.established, run.output[-3000:]
        await expect(call_row).to_have_count(0, timeout=10000)
        await expect(agent_state).to_have_text("Ready", timeout=10000)  # after wrap-up

        # Agent control from the wallboard; the agent's page shows each change.
        await board.get_by_role("button", name="Agent agent1", exact=True).click()
        await board.get_by_label("Pause reason").select_option("lunch")
        await board.get_by_role("button", name="Pause agent", exact=True).click()
        await expect(agent_state).to_have_text("Paused (lunch)", timeout=5000)
        await expect(agent1.locator("td").nth(3)).to_have_text("lunch")
        await board.get_by_role("button", name="Ready", exact=True).click()
        await expect(agent_state).to_have_text("Ready", timeout=5000)
        await board.get_by_role("button", name="Log out agent", exact=True).click()
        await expect(agent.locator("#login-view")).to_be_visible(timeout=5000)
        await expect(agent1.locator(".state")).to_have_text("Logged out")
        assert not problems, problems

    status, audit = call(server, "GET", "/audit?actor=sue")
    assert status == 200, audit
    actions = [e["action"] for e in audit["entries"]]
    assert {"agent.pause", "agent.unpause", "agent.logout"} <= set(actions), actions
    deadline = time.monotonic() + 10  # records are committed in batches too
    while True:
        status, records = call(server, "GET", f"/calls/records?since={time.time() - 120}")
        assert status == 200, records
        if records["records"] or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    assert records["records"], records
    record = records["records"][-1]
    legs = [leg for leg in record["legs"] if leg["role"] != "segment"]
    assert [leg["role"] for leg in legs] == ["caller", "agent"], record["legs"]
    assert all(leg["min_mos"] is not None and leg["low_mos"] is False for leg in legs), legs
    # The campaign records: its one answered segment is listed after the media legs.
    segments = [leg for leg in record["legs"] if leg["role"] == "segment"]
    assert [s["agent"] for s in segments] == ["agent1"], record["legs"]
    assert segments[0]["file"].endswith(".opus"), segments
    status, board_now = call(server, "GET", "/wallboard?queue=support")
    assert status == 200, board_now
    today = board_now["queues"][0]["today"]
    assert (today["offered"], today["answered"], today["abandoned"]) == (1, 1, 0), today
    calls_over(server)


async def test_the_supervisor_page_refuses_agents_and_reporting_accounts(
    server: RunningServer, tmp_path: Path
) -> None:
    from playwright.async_api import expect

    make_account(server, "rita", "reporting", SUPERVISOR_PASSWORD)
    async with chromium(tmp_path, 440.0) as browser:
        page = await browser.new_page()
        await page.goto(f"https://127.0.0.1:{server.http_port}/supervisor/")
        # The API gives agent accounts no token: the page says where agents log in.
        await log_in(page, "agent1", DEMO_PASSWORD)
        message = page.locator("#login-message")
        await expect(message).to_contain_text("Agents log in on the agent page")
        await log_in(page, "rita", SUPERVISOR_PASSWORD)
        await expect(message).to_contain_text("has the role reporting")
        await expect(message).to_contain_text("supervisors and administrators")
        await expect(page.locator("#app-view")).to_be_hidden()
        await log_in(page, "rita", "not-the-password")
        await expect(message).to_contain_text("Wrong username or password.")


def test_the_wallboard_api_names_the_field_of_a_bad_request(server: RunningServer) -> None:
    status, body = call(server, "GET", "/wallboard?queue=nowhere")
    assert status == 400 and body["errors"] == [
        {"field": "queue", "detail": "unknown queue 'nowhere'"}
    ], body
    status, body = call(server, "GET", "/wallboard?campaign=nothing")
    assert status == 400 and body["errors"][0]["field"] == "campaign", body
    status, body = call(server, "GET", "/wallboard?campaign=support")
    assert status == 200 and [q["queue"] for q in body["queues"]] == ["support"], body


async def test_the_agent_table_renders_only_the_rows_in_view_and_keeps_the_whole_list(
    tmp_path: Path,
) -> None:
    """60 more agents: the agent table's body holds a screenful of rows, not all of them; it
    says how many there are (aria-rowcount, the count beside its title); End and Home move the
    keyboard focus to the last and first agent of the whole sorted list, rendering them; a
    filter counts over the whole model."""
    from playwright.async_api import expect

    from tests.interop.harness import start_server
    from tests.interop.pages import stopped

    server = start_server(tmp_path / "server")
    try:
        names = [f"w{i:03d}" for i in range(60)]
        for name in names:
            status, body = call(
                server,
                "POST",
                "/agents",
                {"name": name, "password": "window-agent-1", "queues": ["support"]},
            )
            assert status == 201, body
        make_account(server, "sue", "supervisor", SUPERVISOR_PASSWORD)
        status, board_api = call(server, "GET", "/wallboard")
        assert status == 200, board_api
        everyone = sorted(a["agent"] for a in board_api["agents"])
        total = len(everyone)
        assert total >= 60
        async with chromium(tmp_path / "browser", 440.0) as browser:
            page = await browser.new_page()
            await page.goto(f"https://127.0.0.1:{server.http_port}/supervisor/")
            await log_in(page, "sue", SUPERVISOR_PASSWORD)
            table = page.locator("#agent-table")
            await expect(table).to_have_attribute("aria-rowcount", str(total + 1), timeout=10000)
            await expect(page.locator("#agent-count")).to_have_text(f"{total} agents")
            rows = page.locator("#agent-rows tr")
            await expect(rows.first).to_have_attribute("aria-rowindex", "2")
            rendered = await rows.count()
            assert 0 < rendered <= 40 < total, rendered  # a screenful and a margin, not all
            # End: the last agent of the whole list, by name, gets the focus and is on screen.
            first = page.get_by_role("button", name=f"Agent {everyone[0]}", exact=True)
            await first.focus()
            await page.keyboard.press("End")
            last = page.get_by_role("button", name=f"Agent {everyone[-1]}", exact=True)
            await expect(last).to_be_focused()
            await expect(last).to_be_in_viewport()
            last_row = page.locator(f'#agent-rows tr[data-agent="{everyone[-1]}"]')
            await expect(last_row).to_have_attribute("aria-rowindex", str(total + 1))
            assert await page.locator(f'#agent-rows tr[data-agent="{everyone[0]}"]').count() == 0
            await expect(last_row.locator("td").nth(1)).not_to_be_empty()  # written on arrival
            await page.keyboard.press("ArrowUp")
            await expect(
                page.get_by_role("button", name=f"Agent {everyone[-2]}", exact=True)
            ).to_be_focused()
            await page.keyboard.press("Home")
            await expect(first).to_be_focused()
            # Away on another section the board writes nothing; back on it, it is rebuilt.
            await page.get_by_role("button", name="Recordings", exact=True).click()
            await page.get_by_role("button", name="Wallboard", exact=True).click()
            await expect(table).to_have_attribute("aria-rowcount", str(total + 1))
            await expect(rows.first).to_have_attribute("data-agent", everyone[0])
            await expect(rows.first.locator("td").nth(1)).not_to_be_empty()
            # Sorting works over the whole list: by name descending is not offered, but by
            # calls handled (all 0) falls back to names, so the order stays the whole list's.
            await page.get_by_label("Sort agents by").select_option("calls")
            await expect(rows.first).to_have_attribute("data-agent", everyone[0])
            # A filter counts over the model: queue sales has none of the w agents.
            sales = sum(1 for a in board_api["agents"] if "sales" in a["queues"])
            await page.get_by_label("Show").select_option("queue:sales")
            await expect(table).to_have_attribute("aria-rowcount", str(sales + 1))
            await expect(page.locator("#agent-count")).to_have_text(
                f"{sales} agent{'' if sales == 1 else 's'}"
            )
    finally:
        stopped(server)


RECORD_RECONNECTS = """() => {
    const signaling = window.omlMonitor.signaling;
    window.__opens = [];
    window.__closes = [];
    const open = signaling.open.bind(signaling);
    signaling.open = () => { window.__opens.push(Date.now()); open(); };
    signaling.addEventListener("close", () => window.__closes.push(Date.now()));
}"""
"""The supervisor page's monitor socket: when each close reached the page and when each new
socket was asked for (page time, ms)."""


async def test_the_supervisor_page_is_back_at_once_after_a_1001_and_says_what_monitoring_stopped(
    server: RunningServer, tmp_path: Path
) -> None:
    """A node stopping closes the page's sockets with 1001 (its event stream ends with an error
    event carrying 1001). The page, through a balancer, is back at once on the node it reaches:
    the monitor socket asked for again within 250 ms of a 1001 on a socket that served (with the
    usual backoff, >= 400 ms, after one refused at once), logged in again with a new audio
    channel; the page says which monitoring stopped, with the buttons off meanwhile; the
    wallboard re-reads its snapshot before its stream goes on. Real server behind Playwright's
    socket and request routes (the 1001s are the routes')."""
    import json

    from playwright.async_api import expect

    make_account(server, "sueb", "supervisor", SUPERVISOR_PASSWORD)
    base = f"https://127.0.0.1:{server.http_port}"
    sockets: list[tuple[Any, Any]] = []  # (the page's side, the server's side)
    refuse = {"next": False, "session": False}

    async def on_socket(ws: Any) -> None:
        if refuse["next"]:  # a stopping node refusing a socket at once
            refuse["next"] = False
            await ws.close(code=1001, reason="server stopping")
            return
        if refuse["session"]:  # a node that does not know the session (its own SQLite)

            def answer(message: str | bytes) -> None:
                asked = json.loads(message)
                if asked.get("type") == "supervisor-auth":
                    reason = "the token is unknown, revoked or expired"
                    ws.send(
                        json.dumps(
                            {
                                "v": 1,
                                "type": "error",
                                "ref": asked["id"],
                                "code": "session-invalid",
                                "reason": reason,
                            }
                        )
                    )

            ws.on_message(answer)
            return
        sockets.append((ws, ws.connect_to_server()))

    streams: list[str] = []
    snapshots: list[str] = []

    async def on_stream(route: Any) -> None:
        streams.append(route.request.url)
        if len(streams) == 1:  # the first stream's node stops at once: its last words
            body = json.dumps({"error": "the server is stopping", "code": 1001, "last_id": 0})
            await route.fulfill(
                status=200,
                headers={"Content-Type": "text/event-stream"},
                body=f"event: error\ndata: {body}\n\n",
            )
        else:
            await route.continue_()

    async with chromium(tmp_path / "supervisor", 880.0) as browser:
        page = await browser.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on(
            "request",
            lambda r: snapshots.append(r.url) if "/api/v1/wallboard" in r.url else None,
        )
        await page.route_web_socket(re.compile(r"/ws$"), on_socket)
        await page.route(re.compile(r"/api/v1/events"), on_stream)
        await page.goto(f"{base}/supervisor/")
        await log_in(page, "sueb", SUPERVISOR_PASSWORD)
        panel = page.get_by_role("complementary", name="Monitoring")
        channel = panel.locator("#monitor-channel")
        status = panel.locator("#monitor-status")
        listen = panel.get_by_role("button", name="Listen", exact=True)
        await expect(channel).to_have_text("connected", timeout=15000)
        # The wallboard: its first stream ended with 1001, the snapshot read again, then live.
        deadline = time.monotonic() + 10
        while len(streams) < 2:
            assert time.monotonic() < deadline, (streams, snapshots)
            await asyncio.sleep(0.02)
        await expect(page.locator("#stream-state")).to_have_text("live", timeout=10000)
        assert len(streams) == 2 and len(snapshots) == 2, (streams, snapshots)
        assert "since_id" in streams[1]

        await page.evaluate(RECORD_RECONNECTS)
        await page.evaluate("window.omlMonitor.pc.omlTag = 'the first one'")
        page_side, server_side = sockets[-1]
        # The server says the supervisor listens to a call of node a's (as after "Listen").
        page_side.send(
            json.dumps(
                {
                    "v": 1,
                    "type": "monitor-state",
                    "call_id": "c-on-the-stopping-node",
                    "agent": "agent1",
                    "mode": "listen",
                    "queue": "support",
                    "caller": "1001",
                }
            )
        )
        await expect(panel.locator("#monitor-mode")).to_contain_text("Listening (Caller 1001")

        # The node stops: 1001 on a socket that served (open for seconds by now).
        await page_side.close(code=1001, reason="server stopping")
        await server_side.close()
        await expect(status).to_contain_text(
            "Monitoring stopped: the connection to the server closed while listening "
            "(Caller 1001, agent agent1, queue support)."
        )
        await expect(panel.locator("#monitor-mode")).to_have_text("Not monitoring")
        await expect(listen).to_be_disabled()
        await expect(channel).to_have_text("connected", timeout=15000)
        await expect(status).to_contain_text(
            "Reconnected: select the call and a mode to monitor it again."
        )
        assert await page.evaluate("window.omlMonitor.pc.omlTag") is None  # a new channel
        times = await page.evaluate("[window.__closes, window.__opens]")
        fast = times[1][0] - times[0][0]

        # Once more, and the node reached first refuses the socket at once: backoff then.
        refuse["next"] = True
        page_side, server_side = sockets[-1]
        await page_side.close(code=1001, reason="server stopping")
        await server_side.close()
        await expect(status).to_have_text("The connection to the server closed: reconnecting…")
        await expect(channel).to_have_text("connected", timeout=15000)
        await expect(status).to_have_text("")
        closes, opens = await page.evaluate("[window.__closes, window.__opens]")
        assert len(closes) == 3 and len(opens) == 3, (closes, opens)
        # The backoff is at least 400 ms (500 ms less its jitter); the prompt retry (within
        # 250 ms) comes before it. Compared with each other, not with a fixed bound: a loaded
        # machine delays both (a CI run saw a prompt retry at 532 ms).
        backoff = opens[2] - closes[2]
        assert backoff >= 400, (closes, opens)
        assert max(fast, opens[1] - closes[1]) < backoff, (fast, closes, opens)

        # A node that does not know the session: the panel says to log in again, no hang.
        refuse["session"] = True
        page_side, server_side = sockets[-1]
        await page_side.close(code=1001, reason="server stopping")
        await server_side.close()
        await expect(status).to_have_text(
            "The server now serving this page does not know your session: sign out and log in "
            "again to monitor calls."
        )
        await expect(channel).to_have_text("closed")
        await expect(listen).to_be_disabled()
        assert await page.evaluate("window.omlMonitor.signaling") is None  # no retry loop
        print(
            f"\nreconnect after a 1001 (page ms): {fast}, {opens[1] - closes[1]}; "
            f"after a refusal at once: {opens[2] - closes[2]}"
        )
        assert errors == []
