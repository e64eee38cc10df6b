"""A supervisor's page behind HAProxy (`contrib/haproxy/haproxy.cfg` as shipped) when its node
stops (SIGTERM, a planned stop): two real nodes sharing a throwaway Redis and PostgreSQL (the
accounts and the API's session tokens are there: on SQLite each node has its own, and the page
must log in again); the page (Chromium) is back on the other node at once without logging in:
its monitoring socket logged in there with a new audio channel, its event stream live again."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable
from pathlib import Path

from benchmarks import harness
from tests.cluster import postgres, redis
from tests.cluster.test_haproxy import nodes_behind_haproxy
from tests.cluster.test_shared_database import api
from tests.interop.browser import chromium
from tests.interop.pages import log_in

PASSWORD = "supervise-the-stop-1"


def connected_here(node: harness.RunningServer) -> int:
    """How many supervisor sockets logged in on `node` (its log's count)."""
    return node.log().count("event=supervisor-connected")


async def test_a_supervisor_page_behind_haproxy_is_back_on_the_other_node_at_once_when_its_node_stops(  # noqa: E501
    shared: redis.Redis, pg: postgres.Postgres, tmp_path: Path
) -> None:
    from playwright.async_api import expect

    dsn = postgres.fresh_database(pg)

    def config(name: str) -> Callable[[str], str]:
        return lambda text: (
            f'{text}\n[storage]\ndsn = "{dsn}"\nnode = "{name}"\n'
            f'\n[cluster]\nredis_url = "{shared.url}"\n'
        )

    with nodes_behind_haproxy(tmp_path, [config("n1"), config("n2")]) as (nodes, port):
        account = {"name": "sue", "role": "supervisor", "password": PASSWORD}
        status, body = await asyncio.to_thread(api, nodes[0], "POST", "/api/v1/accounts", account)
        assert status == 201, body
        async with chromium(tmp_path / "browser", 880.0) as browser:
            page = await browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            snapshots: list[str] = []
            page.on(
                "request",
                lambda r: snapshots.append(r.url) if "/api/v1/wallboard" in r.url else None,
            )
            await page.goto(f"https://127.0.0.1:{port}/supervisor/")
            await log_in(page, "sue", PASSWORD)
            panel = page.get_by_role("complementary", name="Monitoring")
            channel = panel.locator("#monitor-channel")
            stream = page.locator("#stream-state")
            await expect(channel).to_have_text("connected", timeout=15000)
            await expect(stream).to_have_text("live", timeout=10000)
            await page.evaluate("window.omlMonitor.pc.omlTag = 'the first one'")
            counts = [connected_here(node) for node in nodes]
            assert sorted(counts) == [0, 1], counts
            first, other = (nodes[0], nodes[1]) if counts[0] else (nodes[1], nodes[0])

            first.process.send_signal(signal.SIGTERM)
            began = time.monotonic()
            stopped = back = None
            while stopped is None or back is None:
                now = time.monotonic() - began
                if stopped is None and first.process.poll() is not None:
                    stopped = now
                if back is None and connected_here(other) == 1:
                    back = now
                assert now < 10, (stopped, back)
                await asyncio.sleep(0.02)
            await expect(channel).to_have_text("connected", timeout=10000)
            channel_at = time.monotonic() - began
            # The event stream, on the stopped node too (HAProxy balances by source), ended
            # with 1001: the wallboard read the other node's snapshot and went on live.
            deadline = time.monotonic() + 15
            while len(snapshots) < 2:
                assert time.monotonic() < deadline, snapshots
                await asyncio.sleep(0.02)
            await expect(stream).to_have_text("live")
            assert await page.evaluate("window.omlMonitor.pc.omlTag") is None  # a new channel
            await expect(panel.locator("#monitor-status")).to_have_text("")  # nothing was lost
            assert not await page.get_by_label("Password").is_visible()
            assert first.process.returncode == 0, first.log()[-3000:]
            print(
                f"\nSIGTERM -> node stopped {stopped:.2f} s, the supervisor's socket logged in on "
                f"the other node {back:.2f} s, its audio channel connected {channel_at:.2f} s"
            )
            # Under 4.5 s, not near the 0.14-0.61 s measured: the regressions these bounds catch
            # take longer (the stream's `ready` held the stop 5 s; an audio channel left to ICE
            # consent freshness came back 8.8-11.3 s after), and this machine is shared.
            assert stopped < 4.5, first.log()[-3000:]
            assert back < 4.5 and channel_at < 5.0
            assert errors == []


async def test_a_closed_cluster_feed_answers_a_late_stream_at_once(pg: postgres.Postgres) -> None:
    """A stream opened on a stopping node (a page reconnecting at once after its stream's 1001,
    over a connection still open) is refused at once: `ready` was a 5 s wait for a follower
    already stopped, which held the node's stop 5 s; a subscription is cut at once."""
    from omlmedia.events import ClusterFeed, EventFilter, EventLog
    from omlmedia.storage import AsyncStore, Store

    dsn = postgres.fresh_database(pg)
    store = AsyncStore(Store(dsn, node="a", writer=True))  # the schema
    feed = ClusterFeed(dsn, EventLog(), keep=100)
    feed.start()
    try:
        assert await feed.ready()
    finally:
        await feed.close()
        await store.close()
    started = time.monotonic()
    assert not await feed.ready()
    assert time.monotonic() - started < 1.0
    assert feed.subscribe(EventFilter()).cut.is_set()
