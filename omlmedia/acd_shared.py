"""One ACD across nodes, over Redis: the asyncio side of `queueing.replica`.

Every node runs a `SharedAcd`. What happens to the node's callers and agents goes in with
`submit()`: inputs are queued locally (bounded, dropped ones counted) and appended in order to the
stream ``acd:in`` by one sender task, each tagged with the node's incarnation and its own count so
that a retried append is applied once.

One node at a time is the *owner*. It takes the lease ``acd:owner`` (``SET NX PX``) and, in the
same Lua script, ``INCR acd:epoch``: the epoch is the fencing token of everything it publishes. It
renews the lease with a compare-and-extend script; when a renewal fails or the lease's local
deadline passes it stops at once. On taking the lease it rebuilds the engine by replaying
``acd:in`` from the start (`ReplicatedAcd.rebuild`; the decisions of entries up to
``acd:published`` went out already), then reads the stream in order (``XREAD BLOCK``), applies
each input, and publishes the decisions to ``acd:out`` with a Lua script that appends only if this
node still holds the lease *with that epoch* (an owner paused past its lease cannot publish after
a takeover). A timer that falls due is written to the stream as a `Tick` and applied when read
back, so the stream alone determines the engine.

Every node reads ``acd:out``, passes each decision through its `DecisionFence` (older epochs and
duplicates refused) and hands the accepted ones that concern its own callers or agents to the
callback. While Redis is unreachable nothing is decided: inputs wait in the local queue and are
appended, in order, once it is back.

**Following** (``on_applied``, what the server uses): every node also applies ``acd:in``, in
order, to its own `ReplicatedAcd` (``replica``) and hands each entry's decisions to
``on_applied``; the engine is a function of the stream, so every node computes the same decisions
and each acts on those that concern its own callers and agents (`omlmedia.acd_cluster`), with the
engine's whole state at hand for queries. The owner then keeps no replica of its own and publishes
nothing: it writes the `Tick` inputs and records lost nodes from the followed replica, so a
takeover needs no rebuild (the new owner's replica is current) and lasts as long as the lease.
A node that starts replays the stream (its callback acts from the first entry it appended).

Redis must keep its data across a restart (AOF) and be a single primary: the stream is the ACD's
only state. See ``docs/cluster.md``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

import redis.asyncio as aioredis
from redis.exceptions import RedisError

import queueing
from queueing.config import AcdConfig
from queueing.events import LogEvent, Overflow, QueueLogEntry
from queueing.replica import (
    AgentLogin,
    CallerEnter,
    Decision,
    DecisionFence,
    Input,
    ReplicaError,
    ReplicatedAcd,
    Source,
    Tick,
    config_from_dict,
    config_to_dict,
    input_from_dict,
)

__all__ = ["ENGINE_VERSION", "EngineMismatch", "SharedAcd", "SharedAcdStats", "engine_version"]


def engine_version() -> str:
    """A digest of the ACD engine's code (every module of `queueing`). The nodes of one shared
    ACD must run the same engine: each applies every input itself, and two versions of the
    engine could decide differently on the same stream (an agent offered two calls)."""
    digest = hashlib.sha256()
    for path in sorted(os.scandir(os.path.dirname(queueing.__file__)), key=lambda e: e.name):
        if path.name.endswith(".py"):
            digest.update(path.name.encode() + b"\0")
            with open(path.path, "rb") as source:
                digest.update(source.read())
    return digest.hexdigest()[:16]


ENGINE_VERSION: Final = engine_version()


class EngineMismatch(ConnectionRefusedError):
    """Live nodes of the shared ACD run another version of the engine: this node cannot join
    (an OSError, so that `serve` reports it and exits like a port in use)."""


logger = logging.getLogger(__name__)

FOLLOW_BLOCK: Final = 5.0
"""Seconds the follower's ``XREAD BLOCK`` waits for an input (it returns at once on one)."""

