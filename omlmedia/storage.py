"""The queue log and the call records, in SQLite (the embedded default, in the data dir) or in
PostgreSQL (``[storage] dsn``, `omlmedia.storage_pg`).

Theory of operation. Every ACD event (enter, offer, answer, abandon, pause...) is appended to
`queue_log` with its timestamp, so every report can be rebuilt from it; every call gets one row in
`cdr` when it ends, with its legs, times, queue, agent, disposition, recording and per-leg media
quality. A call that starts is written to `open_calls`; its CDR replaces that row in the same
transaction when it ends. So after a crash, the rows left in `open_calls` are exactly the calls
that were in progress: `recover()` (run at start) closes each with a CDR whose cause is
`server-restart` and a `queue_log` event `closed-at-restart`, in one transaction.

Writes are appended to an in-memory batch and committed together (`flush`), from one writer thread
(`AsyncStore`), so the event loop never waits for the disk: SQLite in WAL mode with
`synchronous=FULL` makes each commit durable against a crash of the process and of the machine.
The event log (`omlmedia.events`) is written the same way, in the same transactions (`events`).
"Nothing that was accepted is lost": an event is accepted when `flush` returned; the server
flushes every `flush_interval` (0.2 s by default) and at shutdown.

Reads (reports, the API) open their own connection; WAL lets them run while the writer writes.
The API's pages of call records and queue log entries (`call_records_page`, `queue_log_page`)
are cut in SQL, filters and the caller's scope (`RecordScope`) included, with ``LIMIT``/``OFFSET``
over the time index: a page reads its own rows and counts the span's, never the whole span.

PostgreSQL. `Store(location)` with a ``postgresql://`` DSN keeps the same tables, the same
migrations (applied under an advisory lock, so nodes starting together migrate once) and the same
code: `omlmedia.storage_pg.PgConnection` gives asyncpg the blocking calls of `sqlite3` and
translates the few dialect differences in one place. What is guaranteed there: a write is
durable once the `flush` holding it returned (PostgreSQL commits with ``synchronous_commit`` on);
a flush that fails (the database down or restarting) keeps every write, in order, in memory and
the next flush (every `flush_interval`) sends them again on a new connection, so nothing accepted
is dropped while the database is away and it all lands, in one transaction, when it is back. The
limit: writes buffered while the database is unreachable live in this process's memory only, so
a node that dies during an outage loses what it buffered since its last successful flush. A
flush on PostgreSQL is one statement (`_pg_flush`: each table's rows as arrays, the events'
function as its main query), which PostgreSQL runs as a transaction of its own: one round trip
to the database whatever it holds; one that carries another part's writes (`append_write`: the
webhooks' outbox) sends ``BEGIN``, its statements in turn, ``COMMIT`` instead. Each node names
itself (`node`): a call's open-call row carries the node, and `recover` closes only the calls of
its own node, never those another node is carrying.

Several nodes may write one PostgreSQL database. The event log's ids (and the webhook outbox
keyed by them) come from one sequence (`omlmedia.storage_pg.EVENT_IDS`), so they are unique
across the nodes and increasing on each; each node reserves a few ahead (`next_event_id`,
topped up by every flush, on the writer's thread) so that giving an event its id never waits
for the database on the event loop. Each event row names its node, and a node reads back only
its own (`events`, the node's own log). Each flush also gives its events their places in the
order the nodes' flushes commit (``events.pos``, under a lock held to the commit: see
`omlmedia.storage_pg.EVENT_ORDER_LOCK`), which the cluster-wide event stream follows
(`omlmedia.events.ClusterFeed`). On SQLite (one node) ids are simply counted from the highest
stored.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from omlmedia.migrations import migrate
from omlmedia.storage_pg import (
    APPEND_EVENTS,
    EVENT_IDS,
    PgConnection,
    PgError,
    append_events_args,
    is_dsn,
    migrate_pg,
)

logger = logging.getLogger(__name__)

__all__ = [
    "AsyncStore",
    "CallRecord",
    "EventRow",
    "QueueLogRow",
    "RecordScope",
    "Store",
    "StoreError",
    "connect",
    "open_database",
]


StoreError = (sqlite3.Error, *PgError)
"""What a failed store call raises, whichever the database."""


@dataclass(frozen=True, slots=True)
class QueueLogRow:
    """One stored row of the queue log: an entry of the ACD engine
    (`queueing.events.QueueLogEntry`, its verb as text) or one the store writes itself
    (``closed-at-restart``)."""

    time: float
    event: str
    call_id: str = ""
    queue: str = ""
    agent: str = ""
    data: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class CallRecord:
    """One call's record (the cdr row). `legs` has one mapping per leg: its role, codec,
    times and media quality (jitter, loss, round trip, estimated MOS)."""

    call_id: str
    start: float
    end: float
    answer: float | None = None
    direction: str = "inbound"
    caller: str = ""
    caller_name: str = ""
    callee: str = ""
    target: str = ""
    trunk: str = ""
    campaign: str = ""
    queue: str = ""
    agent: str = ""
    disposition: str = ""
    notes: str = ""
    hangup_by: str = ""
    cause: str = ""
    recording: str = ""
    legs: tuple[Mapping[str, Any], ...] = ()

    @property
    def duration(self) -> float:
        """Seconds from start to end."""
        return self.end - self.start

    @property
    def billsec(self) -> float:
        """Seconds from answer to end (0 when never answered)."""
        return self.end - self.answer if self.answer is not None else 0.0


EventRow = tuple[int, float, str, str, str, str, str, str]
"""One stored event: id, time, type, call_id, queue, agent, campaign, data (JSON text); see
`omlmedia.events.Event`, which reads and writes them."""


_CDR_COLUMNS = (
    "call_id",
    "start",
    "answer",
    "end",
    "direction",
    "caller",
    "caller_name",
    "callee",
    "target",
    "trunk",
    "campaign",
    "queue",
    "agent",
    "disposition",
    "notes",
    "hangup_by",
    "cause",
    "recording",
    "legs",
)


_TEXT_COLUMNS = frozenset(_CDR_COLUMNS) - {"start", "answer", "end", "legs"}

_CDR_LIST = ", ".join('"end"' if name == "end" else name for name in _CDR_COLUMNS)
"""The cdr columns for SQL (``end`` is reserved in PostgreSQL: quoted, as SQLite also takes)."""


_CDR_UPSERT = (
    f"INSERT INTO cdr ({_CDR_LIST}) VALUES ({', '.join('?' for _ in _CDR_COLUMNS)}) "
    "ON CONFLICT (call_id) DO UPDATE SET "
    + ", ".join(f'"{name}" = excluded."{name}"' for name in _CDR_COLUMNS if name != "call_id")
)
"""A call's record, replacing an earlier one of the same call (both databases take it)."""


