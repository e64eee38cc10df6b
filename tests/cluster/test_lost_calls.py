"""The calls of a dead node recorded by the survivors (`omlmedia.lost_calls`), against a real
Redis and a real PostgreSQL: once a node's heartbeat lapses, its calls in progress become records
with cause ``node-lost`` ended when it was last seen, each exactly once even when two survivors
sweep together; a live node's calls and the survivor's own are never touched; a key lost with
Redis (restarted empty) is no death when its node beats again; a node cut off from Redis does
nothing, and once Redis is back waits for the live nodes to beat again before it sweeps; a call
wrongly taken for lost gets its real record when it ends; while every node beats, a sweep asks
Redis only (the database is read on the first sweep and every tenth). The nodes' monotonic
clock is the tests' (`Clock`); Redis's key expiry is real."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from benchmarks import redisserver
from omlmedia.lost_calls import (
    ALIVE_PREFIX,
    CAUSE,
    FULL_READ_EVERY,
    SEEN,
    LostCall,
    LostCalls,
)
from omlmedia.storage import CallRecord, Store
from omlmedia.storage_pg import PgConnection
from tests.cluster import postgres
from tests.cluster import redis as redis_server

TTL = 0.4
INTERVAL = 0.1


class Clock:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def dsn(pg: postgres.Postgres) -> str:
    return postgres.fresh_database(pg)


@pytest.fixture
def clock() -> Clock:
    return Clock()


def node(
    url: str, name: str, dsn: str, clock: Clock, told: list[LostCall] | None = None
) -> LostCalls:
    return LostCalls(
        url,
        name,
        dsn,
        ttl=TTL,
        interval=INTERVAL,
        monotonic=clock,
        on_lost=told.extend if told is not None else None,
    )


@dataclass
class Survivors:
    """Nodes n2 and n3 on `url`'s Redis and `dsn`'s database, each having beaten for long enough
    to sweep; `told` is what their `on_lost` heard."""

    url: str
    dsn: str
    clock: Clock
    n2: LostCalls
    n3: LostCalls
    told: list[LostCall]

    async def beat_once(self, name: str = "n1") -> float:
        """Node `name` beats once and stops; when it was last seen alive."""
        once = node(self.url, name, self.dsn, self.clock)
        await once.beat()
        seen = time.time()
        await once.close()
        return seen


@pytest.fixture
async def survivors(shared: redis_server.Redis, dsn: str, clock: Clock) -> AsyncIterator[Survivors]:
    told: list[LostCall] = []
    made = [node(shared.url, name, dsn, clock, told) for name in ("n2", "n3")]
    try:
        for item in made:
            assert await item.beat()
        clock.advance(TTL + made[0].confirm)
        yield Survivors(shared.url, dsn, clock, made[0], made[1], told)
    finally:
        for item in made:
            await item.close()


async def confirmed(survivor: LostCalls, clock: Clock) -> list[LostCall]:
    """Sweep once (a lapsed node is then noted missing), let `confirm` pass, sweep again."""
    assert await survivor.sweep() == []
    clock.advance(survivor.confirm)
    return await survivor.sweep()


def open_calls(dsn: str, node: str, calls: dict[str, str], start: float) -> Store:
    """Note `calls` (call id → queue) in progress on `node`, committed."""
    store = Store(dsn, node=node)
    for call_id, queue in calls.items():
        store.call_started(call_id, start, {"queue": queue, "caller": "100", "trunk": "pbx"})
    store.flush()
    return store


async def wait_lapsed(url: str, node: str) -> None:
    """Wait until `node`'s heartbeat key has expired."""
    client = aioredis.from_url(url)
    try:
        deadline = time.monotonic() + 10
        while await client.exists(ALIVE_PREFIX + node):
            assert time.monotonic() < deadline, f"{node}'s heartbeat never lapsed"
            await asyncio.sleep(0.05)
    finally:
        await client.aclose()


