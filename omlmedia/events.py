"""The event log: every state change an outsider may care about, as one typed event with a
monotonic id.

Theory of operation. The parts of the server that change state (the router: calls start, are
answered and end; the ACD runtime: its queue log; the desk: agents' states; the targets that
measure media: per-leg quality) publish through one `EventSink` given to their constructors.
`EventLog.publish` gives the event the next id, queues it for the store (`AsyncStore`: the same
batched writer thread as the queue log and call records, so the event loop never waits for the
disk; committed every flush, and at shutdown) and hands it to the live subscribers
(`Subscription`: the event stream, and later the webhooks' outbox), each through a bounded queue:
a subscriber that falls behind is marked `overflowed` and dropped, never waited for.

Ids are strictly increasing across restarts (the log starts above the last id stored), and
unique across the nodes that share one PostgreSQL database (they come from one sequence,
`omlmedia.storage.Store.next_event_id`): so a node's ids are increasing but not consecutive, and
its log holds its own events only (another node's are in that node's stream). An event
is *accepted* once the store committed it; until then it is kept in memory (`recent`), so a
reader that resumes after an id (`replay`) gets every later event exactly once and in order:
committed ones from the database (read on its own connection and thread), the others from
memory. Everything downstream (stream, webhooks, wallboard, reports, metrics histograms) reads
these events; nothing keeps a second set of counters.

In a cluster with one ACD (``[cluster] acd = "shared"``, records in one PostgreSQL database)
the stream is the cluster's (`ClusterFeed`): every node's events, in the order their flushes
committed (``events.pos``: `omlmedia.storage_pg.EVENT_ORDER_LOCK` says why that order, not the
ids', which each node reserves ahead). A node follows the committed events of every node,
woken by PostgreSQL's ``NOTIFY`` at each commit, keeps the last `keep` in memory, and serves its
readers from memory or, behind it, from the database. Only committed events are served, so a
client reading one node may resume on any other after the last id it received; an event a node
published but never committed (it died in its flush window) was never served.

Types are dotted, noun first (``call.started``, ``queue.abandoned``, ``agent.state``): a
subscriber filters by prefix (``call.``, ``queue.``).
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import asyncpg

from omlmedia.storage import AsyncStore, EventRow, Store
from omlmedia.storage_pg import EVENTS_CHANNEL, PgError

__all__ = [
    "AGENT_STATE",
    "CALL_ANSWERED",
    "CALL_ENDED",
    "CALL_QUALITY",
    "CALL_STARTED",
    "NO_EVENTS",
    "ClusterFeed",
    "Event",
    "EventFilter",
    "EventLog",
    "EventSink",
    "Subscription",
    "queue_event_type",
]

logger = logging.getLogger(__name__)

CALL_STARTED = "call.started"
"""A call arrived and was routed (data: from, to, target, trunk, source, direction)."""
CALL_ANSWERED = "call.answered"
"""The call's dialog is confirmed (the ACK for our 200 arrived, or we sent ours)."""
CALL_ENDED = "call.ended"
"""The call is over (data: cause, direction)."""
CALL_QUALITY = "call.quality"
"""One leg's media quality at its end (data: leg, codec, packets, lost, jitter_ms, rtt_ms,
mos): RFC 3550 jitter and loss, RTT from RTCP, E-model MOS."""
AGENT_STATE = "agent.state"
"""An agent's state as its page shows it (data: state, reason)."""

_QUEUE_TYPES = {
    "enter": "queue.entered",
    "offer": "queue.offered",
    "answer": "queue.answered",
    "no-answer": "queue.unanswered",
    "abandon": "queue.abandoned",
    "complete": "queue.completed",
    "transfer": "queue.transferred",
    "callback": "queue.callback",
    "overflow": "queue.overflowed",
    "exit-timeout": "queue.timed_out",
    "exit-empty": "queue.left_empty",
    "login": "queue.agent_login",
    "logout": "queue.agent_logout",
    "pause": "queue.agent_paused",
    "unpause": "queue.agent_unpaused",
}


def queue_event_type(verb: str) -> str:
    """The event type of a queue log verb (`queueing.events.LogEvent`): ``enter`` is
    ``queue.entered``, ``abandon`` ``queue.abandoned``..."""
    return _QUEUE_TYPES.get(verb) or "queue." + verb.replace("-", "_")


