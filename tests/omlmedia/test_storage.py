"""The queue log and call records survive restarts and crashes; open calls are closed."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from omlmedia.storage import AsyncStore, CallRecord, QueueLogRow, Store


def test_events_and_records_read_back_in_order(tmp_path: Path) -> None:
    store = Store(tmp_path / "omlmedia.db")
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


def test_nothing_is_written_before_flush_and_everything_after(tmp_path: Path) -> None:
    store = Store(tmp_path / "omlmedia.db")
    store.append(QueueLogRow(1.0, "login", agent="agent1"))
    other = Store(tmp_path / "omlmedia.db")
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
    tmp_path: Path,
) -> None:
    db = tmp_path / "omlmedia.db"
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


async def test_the_async_store_commits_off_the_loop_and_at_close(tmp_path: Path) -> None:
    store = AsyncStore(Store(tmp_path / "omlmedia.db"), flush_interval=0.05)
    store.start()
    for i in range(100):
        store.append(QueueLogRow(float(i), "offer", f"c{i}", "support", "agent1"))
    await store.flush()
    reader = Store(tmp_path / "omlmedia.db")
    assert len(reader.queue_log()) == 100
    store.append(QueueLogRow(200.0, "logout", agent="agent1"))
    await store.close()
    assert reader.queue_log(150.0)[0].event == "logout"
    reader.close()


def test_a_failed_commit_keeps_the_writes_for_the_next_flush(tmp_path: Path) -> None:
    store = Store(tmp_path / "omlmedia.db")
    store.append(QueueLogRow(1.0, "enter", "c1"))
    store.call_ended(CallRecord("c1", 1.0, 2.0))
    store.call_ended(CallRecord("c1", 1.0, 2.0, cause="duplicate"))  # replaced, not an error
    store.flush()
    store._db.execute("PRAGMA query_only=ON")
    store.append(QueueLogRow(3.0, "exit", "c1"))
    with pytest.raises(sqlite3.OperationalError):
        store.flush()
    assert store.pending == 1
    store._db.execute("PRAGMA query_only=OFF")
    store.flush()
    assert [e.event for e in store.queue_log()] == ["enter", "exit"]
    store.close()


def test_text_that_is_not_utf8_is_stored_escaped_and_fails_no_batch(tmp_path: Path) -> None:
    store = Store(tmp_path / "omlmedia.db")
    bad = "caller\udcff"  # an undecodable byte of a SIP header, as surrogateescape keeps it
    store.call_started("c1", 1.0, {"from": bad})
    store.append(QueueLogRow(time=1.0, event="enter", call_id="c1", agent=bad))
    store.call_ended(CallRecord(call_id="c1", start=1.0, end=2.0, caller=bad))
    assert store.flush() == 3
    record = store.call_record("c1")
    assert record is not None and record.caller == "caller\\udcff"
    assert [row.agent for row in store.queue_log()] == ["caller\\udcff"]
    store.append(QueueLogRow(time=3.0, event="abandon"))
    assert store.flush() == 1
    store.close()