@dataclass(frozen=True, slots=True)
class RecordScope:
    """The rows a scoped reader may see (`omlmedia.authz.Identity.covers`): call records of these
    campaigns or queues; queue log entries of these queues, and the entries without a queue of
    these agents (their pauses, the members of the queues)."""

    campaigns: frozenset[str] = frozenset()
    queues: frozenset[str] = frozenset()
    agents: frozenset[str] = frozenset()

    @classmethod
    def of(
        cls,
        scope: frozenset[str] | None,
        queues: frozenset[str] | None,
        members: Mapping[str, frozenset[str]],
    ) -> RecordScope | None:
        """The rows of an identity whose `scope` brings `queues` (`Identity.queues`), the
        queues' `members` being agents; None (every row) for an unscoped identity."""
        if scope is None:
            return None
        queues = queues or frozenset()
        agents = frozenset(a for q in queues for a in members.get(q, frozenset()))
        return cls(campaigns=scope, queues=queues, agents=agents)


def _in(column: str, values: frozenset[str], args: list[Any]) -> str:
    """``column IN (?, ...)`` for `values` (appended to `args`); never true without values."""
    if not values:
        return "1 = 0"
    args.extend(sorted(values))
    return f"{column} IN ({', '.join('?' for _ in values)})"


def _span_where(column: str, since: float, until: float) -> tuple[str, list[Any]]:
    where = f"{column} >= ?"
    args: list[Any] = [since]
    if until != float("inf"):
        where += f" AND {column} < ?"
        args.append(until)
    return where, args


def _cdr_row(record: CallRecord) -> tuple[Any, ...]:
    return tuple(
        json.dumps(list(record.legs), default=str) if name == "legs" else getattr(record, name)
        for name in _CDR_COLUMNS
    )


def _text(value: Any) -> Any:
    """A value both databases can store: text that is not valid UTF-8 (a lone surrogate, as a
    SIP header's undecodable bytes become) is kept with those code points escaped (``\\udcff``),
    a NUL (which PostgreSQL refuses in text) as ``\\x00``; anything else is returned as it is."""
    if isinstance(value, str):
        if "\x00" in value:
            value = value.replace("\x00", "\\x00")
        if not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                return value.encode("utf-8", "backslashreplace").decode("utf-8")
    return value


