"""The supervisors' wallboard across a cluster with one ACD (``[cluster] acd = "shared"``).

Real peers: a throwaway Redis; `ClusterBoard` against it alone; then two `omlmedia serve` nodes
sharing the ACD and one PostgreSQL (the nodes fixture of `tests.cluster.test_cluster_queues`,
imported with its fixtures), Chromium agent pages
(agent1 on node b, agent2 on node a), sipp callers dialling ``support`` on node a, and a
supervisor's socket on node b. Proved here:

- each node publishes its live queue calls and connected agents under ``wallboard:node:<node>``
  with a TTL; a snapshot reads the other live nodes'; a key that lapsed (a dead node) drops out,
  a node that stops deletes its key, and Redis away leaves a node its own calls (never an error);
- node b's wallboard lists node a's waiting caller (``node: "a"``), both nodes give agent1 the
  node it logged in on and ``connected: true``; once answered by agent1 across nodes, the call
  shows agent1 on both wallboards;
- the supervisor's page on node b monitors the call across nodes (caller on a, agent on b: node
  b carries its audio) and the call node a holds (caller and agent there: over a monitor leg to
  node a, `omlmedia.monitor_remote`; what is heard is proved in `test_monitor_cluster`);
- node a killed (``kill -9``): within its key's TTL node b's wallboard drops node a's calls and
  shows node a's agent not connected.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis as redis_sync

from benchmarks import harness
from benchmarks import wallboard_cluster as wallboard_cluster_benchmark
from benchmarks.harness import DEMO_PASSWORD
from omlmedia.lost_calls import ALIVE_PREFIX
from omlmedia.wallboard_cluster import ClusterBoard
from tests.cluster import redis
from tests.cluster.nodes import Page
from tests.cluster.test_cluster_queues import nodes  # noqa: F401 (fixture)
from tests.cluster.test_shared_database import api
from tests.interop.browser import chromium
from tests.interop.harness import SCENARIOS, start_sipp
from tests.interop.pages import log_in

SUPERVISOR_PASSWORD = "supervisor-secret-1"


# -- ClusterBoard against a real Redis ----------------------------------------------------------


def _board(url: str, node: str, calls: list[dict[str, Any]], **kw: Any) -> ClusterBoard:
    return ClusterBoard(
        url,
        node,
        ["a", "b", "c"],
        calls=lambda: list(calls),
        connected=lambda: [f"agent-{node}"],
        agent_node=lambda agent: None,
        **kw,
    )


async def test_a_node_sees_the_other_live_nodes_calls_and_a_lapsed_or_stopped_node_drops_out(
    shared: redis.Redis,
) -> None:
    call = {"call_id": "c-a", "queue": "support", "entered": 1.0, "agent": None}
    # ttl 2 s (a refreshes at 1 s): c's key outlives the reads below and a's a stall of the
    # loop of up to 1 s (with 0.6 s, a 0.3 s stall of a loaded machine let a's key lapse).
    a = _board(shared.url, "a", [call], interval=0.1, ttl=2.0)
    b = _board(shared.url, "b", [], interval=0.1, ttl=2.0)
    c = _board(shared.url, "c", [{**call, "call_id": "c-c"}], interval=0.1, ttl=2.0)
    try:
        assert await b.gather() == {}  # nobody published yet
        a.start()
        assert await a.publish() and await c.publish()
        seen = await b.gather()
        assert set(seen) == {"a", "c"}
        assert seen["a"].calls == (call,) and seen["a"].agents == frozenset({"agent-a"})
        assert set(await a.gather()) == {"c"}  # a never reads its own key
        # c stops publishing without deleting its key (as if killed): gone after its TTL
        deadline = time.monotonic() + 15
        while "c" in await b.gather():
            assert time.monotonic() < deadline, "a lapsed key still read"
            await asyncio.sleep(0.05)
        assert "a" in await b.gather()  # a keeps refreshing its key
        # a stops: its key is deleted at once
        await a.close()
        assert await b.gather() == {}
    finally:
        for board in (a, b, c):
            if not board._closed:
                await board.close()


async def test_an_unchanged_value_is_written_only_at_half_its_ttl_and_a_change_at_the_next_look(
    shared: redis.Redis,
) -> None:
    calls: list[dict[str, Any]] = []
    # ttl 2 s: the key outlives a stall of the loop of up to 1 s past a refresh (a loaded
    # machine's; with 1 s, a 0.5 s stall let it lapse under the reads below).
    a = _board(shared.url, "a", calls, interval=0.05, ttl=2.0)
    b = _board(shared.url, "b", [], interval=0.05, ttl=2.0)
    try:
        a.start()
        deadline = time.monotonic() + 10
        while a.published < 1:
            assert time.monotonic() < deadline, "never published"
            await asyncio.sleep(0.01)
        # 2.5 s: ~50 looks, but the value does not change: written at ttl / 2 only (twice)
        started, first = time.monotonic(), a.published
        while time.monotonic() - started < 2.5:
            assert "a" in await b.gather()  # never lapses meanwhile
            await asyncio.sleep(0.05)
        assert 1 <= a.published - first <= 4, a.published - first
        # A change is written at the next look (one interval), not at the refresh: made right
        # after a refresh, it is written well before ttl / 2 has passed, on the board's own
        # clock (when its writes were done; not b's reads, timed on a loaded machine).
        refreshes = a.published
        deadline = time.monotonic() + 10
        while a.published == refreshes or a._written is None:
            assert time.monotonic() < deadline, "no refresh"
            await asyncio.sleep(0.01)
        assert a._written is not None
        refreshed_at, unchanged = a._written
        calls.append({"call_id": "c-a", "queue": "support", "entered": 1.0, "agent": None})
        while (written := a._written) is None or written[1] == unchanged:
            assert time.monotonic() < deadline, "the change was not written"
            await asyncio.sleep(0.01)
        assert written[0] - refreshed_at < a.ttl / 2, written[0] - refreshed_at
        assert (await b.gather())["a"].calls != ()  # and the other node reads it
    finally:
        await a.close()
        await b.close()


async def test_with_redis_away_a_snapshot_has_this_nodes_calls_only_and_counts_the_failure() -> (
    None
):
    redis.require()
    with redis.redis() as instance:
        url = instance.url
        b = _board(url, "b", [])
        os.kill(instance.process.pid, signal.SIGSTOP)  # frozen: answers nothing
        try:
            started = time.monotonic()
            assert await b.gather() == {}
            assert time.monotonic() - started < 2.0
            assert b.errors == 1
            assert not await b.publish() and b.errors == 2
        finally:
            os.kill(instance.process.pid, signal.SIGCONT)
        assert await b.publish()
        await b.close()


async def test_the_cost_benchmark_publishes_and_reads_every_nodes_calls(
    shared: redis.Redis,
) -> None:
    row = await wallboard_cluster_benchmark.measure(shared.url, 20, 5)
    assert row["errors"] == 0 and row["payload_bytes"] > 20 * 100, row
    assert row["publish_ms"]["p50"] > 0 and row["read_other_nodes_ms"]["p50"] > 0, row


# -- two real nodes -------------------------------------------------------------------------


def wallboard(node: harness.RunningServer) -> dict[str, Any]:
    status, view = api(node, "GET", "/api/v1/wallboard")
    assert status == 200, view
    return dict(view)


def calls_on(node: harness.RunningServer, *, source: str | None = None) -> list[dict[str, Any]]:
    return [c for c in wallboard(node)["calls"] if source is None or c.get("node") == source]


def agent_row(node: harness.RunningServer, agent: str) -> dict[str, Any]:
    return next(a for a in wallboard(node)["agents"] if a["agent"] == agent)


async def until(what: str, check: Any, within: float = 20.0) -> Any:
    deadline = time.monotonic() + within
    while True:
        value = await asyncio.to_thread(check)
        if value:
            return value
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.1)


def supervisor_token(node: harness.RunningServer) -> str:
    """A supervisor account on `node` (each node has its own SQLite accounts) and its
    session token."""
    status, made = api(
        node,
        "POST",
        "/api/v1/accounts",
        {"name": "sue", "role": "supervisor", "password": SUPERVISOR_PASSWORD},
    )
    assert status in (201, 409), made
    status, session = api(
        node, "POST", "/api/v1/sessions", {"name": "sue", "password": SUPERVISOR_PASSWORD}
    )
    assert status == 201, session
    return str(session["token"])


async def monitor(node: harness.RunningServer, token: str, call_id: str) -> dict[str, Any]:
    """A supervisor's socket on `node` asks to listen to `call_id`: the answer."""
    async with Page(node) as sup:
        reply = await sup.request("supervisor-auth", token=token)
        assert reply["type"] == "supervisor-auth-ok", reply
        return await sup.request("monitor", call_id=call_id, mode="listen")