_LEASE: Final = """
redis.call('SET', KEYS[3], 1, 'PX', ARGV[2])
if ARGV[4] == '0' then
  if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[3]) then
    return {redis.call('INCR', KEYS[2]), 0}
  end
  return {0, redis.call('PTTL', KEYS[1])}
end
if redis.call('GET', KEYS[1]) == ARGV[1] and redis.call('GET', KEYS[2]) == ARGV[4] then
  local alive = 0
  for i = 4, #KEYS do
    alive = alive + redis.call('EXISTS', KEYS[i])
  end
  return {redis.call('PEXPIRE', KEYS[1], ARGV[3]), 0, alive}
end
return {0, 0}
"""
"""A node's beat, in one round trip: its heartbeat key (KEYS[3], for ARGV[2] ms), then with
no epoch (ARGV[4] '0') an attempt to take the lease (KEYS[1], for ARGV[3] ms): the new epoch
from KEYS[2], or 0 and the milliseconds the holder's lease has left; else its renewal if this
incarnation (ARGV[1]) still holds it with that epoch (1, or 0), then 0 and how many of the
heartbeat keys KEYS[4..] exist (the owner's look for lost nodes, `_find_lost_nodes`, without a
round trip of its own)."""

_RELEASE: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

_PUBLISH: Final = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
if redis.call('GET', KEYS[2]) ~= ARGV[2] then return -2 end
for i = 4, #ARGV do
  redis.call('XADD', KEYS[3], '*', 'd', ARGV[i])
end
redis.call('SET', KEYS[4], ARGV[3])
return #ARGV - 3
"""

_SNAPSHOT: Final = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
if redis.call('GET', KEYS[2]) ~= ARGV[2] then return -2 end
local previous = redis.call('HGET', KEYS[3], 'entry')
redis.call('HSET', KEYS[3], 'entry', ARGV[3], 'data', ARGV[4])
if previous then
  return redis.call('XTRIM', KEYS[4], 'MINID', previous)
end
return 0
"""

_APPEND: Final = """
for i = 1, #ARGV, 3 do
  redis.call('XADD', KEYS[1], '*', 's', ARGV[i], 'n', ARGV[i + 1], 'i', ARGV[i + 2])
end
return #ARGV / 3
"""

_TERMINAL: Final = frozenset(
    {LogEvent.COMPLETE, LogEvent.TRANSFER, LogEvent.ABANDON, LogEvent.EXIT_TIMEOUT}
)


@dataclass
class SharedAcdStats:
    """Counters of one node's `SharedAcd`."""

    submitted: int = 0
    appended: int = 0
    dropped: int = 0
    """Inputs lost because the local queue was full while Redis was unreachable."""
    redis_errors: int = 0
    acquisitions: int = 0
    step_downs: int = 0
    applied: int = 0
    published: int = 0
    refused_publish: int = 0
    """Publications the Lua script refused (this node no longer held the lease with its
    epoch)."""
    malformed: int = 0
    accepted: int = 0
    fenced: int = 0
    """Decisions refused by the fence (older epoch or duplicate)."""
    nodes_lost: int = 0
    """Nodes this node, as owner, found lost (heartbeat lapsed) and recorded so."""
    rebuild_seconds: float = 0.0
    rebuild_entries: int = 0
    snapshots: int = 0
    """Snapshots this node stored as owner (each lets the stream be trimmed before the one
    stored before it)."""
    snapshot_seconds: float = 0.0
    """How long the last snapshot took to take and encode."""
    trimmed: int = 0
    """Input entries trimmed from the stream after snapshots."""
    restored_from: str = ""
    """The entry of the snapshot this node's follower started from ("" if none)."""


Callback = Callable[[Decision], Awaitable[None] | None]
Applied = Callable[[str, Input, Source | None, list[Decision]], None]
"""A followed entry: its id, the input, who appended it, and the decisions it led to."""