def _storable(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """`rows` with every text value made storable (see `_text`): one peer's bad bytes must not
    fail the batch and, with it, every write after it."""
    return [tuple(_text(value) for value in row) for row in rows]


def connect(location: Path | str) -> Any:
    """A connection to the database at `location` (a SQLite file, created with its directory
    if need be, or a PostgreSQL DSN): a `sqlite3.Connection` in autocommit mode, or a
    `PgConnection`, which takes the same calls. Not migrated: see `open_database`."""
    if is_dsn(location):
        return PgConnection(str(location))
    path = Path(location)
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("PRAGMA busy_timeout=5000")
    return db


def open_database(location: Path | str) -> Any:
    """`connect` to `location`, then bring its schema to the last migration (on PostgreSQL under
    the migration lock): what every part that keeps its own connection opens."""
    db = connect(location)
    try:
        if isinstance(db, PgConnection):
            migrate_pg(db)
        else:
            migrate(db)
    except BaseException:
        db.close()
        raise
    return db


_EVENT_INSERT = (
    "INSERT INTO events (id, time, type, call_id, queue, agent, campaign, data, node) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING"
)
"""SQLite's insert of a flush's events (one node: no places, no lock; on PostgreSQL the events
go in one statement, `omlmedia.storage_pg.APPEND_EVENTS`)."""


_CDR_SET = ", ".join(f'"{name}" = excluded."{name}"' for name in _CDR_COLUMNS if name != "call_id")
_CDR_ARRAYS = ", ".join(
    "?::float8[]" if name in ("start", "answer", "end") else "?::text[]" for name in _CDR_COLUMNS
)


def _pg_flush(
    node: str,
    log: list[tuple[Any, ...]],
    opened: list[tuple[Any, ...]],
    closed: list[tuple[Any, ...]],
    events: list[EventRow],
) -> tuple[str, tuple[Any, ...]]:
    """A PostgreSQL flush without other parts' writes as one statement and its arguments: each
    table's rows as arrays (``unnest``) in a data-modifying ``WITH`` each, the events'
    `APPEND_EVENTS` as its main query. One statement is a transaction of its own, sent in one
    round trip (`PgConnection.transaction`), and the statement's text depends only on which
    kinds of rows the flush holds, so asyncpg prepares each once.

    The same rows as the statements one after the other (SQLite's flush), with what one
    statement cannot do settled first: its parts see the same snapshot, so a call opened and
    closed in this flush is not opened (its record's removal of the open-call row would not
    see it; one after the other, that row was inserted and removed), and of the open-call rows
    and the records of one call only the last is kept (one after the other, each upsert
    replaced the one before in full; one ``ON CONFLICT DO UPDATE`` may not touch a row
    twice)."""
    parts: list[str] = []
    args: list[Any] = []
    if log:
        parts.append(
            "q AS (INSERT INTO queue_log (time, call_id, queue, agent, event, data) "
            "SELECT time, call_id, queue, agent, event, data FROM unnest(?::float8[], "
            "?::text[], ?::text[], ?::text[], ?::text[], ?::text[]) WITH ORDINALITY "
            "AS r(time, call_id, queue, agent, event, data, n) ORDER BY n)"
        )
        args.extend(list(column) for column in zip(*_storable(log), strict=True))
    ending = {row[0] for row in closed}
    starting = {row[0]: row for row in opened if row[0] not in ending}
    if starting:
        parts.append(
            "o AS (INSERT INTO open_calls (call_id, start, data) "
            "SELECT * FROM unnest(?::text[], ?::float8[], ?::text[]) "
            "ON CONFLICT (call_id) DO UPDATE SET start = excluded.start, data = excluded.data)"
        )
        rows = _storable(list(starting.values()))
        args.extend(list(column) for column in zip(*rows, strict=True))
    if closed:
        records = _storable(list({row[0]: row for row in closed}.values()))
        parts.append(
            f"c AS (INSERT INTO cdr ({_CDR_LIST}) SELECT * FROM unnest({_CDR_ARRAYS}) "
            f"ON CONFLICT (call_id) DO UPDATE SET {_CDR_SET})"
        )
        args.extend(list(column) for column in zip(*records, strict=True))
        parts.append("d AS (DELETE FROM open_calls WHERE call_id = ANY(?::text[]))")
        args.append([row[0] for row in records])
    main = "SELECT NULL"
    if events:
        main = APPEND_EVENTS
        args.extend(append_events_args(node, _storable(events)))
    if not parts:
        return main, tuple(args)
    return f"WITH {', '.join(parts)} {main}", tuple(args)


class Store:
    """The SQLite database: batched appends, crash recovery, reads. Not thread-safe: one
    writer (see `AsyncStore`)."""

    def __init__(
        self,
        path: Path | str,
        *,
        node: str = "",
        writer: bool = False,
        spill: Path | None = None,
    ) -> None:
        self.path: Path | str = path if is_dsn(path) else Path(path)
        self.spill = spill
        """Where `close` keeps the writes the database did not take (a stop during a
        PostgreSQL outage), for the next start to write first; None: they are lost."""
        """The SQLite file, or the PostgreSQL DSN (`Store(store.path)` opens the same database)."""
        self.node = node
        """This node's name: its calls in progress are the ones `recover` closes."""
        self.writer = writer
        """The node's writer (the server's): it gives the event log its ids."""
        self._db = open_database(self.path)
        self._log: list[tuple[Any, ...]] = []
        self._opened: list[tuple[str, float, str]] = []
        self._closed: list[tuple[Any, ...]] = []
        self._events: list[EventRow] = []
        self._writes: list[tuple[str, tuple[Any, ...]]] = []
        self._reconnect_failing = False
        self._in_flight = 0
        """Writes taken by the `flush` running now (back in the queues if it fails)."""
        self.committed_events = 0
        self.committed_calls = 0
        self.committed_event_id = self.last_event_id()
        """The highest event id of this node committed (read by the event log from the loop's
        thread)."""
        self._ids: list[int] = []
        """Event ids reserved ahead (PostgreSQL), lowest last."""
        self._next_id = self.committed_event_id + 1
        """The next event id (SQLite)."""
        if writer and isinstance(self._db, PgConnection):
            self._reserve_ids()
        if writer and spill is not None and spill.exists():
            self._replay(spill)

    def connect(self) -> Any:
        """A new connection to this store's database (a `sqlite3.Connection` or a
        `PgConnection`, which takes the same calls), for a reader or another part."""
        return connect(self.path)

    IDS_AHEAD = 5000
    """Event ids a PostgreSQL writer keeps reserved (from start; every flush tops them up once
    a fifth are used): what it can give while PostgreSQL is unreachable. At 80 events a second
    (ten calls a second) that is about a minute of outage; past it, publishing an event raises
    until the database is back."""

    def next_event_id(self) -> int:
        """The id of the next event: unique across every node of the database, and higher
        than every id this store gave before."""
        if not isinstance(self._db, PgConnection):
            ident = self._next_id
            self._next_id += 1
            return ident
        if not self._ids:
            self._reserve_ids()  # more events than a flush tops up: wait for the database
        return self._ids.pop()

    @property
    def ids_left(self) -> int | None:
        """Event ids reserved and not given yet (PostgreSQL); None on SQLite, which counts its
        own."""
        return len(self._ids) if isinstance(self._db, PgConnection) else None

    def _reserve_ids(self) -> None:
        """Reserve event ids from the database's sequence, up to `IDS_AHEAD`."""
        missing = self.IDS_AHEAD - len(self._ids)
        if missing <= 0 or not isinstance(self._db, PgConnection):
            return
        self._add_ids(self._fetch_ids(missing))

    def _fetch_ids(self, count: int) -> list[int]:
        """`count` new ids from the database's sequence (waits for the database)."""
        rows = self._db.execute(
            f"SELECT nextval('{EVENT_IDS}') FROM generate_series(1, ?)", (count,)
        ).fetchall()
        return [int(row[0]) for row in rows]

    def _add_ids(self, fresh: list[int]) -> None:
        """Add reserved ids, lowest last. Every id reserved is above every one this store gave
        (one sequence), so the ids it gives keep increasing; sorted, because the event loop
        may have reserved some itself while these were on their way."""
        self._ids = sorted({*fresh, *self._ids}, reverse=True)

    def _reconnect(self) -> None:
        """After a failed flush on PostgreSQL: a new connection if the old one is gone (the
        server restarted), so the next flush can succeed."""
        db = self._db
        if isinstance(db, PgConnection) and db.is_closed():
            try:
                fresh = PgConnection(db.dsn)
            except PgError as exc:
                # Every flush retries (five a second): one line per outage, not a traceback each.
                if not self._reconnect_failing:
                    logger.warning("reconnecting to PostgreSQL failed (%s); will retry", exc)
                self._reconnect_failing = True
                return
            if self._reconnect_failing:
                logger.warning("reconnected to PostgreSQL")
            self._reconnect_failing = False
            db.close()
            self._db = fresh

    # -- writing ----------------------------------------------------------------------------

    def append(self, entry: QueueLogRow) -> None:
        """Queue one event for the next `flush`."""
        self._log.append(
            (
                entry.time,
                entry.call_id,
                entry.queue,
                entry.agent,
                entry.event,
                json.dumps(dict(entry.data), default=str, separators=(",", ":")),
            )
        )

    def call_started(self, call_id: str, start: float, data: Mapping[str, Any]) -> None:
        """Note a call in progress (closed by `recover` if the server stops before its CDR)."""
        info = dict(data)
        if self.node:
            info["node"] = self.node
        self._opened.append((call_id, start, json.dumps(info, default=str)))

    def call_ended(self, record: CallRecord) -> None:
        """Queue a call's record for the next `flush`; it replaces its open-call row."""
        self._closed.append(_cdr_row(record))

    def append_event(
        self, row: EventRow, writes: Sequence[tuple[str, tuple[Any, ...]]] = ()
    ) -> None:
        """Queue one event of the event log for the next `flush`, with the `writes` that go
        with it (its webhook deliveries: see `append_write`), so both commit together."""
        self._events.append(row)
        self._writes.extend(writes)

    def append_write(self, sql: str, args: tuple[Any, ...]) -> None:
        """Queue one statement of another part (the webhooks' outbox) for the next `flush`:
        run after the events, in the same transaction."""
        self._writes.append((sql, args))

    @property
    def pending(self) -> int:
        """Writes not committed yet: queued for the next `flush` or held by the one running (so
        another thread reading it while a flush runs never sees a buffer of 0 that is not)."""
        queued = len(self._log) + len(self._opened) + len(self._closed) + len(self._events)
        return queued + len(self._writes) + self._in_flight

    def flush(self, lock: AbstractContextManager[Any] | None = None) -> int:
        """Commit everything queued in one transaction; returns how many writes it held.

        With `lock` (the writer's, `AsyncStore`), only the moves of the queues and of the
        reserved ids are made under it, never the wait for the database: the event loop, which
        queues writes and takes ids under the same lock, never waits for PostgreSQL, even one
        that stopped answering (frozen, or behind a network partition)."""
        guard: AbstractContextManager[Any] = lock if lock is not None else nullcontext()
        with guard:
            low = self.writer and len(self._ids) < self.IDS_AHEAD * 4 // 5
            missing = self.IDS_AHEAD - len(self._ids) if low else 0
        if missing and isinstance(self._db, PgConnection):
            try:
                fresh = self._fetch_ids(missing)
            except PgError:
                if not self._reconnect_failing:
                    logger.warning("reserving event ids failed; will retry")
                self._reconnect()
            else:
                with guard:
                    self._add_ids(fresh)
        with guard:
            log, opened, closed, events = self._log, self._opened, self._closed, self._events
            writes = self._writes
            count = len(log) + len(opened) + len(closed) + len(events) + len(writes)
            if not count:
                return 0
            self._in_flight = count
            self._log, self._opened, self._closed, self._events = [], [], [], []
            self._writes = []
        db = self._db
        try:
            pg = isinstance(db, PgConnection)
            if pg and not writes:
                # Everything in one statement, its own transaction: one round trip.
                statement, args = _pg_flush(self.node, log, opened, closed, events)
                steps = [(statement, [args])]
            else:
                steps = self._steps(pg, log, opened, closed, writes, events)
            if pg:
                # The whole transaction in one hand-over to the connection's thread, not one
                # per statement; one statement alone is sent without BEGIN or COMMIT
                # (`PgConnection.transaction`).
                db.transaction(steps)
            else:
                db.execute("BEGIN IMMEDIATE")
                for sql, rows in steps:
                    if len(rows) == 1:
                        db.execute(sql, rows[0])
                    else:
                        db.executemany(sql, rows)
                db.execute("COMMIT")
        except BaseException:
            try:
                if db.in_transaction:
                    db.execute("ROLLBACK")
            except StoreError:
                pass  # the connection is gone: so is its transaction
            self._reconnect()
            with guard:
                self._log = log + self._log
                self._opened = opened + self._opened
                self._closed = closed + self._closed
                self._events = events + self._events
                self._writes = writes + self._writes
                self._in_flight = 0
            raise
        with guard:
            self._in_flight = 0
            self.committed_events += len(log)
            self.committed_calls += len(closed)
            if events:
                self.committed_event_id = max(self.committed_event_id, events[-1][0])
        return count

    def _steps(
        self,
        pg: bool,
        log: list[tuple[Any, ...]],
        opened: list[tuple[str, float, str]],
        closed: list[tuple[Any, ...]],
        writes: list[tuple[str, tuple[Any, ...]]],
        events: list[EventRow],
    ) -> list[tuple[str, list[tuple[Any, ...]]]]:
        """A flush's statements one after the other, each with its rows of arguments: SQLite's
        flush, and PostgreSQL's when it holds other parts' writes (`append_write`)."""
        steps: list[tuple[str, list[tuple[Any, ...]]]] = []
        if log:
            steps.append(
                (
                    "INSERT INTO queue_log (time, call_id, queue, agent, event, data) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    _storable(log),
                )
            )
        if opened:
            steps.append(
                (
                    "INSERT INTO open_calls (call_id, start, data) VALUES (?, ?, ?) "
                    "ON CONFLICT (call_id) DO UPDATE SET start = excluded.start, "
                    "data = excluded.data",
                    _storable(list(opened)),
                )
            )
        if closed:
            steps.append((_CDR_UPSERT, _storable(closed)))
            steps.append(
                (
                    "DELETE FROM open_calls WHERE call_id = ?",
                    _storable([(row[0],) for row in closed]),
                )
            )
        steps.extend((sql, _storable([args])) for sql, args in writes)
        if events and pg:
            # Last, just before the commit: one statement takes the order lock (held until the
            # commit: `omlmedia.storage_pg.EVENT_ORDER_LOCK`), inserts the events with their
            # places and queues the commit's notification (`APPEND_EVENTS`).
            steps.append((APPEND_EVENTS, [append_events_args(self.node, _storable(events))]))
        elif events:
            # A batch sent again after a commit whose answer was lost holds events already
            # stored: kept, not a failure that would make every later flush fail too.
            steps.append((_EVENT_INSERT, _storable([(*row, self.node) for row in events])))
        return steps

    def recover(self, now: float) -> list[str]:
        """Close the calls a previous run left open (a crash): one CDR each with cause
        `server-restart` and a `closed-at-restart` event. Returns their call ids."""
        rows = self._db.execute("SELECT call_id, start, data FROM open_calls").fetchall()
        closed: list[str] = []
        for call_id, start, data in rows:
            try:
                info = json.loads(data)
            except ValueError:
                info = {}
            if not isinstance(info, dict):
                info = {}
            if str(info.get("node", "")) != self.node:
                continue  # another node's call: that node is carrying it
            texts: dict[str, Any] = {
                k: str(v)
                for k, v in info.items()
                if k in _TEXT_COLUMNS and k not in ("call_id", "cause")
            }
            self.call_ended(
                replace(
                    CallRecord(call_id=call_id, start=start, end=now, cause="server-restart"),
                    **texts,
                )
            )
            self.append(
                QueueLogRow(
                    now,
                    "closed-at-restart",
                    call_id=call_id,
                    queue=str(info.get("queue", "")),
                    agent=str(info.get("agent", "")),
                )
            )
            closed.append(call_id)
        if closed:
            self.flush()
        return closed

    # -- reading ----------------------------------------------------------------------------

    def queue_log(
        self, since: float = 0.0, until: float = float("inf"), *, call_id: str | None = None
    ) -> list[QueueLogRow]:
        """Committed events in time order (by call when `call_id` is given)."""
        sql = "SELECT time, event, call_id, queue, agent, data FROM queue_log WHERE time >= ?"
        args: list[Any] = [since]
        if until != float("inf"):
            sql += " AND time < ?"
            args.append(until)
        if call_id is not None:
            sql += " AND call_id = ?"
            args.append(call_id)
        sql += " ORDER BY time, id"
        return [
            QueueLogRow(t, e, c, q, a, json.loads(d))
            for t, e, c, q, a, d in self._db.execute(sql, args)
        ]

    def call_records(self, since: float = 0.0, until: float = float("inf")) -> list[CallRecord]:
        """Committed call records by start time."""
        sql = f"SELECT {_CDR_LIST} FROM cdr WHERE start >= ?"
        args: list[Any] = [since]
        if until != float("inf"):
            sql += " AND start < ?"
            args.append(until)
        sql += " ORDER BY start, id"
        return [self._record(row) for row in self._db.execute(sql, args)]

    def call_records_page(
        self,
        since: float = 0.0,
        until: float = float("inf"),
        *,
        queue: str | None = None,
        agent: str | None = None,
        scope: RecordScope | None = None,
        offset: int = 0,
        limit: int = 100,
    ) -> tuple[list[CallRecord], int]:
        """One page of committed call records by start time, of `queue` and `agent` when given
        and within `scope` (None: every record); and how many the span holds with those filters.
        """
        where, args = _span_where("start", since, until)
        for column, value in (("queue", queue), ("agent", agent)):
            if value is not None:
                where += f" AND {column} = ?"
                args.append(value)
        if scope is not None:
            campaigns = _in("campaign", scope.campaigns, args)
            queues = _in("queue", scope.queues, args)
            where += f" AND ({campaigns} OR {queues})"
        row = self._db.execute(f"SELECT COUNT(*) FROM cdr WHERE {where}", args).fetchone()
        rows = self._db.execute(
            f"SELECT {_CDR_LIST} FROM cdr WHERE {where} ORDER BY start, id LIMIT ? OFFSET ?",
            [*args, limit, offset],
        )
        return [self._record(r) for r in rows], int(row[0]) if row else 0

    def recorded_calls(
        self,
        since: float = 0.0,
        until: float = float("inf"),
        *,
        queue: str | None = None,
        scope: RecordScope | None = None,
    ) -> list[CallRecord]:
        """Committed call records with a recording, by start time, of `queue` when given and
        within `scope` (None: every record): the recordings search reads only these."""
        where, args = _span_where("start", since, until)
        where += " AND recording <> ''"
        if queue is not None:
            where += " AND queue = ?"
            args.append(queue)
        if scope is not None:
            campaigns = _in("campaign", scope.campaigns, args)
            queues = _in("queue", scope.queues, args)
            where += f" AND ({campaigns} OR {queues})"
        rows = self._db.execute(
            f"SELECT {_CDR_LIST} FROM cdr WHERE {where} ORDER BY start, id", args
        )
        return [self._record(row) for row in rows]

    def queue_log_page(
        self,
        since: float = 0.0,
        until: float = float("inf"),
        *,
        queue: str | None = None,
        agent: str | None = None,
        call_id: str | None = None,
        scope: RecordScope | None = None,
        offset: int = 0,
        limit: int = 100,
    ) -> tuple[list[QueueLogRow], int]:
        """One page of committed queue log entries in time order, of `queue`, `agent` and
        `call_id` when given and within `scope` (None: every entry); and how many the span holds
        with those filters."""
        where, args = _span_where("time", since, until)
        for column, value in (("queue", queue), ("agent", agent), ("call_id", call_id)):
            if value is not None:
                where += f" AND {column} = ?"
                args.append(value)
        if scope is not None:
            queues = _in("queue", scope.queues, args)
            agents = _in("agent", scope.agents, args)
            where += f" AND ({queues} OR (queue = '' AND agent <> '' AND {agents}))"
        row = self._db.execute(f"SELECT COUNT(*) FROM queue_log WHERE {where}", args).fetchone()
        rows = self._db.execute(
            "SELECT time, event, call_id, queue, agent, data FROM queue_log "
            f"WHERE {where} ORDER BY time, id LIMIT ? OFFSET ?",
            [*args, limit, offset],
        )
        entries = [QueueLogRow(t, e, c, q, a, json.loads(d)) for t, e, c, q, a, d in rows]
        return entries, int(row[0]) if row else 0

    def call_record(self, call_id: str) -> CallRecord | None:
        """One committed call record."""
        row = self._db.execute(
            f"SELECT {_CDR_LIST} FROM cdr WHERE call_id = ?", (call_id,)
        ).fetchone()
        return self._record(row) if row is not None else None

    def events(self, after: int, limit: int) -> list[EventRow]:
        """This node's committed events with an id above `after`, in id order, at most
        `limit`."""
        return list(
            self._db.execute(
                "SELECT id, time, type, call_id, queue, agent, campaign, data FROM events "
                "WHERE node = ? AND id > ? ORDER BY id LIMIT ?",
                (self.node, after, limit),
            )
        )

    def all_events(self, after: int, limit: int) -> list[EventRow]:
        """Every node's committed events with an id above `after`, in id order, at most
        `limit`."""
        return list(
            self._db.execute(
                "SELECT id, time, type, call_id, queue, agent, campaign, data FROM events "
                "WHERE id > ? ORDER BY id LIMIT ?",
                (after, limit),
            )
        )

    def last_event_id(self) -> int:
        """The highest event id this node committed (0 for none)."""
        row = self._db.execute("SELECT MAX(id) FROM events WHERE node = ?", (self.node,)).fetchone()
        return int(row[0]) if row and row[0] is not None else 0

    def open_calls(self) -> list[str]:
        """Calls noted as in progress (committed)."""
        return [row[0] for row in self._db.execute("SELECT call_id FROM open_calls")]

    @staticmethod
    def _record(row: tuple[Any, ...]) -> CallRecord:
        values = dict(zip(_CDR_COLUMNS, row, strict=True))
        values["legs"] = tuple(json.loads(values["legs"]))
        return CallRecord(**values)

    def close(self) -> None:
        """Commit what is queued and close the database. When the database does not take
        them (a stop during a PostgreSQL outage) and the store has a `spill` file, the writes
        are kept there for the next start instead of being lost."""
        try:
            self.flush()
        except StoreError:
            if self.spill is None:
                raise
            self._spill(self.spill)
        finally:
            try:
                self._db.close()
            except StoreError:
                pass  # the connection died with the database's outage

    def _spill(self, path: Path) -> None:
        """Write every queued write to `path` (atomically, synced), for `_replay`."""
        queued = {
            "log": self._log,
            "opened": self._opened,
            "closed": self._closed,
            "events": self._events,
            "writes": self._writes,
        }
        temporary = path.with_name(path.name + ".tmp")
        with temporary.open("w", encoding="utf-8") as out:
            json.dump(queued, out, default=str)
            out.flush()
            os.fsync(out.fileno())
        temporary.replace(path)
        logger.warning(
            "the database did not take %d writes at stop: kept in %s, written at the next start",
            self.pending,
            path,
        )

    def _replay(self, path: Path) -> None:
        """At start: commit the writes a stop during an outage kept in `path`, first (the
        database is reachable: a node does not start otherwise); then delete the file."""
        queued = json.loads(path.read_text(encoding="utf-8"))
        self._log = [tuple(row) for row in queued["log"]] + self._log
        self._opened = [(str(c), float(t), str(d)) for c, t, d in queued["opened"]] + self._opened
        self._closed = [tuple(row) for row in queued["closed"]] + self._closed
        events: list[EventRow] = [tuple(row) for row in queued["events"]]
        self._events = events + self._events
        self._writes = [(str(sql), tuple(args)) for sql, args in queued["writes"]] + self._writes
        written = self.flush()
        path.unlink()
        logger.warning("wrote the %d writes the last stop kept in %s", written, path)


class AsyncStore:
    """A `Store` written from one worker thread: appends are queued at once on the event loop,
    and committed by a periodic flush (and at close) off the loop."""

    def __init__(self, store: Store, flush_interval: float = 0.2) -> None:
        self.store = store
        self.flush_interval = flush_interval
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="omlmedia-store")
        self._lock = threading.Lock()
        self._own_ids = store.ids_left is None
        """SQLite: the store counts its ids itself, a counter only the event loop's thread
        touches (`Store.next_event_id`), so taking one needs no lock; PostgreSQL's reserved ids
        are topped up by the writer's thread, under the lock."""
        self._task: asyncio.Task[None] | None = None
        self.errors = 0
        """Periodic flushes that failed (the database away), ever."""
        self.failing_since: float | None = None
        """When (`time.monotonic`) the flushes began to fail; None while they succeed."""
        self._waiting_since: float | None = None
        """When (`time.monotonic`) the oldest write not committed yet was queued (about)."""

    def _mark(self) -> None:
        if self._waiting_since is None:
            self._waiting_since = time.monotonic()

    def append(self, entry: QueueLogRow) -> None:
        """Queue one event."""
        with self._lock:
            self.store.append(entry)
            self._mark()

    def call_started(self, call_id: str, start: float, data: Mapping[str, Any]) -> None:
        """Note a call in progress."""
        with self._lock:
            self.store.call_started(call_id, start, data)
            self._mark()

    def call_ended(self, record: CallRecord) -> None:
        """Queue a call's record."""
        with self._lock:
            self.store.call_ended(record)
            self._mark()

    def append_event(
        self, row: EventRow, writes: Sequence[tuple[str, tuple[Any, ...]]] = ()
    ) -> None:
        """Queue one event of the event log (with its `writes`)."""
        with self._lock:
            self.store.append_event(row, writes)
            self._mark()

    def append_write(self, sql: str, args: tuple[Any, ...]) -> None:
        """Queue one statement for the next flush (see `Store.append_write`)."""
        with self._lock:
            self.store.append_write(sql, args)
            self._mark()

    def next_event_id(self) -> int:
        """The id of the next event (see `Store.next_event_id`). With no id reserved left
        while the database is away (its flushes failing, or one waiting on it), raises
        `ConnectionError` at once rather than wait for it on the event loop: a database that
        stopped answering would otherwise stop the whole node, calls in progress included.
        Called from the event loop's thread only (`omlmedia.events.EventLog.publish`)."""
        if self._own_ids:
            return self.store.next_event_id()
        with self._lock:
            if self.store.ids_left == 0 and self._database_away():
                raise ConnectionError("no event id left while PostgreSQL is away")
            return self.store.next_event_id()

    def _database_away(self) -> bool:
        if self.failing_since is not None:
            return True
        waiting = self._waiting_since  # writes waiting longer than a few flushes: stalled
        return waiting is not None and time.monotonic() - waiting > 5 * self.flush_interval + 1

    def _flush(self) -> int:
        written = self.store.flush(self._lock)  # the lock only around the queues' moves
        with self._lock:
            if not self.store.pending:
                self._waiting_since = None
            elif written:  # writes queued while this flush ran wait from about now
                self._waiting_since = time.monotonic()
        return written

    def _close(self) -> None:
        with self._lock:
            self.store.close()

    async def flush(self) -> int:
        """Commit what is queued (off the event loop)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._flush)

    def start(self) -> None:
        """Start the periodic flush."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    def status(self) -> dict[str, Any]:
        """For ``/api/v1/status``: the writes not committed yet (buffered in memory while the
        database is away) and how long the oldest has waited, the failed flushes so far and
        how long they have been failing (a database that stopped answering fails none: its
        flush waits, and the oldest write's age grows). Read
        without the writer's lock, so it answers at once even while a flush waits on the
        database."""
        now = time.monotonic()
        since, waiting = self.failing_since, self._waiting_since
        pending = self.store.pending
        return {
            "pending_writes": pending,
            "oldest_pending_age": round(now - waiting, 3)
            if waiting is not None and pending
            else 0.0,
            "failed_flushes": self.errors,
            "failing_for": round(now - since, 3) if since is not None else 0.0,
        }

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.flush_interval)
            try:
                written = await self.flush()
            except Exception:  # the writes stay buffered: this task must go on
                # StoreError is the database away; anything else is a bug, but ending this
                # task would leave every later write in memory for good.
                self.errors += 1
                if self.failing_since is None:  # the first of an outage: its traceback once
                    self.failing_since = time.monotonic()
                    logger.exception(
                        "storing the queue log and call records failed; the writes stay "
                        "buffered and every flush retries"
                    )
            else:
                if self.failing_since is not None:
                    logger.warning(
                        "storing works again: %d buffered writes committed after %.1f s",
                        written,
                        time.monotonic() - self.failing_since,
                    )
                self.failing_since = None

    async def close(self) -> None:
        """Stop the periodic flush, commit what is left and close the database."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._close)
        self._executor.shutdown(wait=True)