def _compact_encoder() -> Callable[[dict[str, Any]], str]:
    """`json.dumps(value, default=str, separators=(",", ":"))` for a dict, without building an
    encoder per call: every event is encoded for the store (and once more for live readers), and
    `dumps` with arguments makes a new `JSONEncoder` each time (3.5 against 2.5 us a call
    event's data). The public encoder, made once; no circular check (an event's data is flat
    values built by the server). CPython's private C encoder would save another 0.6 us an
    event: not worth depending on a private name."""
    return json.JSONEncoder(default=str, separators=(",", ":"), check_circular=False).encode


_compact_json = _compact_encoder()


@dataclass(frozen=True, slots=True)
class Event:
    """One event: its id (strictly increasing), when (Unix time), what (`type`), what it is
    about (call, queue, agent, campaign: "" when none), and its `data`."""

    id: int
    time: float
    type: str
    call_id: str = ""
    queue: str = ""
    agent: str = ""
    campaign: str = ""
    data: Mapping[str, Any] = field(default_factory=dict)
    encoded: str = field(default="", compare=False, repr=False)
    """The event as one line of JSON, when the log encoded it once for every subscriber."""

    def view(self) -> dict[str, Any]:
        """The event as JSON serves it."""
        return {
            "id": self.id,
            "time": self.time,
            "type": self.type,
            "call_id": self.call_id,
            "queue": self.queue,
            "agent": self.agent,
            "campaign": self.campaign,
            "data": dict(self.data),
        }

    def to_json(self) -> str:
        """The event as one line of JSON."""
        return self.encoded or _compact_json(self.view())

    def row(self) -> EventRow:
        """The event as the store keeps it."""
        values = self.data
        data = _compact_json(values if type(values) is dict else dict(values))
        return (
            self.id,
            self.time,
            self.type,
            self.call_id,
            self.queue,
            self.agent,
            self.campaign,
            data,
        )

    @classmethod
    def from_row(cls, row: EventRow) -> Event:
        """An event read back from the store."""
        id_, time_, type_, call_id, queue, agent, campaign, data = row
        try:
            values = json.loads(data)
        except ValueError:
            values = {}
        return cls(
            id_,
            time_,
            type_,
            call_id,
            queue,
            agent,
            campaign,
            values if isinstance(values, dict) else {},
        )


def _id(ev: Event) -> int:
    return ev.id


class EventSink(Protocol):
    """Where the parts of the server publish their events (`EventLog`)."""

    def publish(
        self,
        type: str,
        *,
        call_id: str = "",
        queue: str = "",
        agent: str = "",
        campaign: str = "",
        data: Mapping[str, Any] | None = None,
        time: float | None = None,
    ) -> object:
        """Record one event (at once, never waiting)."""


class _NoEvents:
    """The sink of a part built without an event log (tests, tools): publishes nothing."""

    def publish(
        self,
        type: str,
        *,
        call_id: str = "",
        queue: str = "",
        agent: str = "",
        campaign: str = "",
        data: Mapping[str, Any] | None = None,
        time: float | None = None,
    ) -> None:
        return None


NO_EVENTS: EventSink = _NoEvents()
"""The default sink: publishes nothing."""


@dataclass(frozen=True, slots=True)
class EventFilter:
    """Which events a subscriber wants: types by prefix (any of them; none: every type), and
    exact queue, agent and campaign (each a set; empty: any). `scope`, when set, says which
    events a token's scope covers (`omlmedia.eventstream` builds it from `omlmedia.authz`)."""

    types: tuple[str, ...] = ()
    queues: frozenset[str] = frozenset()
    agents: frozenset[str] = frozenset()
    campaigns: frozenset[str] = frozenset()
    scope: Callable[[Event], bool] | None = None

    @property
    def everything(self) -> bool:
        """Whether it lets every event through (no filter, no scope): readers skip it."""
        return self.scope is None and not (
            self.types or self.queues or self.agents or self.campaigns
        )

    def __call__(self, ev: Event) -> bool:
        if self.types and not ev.type.startswith(self.types):
            return False
        if self.queues and ev.queue not in self.queues:
            return False
        if self.agents and ev.agent not in self.agents:
            return False
        if self.campaigns and ev.campaign not in self.campaigns:
            return False
        return self.scope is None or self.scope(ev)

    @classmethod
    def parse(
        cls,
        types: Iterable[str] = (),
        queues: Iterable[str] = (),
        agents: Iterable[str] = (),
        campaigns: Iterable[str] = (),
        scope: Callable[[Event], bool] | None = None,
    ) -> EventFilter:
        """A filter from lists of comma-separated values (query parameters)."""

        def split(values: Iterable[str]) -> list[str]:
            return [part.strip() for v in values for part in v.split(",") if part.strip()]

        return cls(
            tuple(split(types)),
            frozenset(split(queues)),
            frozenset(split(agents)),
            frozenset(split(campaigns)),
            scope,
        )


