"""The calls of a dead node recorded by the survivors (`omlmedia.lost_calls`), against a real
Redis and a real PostgreSQL: once a node's heartbeat lapses, its calls in progress become records
with cause ``node-lost`` ended when it was last seen, each exactly once even when two survivors
sweep together; a live node's calls and the survivor's own are never touched; a node cut off
from Redis does nothing; a call wrongly taken for lost gets its real record when it ends."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from omlmedia.lost_calls import ALIVE_PREFIX, CAUSE, LostCall, LostCalls
from omlmedia.storage import CallRecord, Store
from tests.cluster import postgres
from tests.cluster import redis as redis_server

TTL = 0.4


@pytest.fixture(scope="module")
def pg() -> Iterator[postgres.Postgres]:
    postgres.require()
    with postgres.postgres() as instance:
        yield instance


@pytest.fixture(scope="module")
def redis() -> Iterator[redis_server.Redis]:
    redis_server.require()
    with redis_server.redis() as instance:
        yield instance


@pytest.fixture
def dsn(pg: postgres.Postgres) -> str:
    return postgres.fresh_database(pg)


@pytest.fixture
async def survivors(
    redis: redis_server.Redis, dsn: str, tmp_path: Path
) -> AsyncIterator[tuple[LostCalls, LostCalls, list[LostCall]]]:
    told: list[LostCall] = []
    made = [LostCalls(redis.url, name, dsn, ttl=TTL, on_lost=told.extend) for name in ("n2", "n3")]
    try:
        yield made[0], made[1], told
    finally:
        for item in made:
            await item.close()


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
    redis: redis_server.Redis,
    dsn: str,
    survivors: tuple[LostCalls, LostCalls, list[LostCall]],
) -> None:
    n2, _, told = survivors
    start = time.time() - 30
    dead = open_calls(dsn, "n1", {"a1": "sales", "a2": "support"}, start)
    mine = open_calls(dsn, "n2", {"b1": "sales"}, start)
    n1 = LostCalls(redis.url, "n1", dsn, ttl=TTL)
    await n1.beat()
    last_seen = time.time()
    await n1.close()
    await n2.beat()
    # While n1's heartbeat lives, its calls are its own.
    assert await n2.sweep() == []
    await wait_lapsed(redis.url, "n1")

    lost = await n2.sweep()

    assert sorted(call.call_id for call in lost) == ["a1", "a2"]
    assert told == lost and n2.recorded == 2
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
        events = [row.event for row in dead.queue_log(call_id=call_id)]
        assert events == ["closed-node-lost"]
        (entry,) = dead.queue_log(call_id=call_id)
        assert entry.data == {"node": "n1", "cause": CAUSE} and entry.queue == queue
    # The survivor's own call is still in progress; nothing is left of n1's.
    assert dead.open_calls() == ["b1"]
    assert await n2.sweep() == []
    dead.close()
    mine.close()


async def test_two_survivors_sweeping_together_record_each_lost_call_once(
    redis: redis_server.Redis,
    dsn: str,
    survivors: tuple[LostCalls, LostCalls, list[LostCall]],
) -> None:
    n2, n3, told = survivors
    calls = {f"c{i}": "sales" for i in range(40)}
    store = open_calls(dsn, "n1", calls, time.time() - 5)
    n1 = LostCalls(redis.url, "n1", dsn, ttl=TTL)
    await n1.beat()
    await n1.close()
    await wait_lapsed(redis.url, "n1")
    await n2.beat()
    await n3.beat()

    first, second = await asyncio.gather(n2.sweep(), n3.sweep())

    ids = sorted(call.call_id for call in first + second)
    assert ids == sorted(calls)  # every call once, none twice
    assert len(told) == len(calls)
    assert sorted(record.call_id for record in store.call_records()) == sorted(calls)
    entries = [row for row in store.queue_log() if row.event == "closed-node-lost"]
    assert len(entries) == len(calls)
    assert store.open_calls() == []
    store.close()


async def test_the_calls_of_a_node_that_keeps_beating_are_left_alone(
    redis: redis_server.Redis,
    dsn: str,
    survivors: tuple[LostCalls, LostCalls, list[LostCall]],
) -> None:
    n2, _, told = survivors
    store = open_calls(dsn, "n1", {"live": "sales"}, time.time())
    n1 = LostCalls(redis.url, "n1", dsn, ttl=TTL, interval=TTL / 4)
    await n1.start()
    try:
        await n2.start()
        deadline = time.monotonic() + 3 * TTL
        while time.monotonic() < deadline:  # several TTLs of sweeps by n2
            assert await n2.sweep() == []
            await asyncio.sleep(TTL / 4)
    finally:
        await n1.close()
    assert told == [] and store.open_calls() == ["live"]
    store.close()


async def test_a_node_that_cannot_reach_redis_records_nothing(dsn: str) -> None:
    store = open_calls(dsn, "n1", {"x": "sales"}, time.time())
    cut_off = LostCalls(f"redis://127.0.0.1:{postgres.free_port()}/0", "n2", dsn, ttl=TTL)
    try:
        assert await cut_off.beat() is False
        assert await cut_off.sweep() == []
        assert cut_off.errors >= 2
    finally:
        await cut_off.close()
    assert store.open_calls() == ["x"] and store.call_records() == []
    store.close()


async def test_a_call_taken_for_lost_gets_its_real_record_when_it_ends_on_its_node(
    redis: redis_server.Redis,
    dsn: str,
    survivors: tuple[LostCalls, LostCalls, list[LostCall]],
) -> None:
    n2, _, _ = survivors
    start = time.time() - 10
    node = open_calls(dsn, "n1", {"late": "sales"}, start)
    # n1 is alive but cut off from Redis: its heartbeat lapses and n2 records its call.
    await wait_lapsed(redis.url, "n1")
    await n2.beat()
    (lost,) = await n2.sweep()
    assert lost.call_id == "late"
    # The call then ends on n1, which writes its record as usual.
    node.call_ended(
        CallRecord(call_id="late", start=start, end=time.time(), queue="sales", cause="normal")
    )
    node.flush()
    (record,) = node.call_records()
    assert (record.cause, record.queue) == ("normal", "sales")
    node.close()
