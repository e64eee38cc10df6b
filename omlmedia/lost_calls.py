"""The calls of a dead node, recorded by the nodes that survive it (``[cluster] redis_url`` with
``[storage] dsn``).

Theory of operation. Every call that enters a queue is noted in the store's ``open_calls`` table
with the name of the node carrying it (`omlmedia.storage.Store.call_started`); its record replaces
that row when it ends. A node that dies (``kill -9``, its machine lost) never writes those
records, and its own `Store.recover` runs only if it starts again. So each node, beside the
others sharing one PostgreSQL database and one Redis:

- beats: every `INTERVAL` seconds it sets ``omlmedia:node-alive:<node>`` with a time to live of
  `TTL`, and notes the time in the hash ``omlmedia:node-seen`` (no expiry: when it was last
  known alive);
- sweeps: after each beat, with the beat's answer (the same script, one round trip a second for
  both) of whether a node of that hash has lost its alive key; only then (and on the first sweep,
  every `FULL_READ_EVERY`-th, and while a node is noted missing) it reads the open calls of the
  other nodes from the database (every node reading every open call each second cost a cluster
  node CPU in proportion to the calls of the whole cluster) and, for each node whose alive key has
  lapsed and stayed away for two intervals more (a live node would have beaten again meanwhile: a
  key lost with a Redis restarted empty is no death), closes its calls in one transaction: the
  ``open_calls`` rows are deleted (``DELETE ... RETURNING``) and each one that this transaction
  deleted gets a call record with cause ``node-lost`` (ended when its node was last seen alive)
  and a ``closed-node-lost`` queue log entry. Two survivors sweeping at once cannot record a call
  twice: the second's ``DELETE`` waits for the first's commit and then finds no row.

A node dead for good has its calls recorded `TTL` plus two to three intervals after its death
(about 6 s by default).

Redis unreachable (for this node): it neither beats nor sweeps, as it cannot tell a dead node from
its own outage; once Redis answers again it waits `TTL` and two intervals before it sweeps, so
that every live node, whose key lapsed during the outage, has beaten again. The limit: a node
alive but cut off from Redis (alone) for longer than `TTL` is taken for dead by the others, and
its calls get ``node-lost`` records; when such a call then ends on its node, the node's own
record replaces the ``node-lost`` one (records are written by call id, ``ON CONFLICT``
replace), so the final record is right, though its queue log keeps the ``closed-node-lost``
entry.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Final

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from omlmedia.storage import (
    _CDR_UPSERT,
    _TEXT_COLUMNS,
    CallRecord,
    StoreError,
    _cdr_row,
    _storable,
    connect,
)

__all__ = ["ALIVE_PREFIX", "CAUSE", "INTERVAL", "SEEN", "TTL", "LostCall", "LostCalls"]

logger = logging.getLogger(__name__)

ALIVE_PREFIX: Final = "omlmedia:node-alive:"
"""Key prefix of a node's heartbeat (followed by the node's name), expiring after `TTL`."""

SEEN: Final = "omlmedia:node-seen"
"""Hash: node name → the time (Unix seconds) of its last heartbeat."""

INTERVAL: Final = 1.0
"""Seconds between two heartbeats of a node, and between two sweeps."""

TTL: Final = 3.0
"""Seconds a heartbeat lives: a node silent for that long is taken for dead."""

CAUSE: Final = "node-lost"
"""The cause of the record of a call whose node died."""

TIMEOUT: Final = 1.0
"""Seconds to wait for Redis (connect and each command)."""

FULL_READ_EVERY: Final = 10
"""A sweep reads the open calls from the database when Redis shows a node that beat before and
whose alive key is away, while a node is noted missing, and on the first sweep and every
`FULL_READ_EVERY`-th one whatever Redis shows (a node that never beat, or whose last beat Redis
forgot in a restart, has its calls found there)."""

_BEAT: Final = """
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('HSET', KEYS[2], ARGV[3], ARGV[1])
local lapsed = {}
for _, node in ipairs(redis.call('HKEYS', KEYS[2])) do
  if node ~= ARGV[3] and redis.call('EXISTS', ARGV[4] .. node) == 0 then
    lapsed[#lapsed + 1] = node
  end
end
return lapsed
"""
"""A beat: the node's alive key (KEYS[1]) set to the time (ARGV[1]) for ARGV[2] ms, and the
time noted in `SEEN` (KEYS[2]) for the node (ARGV[3]); atomic like the MULTI/EXEC pipeline it
replaces, for about a quarter less of the node's CPU in redis-py (125-140 µs a beat against
160-185 µs, measured). It answers what `_LAPSED` does (the other nodes of `SEEN` whose alive
key, prefix ARGV[4], is away), so that the sweep that follows a beat needs no round trip of
its own: one Redis call a second for both loops."""

_LAPSED: Final = """
local lapsed = {}
for _, node in ipairs(redis.call('HKEYS', KEYS[1])) do
  if node ~= ARGV[2] and redis.call('EXISTS', ARGV[1] .. node) == 0 then
    lapsed[#lapsed + 1] = node
  end
end
return lapsed
"""
"""The nodes of `SEEN` (KEYS[1]) other than ARGV[2] whose alive key (prefix ARGV[1]) is away,
in one round trip."""


@dataclass(frozen=True, slots=True)
class LostCall:
    """A call of a dead node, recorded by this one."""

    call_id: str
    node: str
    start: float
    end: float
    queue: str = ""
    agent: str = ""


def _info(data: Any) -> dict[str, Any]:
    try:
        info = json.loads(data)
    except (TypeError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


class LostCalls:
    """This node's heartbeat, and the records of the calls of nodes whose heartbeat lapsed.

    `location` is the shared store (a PostgreSQL DSN; a SQLite file works too, for one machine);
    `on_lost` is told of each batch of calls recorded (the server publishes their
    ``call.ended``)."""

    def __init__(
        self,
        redis_url: str,
        node: str,
        location: Path | str,
        *,
        interval: float = INTERVAL,
        ttl: float = TTL,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        on_lost: Callable[[list[LostCall]], None] | None = None,
    ) -> None:
        if not node:
            raise ValueError("a node needs a name to beat")
        self.node = node
        self.location = location
        self.interval = interval
        self.ttl = ttl
        self.clock = clock
        self.monotonic = monotonic
        self.on_lost = on_lost
        self.errors = 0
        """Redis or database calls that failed since start (each one logged)."""
        self.recorded = 0
        """Calls of dead nodes this node recorded since start."""
        self._redis: Any = aioredis.from_url(
            redis_url, socket_timeout=TIMEOUT, socket_connect_timeout=TIMEOUT
        )
        self._db: Any = None
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False
        self._redis_down = False
        self._healthy_since: float | None = None
        """When this node's Redis calls last started to succeed (None: failing)."""
        self._missing_since: dict[str, float] = {}
        """Other nodes whose alive key was missing at the last sweep: since when."""
        self._lapsed = self._redis.register_script(_LAPSED)
        self._beat = self._redis.register_script(_BEAT)
        self._sweeps = 0
        self._beaten = asyncio.Event()
        """Set by each beat that worked: the sweeping loop sweeps after it."""
        self._lapsed_seen: tuple[float, list[str]] | None = None
        """The last beat's reading of the lapsed nodes (when, which), used once by a sweep
        that follows it closely instead of asking Redis again."""

    @property
    def confirm(self) -> float:
        """Seconds a node's alive key must stay away before the node is taken for dead."""
        return 2 * self.interval

    def _redis_failed(self, what: str, exc: BaseException) -> None:
        """Count every failure; log the first of an outage only (one a second otherwise)."""
        self.errors += 1
        if not self._redis_down:
            logger.warning("lost calls: %s failed: %s (neither beating nor sweeping)", what, exc)
        self._redis_down = True
        self._healthy_since = None
        self._missing_since.clear()

    def _redis_worked(self) -> None:
        if self._redis_down:
            logger.warning(
                "lost calls: Redis answers again (sweeping after %.1f s)", self.ttl + self.confirm
            )
            self._redis_down = False
        if self._healthy_since is None:
            self._healthy_since = self.monotonic()

    def status(self) -> dict[str, Any]:
        """For the status API."""
        return {"node": self.node, "recorded": self.recorded, "errors": self.errors}

    def _failed(self, what: str, exc: BaseException) -> None:
        self.errors += 1
        logger.warning("lost calls: %s failed: %s", what, exc)

    async def beat(self) -> bool:
        """Say this node is alive, for the next `ttl` seconds; False if Redis is unreachable."""
        now = self.clock()
        try:
            lapsed = await self._beat(
                keys=[ALIVE_PREFIX + self.node, SEEN],
                args=[repr(now), max(1, int(self.ttl * 1000)), self.node, ALIVE_PREFIX],
            )
        except (RedisError, OSError) as exc:
            self._redis_failed("beating", exc)
            return False
        self._redis_worked()
        self._lapsed_seen = (self.monotonic(), list(lapsed))
        self._beaten.set()
        return True

    async def lapsed(self, nodes: list[str], within: float) -> set[str]:
        """Of `nodes`, those that beat once (in `SEEN`) and whose alive key is away now: dead,
        or cut off from Redis for `ttl` seconds. Empty when Redis does not answer within
        `within` seconds (a node is never taken for dead on a doubt)."""
        if not nodes:
            return set()
        try:
            async with asyncio.timeout(within), self._redis.pipeline(transaction=False) as pipe:
                for node in nodes:
                    pipe.exists(ALIVE_PREFIX + node)
                pipe.hmget(SEEN, nodes)
                *alive, seen = await pipe.execute()
        except (RedisError, OSError, TimeoutError) as exc:
            self._failed("reading the heartbeats", exc)
            return set()
        return {
            node
            for node, exists, last in zip(nodes, alive, seen, strict=True)
            if not exists and last is not None
        }

    async def sweep(self) -> list[LostCall]:
        """Record the calls of every other node whose heartbeat lapsed (and stayed away for
        `confirm` seconds); the calls recorded."""
        healthy = self._healthy_since
        if healthy is None or self.monotonic() - healthy < self.ttl + self.confirm:
            return []  # Redis failed lately: the live nodes' keys may still be coming back
        self._sweeps += 1
        if self._sweeps % FULL_READ_EVERY != 1 and not self._missing_since:
            # Every node that beat is alive (the usual case): no need to read every open call
            # of the cluster from the database, each second on every node. The beat just
            # before this sweep read it (the loop sweeps after each beat); else Redis is asked.
            seen, self._lapsed_seen = self._lapsed_seen, None
            if seen is not None and self.monotonic() - seen[0] < self.interval / 2:
                lapsed = seen[1]
            else:
                try:
                    lapsed = await self._lapsed(keys=[SEEN], args=[ALIVE_PREFIX, self.node])
                except (RedisError, OSError) as exc:
                    self._redis_failed("reading the heartbeats", exc)
                    return []
                self._redis_worked()
            if not lapsed:
                return []
        try:
            open_calls = await asyncio.to_thread(self._open_calls)
        except (*StoreError, OSError) as exc:
            self._failed("reading the open calls", exc)
            self._drop_connection()
            return []
        nodes = sorted({node for node, _ in open_calls.values() if node != self.node})
        if not nodes:
            return []
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for node in nodes:
                    pipe.exists(ALIVE_PREFIX + node)
                pipe.hmget(SEEN, nodes)
                *alive, seen = await pipe.execute()
        except (RedisError, OSError) as exc:
            self._redis_failed("reading the heartbeats", exc)
            return []
        self._redis_worked()
        now, moment = self.clock(), self.monotonic()
        dead: dict[str, float] = {}
        missing = self._missing_since
        for node in list(missing):
            if node not in nodes:
                del missing[node]
        for node, exists, last in zip(nodes, alive, seen, strict=True):
            if exists:
                missing.pop(node, None)
                continue
            if moment - missing.setdefault(node, moment) < self.confirm:
                continue
            try:
                dead[node] = float(last) if last is not None else now
            except ValueError:
                dead[node] = now
        if not dead:
            return []
        ids = [call_id for call_id, (node, _) in open_calls.items() if node in dead]
        try:
            lost = await asyncio.to_thread(self._close, ids, dead, now)
        except (*StoreError, OSError) as exc:
            self._failed("recording the calls of a dead node", exc)
            self._drop_connection()
            return []
        if lost:
            self.recorded += len(lost)
            for node in sorted({call.node for call in lost}):
                count = sum(1 for call in lost if call.node == node)
                logger.warning("recorded %d call(s) of node %s as lost (%s)", count, node, CAUSE)
            if self.on_lost is not None:
                self.on_lost(lost)
        return lost

    # -- the database, on a worker thread ---------------------------------------------------

    def _connection(self) -> Any:
        if self._db is None:
            self._db = connect(self.location)
        return self._db

    def _drop_connection(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            try:
                db.close()
            except (*StoreError, OSError):
                pass

    def _open_calls(self) -> dict[str, tuple[str, Mapping[str, Any]]]:
        """Committed open calls: call id → (its node, its data)."""
        rows = self._connection().execute("SELECT call_id, data FROM open_calls").fetchall()
        calls: dict[str, tuple[str, Mapping[str, Any]]] = {}
        for call_id, data in rows:
            info = _info(data)
            calls[str(call_id)] = (str(info.get("node", "")), info)
        return calls

    def _close(self, ids: list[str], dead: Mapping[str, float], now: float) -> list[LostCall]:
        """In one transaction: delete these open calls (those still there and still of a dead
        node) and write a record and a queue log entry for each one deleted."""
        db = self._connection()
        lost: list[LostCall] = []
        db.execute("BEGIN IMMEDIATE")
        try:
            for call_id in ids:
                row = db.execute(
                    "DELETE FROM open_calls WHERE call_id = ? RETURNING start, data", (call_id,)
                ).fetchone()
                if row is None:
                    continue  # ended meanwhile, or recorded by another node
                start, data = float(row[0]), row[1]
                info = _info(data)
                node = str(info.get("node", ""))
                if node not in dead:  # the call id was taken again by a live node: put it back
                    db.execute(
                        "INSERT INTO open_calls (call_id, start, data) VALUES (?, ?, ?)",
                        (call_id, start, data),
                    )
                    continue
                end = max(start, min(dead[node], now))
                texts: dict[str, Any] = {
                    k: str(v)
                    for k, v in info.items()
                    if k in _TEXT_COLUMNS and k not in ("call_id", "cause")
                }
                record = replace(
                    CallRecord(call_id=call_id, start=start, end=end, cause=CAUSE), **texts
                )
                db.execute(_CDR_UPSERT, _storable([_cdr_row(record)])[0])
                detail = json.dumps({"node": node, "cause": CAUSE}, separators=(",", ":"))
                queue, agent = str(info.get("queue", "")), str(info.get("agent", ""))
                db.execute(
                    "INSERT INTO queue_log (time, call_id, queue, agent, event, data) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    _storable([(end, call_id, queue, agent, "closed-node-lost", detail)])[0],
                )
                lost.append(LostCall(call_id, node, start, end, queue, agent))
            db.execute("COMMIT")
        except BaseException:
            try:
                if db.in_transaction:
                    db.execute("ROLLBACK")
            except (*StoreError, OSError):
                pass
            raise
        return lost

    # -- the loop ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Beat once now (so the others know this node before it takes a call), then beat
        every `interval` and sweep after each beat that worked, until `close`: two loops, so
        that a slow database (a sweep waiting for PostgreSQL) never delays the heartbeat; the
        sweep uses the beat's reading of the lapsed nodes (one Redis call a second, one timer)."""
        await self.beat()
        if not self._tasks:
            loop = asyncio.get_running_loop()
            self._tasks = [loop.create_task(self._beating()), loop.create_task(self._sweeping())]

    async def _beating(self) -> None:
        while not self._closing:
            await asyncio.sleep(self.interval)
            if not self._closing:
                await self.beat()

    async def _sweeping(self) -> None:
        while not self._closing:
            await self._beaten.wait()
            self._beaten.clear()
            if not self._closing:
                await self.sweep()

    async def close(self) -> None:
        """Stop beating (the key lapses by itself: a node that stops has no calls left open)
        and close the connections."""
        self._closing = True
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            try:
                await task
            except asyncio.CancelledError:
                pass
        await asyncio.to_thread(self._drop_connection)
        await self._redis.aclose()