class Subscription:
    """One live reader of the log: where it stands (`cursor`, the last id it has read) and what
    it wants (`match`). Subscribers share the log's memory and read it at their own pace; the
    log never waits for one. A subscriber that has caught up with the log (`live`) and then
    falls more than `limit` events behind is `overflowed`: its reader is told through `cut`."""

    __slots__ = ("cursor", "cut", "limit", "live", "match", "overflowed")

    def __init__(self, match: Callable[[Event], bool], limit: int, cursor: int) -> None:
        self.match = match
        self.limit = limit
        self.cursor = cursor
        self.live = False
        """Whether it has caught up with the log once (a replay is never cut off)."""
        self.overflowed = False
        self.cut = asyncio.Event()
        """Set when the subscription overflowed or the log closed: its reader must stop."""

    def close(self) -> None:
        """The log is closing: the reader stops."""
        self.cut.set()


class _Reader:
    """Reads committed events on one thread of its own with its own connection (to the store's
    SQLite file or PostgreSQL DSN)."""

    def __init__(self, path: Path | str, node: str = "") -> None:
        self.path = path
        self.node = node
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="omlmedia-events-reader")
        self._store: Store | None = None

    def _read(self, after: int, limit: int) -> list[EventRow]:
        if self._store is None:
            self._store = Store(self.path, node=self.node)
        return self._store.events(after, limit)

    async def events(self, after: int, limit: int) -> list[EventRow]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._read, after, limit)

    def _close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._close)
        self._executor.shutdown(wait=True)


REPLAY_PAGE = 1000
"""Events read from the database at a time while replaying."""


class _Readers:
    """What the event log and the cluster feed share: subscribers reading at their own pace
    (`read`, cut off when they fall behind: `_drop`) and the waiters for the next event."""

    last_id: int
    subscribers: set[Subscription]
    overflowed: int
    _next: asyncio.Future[None] | None
    closed: bool = False
    """Set by the close (the server stops): a subscription made afterwards is cut at once."""

    def _subscribe(self, match: Callable[[Event], bool], limit: int, cursor: int) -> Subscription:
        sub = Subscription(match, limit, cursor)
        sub.live = sub.cursor >= self.last_id
        if self.closed:
            # A client reconnecting to a stopping server (its stream just ended with 1001)
            # gets 1001 again at once, instead of a stream that holds the HTTP server's stop
            # for its grace (5 s) with nothing to send.
            sub.close()
            return sub
        self.subscribers.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        """Stop tracking `sub`."""
        self.subscribers.discard(sub)

    async def wait(self, after: int) -> None:
        """Return once an event after `after` was published (read, for the cluster's feed)."""
        while self.last_id <= after:
            if self._next is None:
                self._next = asyncio.get_running_loop().create_future()
            await asyncio.shield(self._next)

    async def read(self, sub: Subscription, most: int = 1000) -> list[Event]:
        """The next events of `sub` (at most `most` examined): from memory when it holds them,
        from the store otherwise; `sub.cursor` moves past every event examined, and `sub` is
        `live` once it reached the last one."""
        events, sub.cursor = await self._read(sub.cursor, most, sub.match)
        if sub.cursor >= self.last_id:
            sub.live = True
        return events

    async def _read(
        self, cursor: int, most: int, match: Callable[[Event], bool]
    ) -> tuple[list[Event], int]:
        raise NotImplementedError

    def _woken(self) -> None:
        """Wake the waiters: an event came."""
        waiter = self._next
        if waiter is not None:
            self._next = None
            if not waiter.done():
                waiter.set_result(None)

    def _drop(self, dropped: list[Subscription]) -> None:
        """Cut off the subscribers that fell more than their limit behind."""
        for sub in dropped:
            sub.overflowed = True
            sub.cut.set()
            self.overflowed += 1
            self.subscribers.discard(sub)

    def _close_subscribers(self) -> None:
        self.closed = True
        for sub in list(self.subscribers):
            sub.close()
        self.subscribers.clear()

    def _cancel_waiters(self) -> None:
        if self._next is not None and not self._next.done():
            self._next.cancel()
        self._next = None