async def test_the_calls_of_a_node_whose_heartbeat_lapsed_become_node_lost_records(
    survivors: Survivors,
) -> None:
    n2, clock = survivors.n2, survivors.clock
    start = time.time() - 30
    dead = open_calls(survivors.dsn, "n1", {"a1": "sales", "a2": "support"}, start)
    mine = open_calls(survivors.dsn, "n2", {"b1": "sales"}, start)
    # While n1's heartbeat lives, its calls are its own, however long n2 sweeps. n1 beats
    # before each sweep: its key lives TTL (0.4 s) of real time, which three sweeps (the first
    # reads PostgreSQL) could outlast on a loaded machine, and then the sweeps took n1 for dead.
    for _ in range(3):
        last_seen = await survivors.beat_once("n1")
        assert await n2.sweep() == []
        clock.advance(n2.confirm)
    await wait_lapsed(survivors.url, "n1")

    lost = await confirmed(n2, clock)

    assert sorted(call.call_id for call in lost) == ["a1", "a2"]
    assert survivors.told == lost and n2.recorded == 2
    records = {record.call_id: record for record in dead.call_records()}
    assert set(records) == {"a1", "a2"}
    for call_id, queue in (("a1", "sales"), ("a2", "support")):
        record = records[call_id]
        assert (record.cause, record.queue, record.caller, record.trunk) == (
            CAUSE,
            queue,
            "100",
            "pbx",
        )
        assert record.start == pytest.approx(start)
        # Ended when n1 was last known alive, not when n2 noticed.
        assert record.end == pytest.approx(last_seen, abs=0.5)
        (entry,) = dead.queue_log(call_id=call_id)
        assert entry.event == "closed-node-lost"
        assert entry.data == {"node": "n1", "cause": CAUSE} and entry.queue == queue
    # The survivor's own call is still in progress; nothing is left of n1's.
    assert dead.open_calls() == ["b1"]
    assert await n2.sweep() == []
    dead.close()
    mine.close()


async def test_two_survivors_sweeping_together_record_each_lost_call_once(
    survivors: Survivors,
) -> None:
    n2, n3 = survivors.n2, survivors.n3
    calls = {f"c{i}": "sales" for i in range(40)}
    store = open_calls(survivors.dsn, "n1", calls, time.time() - 5)
    await survivors.beat_once("n1")
    await wait_lapsed(survivors.url, "n1")
    assert await n2.sweep() == [] and await n3.sweep() == []  # n1 noted missing by both
    survivors.clock.advance(n2.confirm)

    first, second = await asyncio.gather(n2.sweep(), n3.sweep())

    ids = sorted(call.call_id for call in first + second)
    assert ids == sorted(calls)  # every call once, none twice
    assert len(survivors.told) == len(calls)
    assert sorted(record.call_id for record in store.call_records()) == sorted(calls)
    entries = [row for row in store.queue_log() if row.event == "closed-node-lost"]
    assert len(entries) == len(calls)
    assert store.open_calls() == []
    store.close()


async def test_the_calls_of_a_node_that_keeps_beating_are_left_alone(
    shared: redis_server.Redis, dsn: str
) -> None:
    told: list[LostCall] = []
    store = open_calls(dsn, "n1", {"live": "sales"}, time.time())
    # Both on their own loops and the real clock: n1 beats, n2 beats and sweeps.
    n1 = LostCalls(shared.url, "n1", dsn, ttl=TTL, interval=INTERVAL)
    live = LostCalls(shared.url, "n2", dsn, ttl=TTL, interval=INTERVAL, on_lost=told.extend)
    await n1.start()
    await live.start()
    try:
        # Several TTLs and confirmation windows of n2's sweeps.
        await asyncio.sleep(3 * (TTL + 2 * live.confirm))
    finally:
        await n1.close()
        await live.close()
    assert told == [] and store.open_calls() == ["live"]
    assert live.errors == 0 and n1.errors == 0
    store.close()