async def _agent(browser: Any, node: harness.RunningServer, name: str) -> Any:
    from playwright.async_api import expect

    page = await browser.new_page()
    await page.goto(f"https://127.0.0.1:{node.http_port}/agent/")
    await page.get_by_label("Username").fill(name)
    await page.get_by_label("Password").fill(DEMO_PASSWORD)
    await page.get_by_role("button", name="Log in", exact=True).click()
    await expect(page.locator("#state")).to_contain_text("Paused", timeout=15000)
    await expect(page.locator("#ice-state")).to_have_text("connected", timeout=15000)
    return page


async def _answer(page: Any) -> None:
    from playwright.async_api import expect

    state = page.locator("#state")
    await page.get_by_role("button", name="Ready", exact=True).click()
    await expect(state).to_have_text("Ringing", timeout=15000)
    await page.get_by_role("button", name="Answer", exact=True).click()
    await expect(state).to_have_text("On call", timeout=10000)


@pytest.fixture
def callers(tmp_path: Path) -> Iterator[list[Any]]:
    """The sipp callers a test starts: killed at its end if still there."""
    started: list[Any] = []
    yield started
    for sipp in started:
        if sipp.poll() is None:
            sipp.kill()
            sipp.wait(10)


def _caller(node: harness.RunningServer, tmp_path: Path, name: str) -> Any:
    return start_sipp(
        [
            "-sf",
            str(SCENARIOS / "uac_wait_for_bye.xml"),
            f"127.0.0.1:{node.sip_port}",
            "-s",
            "support",
            "-m",
            "1",
            "-timeout",
            "90",
        ],
        tmp_path,
        name,
    )