class EventLog(_Readers):
    """Gives events their ids, stores them (through `store`) and lets subscribers read them.

    Without a store (tests, tools) events live in memory only (the last `keep`)."""

    def __init__(
        self,
        store: AsyncStore | None = None,
        *,
        clock: Callable[[], float] = time.time,
        keep: int = 10_000,
        cluster: bool = False,
    ) -> None:
        self.store = store
        self.clock = clock
        self.keep = keep
        """Events kept in memory: the last `keep`, and more while they are not all committed
        (the store has every other one)."""
        self.last_id = store.store.committed_event_id if store is not None else 0
        """The id of the last event published."""
        self.recent: list[Event] = []
        """The last events published, in id order (increasing, not always consecutive): at
        least the last `keep`, and every one not yet committed."""
        self._floor = self.last_id
        """Every event of this log with an id up to this one is in the store, not in `recent`."""
        self.subscribers: set[Subscription] = set()
        self.published = 0
        """Events published since start."""
        self.overflowed = 0
        """Subscribers dropped for falling behind, since start."""
        self.unrecorded = 0
        """Events not recorded for want of an id while the database was away, since start."""
        self._unrecording = False
        self.listeners: list[Callable[[Event], None]] = []
        """Called with every event, at once (in-process readers: metrics histograms)."""
        self.outbox: Callable[[Event], Sequence[tuple[str, tuple[Any, ...]]]] | None = None
        """Called with every event before it is stored: the writes that must commit with it
        (the webhooks' deliveries, `omlmedia.webhooks`)."""
        self._reader = _Reader(store.store.path, store.store.node) if store is not None else None
        self._next: asyncio.Future[None] | None = None
        path = store.store.path if store is not None else None
        self.cluster: ClusterFeed | None = (
            ClusterFeed(path, self, keep=keep) if cluster and isinstance(path, str) else None
        )
        """With `cluster` and a PostgreSQL store: every node's committed events, which the
        stream serves instead of this log (`stream`)."""

    @property
    def stream(self) -> EventLog | ClusterFeed:
        """What the event stream reads: the cluster's events, or this node's."""
        return self.cluster if self.cluster is not None else self

    @property
    def head_id(self) -> int:
        """The id of the last event readable (a reader's ``since_id`` for "from now on")."""
        return self.last_id

    @property
    def stream_clients(self) -> int:
        """Readers of the stream (and other live subscribers)."""
        return len(self.stream.subscribers)

    @property
    def stream_dropped(self) -> int:
        """Stream readers cut off for falling behind, since start."""
        return self.overflowed + (self.cluster.overflowed if self.cluster is not None else 0)

    def start(self) -> None:
        """Start following the cluster's events (with `cluster`; on the running loop)."""
        if self.cluster is not None:
            self.cluster.start()

    async def ready(self) -> bool:
        """Whether the stream can be read (this log: always)."""
        return True

    async def cursor_of(self, event_id: int) -> int | None:
        """The cursor of a reader that resumes after `event_id` (here the id itself)."""
        return event_id

    def publish(
        self,
        type: str,
        *,
        call_id: str = "",
        queue: str = "",
        agent: str = "",
        campaign: str = "",
        data: Mapping[str, Any] | None = None,
        time: float | None = None,
    ) -> Event:
        """Record one event: its id, the store's next batch, memory; wake the readers. With
        no event id to be had (the database away past the ids reserved ahead), the event is
        not recorded (counted in `unrecorded`, logged once per outage): whatever published it
        (a call's set-up, its end) goes on."""
        try:
            ident = self.store.next_event_id() if self.store is not None else self.last_id + 1
        except ConnectionError as error:
            self.unrecorded += 1
            if not self._unrecording:
                self._unrecording = True
                logger.warning("events are not recorded until the database is back: %s", error)
            stamp = self.clock() if time is None else time
            return Event(0, stamp, type, call_id, queue, agent, campaign, dict(data or {}))
        if self._unrecording:
            self._unrecording = False
            logger.warning("events are recorded again (%d were not)", self.unrecorded)
        self.last_id = ident
        ev = Event(
            self.last_id,
            self.clock() if time is None else time,
            type,
            call_id,
            queue,
            agent,
            campaign,
            dict(data) if data else {},
        )
        if self.subscribers:
            # Encoded once here rather than once per subscriber.
            ev = replace(ev, encoded=ev.to_json())
        self.published += 1
        if self.store is not None:
            writes = self.outbox(ev) if self.outbox is not None else ()
            self.store.append_event(ev.row(), writes)
        recent = self.recent
        recent.append(ev)
        if len(recent) >= 2 * self.keep:
            self._trim()
        for listener in self.listeners:
            try:
                listener(ev)
            except Exception:
                logger.exception("an event listener failed on %s", ev.type)
        self._woken()
        if self.subscribers and not self.published % 32:
            self._sweep()
        return ev

    def _trim(self) -> None:
        """Forget the oldest events beyond `keep`, but never one not yet committed."""
        recent = self.recent
        committed = self.store.store.committed_event_id if self.store is not None else self.last_id
        drop = min(len(recent) - self.keep, bisect.bisect_right(recent, committed, key=_id))
        if drop > 0:
            self._floor = recent[drop - 1].id
            del recent[:drop]

    def _sweep(self) -> None:
        """Drop the live subscribers that fell more than their limit behind."""
        recent = self.recent

        def behind(cursor: int) -> int:
            return len(recent) - bisect.bisect_right(recent, cursor, key=_id)

        self._drop([s for s in self.subscribers if s.live and behind(s.cursor) > s.limit])

    def subscribe(
        self, match: Callable[[Event], bool], limit: int = 1000, after: int | None = None
    ) -> Subscription:
        """A subscription to the events after `after` (None: from now on) that `match`."""
        return self._subscribe(
            match, limit, self.last_id if after is None else min(after, self.last_id)
        )

    async def _read(
        self, cursor: int, most: int, match: Callable[[Event], bool]
    ) -> tuple[list[Event], int]:
        while cursor < self.last_id:
            recent = self.recent
            first = recent[0].id if recent else self.last_id + 1
            if cursor >= self._floor:
                start = bisect.bisect_right(recent, cursor, key=_id)
                window = recent[start : start + most]
                if not window:
                    return [], self.last_id
                if isinstance(match, EventFilter) and match.everything:
                    return window, window[-1].id  # a slice: the caller's own list
                return [ev for ev in window if match(ev)], window[-1].id
            if self._reader is None:
                cursor = max(cursor, self._floor)  # evicted without a store: gone
                continue
            rows = await self._reader.events(cursor, min(most, REPLAY_PAGE))
            rows = [row for row in rows if row[0] < first]
            if rows:
                events = [ev for ev in map(Event.from_row, rows) if match(ev)]
                return events, rows[-1][0]
            recent = self.recent
            if (recent[0].id if recent else self.last_id + 1) == first:
                # Nothing stored between cursor and memory (ids of a run that crashed before
                # committing them are given again): go on from memory.
                cursor = max(cursor, self._floor)
        return [], cursor

    async def replay(
        self, after: int, upto: int, match: Callable[[Event], bool]
    ) -> AsyncIterator[list[Event]]:
        """The events with ids in (`after`, `upto`] that `match`, in id order, in batches."""
        cursor = after
        while cursor < upto:
            events, moved = await self._read(cursor, min(REPLAY_PAGE, upto - cursor), match)
            if moved == cursor:
                return
            cursor = moved
            batch = [ev for ev in events if ev.id <= upto]
            if batch:
                yield batch

    async def close(self) -> None:
        """Tell every subscriber to stop, and close the reader (the store is the server's)."""
        self._close_subscribers()
        self._cancel_waiters()
        if self._reader is not None:
            await self._reader.close()
            self._reader = None
        if self.cluster is not None:
            await self.cluster.close()