async def test_a_key_lost_with_redis_is_no_death_when_its_node_beats_again(
    survivors: Survivors,
) -> None:
    n2 = survivors.n2
    store = open_calls(survivors.dsn, "n1", {"kept": "sales"}, time.time())
    n1 = node(survivors.url, "n1", survivors.dsn, survivors.clock)
    await n1.beat()
    client = aioredis.from_url(survivors.url)
    try:
        await client.delete(ALIVE_PREFIX + "n1")  # as a Redis restarted empty
    finally:
        await client.aclose()
    assert await n2.sweep() == []  # n1 noted missing
    await n1.beat()  # its next heartbeat, within the interval
    survivors.clock.advance(n2.confirm)
    assert await n2.sweep() == []
    await n1.close()
    assert survivors.told == [] and store.open_calls() == ["kept"]
    store.close()


async def test_a_node_that_cannot_reach_redis_records_nothing(dsn: str, clock: Clock) -> None:
    store = open_calls(dsn, "n1", {"x": "sales"}, time.time())
    cut_off = node(f"redis://127.0.0.1:{postgres.free_port()}/0", "n2", dsn, clock)
    try:
        assert await cut_off.beat() is False
        clock.advance(10)
        assert await cut_off.sweep() == []
        assert cut_off.errors >= 1
    finally:
        await cut_off.close()
    assert store.open_calls() == ["x"] and store.call_records() == []
    store.close()


