"""The queue log and call records survive restarts and crashes; open calls are closed.

Every test runs on both databases: SQLite (a file in the test's temp dir) and PostgreSQL (a fresh
database on a throwaway instance the module starts, `tests.cluster.postgres`).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from omlmedia.storage import AsyncStore, CallRecord, QueueLogRow, Store, StoreError
from tests.cluster import postgres


@pytest.fixture(scope="module")
def pg() -> Iterator[postgres.Postgres]:
    postgres.require()
    with postgres.postgres() as instance:
        yield instance


@pytest.fixture(params=["sqlite", "postgresql"])
def location(request: pytest.FixtureRequest, tmp_path: Path) -> Path | str:
    """Where a store lives: a SQLite file, or the DSN of a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return tmp_path / "omlmedia.db"
    return postgres.fresh_database(request.getfixturevalue("pg"))


def test_events_and_records_read_back_in_order(location: Path | str) -> None:
    store = Store(location)
    store.append(QueueLogRow(10.0, "enter", "c1", "support", data={"position": 1}))
    store.append(QueueLogRow(12.5, "answer", "c1", "support", "agent1", {"wait": 2.5}))
    store.call_started("c1", 10.0, {"queue": "support"})
    assert store.flush() == 3
    assert store.open_calls() == ["c1"]
    legs = ({"role": "caller", "codec": "PCMU", "jitter_ms": 1.2, "mos": 4.3},)
    store.call_ended(
        CallRecord(
            "c1",
            10.0,
            70.0,
            12.5,
            caller="5551234",
            queue="support",
            agent="agent1",
            hangup_by="caller",
            cause="bye",
            legs=legs,
        )
    )
    store.flush()
    assert store.open_calls() == []
    events = store.queue_log()
    assert [e.event for e in events] == ["enter", "answer"]
    assert events[1].data == {"wait": 2.5} and events[1].agent == "agent1"
    record = store.call_record("c1")
    assert record is not None
    assert record.billsec == 57.5 and record.duration == 60.0
    assert record.legs[0]["mos"] == 4.3
    store.close()


def test_nothing_is_written_before_flush_and_everything_after(location: Path | str) -> None:
    store = Store(location)
    store.append(QueueLogRow(1.0, "login", agent="agent1"))
    other = Store(location)
    assert other.queue_log() == []
    store.flush()
    assert [e.event for e in other.queue_log()] == ["login"]
    store.close()
    other.close()


CRASHING_WRITER = """
import os, sys
from omlmedia.storage import CallRecord, QueueLogRow, Store
store = Store(sys.argv[1])
store.append(QueueLogRow(1.0, "enter", "in-progress", "support"))
store.call_started("in-progress", 1.0, {"queue": "support", "caller": "5550001"})
store.call_started("finished", 1.0, {"queue": "sales"})
store.call_ended(CallRecord("finished", 1.0, 9.0, 2.0, queue="sales", cause="bye"))
store.flush()
store.append(QueueLogRow(5.0, "never-flushed", "in-progress"))
os._exit(1)  # a crash: no close, no flush
"""


def test_a_crash_loses_no_committed_write_and_open_calls_are_closed_at_restart(
    tmp_path: Path, location: Path | str
) -> None:
    db = location
    script = tmp_path / "writer.py"
    script.write_text(textwrap.dedent(CRASHING_WRITER))
    result = subprocess.run([sys.executable, str(script), str(db)], check=False)
    assert result.returncode == 1
    store = Store(db)
    assert store.call_record("finished") is not None
    assert store.recover(100.0) == ["in-progress"]
    record = store.call_record("in-progress")
    assert record is not None
    assert (record.cause, record.queue, record.caller, record.end) == (
        "server-restart",
        "support",
        "5550001",
        100.0,
    )
    events = [e.event for e in store.queue_log(call_id="in-progress")]
    assert events == ["enter", "closed-at-restart"]
    assert store.open_calls() == []
    assert store.recover(200.0) == []
    store.close()


async def test_the_async_store_commits_off_the_loop_and_at_close(location: Path | str) -> None:
    store = AsyncStore(Store(location), flush_interval=0.05)
    store.start()
    for i in range(100):
        store.append(QueueLogRow(float(i), "offer", f"c{i}", "support", "agent1"))
    await store.flush()
    reader = Store(location)
    assert len(reader.queue_log()) == 100
    store.append(QueueLogRow(200.0, "logout", agent="agent1"))
    await store.close()
    assert reader.queue_log(150.0)[0].event == "logout"
    reader.close()


async def test_event_ids_taken_while_the_writer_flushes_are_unique_increasing_and_kept(
    location: Path | str,
) -> None:
    """SQLite's ids are counted on the loop without the writer's lock, PostgreSQL's reserved
    ids under it: either way, ids taken between flushes running in the writer's thread never
    repeat, increase, are stored as given, and a restarted writer goes on above them."""
    store = AsyncStore(Store(location, writer=True), flush_interval=0.01)
    store.start()
    ids: list[int] = []
    for i in range(600):
        ident = store.next_event_id()
        ids.append(ident)
        store.append_event((ident, float(i), "call.started", f"c{i}", "", "", "", "{}"))
        if i % 100 == 99:
            await store.flush()
    await store.close()
    assert ids == sorted(set(ids))
    reader = Store(location)
    assert [row[0] for row in reader.events(0, 1000)] == ids
    reader.close()
    again = AsyncStore(Store(location, writer=True))
    assert again.next_event_id() > ids[-1]
    await again.close()


def _refuse_writes(store: Store, refuse: bool) -> None:
    """Make the store's own connection read-only (or writable again)."""
    if isinstance(store.path, Path):
        store._db.execute(f"PRAGMA query_only={'ON' if refuse else 'OFF'}")
    else:
        store._db.execute(f"SET default_transaction_read_only = {'on' if refuse else 'off'}")


def test_a_failed_commit_keeps_the_writes_for_the_next_flush(location: Path | str) -> None:
    store = Store(location)
    store.append(QueueLogRow(1.0, "enter", "c1"))
    store.call_ended(CallRecord("c1", 1.0, 2.0))
    store.call_ended(CallRecord("c1", 1.0, 2.0, cause="duplicate"))  # replaced, not an error
    store.flush()
    _refuse_writes(store, True)
    store.append(QueueLogRow(3.0, "exit", "c1"))
    with pytest.raises(StoreError):
        store.flush()
    assert store.pending == 1
    _refuse_writes(store, False)
    store.flush()
    assert [e.event for e in store.queue_log()] == ["enter", "exit"]
    record = store.call_record("c1")
    assert record is not None and record.cause == "duplicate"
    store.close()


def test_text_not_utf8_or_with_a_nul_is_stored_escaped_and_fails_no_batch(
    location: Path | str,
) -> None:
    store = Store(location)
    bad = "caller\udcff\x00"  # an undecodable byte (as surrogateescape keeps it) and a NUL
    store.call_started("c1", 1.0, {"from": bad})
    store.append(QueueLogRow(time=1.0, event="enter", call_id="c1", agent=bad))
    store.call_ended(CallRecord(call_id="c1", start=1.0, end=2.0, caller=bad))
    assert store.flush() == 3
    record = store.call_record("c1")
    assert record is not None and record.caller == "caller\\udcff\\x00"
    assert [row.agent for row in store.queue_log()] == ["caller\\udcff\\x00"]
    store.append(QueueLogRow(time=3.0, event="abandon"))
    assert store.flush() == 1
    store.close()
