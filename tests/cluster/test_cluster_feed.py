"""`omlmedia.events.ClusterFeed` in process, on a real PostgreSQL written by two nodes' event
logs: a reader from the start gets every committed event of both, in commit order, from the
database behind the feed's bounded memory and then live; a live reader that does not read is cut
off; the feed's connections ended on the server side are made again and nothing is skipped."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable

import asyncpg
import pytest

from omlmedia import events
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
            ended = await admin.fetchval(  # in this test's database: the PostgreSQL is shared
                "SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE application_name = $1 AND datname = current_database()",
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


class _Cutter:
    """A TCP relay to PostgreSQL whose open connections can be cut silently (`cut`): their bytes
    dropped both ways, their sockets left open, as by a firewall or a NAT that forgot the flow;
    connections made afterwards are relayed."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.generation = 0
        self.writers: list[asyncio.StreamWriter] = []
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    def cut(self) -> None:
        self.generation += 1

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.port)
        self.writers += [writer, up_writer]
        generation = self.generation

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError):
                while data := await source.read(65536):
                    if self.generation == generation:
                        sink.write(data)
                        await sink.drain()
            sink.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    async def close(self) -> None:
        for writer in self.writers:
            writer.close()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


async def _head(dsn: str) -> int:
    db = await asyncpg.connect(dsn)
    try:
        return int(await db.fetchval("SELECT COALESCE(MAX(pos), 0) FROM events"))
    finally:
        await db.close()


async def _until(check: Callable[[], Awaitable[bool]], what: str) -> None:
    deadline = time.monotonic() + 20
    while not await check():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.02)


async def test_an_idle_feed_whose_connection_was_lost_silently_serves_a_reader_that_comes_later(
    pg: postgres.Postgres, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A feed nobody reads looks at the database only every `CLUSTER_IDLE` seconds (the
    notifications keep its place): its connection lost without a word (the relay drops its
    bytes, the socket stays open) while another node commits, a reader from a cursor still
    gets every event, once, in order (subscribing wakes the follower, which finds the loss and
    connects again), and a stream's reader from now on starts at the events' real head
    (`ready` looks first), not at the place the feed had when the connection went silent."""
    monkeypatch.setattr(events, "CLUSTER_TIMEOUT", 1.0)  # a silent query given up sooner
    monkeypatch.setattr(events, "CLUSTER_POLL", 0.1)
    dsn = postgres.fresh_database(pg)
    cutter = _Cutter(pg.port)
    relayed = dsn.replace(f":{pg.port}/", f":{await cutter.start()}/")
    store = AsyncStore(Store(dsn, node="b", writer=True))
    theirs = EventLog(store)
    feed = ClusterFeed(relayed, EventLog(), keep=KEEP)
    feed.start()
    try:
        assert await feed.ready()

        async def placed() -> bool:
            return feed.last_id == await _head(dsn)

        await _publish([theirs, theirs], 10)
        await _until(placed, "the notifications move the idle feed's place")
        looks = feed.looks
        await _publish([theirs, theirs], 10)
        await _until(placed, "the notifications move the idle feed's place")
        assert feed.looks == looks  # no query of its own for them
        before = await _stored(dsn)

        cutter.cut()
        await _publish([theirs, theirs], 30)
        assert feed.last_id < await _head(dsn)  # it heard none of them
        after = await feed.cursor_of(before[-1])  # the reader's connection: a new one
        assert after is not None
        reader = feed.subscribe(EventFilter(), limit=10_000, after=after)
        assert await _read_until(feed, reader, 30) == (await _stored(dsn))[20:]
        assert feed.looks > looks
        feed.unsubscribe(reader)

        cutter.cut()
        await _publish([theirs, theirs], 10)
        head = await _head(dsn)
        assert feed.last_id < head
        # (its last notification now older than CLUSTER_POLL: `ready` looks before a stream
        # from now on subscribes)
        monkeypatch.setattr(events, "CLUSTER_POLL", 0.0)
        assert await feed.ready()
        now = feed.subscribe(EventFilter(), limit=10_000)
        monkeypatch.setattr(events, "CLUSTER_POLL", 0.1)
        assert now.cursor == head
        await _publish([theirs, theirs], 10)
        assert await _read_until(feed, now, 10) == (await _stored(dsn))[60:]
        assert now.cursor == await _head(dsn)
        feed.unsubscribe(now)

        # Idle again, its connection ended by the server (a restart, an administrator): it is
        # made again at once (the connection's close wakes the follower), not at the next
        # idle look, and the events committed meanwhile move its place.
        monkeypatch.setattr(events, "CLUSTER_IDLE", 600.0)
        admin = await asyncpg.connect(dsn)
        try:
            await _until(placed, "the idle feed's place")
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = $1 AND datname = current_database()",
                FEED_APPLICATION,
            )
        finally:
            await admin.close()
        await _publish([theirs, theirs], 10)
        await _until(placed, "the feed, connected again, finds where the events stand")
    finally:
        await feed.close()
        await theirs.close()
        await store.close()
        await cutter.close()
