"""The events' places in commit order (``events.pos``) on a real PostgreSQL shared by two stores
(two nodes' writers): ids are reserved ahead by each node, so an event with a lower id may
commit after one with a higher id, and a reader following ``id > cursor`` would skip it for
good. Places are drawn under a lock held to the commit, so a reader following ``pos > cursor``
gets every event, each once."""

from __future__ import annotations

import threading
import time

from omlmedia.storage import Store
from omlmedia.storage_pg import (
    APPEND_EVENTS,
    ORDER_HOLD_TIMEOUT,
    PgConnection,
    append_events_args,
)
from tests.cluster import postgres


def _row(ident: int, kind: str) -> tuple[int, float, str, str, str, str, str, str]:
    return (ident, time.time(), kind, "", "", "", "", "{}")


def _after(db: PgConnection, cursor: int) -> list[tuple[int, int]]:
    """(pos, id) of the committed events placed after `cursor`."""
    rows = db.execute("SELECT pos, id FROM events WHERE pos > ? ORDER BY pos", (cursor,))
    return [(int(pos), int(ident)) for pos, ident in rows.fetchall()]


def test_a_flush_waits_for_an_earlier_uncommitted_one_so_a_reader_by_place_skips_nothing(
    pg: postgres.Postgres,
) -> None:
    dsn = postgres.fresh_database(pg)
    a = Store(dsn, node="a", writer=True)
    b = Store(dsn, node="b", writer=True)  # reserves its ids after a: all above a's
    reader = PgConnection(dsn)
    slow = PgConnection(dsn)  # node a's flush, held open between its places and its commit
    try:
        late_id, early_id = a.next_event_id(), b.next_event_id()
        assert late_id < early_id
        slow.execute("BEGIN")
        slow.execute(APPEND_EVENTS, append_events_args("a", [_row(late_id, "call.started")]))
        b.append_event(_row(early_id, "call.ended"))
        flushed = threading.Thread(target=b.flush)
        flushed.start()
        deadline = time.monotonic() + 10
        waiting = "SELECT COUNT(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
        while reader.execute(waiting).fetchone() == (0,):
            assert time.monotonic() < deadline, "b's flush never waited for the order lock"
            time.sleep(0.01)
        assert flushed.is_alive()
        assert _after(reader, 0) == []  # neither committed: nothing to read yet
        slow.execute("COMMIT")
        flushed.join(10)
        assert not flushed.is_alive()
        placed = _after(reader, 0)
        # The lower id committed first; b's, committed after it, has the higher place.
        assert [ident for _, ident in placed] == [late_id, early_id]
    finally:
        for db in (reader, slow):
            db.close()
        a.close()
        b.close()


def test_two_writers_flushing_at_once_give_a_follower_by_place_every_event_once(
    pg: postgres.Postgres,
) -> None:
    dsn = postgres.fresh_database(pg)
    stores = [Store(dsn, node=name, writer=True) for name in ("a", "b")]
    reader = PgConnection(dsn)
    made: list[int] = []
    seen: list[int] = []
    done = threading.Event()

    def write(store: Store) -> None:
        for _ in range(40):
            for _ in range(5):
                ident = store.next_event_id()
                made.append(ident)
                store.append_event(_row(ident, "agent.state"))
            store.flush()

    def follow() -> None:
        cursor = 0
        while True:
            finished = done.is_set()
            for pos, ident in _after(reader, cursor):
                seen.append(ident)
                cursor = pos
            if finished:
                return

    writers = [threading.Thread(target=write, args=(store,)) for store in stores]
    follower = threading.Thread(target=follow)
    try:
        follower.start()
        for thread in writers:
            thread.start()
        for thread in writers:
            thread.join(60)
        done.set()
        follower.join(60)
        assert len(seen) == len(made) == 400
        assert sorted(seen) == sorted(made)
    finally:
        done.set()
        reader.close()
        for store in stores:
            store.close()


def test_a_writer_stalled_holding_the_order_lock_is_ended_so_the_others_go_on(
    pg: postgres.Postgres,
) -> None:
    dsn = postgres.fresh_database(pg)
    b = Store(dsn, node="b", writer=True)
    stalled = PgConnection(dsn)  # a node frozen between its places and its commit
    try:
        stalled.execute("BEGIN")
        stalled.execute(APPEND_EVENTS, append_events_args("a", [_row(10**9, "call.started")]))
        # PostgreSQL's idle timer runs from here: b's id reservation (a round trip of its own)
        # is not counted out of it, or a loaded machine makes the wait look a second short.
        started = time.monotonic()
        b.append_event(_row(b.next_event_id(), "call.ended"))
        b.flush()  # waits for the lock until PostgreSQL ends the stalled session
        waited = time.monotonic() - started
        assert ORDER_HOLD_TIMEOUT - 1 < waited < ORDER_HOLD_TIMEOUT + 5, waited
        assert len(b.all_events(0, 10)) == 1
    finally:
        stalled.close()
        b.close()
