"""The event log: monotonic ids that survive a restart, the store's batched writer, replays
that combine the store and memory exactly once, filters, and subscribers that fall behind."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from omlmedia.events import (
    NO_EVENTS,
    Event,
    EventFilter,
    EventLog,
    queue_event_type,
)
from omlmedia.storage import AsyncStore, Store


def open_log(path: Path, keep: int = 10_000) -> tuple[AsyncStore, EventLog]:
    store = AsyncStore(Store(path / "omlmedia.db"))
    return store, EventLog(store, clock=lambda: 1000.0, keep=keep)


async def replayed(log: EventLog, after: int, match: EventFilter | None = None) -> list[Event]:
    found: list[Event] = []
    async for batch in log.replay(after, log.last_id, match or EventFilter()):
        found.extend(batch)
    return found


async def test_ids_increase_and_continue_after_a_restart(tmp_path: Path) -> None:
    store, log = open_log(tmp_path)
    first = [log.publish("call.started", call_id=f"c{i}") for i in range(3)]
    assert [ev.id for ev in first] == [1, 2, 3]
    await log.close()
    await store.close()  # a graceful stop commits what is queued

    store, log = open_log(tmp_path)
    assert log.last_id == 3
    assert log.publish("call.ended", call_id="c0", data={"cause": "bye"}).id == 4
    events = await replayed(log, 0)
    assert [(ev.id, ev.type, ev.call_id) for ev in events] == [
        (1, "call.started", "c0"),
        (2, "call.started", "c1"),
        (3, "call.started", "c2"),
        (4, "call.ended", "c0"),
    ]
    assert events[-1].data == {"cause": "bye"}
    await log.close()
    await store.close()


async def test_events_are_committed_by_the_stores_writer_with_the_queue_log(
    tmp_path: Path,
) -> None:
    store, log = open_log(tmp_path)
    log.publish("agent.state", agent="agent1", data={"state": "ready"})
    reader = Store(tmp_path / "omlmedia.db")
    assert reader.events(0, 10) == []  # queued, not yet committed: the loop never waited
    assert await store.flush() == 1
    assert [row[:3] for row in reader.events(0, 10)] == [(1, 1000.0, "agent.state")]
    assert store.store.committed_event_id == 1
    reader.close()
    await log.close()
    await store.close()


async def test_a_replay_reads_committed_events_from_the_store_and_the_rest_from_memory(
    tmp_path: Path,
) -> None:
    store, log = open_log(tmp_path, keep=3)
    for i in range(2500):
        log.publish("queue.entered", call_id=f"c{i}", queue="support")
        if i == 2400:
            await store.flush()  # 1..2401 committed
    assert log.recent[0].id == 2402  # the first not committed: more than `keep` are
    events = await replayed(log, 10)
    assert [ev.id for ev in events] == list(range(11, 2501))
    await log.close()
    await store.close()


async def test_without_a_store_events_live_in_memory() -> None:
    log = EventLog(clock=lambda: 5.0)
    for _ in range(4):
        log.publish("call.started")
    assert [ev.id for ev in await replayed(log, 2)] == [3, 4]
    NO_EVENTS.publish("call.started")  # the default sink takes anything and keeps nothing


async def test_with_no_event_id_to_be_had_the_event_is_counted_and_the_publisher_goes_on(
    tmp_path: Path,
) -> None:
    """PostgreSQL away past the ids reserved ahead: `next_event_id` refuses at once; the
    publisher (a call's set-up or end) must not fail with it."""
    store, log = open_log(tmp_path)
    away = [True]
    real = store.next_event_id

    def next_event_id() -> int:
        if away[0]:
            raise ConnectionError("no event id left while PostgreSQL is away")
        return real()

    store.next_event_id = next_event_id  # type: ignore[method-assign]
    try:
        ev = log.publish("call.started", call_id="c1")
        assert (ev.id, ev.type, ev.call_id) == (0, "call.started", "c1")
        log.publish("call.ended", call_id="c1")
        assert log.unrecorded == 2 and log.last_id == 0 and not log.recent
        away[0] = False
        assert log.publish("call.started", call_id="c2").id == 1  # recorded again
    finally:
        await store.close()


def test_filters_match_type_prefixes_names_and_scope() -> None:
    ev = Event(1, 0.0, "queue.abandoned", "c1", "support", "agent1", "sales")
    assert EventFilter()(ev)
    assert EventFilter.parse(["call.,queue."])(ev)
    assert not EventFilter.parse(["call."])(ev)
    assert EventFilter.parse(["queue.abandoned"], queues=["support"])(ev)
    assert not EventFilter.parse(queues=["billing"])(ev)
    assert EventFilter.parse(agents=["agent2", "agent1"])(ev)
    assert not EventFilter.parse(campaigns=["other"])(ev)
    assert EventFilter.parse(scope=lambda e: e.queue == "support")(ev)
    assert not EventFilter.parse(["queue."], scope=lambda e: e.queue == "billing")(ev)


def test_queue_log_verbs_become_event_types() -> None:
    assert queue_event_type("enter") == "queue.entered"
    assert queue_event_type("abandon") == "queue.abandoned"
    assert queue_event_type("exit-timeout") == "queue.timed_out"
    assert queue_event_type("something-new") == "queue.something_new"


async def test_subscribers_read_at_their_own_pace_and_one_that_falls_behind_is_dropped() -> None:
    log = EventLog()
    slow = log.subscribe(EventFilter(), limit=40)
    fast = log.subscribe(EventFilter.parse(["call."]), limit=40)
    for i in range(100):
        log.publish("call.started", call_id=f"c{i}")
        assert [ev.call_id for ev in await log.read(fast)] == [f"c{i}"]
        if i == 10:
            assert not slow.overflowed  # behind, within its limit
    assert slow.overflowed and slow.cut.is_set()
    assert log.subscribers == {fast}
    assert log.overflowed == 1
    log.publish("agent.state")
    assert await log.read(fast) == []  # filtered out, but read past
    assert fast.cursor == log.last_id


async def test_a_subscriber_that_resumes_reads_the_store_then_memory_and_waits(
    tmp_path: Path,
) -> None:
    store, log = open_log(tmp_path, keep=5)
    for i in range(30):
        log.publish("queue.entered", call_id=f"c{i}")
    await store.flush()
    for i in range(30, 40):
        log.publish("queue.entered", call_id=f"c{i}")
    sub = log.subscribe(EventFilter(), limit=10, after=3)
    assert not sub.live  # a replay is never cut off
    seen: list[int] = []
    while sub.cursor < log.last_id:
        seen += [ev.id for ev in await log.read(sub, most=7)]
    assert seen == list(range(4, 41)) and sub.live
    waiting = asyncio.ensure_future(log.wait(sub.cursor))
    await asyncio.sleep(0)
    assert not waiting.done()
    log.publish("call.ended")
    await waiting
    assert [ev.type for ev in await log.read(sub)] == ["call.ended"]
    await log.close()
    await store.close()


CRASHING_PUBLISHER = """
import asyncio, os, sys
from omlmedia.events import EventLog
from omlmedia.storage import AsyncStore, Store

async def main():
    store = AsyncStore(Store(sys.argv[1]))
    log = EventLog(store)
    for i in range(100):
        log.publish("call.started", call_id=f"c{i}")
    await store.flush()  # accepted: committed
    for i in range(5):
        log.publish("call.ended", call_id=f"c{i}")  # not yet committed
    os._exit(1)  # a crash: no close, no flush

asyncio.run(main())
"""


async def test_a_crash_keeps_every_accepted_event_and_ids_go_on_after_them(
    tmp_path: Path,
) -> None:
    script = tmp_path / "publisher.py"
    script.write_text(CRASHING_PUBLISHER)
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(script), str(tmp_path / "omlmedia.db")
    )
    assert await process.wait() == 1
    store, log = open_log(tmp_path)
    assert log.last_id == 100
    assert [ev.call_id for ev in await replayed(log, 0)] == [f"c{i}" for i in range(100)]
    assert log.publish("call.ended", call_id="c0").id == 101
    await log.close()
    await store.close()


def test_stored_and_streamed_json_is_what_json_dumps_writes() -> None:
    """The encoder made once (`_compact_json`) writes exactly `json.dumps(..., default=str,
    separators=(",", ":"))`: non-ASCII escaped, floats, None, booleans, nested values, and
    values JSON has no type for written as their `str`."""
    import json
    from types import MappingProxyType

    data = {
        "from": 'Zoë "x" <sip:1@a>',
        "mos": 4.41,
        "rtt_ms": None,
        "ok": True,
        "lost": -1,
        "legs": ["caller", {"codec": "PCMA"}],
        "source": Path("/x"),
        "big": 1e300,
    }
    expected = json.dumps(data, default=str, separators=(",", ":"))
    ev = Event(7, 1.5, "call.quality", "c1", "", "", "", data)
    assert ev.row()[7] == expected
    assert Event(7, 1.5, "t", "", "", "", "", MappingProxyType(data)).row()[7] == expected
    view = json.loads(ev.to_json())
    assert view["data"] == json.loads(expected) and view["id"] == 7
    assert ev.to_json() == json.dumps(ev.view(), default=str, separators=(",", ":"))