async def test_the_wallboard_of_every_node_shows_the_clusters_calls_and_agents_and_monitors_them_from_either_node(  # noqa: E501
    nodes: list[harness.RunningServer],  # noqa: F811
    shared: redis.Redis,
    tmp_path: Path,
    callers: list[Any],
) -> None:
    from playwright.async_api import expect

    a, b = nodes
    token = await asyncio.to_thread(supervisor_token, b)
    async with chromium(tmp_path / "browser", 660.0) as browser:
        agent1 = await _agent(browser, b, "agent1")
        # The supervisor's page on node b shows which node each agent is on.
        board = await browser.new_page()
        errors: list[str] = []
        board.on("pageerror", lambda e: errors.append(str(e)))
        await board.goto(f"https://127.0.0.1:{b.http_port}/supervisor/")
        await log_in(board, "sue", SUPERVISOR_PASSWORD)
        support = board.locator('#queue-rows tr[data-queue="support"]')
        await expect(support).to_be_visible(timeout=10000)
        await expect(board.get_by_role("columnheader", name="Node")).to_be_visible()
        node_of = board.locator('#agent-rows tr[data-agent="agent1"] td.cluster-only')
        await expect(node_of).to_have_text("b", timeout=10000)

        # 1. A caller waits on node a (agent1 paused): node b lists it, with its node, and the
        # page, loaded before, counts it waiting (its snapshot read again).
        callers.append(_caller(a, tmp_path, "first"))
        waiting = await until("node b lists node a's caller", lambda: calls_on(b, source="a"))
        await expect(support.locator("td").nth(1)).to_have_text("1", timeout=10000)
        assert len(waiting) == 1 and waiting[0]["queue"] == "support", waiting
        first = waiting[0]["call_id"]
        assert waiting[0]["answered"] is None
        assert [c["call_id"] for c in calls_on(a, source="a")] == [first]  # a's own
        for node in (a, b):  # where agent1 is, and that its page is connected there
            row = agent_row(node, "agent1")
            assert (row["node"], row["connected"]) == ("b", True), (node.ports, row)

        # 2. agent1 (on b) answers it across nodes: both wallboards show who has it.
        await _answer(agent1)
        answered = await until(
            "the call shows agent1",
            lambda: [c for c in calls_on(b, source="a") if c["answered"] and c["agent"]],
        )
        assert answered[0]["agent"] == "agent1" and answered[0]["call_id"] == first
        assert agent_row(a, "agent1")["call_id"] == first
        # The page shows the call (after a refresh) and listens to it: node b carries its audio
        # (the internal leg from node a is its caller).
        panel = board.get_by_role("complementary", name="Monitoring")
        await expect(panel.locator("#monitor-channel")).to_have_text("connected", timeout=15000)
        row = board.locator("#call-rows tr").filter(has_text="agent1")
        await expect(row).to_have_count(1, timeout=10000)
        await row.get_by_role("button").click()
        mode = panel.locator("#monitor-mode")
        await panel.get_by_role("button", name="Listen", exact=True).click()
        await expect(mode).to_contain_text("Listening", timeout=10000)
        await panel.get_by_role("button", name="Stop", exact=True).click()
        await expect(mode).to_have_text("Not monitoring")
        # audited under the call's id as the wallboard shows it (not node b's internal leg's)
        for action in ("call.monitor", "call.monitor-stop"):
            status, view = api(b, "GET", f"/api/v1/audit?action={action}")
            assert status == 200 and [e["target"] for e in view["entries"]] == [first], view

        # 3. agent2 on node a answers a second caller on node a: node b's page monitors it (a
        # monitor leg to node a).
        agent2 = await _agent(browser, a, "agent2")
        callers.append(_caller(a, tmp_path, "second"))
        await until("the second caller waits", lambda: len(calls_on(b, source="a")) == 2)
        await _answer(agent2)
        second = await until(
            "node b shows agent2's call",
            lambda: [c for c in calls_on(b, source="a") if c["agent"] == "agent2"],
        )
        second_id = second[0]["call_id"]
        row2 = board.locator("#call-rows tr").filter(has_text="agent2")
        await expect(row2).to_have_count(1, timeout=10000)
        # The page reads the snapshot again every 3 s on a cluster's node: the rows stay the same
        # elements (a click landing on a row being replaced missed it, 30 s of retries, in CI).
        await row2.evaluate("tr => { tr.dataset.seen = 'before-refresh'; }")
        snapshot = lambda r: "/api/v1/wallboard" in r.url  # noqa: E731
        async with board.expect_response(snapshot, timeout=10000) as refreshed:
            pass
        await refreshed.value
        await expect(row2).to_have_attribute("data-seen", "before-refresh")
        await row2.get_by_role("button").click()
        await panel.get_by_role("button", name="Listen", exact=True).click()
        await expect(mode).to_contain_text("Listening", timeout=10000)
        await panel.get_by_role("button", name="Stop", exact=True).click()
        await expect(mode).to_have_text("Not monitoring")
        # A socket without a channel gets as far as the channel check on either node.
        reply = await monitor(a, supervisor_token(a), second_id)
        assert reply["type"] == "error" and reply["code"] == "no-channel", reply
        reply = await monitor(b, token, second_id)
        assert reply["type"] == "error" and reply["code"] == "no-channel", reply
        row = agent_row(b, "agent2")
        assert (row["node"], row["connected"], row["call_id"]) == ("a", True, second_id)

        # 4. Node a dies: its key lapses within its TTL and node b drops its calls; agent2,
        # whose page was on node a, is not connected.
        client = redis_sync.Redis.from_url(shared.url)
        try:
            assert json.loads(client.get("wallboard:node:a") or b"{}")["calls"]
            os.kill(a.process.pid, signal.SIGKILL)
            a.process.wait(10)
            # Nothing writes node a's key now: what its TTL left it (at most the 5 s node a
            # gives it; -0.002 when already gone) says when it must lapse, whoever is alive.
            left = int(client.pttl("wallboard:node:a")) / 1000
            read = time.monotonic()
            assert left <= 5.0, left
            await until(
                "node a's key lapsed", lambda: not client.exists("wallboard:node:a"), within=10
            )
            lapsed = time.monotonic() - read
            # (the polls' delay on a loaded machine: up to 1.5 s more)
            assert lapsed <= max(left, 0) + 1.5, f"node a's key outlived its TTL: {lapsed:.1f} s"
        finally:
            client.close()
        assert calls_on(b, source="a") == []
        assert agent_row(b, "agent2")["connected"] is False
        assert agent_row(b, "agent1")["connected"] is True
        # the page: agent2 is not shown connected on node a any more (or is logged out by the
        # ACD, which found node a lost)
        agent2_node = board.locator('#agent-rows tr[data-agent="agent2"] td.cluster-only')
        await expect(agent2_node).to_have_text(re.compile(r"^(a, not connected)?$"), timeout=10000)
        assert errors == []

        # 5. Node b stops at once, its pages still connected: once node a's heartbeat lapsed, b's
        # BYEs to it (the legs of the calls across nodes, the monitor leg) end as on a transport
        # error instead of holding the stop for the 5-second shutdown grace (5.3 s before, 0.4 s
        # now), and every page's socket (agent1's, the supervisor's) closes with 1001 at once
        # instead of holding the HTTP server's stop (8.4-8.9 s more before). The bound is under
        # the grace (either regression takes longer), not the 0.4 s: this machine is shared.
        client = redis_sync.Redis.from_url(shared.url)
        try:
            await until(
                "node a's heartbeat lapsed",
                lambda: not client.exists(ALIVE_PREFIX + "a"),
                within=10,
            )
        finally:
            client.close()
        started = time.monotonic()
        assert await asyncio.to_thread(b.stop) == 0, b.log()[-3000:]
        stopping = time.monotonic() - started
        assert "node a is dead, its BYEs are not waited for" in b.log()
        assert "event=pages-closed" in b.log()
        assert stopping < 4.5, f"node b took {stopping:.1f} s to stop"
