"""`omlmedia.events.ClusterFeed` in process, on a real PostgreSQL written by two nodes' event
logs: a reader from the start gets every committed event of both, in commit order, from the
database behind the feed's bounded memory and then live; a live reader that does not read is cut
off; the feed's connections ended on the server side are made again and nothing is skipped."""

from __future__ import annotations

import asyncio
import time

import asyncpg

from omlmedia.events import FEED_APPLICATION, ClusterFeed, EventFilter, EventLog, Subscription
from omlmedia.storage import AsyncStore, Store
from tests.cluster import postgres

KEEP = 40
"""The feed's memory in the test: far fewer events than the test writes."""


async def _stored(dsn: str) -> list[int]:
    db = await asyncpg.connect(dsn)
    try:
        return [int(r["id"]) for r in await db.fetch("SELECT id FROM events ORDER BY pos")]
    finally:
        await db.close()


async def _read_until(feed: ClusterFeed, sub: Subscription, count: int) -> list[int]:
    got: list[int] = []
    deadline = time.monotonic() + 20
    while len(got) < count:
        assert time.monotonic() < deadline, f"read {len(got)} of {count}"
        if sub.cursor >= feed.last_id:
            async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                await feed.wait(sub.cursor)
        got.extend(ev.id for ev in await feed.read(sub, 25))
    return got


async def _publish(logs: list[EventLog], count: int) -> None:
    for n in range(count):
        logs[n % 2].publish("agent.state", agent=f"agent{n % 2 + 1}", data={"n": n})
        if n % 10 == 9:
            await asyncio.gather(*(log.store.flush() for log in logs if log.store is not None))


async def test_a_feed_serves_both_nodes_in_commit_order_cuts_a_slow_reader_and_reconnects(
    pg: postgres.Postgres,
) -> None:
    dsn = postgres.fresh_database(pg)
    stores = [AsyncStore(Store(dsn, node=name, writer=True)) for name in ("a", "b")]
    mine = EventLog(stores[0], cluster=True, keep=KEEP)
    theirs = EventLog(stores[1])
    feed = mine.cluster
    assert feed is not None and mine.stream is feed
    mine.start()
    try:
        assert await feed.ready()
        everything = feed.subscribe(EventFilter(), limit=10_000, after=0)
        slow = feed.subscribe(EventFilter(), limit=10)  # live, never reads
        await _publish([mine, theirs], 200)
        got = await _read_until(feed, everything, 200)
        assert got == await _stored(dsn)
        assert len(feed._events) < 2 * KEEP  # bounded: the rest was read from the database
        assert slow.overflowed and slow.cut.is_set() and slow not in feed.subscribers
        assert feed.overflowed == 1 == mine.stream_dropped

        assert await feed.cursor_of(got[0]) is not None  # its reader's connection open
        # The feed's connections ended by the server (as by a restart, or an administrator).
        admin = await asyncpg.connect(dsn)
        try:
            ended = await admin.fetchval(
                "SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE application_name = $1",
                FEED_APPLICATION,
            )
        finally:
            await admin.close()
        assert ended == 2  # its follower and its reader
        await _publish([mine, theirs], 60)
        got += await _read_until(feed, everything, 60)
        assert got == await _stored(dsn) and len(got) == len(set(got)) == 260
        # A reader resuming after one event gets the rest, from any place in the order (the
        # reader's connection, ended above, is made again at its first use).
        middle = got[130]
        after = await feed.cursor_of(middle)
        assert after is not None
        resumed = feed.subscribe(EventFilter(), limit=10_000, after=after)
        assert await _read_until(feed, resumed, 129) == got[131:]
        assert await feed.cursor_of(10**12) is None
    finally:
        await mine.close()
        await theirs.close()
        for store in stores:
            await store.close()