CLUSTER_PAGE = 1000
"""Events the cluster feed reads from the database at a time."""
CLUSTER_POLL = 1.0
"""Seconds the cluster feed waits for a notification before it looks anyway, while someone reads
it (a notification is not kept for a listener that was disconnected; the look also finds a
silent connection)."""
CLUSTER_IDLE = 15.0
"""Seconds a feed nobody reads waits for a notification before it looks anyway: only to find a
connection lost silently (no reader needs the place in the meantime: the first one to come
wakes the follower, and a stream's `ClusterFeed.ready` looks first when the last look or
notification is older than `CLUSTER_POLL`)."""
CLUSTER_TIMEOUT = 5.0
"""Seconds a query of the cluster feed may take before its connection is taken for lost."""
COMMIT_WAIT = 5.0
"""Seconds a reader resuming after an event of this node not yet committed waits for it."""

_AFTER = (
    "SELECT pos, id, time, type, call_id, queue, agent, campaign, data FROM events "
    "WHERE pos > $1 ORDER BY pos LIMIT $2"
)


_HEAD = "SELECT pos, id FROM events WHERE pos > $1 ORDER BY pos DESC LIMIT 1"
_FEED_ERRORS = PgError
"""What a feed's query may raise when its connection is lost (`PgError` includes asyncpg's
internal error: a connection ended by the server in the middle of an operation)."""
FEED_APPLICATION = "omlmedia-events"
"""The ``application_name`` of the feed's connections (``pg_stat_activity``)."""