async def test_after_its_redis_came_back_a_node_waits_for_the_live_nodes_to_beat_again(
    dsn: str, clock: Clock, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    redis_server.require()
    port = redisserver.free_port()
    (tmp_path / "redis").mkdir()
    process, _ = redisserver.start(tmp_path / "redis", port=port)
    url = f"redis://127.0.0.1:{port}/0"
    store = open_calls(dsn, "n1", {"y": "sales"}, time.time())
    n2 = node(url, "n2", dsn, clock)
    try:
        assert await n2.beat()
        clock.advance(TTL + n2.confirm)
        redisserver.stop(process)  # Redis goes away (and n1's key with it)...
        assert await n2.beat() is False
        assert await n2.beat() is False
        process, _ = redisserver.start(tmp_path / "redis", port=port)  # ... and comes back empty
        assert await n2.beat()
        # The outage is logged once, however long it lasts, and so is its end.
        said = [r.getMessage() for r in caplog.records if r.name == "omlmedia.lost_calls"]
        assert len(said) == 2 and "Redis answers again" in said[1], said
        assert n2.errors == 2
        # n1 has no key, but every live node's key lapsed too: n2 waits before it judges.
        for _ in range(3):
            assert await n2.sweep() == []
            clock.advance(n2.confirm)
        assert store.open_calls() == ["y"]
        # Past TTL and the confirmation after Redis came back, n1 (silent) is dead.
        clock.advance(TTL)
        (lost,) = await confirmed(n2, clock)
        assert lost.call_id == "y"
    finally:
        await n2.close()
        redisserver.stop(process)
    store.close()


async def test_a_call_taken_for_lost_gets_its_real_record_when_it_ends_on_its_node(
    survivors: Survivors,
) -> None:
    start = time.time() - 10
    n1 = open_calls(survivors.dsn, "n1", {"late": "sales"}, start)
    # n1 is alive but cut off from Redis: its heartbeat lapses and n2 records its call.
    await wait_lapsed(survivors.url, "n1")
    (lost,) = await confirmed(survivors.n2, survivors.clock)
    assert lost.call_id == "late"
    # The call then ends on n1, which writes its record as usual.
    n1.call_ended(
        CallRecord(call_id="late", start=start, end=time.time(), queue="sales", cause="normal")
    )
    n1.flush()
    (record,) = n1.call_records()
    assert (record.cause, record.queue) == ("normal", "sales")
    n1.close()


async def test_a_sweep_waiting_for_the_database_does_not_delay_the_heartbeat(
    shared: redis_server.Redis, dsn: str
) -> None:
    Store(dsn).close()  # the schema
    holder, watcher = PgConnection(dsn), PgConnection(dsn)
    client = aioredis.from_url(shared.url)
    beating = LostCalls(shared.url, "n2", dsn, ttl=TTL, interval=INTERVAL)
    try:
        holder.execute("BEGIN")
        holder.execute("LOCK TABLE open_calls IN ACCESS EXCLUSIVE MODE")
        await beating.start()
        # Its sweep is stuck behind the lock...
        deadline = time.monotonic() + 10
        waiting = "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
        while not (watcher.execute(waiting).fetchone() or (0,))[0]:
            assert time.monotonic() < deadline, "the sweep never waited for the lock"
            await asyncio.sleep(0.02)
        # ... and its heartbeat goes on: three more beats meanwhile.
        beats = {await client.get(ALIVE_PREFIX + "n2")}
        while len(beats) < 4:
            assert time.monotonic() < deadline, beats
            await asyncio.sleep(0.02)
            beats.add(await client.get(ALIVE_PREFIX + "n2"))
        assert beating.errors == 0
    finally:
        holder.execute("ROLLBACK")
        await beating.close()
        await client.aclose()
        holder.close()
        watcher.close()


async def test_with_every_node_beating_a_sweep_leaves_the_database_alone_but_every_tenth(
    survivors: Survivors,
) -> None:
    n2, n3 = survivors.n2, survivors.n3
    client = aioredis.from_url(survivors.url)
    await client.delete(SEEN)  # the nodes of the tests before, long dead
    await client.aclose()
    store = open_calls(survivors.dsn, "n3", {"kept": "sales"}, time.time())
    holder = PgConnection(survivors.dsn)
    try:
        assert await n2.beat() and await n3.beat()  # (a key lives `TTL`: n3 beats each sweep)
        assert await n2.sweep() == []  # the first sweep reads the open calls
        holder.execute("BEGIN")
        holder.execute("LOCK TABLE open_calls IN ACCESS EXCLUSIVE MODE")
        # n3 beats: the next sweeps ask Redis only, so the lock holds none of them up
        for _ in range(FULL_READ_EVERY - 1):
            assert await n3.beat()
            assert await asyncio.wait_for(n2.sweep(), 5) == []
        # the tenth reads the database again (a node Redis does not know is found there)
        tenth = asyncio.ensure_future(n2.sweep())
        await asyncio.sleep(0.3)
        assert not tenth.done()
        holder.execute("ROLLBACK")
        assert await asyncio.wait_for(tenth, 5) == []
        assert survivors.told == [] and store.open_calls() == ["kept"] and n2.errors == 0
    finally:
        if holder.in_transaction:
            holder.execute("ROLLBACK")
        holder.close()
        store.close()


async def test_lapsed_names_the_nodes_that_beat_and_whose_key_is_away_and_none_without_redis(
    survivors: Survivors, dsn: str, clock: Clock
) -> None:
    # What a stopping server asks to skip waiting for its BYEs to a dead node
    # (`omlmedia.server.Server._give_up_on_dead_nodes`).
    n2, n3 = survivors.n2, survivors.n3
    await survivors.beat_once("n1")
    await wait_lapsed(survivors.url, "n1")
    assert await n3.beat()  # alive (its key lives `TTL`)
    # n1 beat and lapsed: dead; n3 alive; a name that never beat is never taken for dead
    assert await n2.lapsed(["n1", "n3", "never-beat"], within=2.0) == {"n1"}
    assert await n2.lapsed([], within=2.0) == set()
    cut_off = node(f"redis://127.0.0.1:{postgres.free_port()}/0", "n4", dsn, clock)
    try:
        started = time.monotonic()
        assert await cut_off.lapsed(["n1"], within=0.5) == set()  # a doubt: nobody is dead
        assert time.monotonic() - started < 2.0
        assert cut_off.errors == 1
    finally:
        await cut_off.close()