class SharedAcd:
    """One node's part of the cluster's single ACD (see the module docstring).

    `config` and `seed` seed the shared state when this node is the first: the first node's
    values are kept in Redis (``acd:config``) and every node uses those. `on_decision` gets
    every accepted decision about a caller or agent of this node (`own_call`, `own_agent`;
    `caller_enter` and `agent_login` inputs submitted here make them this node's).
    """

    def __init__(
        self,
        url: str,
        node: str,
        config: AcdConfig,
        on_decision: Callback,
        *,
        seed: int = 0,
        prefix: str = "acd:",
        lease_ttl: float = 3.0,
        renew_every: float = 0.5,
        max_pending: int = 10_000,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        redis_timeout: float = 2.0,
        node_timeout: float = 10.0,
        on_any: Callable[[Decision, bool], None] | None = None,
        on_applied: Applied | None = None,
        snapshot_every: int = 10_000,
        snapshot_interval: float = 60.0,
        engine: str = ENGINE_VERSION,
    ) -> None:
        self.node = node
        self.engine = engine
        """The engine's version this node runs (`engine_version`)."""
        self.incarnation = f"{node}/{os.getpid()}/{os.urandom(4).hex()}"
        """This process: the lease's value and the source of its inputs."""
        self.stats = SharedAcdStats()
        self.fence = DecisionFence()
        self.own_calls: set[str] = set()
        self.own_agents: set[str] = set()
        self.epoch = 0
        """The epoch this node owns the ACD with, 0 when it does not."""
        self._config = config
        self._seed = seed
        self._on_decision = on_decision
        self._on_any = on_any
        self._on_applied = on_applied
        self.replica: ReplicatedAcd | None = None
        """The followed engine (with `on_applied`), current up to `followed`."""
        self.followed = "0-0"
        self.caught_up = asyncio.Event()
        """Set once the follower has read the stream to its end at start."""
        self._applied_event = asyncio.Event()
        self._snapshot_every = snapshot_every
        self._snapshot_interval = snapshot_interval
        self._snapshot_applied = 0
        self._snapshot_at = 0.0
        self._ttl_ms = int(lease_ttl * 1000)
        self._lease_ttl = lease_ttl
        self._renew_every = renew_every
        self._idle_beat = max(renew_every, min(lease_ttl, node_timeout / 3))
        """The longest a node that does not hold the lease waits between beats (it waits until
        the holder's lease would lapse, which the holder's renewals push on): a dead owner's
        lease is taken at its expiry as before, a lease given back (a node that stops) within
        `lease_ttl`, and the node's heartbeat is renewed three times a node timeout."""
        self._follow_block_ms = max(1, int(1000 * FOLLOW_BLOCK))
        """How long the follower's XREAD waits for inputs (on a connection of its own whose
        timeout leaves it the time): an input wakes it at once; an idle node's wait ends every
        `FOLLOW_BLOCK` seconds, not every second."""
        self._clock = clock
        self._monotonic = monotonic
        self._pending: deque[tuple[int, Input]] = deque()
        self._max_pending = max_pending
        self._count = 0
        self._wake = asyncio.Event()
        self._lease_deadline = 0.0
        self._node_timeout = node_timeout
        self._owned_since = 0.0
        self._declared: set[str] = set()
        self._tick_pending: float | None = None
        self._acd: ReplicatedAcd | None = None
        self._owner_task: asyncio.Task[None] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = False
        k = {name: prefix + name for name in ("owner", "epoch", "in", "out", "published")}
        self._k_owner, self._k_epoch, self._k_in = k["owner"], k["epoch"], k["in"]
        self._k_out, self._k_published = k["out"], k["published"]
        self._k_config = prefix + "config"
        self._k_snapshot = prefix + "snapshot"
        self._k_node = prefix + "node:"
        self._redis: Any = aioredis.from_url(
            url,
            socket_timeout=redis_timeout,
            socket_connect_timeout=redis_timeout,
            decode_responses=True,
        )
        self._follow_redis: Any = aioredis.from_url(
            url,
            socket_timeout=redis_timeout + FOLLOW_BLOCK,
            socket_connect_timeout=redis_timeout,
            decode_responses=True,
        )
        """The follower's blocked reads' client (its socket timeout longer than the block)."""
        self._lease = self._redis.register_script(_LEASE)
        self._release = self._redis.register_script(_RELEASE)
        self._publish = self._redis.register_script(_PUBLISH)
        self._append = self._redis.register_script(_APPEND)
        self._store_snapshot = self._redis.register_script(_SNAPSHOT)

    # -- life cycle ---------------------------------------------------------------------------

    async def start(self, *, out_from: str = "$") -> None:
        """Agree on the configuration (retrying until Redis answers) and start the tasks;
        `out_from` is where this node starts reading decisions (``$``: from now on)."""
        while True:
            try:
                mine = {
                    "config": config_to_dict(self._config),
                    "seed": self._seed,
                    "engine": self.engine,
                }
                await self._redis.set(self._k_config, json.dumps(mine), nx=True)
                stored = json.loads(await self._redis.get(self._k_config))
                if stored.get("engine") != self.engine:
                    await self._adopt_engine(stored)
                break
            except RedisError as error:
                self._failed("reading the configuration", error)
                await asyncio.sleep(self._renew_every)
        self._config = config_from_dict(stored["config"])
        self._seed = int(stored["seed"])
        self._tasks = [
            asyncio.create_task(self._send_loop(), name="acd-send"),
            asyncio.create_task(self._lease_loop(), name="acd-lease"),
        ]
        if self._on_applied is not None:
            self.replica = ReplicatedAcd(self._config, seed=self._seed)
            self._tasks.append(asyncio.create_task(self._follow_loop(), name="acd-follow"))
        else:
            self._tasks.append(asyncio.create_task(self._read_loop(out_from), name="acd-read"))

    async def _adopt_engine(self, stored: dict[str, Any]) -> None:
        """The stored configuration names another engine (or none: written before versions
        were): wait for the nodes still beating (a restarted node's previous process, a cluster
        being stopped for an upgrade) to lapse, up to the node timeout, then take the stream on
        with this engine; `EngineMismatch` if some still beat (another version runs)."""
        previous = stored.get("engine")
        deadline = self._monotonic() + (self._node_timeout + 1.0 if previous else 0.0)
        while previous:
            live = [key async for key in self._redis.scan_iter(self._k_node + "*")]
            if not live:
                break
            if self._monotonic() >= deadline:
                raise EngineMismatch(
                    f"the shared ACD's {len(live)} live node(s) run engine {previous} and this "
                    f"node {self.engine}: every node must run the same omlmedia version "
                    "(docs/cluster.md, Upgrades)"
                )
            await asyncio.sleep(self._renew_every)
        stored["engine"] = self.engine
        await self._redis.set(self._k_config, json.dumps(stored))
        if previous:
            logger.warning(
                "shared ACD %s: no live node runs engine %s any more; engine %s follows the "
                "stream on",
                self.node,
                previous,
                self.engine,
            )

    async def close(self, *, flush: float = 2.0) -> None:
        """Send the inputs still waiting (for at most `flush` seconds: a node that stops
        after hanging up its calls tells the ACD so), stop every task and give the lease back
        if held."""
        deadline = self._monotonic() + flush
        while self._pending and self._tasks and self._monotonic() < deadline:
            self._wake.set()
            await asyncio.sleep(0.02)
        self._closed = True  # redis-py may turn a cancelled read into a ConnectionError
        owner = self._owner_task
        for task in [*self._tasks, *([owner] if owner else [])]:
            task.cancel()
        for task in [*self._tasks, *([owner] if owner else [])]:
            with contextlib.suppress(asyncio.CancelledError, RedisError):
                await task
        if self.epoch:
            with contextlib.suppress(RedisError, OSError):
                await self._release(keys=[self._k_owner], args=[self.incarnation])
        self.epoch = 0
        await self._redis.aclose()
        await self._follow_redis.aclose()

    @property
    def is_owner(self) -> bool:
        return self.epoch > 0 and self._monotonic() < self._lease_deadline

    @property
    def config(self) -> AcdConfig:
        return self._config

    def _failed(self, what: str, error: Exception) -> None:
        self.stats.redis_errors += 1
        logger.warning("shared ACD %s: %s failed: %s", self.node, what, error)

    # -- inputs -------------------------------------------------------------------------------

    def submit(self, item: Input) -> int:
        """Queue `item` for the stream: its count among this node's inputs (the second half of
        its `Source`), 0 (and counted) when the local queue is full."""
        self.stats.submitted += 1
        if isinstance(item, CallerEnter):
            self.own_calls.add(item.call)
        elif isinstance(item, AgentLogin):
            self.own_agents.add(item.agent)
        if len(self._pending) >= self._max_pending:
            self.stats.dropped += 1
            return 0
        self._count += 1
        self._pending.append((self._count, item))
        self._wake.set()
        return self._count

    @property
    def pending(self) -> int:
        """Inputs waiting to be appended."""
        return len(self._pending)

    async def _send_loop(self) -> None:
        while not self._closed:
            await self._wake.wait()
            self._wake.clear()
            while self._pending and not self._closed:
                batch = list(self._pending)[:200]
                args: list[str | int] = []
                for count, item in batch:
                    args += [self.incarnation, count, json.dumps(item.to_dict())]
                try:
                    await self._append(keys=[self._k_in], args=args)
                except (RedisError, OSError) as error:
                    # kept in order; a batch that did go in before the error is skipped by the
                    # owner (same source and counts)
                    self._failed("appending inputs", error)
                    await asyncio.sleep(min(self._renew_every, 0.5))
                    continue
                for _ in batch:
                    self._pending.popleft()
                self.stats.appended += len(batch)

    # -- ownership ----------------------------------------------------------------------------

    async def _lease_loop(self) -> None:
        while not self._closed:
            started = self._monotonic()
            held = self.epoch  # what was asked (a step-down may come during the await)
            wait = self._renew_every
            senders = self._senders() if held else []
            try:
                result, left_ms, *alive = await self._lease(
                    keys=[
                        self._k_owner,
                        self._k_epoch,
                        self._k_node + self.incarnation,
                        *[self._k_node + sender for sender in senders],
                    ],
                    args=[
                        self.incarnation,
                        int(self._node_timeout * 1000),
                        self._ttl_ms,
                        held,
                    ],
                )
                if not held and not result and int(left_ms) > 0:
                    # Another node holds the lease: try again when it would lapse (its owner
                    # renews it meanwhile, and the next try says for how long), not every
                    # `renew_every`: a follower's beat costs a round trip every second.
                    wait = min(int(left_ms) / 1000 + 0.005, self._idle_beat)
                if held:
                    if result:
                        self._lease_deadline = started + self._lease_ttl * 0.8
                        if senders and int(alive[0]) < len(senders):
                            await self._find_lost_nodes(senders)
                    else:
                        self._step_down("the lease was taken")
                elif result:
                    self.epoch = int(result)
                    self._lease_deadline = started + self._lease_ttl * 0.8
                    self.stats.acquisitions += 1
                    self._owned_since = started
                    self._declared = set()
                    logger.info("shared ACD %s: owner with epoch %d", self.node, self.epoch)
                    own = self._tick_loop() if self.replica is not None else self._own()
                    self._owner_task = asyncio.create_task(own, name="acd-own")
            except (RedisError, OSError) as error:
                self._failed("the lease", error)
            if self.epoch and self._monotonic() >= self._lease_deadline:
                self._step_down("the lease ran out")
            await asyncio.sleep(wait)

    def _senders(self) -> list[str]:
        """As owner: the other nodes (incarnations) whose heartbeats the lease's renewal checks
        (`_LEASE`): those that sent inputs and were not declared lost; none before a node
        timeout of ownership, so that after a Redis outage every live node has had the time to
        renew its heartbeat."""
        acd = self.replica if self.replica is not None else self._acd
        if acd is None or self._monotonic() - self._owned_since < self._node_timeout:
            return []
        return sorted(acd.senders() - self._declared - {self.incarnation})

    async def _find_lost_nodes(self, senders: list[str]) -> None:
        """As owner, when the lease's renewal found some of `senders`' heartbeats away: a node
        whose heartbeat lapsed is lost; record it (its callers abandon, its agents are logged
        out)."""
        acd = self.replica if self.replica is not None else self._acd
        if acd is None:
            return
        for sender in senders:
            if not await self._redis.exists(self._k_node + sender):
                logger.warning("shared ACD %s: node %s is lost", self.node, sender)
                self._declared.add(sender)
                self.stats.nodes_lost += 1
                for item in acd.lost(sender, self._clock()):
                    self.submit(item)

    async def _tick_loop(self) -> None:
        """As owner of a following node: write a `Tick` when the followed engine's timer is
        due (applied when read back, like any input)."""
        epoch = self.epoch
        replica = self.replica
        assert replica is not None
        while self.epoch == epoch and not self._closed:
            # Sleep until the engine's next deadline, a snapshot's, or the next input applied
            # (the only thing that moves the deadline): no polling while nothing is due.
            wait: float | None = None
            due = replica.due()
            if due is not None:
                late = self._clock() - due
                if late >= 0:
                    if self._tick_pending != due:
                        self._tick_pending = due
                        self.submit(Tick(self._clock()))
                    wait = 0.05  # until the tick is read back and the timer moves on
                else:
                    wait = -late
            await self._maybe_snapshot(epoch, replica)
            if replica.applied + replica.skipped != self._snapshot_applied:
                snapshot_in = self._snapshot_interval - (self._monotonic() - self._snapshot_at)
                snapshot_in = max(snapshot_in, self._renew_every)  # a failed one: not at once
                wait = snapshot_in if wait is None else min(wait, snapshot_in)
            self._applied_event.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(None if wait is None else max(wait, 0.001)):
                    await self._applied_event.wait()

    async def _maybe_snapshot(self, epoch: int, replica: ReplicatedAcd) -> None:
        """As owner: store the followed replica's snapshot every `snapshot_every` inputs, or
        after `snapshot_interval` seconds with any input, and trim the stream before the
        snapshot stored previously (a follower lagging by less than an interval loses
        nothing; a node that starts restores the latest and reads only what follows)."""
        applied = replica.applied + replica.skipped
        if applied == self._snapshot_applied or replica.last_entry is None:
            return
        due = self._monotonic() - self._snapshot_at >= self._snapshot_interval
        if not due and applied - self._snapshot_applied < self._snapshot_every:
            return
        started = time.perf_counter()
        data = json.dumps(replica.snapshot(), separators=(",", ":"))
        self.stats.snapshot_seconds = time.perf_counter() - started
        try:
            trimmed = await self._store_snapshot(
                keys=[self._k_owner, self._k_epoch, self._k_snapshot, self._k_in],
                args=[self.incarnation, epoch, replica.last_entry, data],
            )
        except (RedisError, OSError) as error:
            self._failed("storing a snapshot", error)
            return
        self._snapshot_at = self._monotonic()
        self._snapshot_applied = applied
        if int(trimmed) < 0:
            self._step_down("Redis refused the snapshot")
            return
        self.stats.snapshots += 1
        self.stats.trimmed += int(trimmed)

    async def _follow_loop(self) -> None:
        """Apply every entry of the input stream, in order, to `replica`, and hand each with
        its decisions to `on_applied` (the replayed ones too: what came before this process's
        first input concerns none of its callers and agents, but says where others are)."""
        replica, applied = self.replica, self._on_applied
        assert replica is not None and applied is not None
        replaying = True
        stored: dict[str, str] = {}
        while not self._closed:
            try:
                stored = await self._redis.hgetall(self._k_snapshot)
                break
            except (RedisError, OSError) as error:
                self._failed("reading the snapshot", error)
                await asyncio.sleep(min(self._renew_every, 0.5))
        if stored:
            try:
                replica.restore(json.loads(stored["data"]))
            except (KeyError, ValueError) as error:  # ReplicaError is a ValueError
                logger.error("shared ACD %s: the snapshot is unusable: %s", self.node, error)
            else:
                self.followed = stored["entry"]
                self.stats.restored_from = stored["entry"]
        while not self._closed:
            try:
                if replaying:
                    entries = await self._redis.xrange(
                        self._k_in, min=f"({self.followed}", count=5000
                    )
                    if not entries:
                        replaying = False
                        self.caught_up.set()
                        logger.info("shared ACD %s: followed %d inputs", self.node, replica.applied)
                        continue
                else:
                    reply = await self._follow_redis.xread(
                        {self._k_in: self.followed},
                        count=500,
                        block=self._follow_block_ms,
                    )
                    entries = [entry for _stream, got in reply or [] for entry in got]
            except (RedisError, OSError) as error:
                self._failed("following the inputs", error)
                await asyncio.sleep(min(self._renew_every, 0.5))
                continue
            for entry_id, fields in entries:
                self.followed = entry_id
                parsed = self._parse(entry_id, fields)
                if parsed is None:
                    continue
                _, item, source = parsed
                try:
                    decisions = replica.apply(entry_id, item, source)
                except Exception:  # every node fails alike on it: skip it, never stop
                    self.stats.malformed += 1
                    logger.exception("shared ACD: input %s cannot be applied", entry_id)
                    continue
                self.stats.applied += 1
                if isinstance(item, Tick):
                    self._tick_pending = None
                try:
                    applied(entry_id, item, source, decisions)
                except Exception:
                    logger.exception("shared ACD: acting on %s failed", entry_id)
            if entries:
                self._applied_event.set()

    def _step_down(self, why: str) -> None:
        if not self.epoch:
            return
        logger.warning("shared ACD %s: no longer owner (epoch %d): %s", self.node, self.epoch, why)
        self.epoch = 0
        self._acd = None
        self._tick_pending = None
        self.stats.step_downs += 1
        task, self._owner_task = self._owner_task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    def _parse(self, entry_id: str, fields: dict[str, str]) -> tuple[str, Input, Source] | None:
        try:
            item = input_from_dict(json.loads(fields["i"]))
            return entry_id, item, (fields["s"], int(fields["n"]))
        except (KeyError, ValueError, ReplicaError) as error:
            self.stats.malformed += 1
            logger.warning("shared ACD: stream entry %s skipped: %s", entry_id, error)
            return None

    async def _own(self) -> None:
        epoch = self.epoch
        try:
            acd, last = await self._rebuild(epoch)
            while self.epoch == epoch and not self._closed:
                block = min(self._renew_every, 0.5)  # well under the socket timeout
                due = acd.due()
                if due is not None:
                    wait = due - self._clock()
                    if wait <= 0 and self._tick_pending != due:
                        self._tick_pending = due
                        self.submit(Tick(self._clock()))
                    block = min(block, max(wait, 0.001))
                reply = await self._redis.xread(
                    {self._k_in: last}, count=500, block=max(1, int(block * 1000))
                )
                decisions: list[Decision] = []
                for _stream, entries in reply or []:
                    for entry_id, fields in entries:
                        last = entry_id
                        parsed = self._parse(entry_id, fields)
                        if parsed is None:
                            continue
                        _, item, source = parsed
                        if isinstance(item, Tick):
                            self._tick_pending = None
                        decisions += acd.apply(entry_id, item, source)
                        self.stats.applied += 1
                if reply and acd.last_entry is not None:
                    await self._publish_decisions(epoch, acd.last_entry, decisions)
        except (RedisError, OSError) as error:
            self._failed("owning the ACD", error)
            self._step_down("Redis failed")
        except ReplicaError:
            logger.exception("shared ACD %s: the input stream cannot be applied", self.node)
            self._step_down("the input stream cannot be applied")

    async def _rebuild(self, epoch: int) -> tuple[ReplicatedAcd, str]:
        started = time.perf_counter()
        published = await self._redis.get(self._k_published)
        entries: list[tuple[str, Input, Source]] = []
        last = "0-0"
        while True:
            chunk = await self._redis.xrange(self._k_in, min=f"({last}", count=5000)
            if not chunk:
                break
            for entry_id, fields in chunk:
                last = entry_id
                parsed = self._parse(entry_id, fields)
                if parsed is not None:
                    entries.append(parsed)
        acd = ReplicatedAcd(self._config, seed=self._seed, epoch=epoch)
        pending = acd.rebuild(entries, published, epoch=epoch)
        self.stats.rebuild_seconds = time.perf_counter() - started
        self.stats.rebuild_entries = len(entries)
        logger.info(
            "shared ACD %s: rebuilt from %d inputs in %.3f s, %d decisions to publish",
            self.node,
            len(entries),
            self.stats.rebuild_seconds,
            len(pending),
        )
        self._acd = acd
        if pending and acd.last_entry is not None:
            await self._publish_decisions(epoch, acd.last_entry, pending)
        return acd, last

    async def _publish_decisions(self, epoch: int, last: str, decisions: list[Decision]) -> None:
        if not decisions:
            return
        if self.epoch != epoch or self._monotonic() >= self._lease_deadline:
            self._step_down("the lease ran out before publishing")
            return
        args: list[str | int] = [self.incarnation, epoch, last]
        args += [json.dumps(d.to_dict()) for d in decisions]
        result = await self._publish(
            keys=[self._k_owner, self._k_epoch, self._k_out, self._k_published], args=args
        )
        if int(result) < 0:
            self.stats.refused_publish += 1
            self._step_down("Redis refused the publication")
            return
        self.stats.published += len(decisions)

    # -- decisions ----------------------------------------------------------------------------

    def concerns(self, decision: Decision) -> bool:
        """Whether `decision` is about a caller or an agent of this node."""
        return decision.call_id in self.own_calls or decision.agent in self.own_agents

    async def _read_loop(self, last: str) -> None:
        while not self._closed:
            try:
                if last == "$":
                    newest = await self._redis.xrevrange(self._k_out, count=1)
                    last = newest[0][0] if newest else "0-0"
                reply = await self._redis.xread(
                    {self._k_out: last}, count=500, block=int(min(self._renew_every, 0.5) * 1000)
                )
            except (RedisError, OSError) as error:
                self._failed("reading decisions", error)
                await asyncio.sleep(self._renew_every)
                continue
            for _stream, entries in reply or []:
                for entry_id, fields in entries:
                    last = entry_id
                    await self._take(entry_id, fields)

    async def _take(self, entry_id: str, fields: dict[str, str]) -> None:
        try:
            decision = Decision.from_dict(json.loads(fields["d"]))
        except (KeyError, ValueError, ReplicaError) as error:
            self.stats.malformed += 1
            logger.warning("shared ACD: decision %s skipped: %s", entry_id, error)
            return
        accepted = self.fence.accept(decision)
        if self._on_any is not None:
            self._on_any(decision, accepted)
        if not accepted:
            self.stats.fenced += 1
            return
        self.stats.accepted += 1
        if not self.concerns(decision):
            return
        out = decision.output
        result = self._on_decision(decision)
        if result is not None:
            await result
        if isinstance(out, QueueLogEntry) and out.event in _TERMINAL:
            self.own_calls.discard(out.call_id)
        elif isinstance(out, Overflow) and out.destination.kind.value != "queue":
            self.own_calls.discard(out.call_id)