async def _connect(dsn: str) -> asyncpg.Connection:
    return await asyncpg.connect(
        dsn, timeout=CLUSTER_TIMEOUT, server_settings={"application_name": FEED_APPLICATION}
    )


def _event(row: asyncpg.Record) -> Event:
    ev = Event.from_row(tuple(row)[1:])
    return replace(ev, encoded=ev.to_json())  # encoded once for every reader


class ClusterFeed(_Readers):
    """Every node's committed events in commit order (``events.pos``), for the stream of a
    node of a cluster: the same reading interface as `EventLog` (`subscribe`, `read`, `wait`,
    `last_id`), whose cursors are places in that order, not event ids (`cursor_of` turns a
    client's last id into its cursor).

    One task follows the database on a connection of its own that listens to
    `omlmedia.storage_pg.EVENTS_CHANNEL`: at each notification (and every `CLUSTER_POLL`
    seconds) it reads the events placed after the last one it has, keeps the last `keep` in
    memory and wakes the readers; a reader behind memory reads from the database (a second
    connection, one query at a time). With no reader it reads no event: each notification
    names the place and id of the last event its commit stored, which is all the feed keeps then
    (a node whose stream nobody reads sends no query per commit and decodes no other node's
    events); it looks (that place and id only) every `CLUSTER_IDLE` seconds rather than every
    `CLUSTER_POLL`, to find a connection lost silently, and at once when a reader comes (the
    first subscriber, or `ready` before a stream subscribes). A lost connection is
    made again with backoff, and the follower goes on from its last place: places are never
    given to an earlier commit, so none is skipped. Live readers that fall more than their
    limit behind are cut off, as by the node's log: memory stays bounded and no reader slows
    the node."""

    def __init__(self, dsn: str, local: EventLog, *, keep: int = 10_000) -> None:
        self.dsn = dsn
        self.local = local
        """This node's log: a reader resuming after one of its events not yet committed waits
        for the commit."""
        self.keep = keep
        self.last_id = 0
        """The place of the last event read (cursors are places)."""
        self.head_id = 0
        """The id of that event (0: none)."""
        self._places: list[int] = []
        self._events: list[Event] = []
        """The last events read, in place order (`_places` beside them)."""
        self._floor = 0
        """Every event placed up to here is in the database, not in memory."""
        self.subscribers: set[Subscription] = set()
        self.overflowed = 0
        """Readers cut off for falling behind, since start."""
        self.followed = 0
        """Events read by the follower, since start."""
        self._next: asyncio.Future[None] | None = None
        self._wake = asyncio.Event()
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._reader: asyncpg.Connection | None = None
        self._reading = asyncio.Lock()
        self._failing = False
        self._seen = 0.0
        """`time.monotonic` of the last look or notification: the place was right then."""
        self._asked: list[asyncio.Future[None]] = []
        """`ready`'s callers waiting for the follower's next look."""
        self.looks = 0
        """Looks of the follower (queries of its own), since start."""

    def start(self) -> None:
        """Start following (on the running loop)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._follow())

    async def ready(self, within: float = 5.0) -> bool:
        """Whether the feed knows where the cluster's events stand (waits up to `within`).

        A feed nobody reads looks only every `CLUSTER_IDLE` seconds: when neither a look nor
        a notification came in the last `CLUSTER_POLL` seconds, this waits (up to `within`)
        for the follower to look, so that a reader from now on starts where the events stand
        now, even after a connection lost silently, not some seconds before (not while the
        follower fails to connect: the stream starts at once, as before). Closed (the server
        stopping): False at once (nobody would look: a reader waited `within` and held the
        stop)."""
        if self.closed:
            return False
        if not self._ready.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(within):
                    await self._ready.wait()
        elif (
            not self.subscribers
            and not self._failing  # PostgreSQL known unreachable: no look is coming soon
            and time.monotonic() - self._seen > CLUSTER_POLL
        ):
            looked = asyncio.get_running_loop().create_future()
            self._asked.append(looked)
            self._wake.set()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(within):
                    await asyncio.shield(looked)
        return self._ready.is_set() and not self.closed

    def _notified(self, _connection: object, _pid: int, _channel: str, payload: str) -> None:
        """A flush committed events (``"node id pos"``: its last event, `omlmedia.storage`'s
        ``_EVENT_NOTIFY``). With no reader, the place is all the feed needs: no query, no row
        read; with readers (or a payload without a place) the follower reads."""
        self._seen = time.monotonic()
        if not self.subscribers:
            parts = payload.rsplit(" ", 2)
            if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
                self._advance(int(parts[2]), int(parts[1]))
                return
        self._wake.set()

    def _advance(self, place: int, event_id: int) -> None:
        """With no reader: the events stand at `place` (the event `event_id`); memory is
        dropped (a reader that comes reads from the database). Never backwards: a look that
        was on its way when a later notification came in is older than it."""
        if place > self.last_id:
            self.last_id = self._floor = place
            self.head_id = event_id
            self._places.clear()
            self._events.clear()
            self._woken()

    async def _follow(self) -> None:
        backoff = 0.2
        while True:
            db: asyncpg.Connection | None = None
            try:
                db = await _connect(self.dsn)
                await db.add_listener(EVENTS_CHANNEL, self._notified)
                # A connection the server ended (restart, administrator) is made again at
                # once, not at the next look.
                db.add_termination_listener(self._lost)
                if not self._ready.is_set():
                    row = await db.fetchrow(
                        "SELECT pos, id FROM events WHERE pos IS NOT NULL "
                        "ORDER BY pos DESC LIMIT 1",
                        timeout=CLUSTER_TIMEOUT,
                    )
                    if row is not None:
                        self._advance(int(row["pos"]), int(row["id"]))
                    self.looks += 1
                    self._ready.set()
                if self._failing:
                    logger.warning("following the cluster's events again")
                self._failing, backoff = False, 0.2
                while True:
                    self._wake.clear()
                    asked, self._asked = self._asked, []
                    try:
                        await self._catch_up(db)
                    except BaseException:
                        self._asked[:0] = asked  # answered by the next look that succeeds
                        raise
                    self.looks += 1
                    self._seen = time.monotonic()
                    for looked in asked:
                        if not looked.done():
                            looked.set_result(None)
                    # Nobody reading: a notification, a reader, a lost connection or
                    # `CLUSTER_IDLE` wakes it (no query a second for nothing).
                    period = CLUSTER_POLL if self.subscribers else CLUSTER_IDLE
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(period):
                            await self._wake.wait()
            except asyncio.CancelledError:
                raise
            except (*_FEED_ERRORS, ConnectionError) as error:
                if not self._failing:
                    logger.warning("following the cluster's events failed (%s); will retry", error)
                self._failing = True
            except Exception:
                # Whatever else went wrong, the follower goes on: the stream depends on it.
                if not self._failing:
                    logger.exception("following the cluster's events failed; will retry")
                self._failing = True
            finally:
                if db is not None:
                    db.terminate()
            await asyncio.sleep(backoff)
            backoff = min(5.0, backoff * 2)

    def _lost(self, _connection: object) -> None:
        """The follower's connection was closed: its next query fails and it connects again."""
        self._wake.set()

    async def _catch_up(self, db: asyncpg.Connection) -> None:
        if not self.subscribers:
            # No reader: only where the events stand (no row read, none decoded); a reader
            # that comes reads what it needs from the database, then from memory.
            row = await db.fetchrow(_HEAD, self.last_id, timeout=CLUSTER_TIMEOUT)
            if row is not None:
                self._advance(int(row["pos"]), int(row["id"]))
            return
        while True:
            rows = await db.fetch(_AFTER, self.last_id, CLUSTER_PAGE, timeout=CLUSTER_TIMEOUT)
            # a notification may have moved the place on while this read was on its way (the
            # last reader left meanwhile): what it passed is not kept
            rows = [row for row in rows if row["pos"] > self.last_id]
            if not rows:
                return
            self._places.extend(int(row["pos"]) for row in rows)
            self._events.extend(map(_event, rows))
            self.followed += len(rows)
            self.last_id = self._places[-1]
            self.head_id = self._events[-1].id
            if len(self._places) >= 2 * self.keep:
                drop = len(self._places) - self.keep
                self._floor = self._places[drop - 1]
                del self._places[:drop], self._events[:drop]
            self._woken()
            self._sweep()
            if len(rows) < CLUSTER_PAGE:
                return

    def _sweep(self) -> None:
        places = self._places
        self._drop(
            [
                s
                for s in self.subscribers
                if s.live and len(places) - bisect.bisect_right(places, s.cursor) > s.limit
            ]
        )

    def subscribe(
        self, match: Callable[[Event], bool], limit: int = 1000, after: int | None = None
    ) -> Subscription:
        """A subscription to the events placed after `after` (a cursor, `cursor_of`; None:
        from now on) that `match`. The first reader wakes the follower: an idle feed's place
        may be up to `CLUSTER_IDLE` seconds old after a connection lost silently (the reader
        from a cursor gets what it missed at the follower's look)."""
        idle = not self.subscribers
        sub = self._subscribe(match, limit, self.last_id if after is None else after)
        if idle:
            self._wake.set()
        return sub

    async def _read(
        self, cursor: int, most: int, match: Callable[[Event], bool]
    ) -> tuple[list[Event], int]:
        if cursor >= self.last_id:
            return [], cursor
        if cursor >= self._floor:
            start = bisect.bisect_right(self._places, cursor)
            window = self._events[start : start + most]
            if not window:
                return [], self.last_id
            moved = self._places[start + len(window) - 1]
            if isinstance(match, EventFilter) and match.everything:
                return window, moved
            return [ev for ev in window if match(ev)], moved
        rows = await self._query(_AFTER, cursor, min(most, CLUSTER_PAGE))
        rows = [row for row in rows if row["pos"] <= self.last_id]
        if not rows:
            return [], max(cursor, self._floor)
        return [ev for ev in map(_event, rows) if match(ev)], int(rows[-1]["pos"])

    async def _query(self, sql: str, *args: object) -> list[asyncpg.Record]:
        async with self._reading:
            for attempt in (1, 2):  # a connection lost since its last use: once more, anew
                fresh = self._reader is None or self._reader.is_closed()
                try:
                    if self._reader is None or self._reader.is_closed():
                        self._reader = await _connect(self.dsn)
                    return list(await self._reader.fetch(sql, *args, timeout=CLUSTER_TIMEOUT))
                except _FEED_ERRORS as error:
                    if self._reader is not None:
                        self._reader.terminate()
                        self._reader = None
                    if fresh or attempt == 2:
                        raise ConnectionError(
                            f"reading the cluster's events failed: {error}"
                        ) from error
            raise AssertionError("unreachable")

    async def cursor_of(self, event_id: int) -> int | None:
        """The cursor of a reader resuming after the event `event_id` (0: the whole log);
        None when no such event was committed. An event of this node not yet committed is
        waited for (up to `COMMIT_WAIT` seconds): its id may come from this node's wallboard."""
        if event_id <= 0:
            return 0
        place = await self._place(event_id)
        store = self.local.store
        committed = store.store.committed_event_id if store is not None else 0
        if place is None and committed < event_id <= self.local.last_id:
            # Its commit notifies the follower, which wakes the waiters of its next read.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(COMMIT_WAIT):
                    while place is None:
                        await self.wait(self.last_id)
                        place = await self._place(event_id)
        return place

    async def _place(self, event_id: int) -> int | None:
        rows = await self._query("SELECT pos FROM events WHERE id = $1", event_id)
        return int(rows[0]["pos"]) if rows and rows[0]["pos"] is not None else None

    async def close(self) -> None:
        """Stop following; tell every reader to stop."""
        self._close_subscribers()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._cancel_waiters()
        for looked in self._asked:  # their ready() answers (False: closed), not cancelled
            if not looked.done():
                looked.set_result(None)
        self._asked.clear()
        if self._reader is not None:
            self._reader.terminate()
            self._reader = None
