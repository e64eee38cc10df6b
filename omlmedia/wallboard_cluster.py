"""The supervisors' wallboard across the nodes of a cluster with one ACD (``[cluster] acd =
"shared"``).

With the shared ACD every node holds a replica of the engine, so a node's wallboard already
shows the whole cluster's queue figures and agent states; the day's figures come from the
queue log every node writes to. What a node does not know is what only another node holds: the
calls in its queues (their SIP dialog and media are there) and whether the pages of the agents
logged in there are connected now. `ClusterBoard` shares those through Redis:

- every `interval` seconds (1 s) each node looks at ``wallboard:node:<node>``'s value: a JSON
  object with its live queue calls (`omlmedia.wallboard.calls_of`) and the agents whose page is
  connected to it, written with a TTL of `ttl` seconds (5 s) when it changed, and otherwise once
  `ttl` / 2 has passed since the last write (an idle node writes every 2.5 s). A node that stops
  deletes its key; a node that dies stops refreshing it and drops out when it lapses;
- a snapshot (`gather`) reads every other configured node's key in one ``MGET``: the nodes with
  a key are the live ones. The wallboard (`omlmedia.wallboard.Wallboard.snapshot`) lists their
  calls beside its own, each with its ``node``, and gives each agent the ``node`` it logged in
  on (the replica's origin, `omlmedia.acd_cluster.SharedEngine.agent_node`) and ``connected``
  from that node: its own answer on this node, the node's published list on another, false when
  that node is not alive.

Another node's calls are at most `interval` seconds old. Redis unreachable (or slower than
`READ_TIMEOUT`): the snapshot lists this node's calls only and counts the failure
(``errors``), never fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from aiohttp import web
from redis.exceptions import RedisError

from omlmedia.wallboard import calls_of

__all__ = ["KEY_PREFIX", "ClusterBoard", "NodeLive", "board_for"]

logger = logging.getLogger(__name__)

KEY_PREFIX = "wallboard:node:"
READ_TIMEOUT = 0.5
"""Seconds a snapshot waits for Redis before it goes on with this node's calls alone."""
TIMEOUT = 1.0
"""The Redis client's socket timeouts."""


@dataclass(frozen=True, slots=True)
class NodeLive:
    """What a live node published: its queue calls and its connected agents."""

    calls: tuple[dict[str, Any], ...]
    agents: frozenset[str]


def _parse(raw: bytes | str | None) -> NodeLive | None:
    """A node's published value, None when absent or not what a node writes."""
    if raw is None:
        return None
    try:
        value = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(value, dict):
        return None
    calls = value.get("calls")
    agents = value.get("agents")
    if not isinstance(calls, list) or not isinstance(agents, list):
        return None
    return NodeLive(
        tuple(c for c in calls if isinstance(c, dict) and isinstance(c.get("call_id"), str)),
        frozenset(a for a in agents if isinstance(a, str)),
    )


class ClusterBoard:
    """This node's share of the cluster's wallboard (module docstring): `calls` gives this
    node's live queue calls, `connected` its agents whose page is connected, `agent_node` the
    node an agent logged in on (None: not known), `nodes` every configured node's name."""

    def __init__(
        self,
        url: str,
        node: str,
        nodes: Iterable[str],
        *,
        calls: Callable[[], list[dict[str, Any]]],
        connected: Callable[[], Iterable[str]],
        agent_node: Callable[[str], str | None],
        interval: float = 1.0,
        ttl: float = 5.0,
    ) -> None:
        self.url = url
        self.node = node
        self.others = tuple(n for n in dict.fromkeys(nodes) if n != node)
        self.calls = calls
        self.connected = connected
        self.agent_node = agent_node
        self.interval = interval
        self.ttl = ttl
        self.errors = 0
        """Redis calls that failed since start (each logged once per run of failures)."""
        self.published = 0
        self._failing = False
        self._redis: Any = aioredis.from_url(
            url, socket_timeout=TIMEOUT, socket_connect_timeout=TIMEOUT
        )
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._written: tuple[float, bytes] | None = None
        """When the value was last written (the loop's clock), and that value."""

    @staticmethod
    def key(node: str) -> str:
        return KEY_PREFIX + node

    def _failed(self, what: str, exc: BaseException) -> None:
        self.errors += 1
        if not self._failing:
            logger.warning("cluster wallboard: %s failed: %s", what, exc)
        self._failing = True

    def payload(self) -> bytes:
        """This node's value: its calls and connected agents now."""
        try:
            connected = sorted(self.connected())
        except RuntimeError:  # the shared ACD stopped (shutdown)
            connected = []
        return json.dumps({"calls": self.calls(), "agents": connected}).encode()

    async def publish(self, payload: bytes | None = None) -> bool:
        """Write this node's value (`payload`, or the value now) once, with its TTL; False when
        Redis failed."""
        value = self.payload() if payload is None else payload
        self._written = None
        try:
            await self._redis.set(self.key(self.node), value, px=round(self.ttl * 1000))
        except (RedisError, OSError, TimeoutError) as exc:
            self._failed("publish", exc)
            return False
        self._written = (asyncio.get_running_loop().time(), value)
        self.published += 1
        self._failing = False
        return True

    async def refresh(self) -> bool:
        """Write this node's value if it changed since the last write, or if that write is
        `ttl` / 2 old (the key never lapses while the node lives); True when nothing had to
        be written or the write worked."""
        value = self.payload()
        written = self._written
        if (
            written is not None
            and written[1] == value
            and asyncio.get_running_loop().time() - written[0] < self.ttl / 2
        ):
            return True
        return await self.publish(value)

    async def gather(self) -> dict[str, NodeLive]:
        """The other live nodes' values, by node ({} when Redis does not answer in time)."""
        if not self.others:
            return {}
        try:
            async with asyncio.timeout(READ_TIMEOUT):
                raw = await self._redis.mget([self.key(n) for n in self.others])
        except (RedisError, OSError, TimeoutError) as exc:
            self._failed("read", exc)
            return {}
        live = {}
        for node, value in zip(self.others, raw, strict=True):
            parsed = _parse(value)
            if parsed is not None:
                live[node] = parsed
        return live

    async def run(self) -> None:
        """Look every `interval` seconds until `close`, writing when the value changed (and at
        `ttl` / 2 otherwise): an idle node writes every 2.5 s, not every second."""
        while not self._closed:
            await self.refresh()
            await asyncio.sleep(self.interval)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self.run())

    async def close(self) -> None:
        """Stop publishing and delete this node's key: the others drop it at once."""
        self._closed = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        try:
            async with asyncio.timeout(TIMEOUT):
                await self._redis.delete(self.key(self.node))
        except (RedisError, OSError, TimeoutError) as exc:
            self._failed("delete", exc)
        await self._redis.aclose()

    async def lifetime(self, _app: web.Application) -> AsyncIterator[None]:
        """An aiohttp ``cleanup_ctx``: publish while the API serves."""
        self.start()
        yield
        await self.close()


def board_for(config: Any, acd: Any) -> ClusterBoard | None:
    """The cluster board of the server's ACD runtime `acd` (`omlmedia.acd.AcdRuntime`) when
    `config` (`omlmedia.config.Config`) runs the shared ACD; None otherwise."""
    cluster = getattr(config, "cluster", None)
    engine: Any = getattr(acd, "engine", None)
    if (
        cluster is None
        or getattr(cluster, "acd", "local") != "shared"
        or cluster.redis_url is None
        or cluster.node is None
        or not callable(getattr(engine, "agent_node", None))
        or not callable(getattr(engine, "is_local_agent", None))
    ):
        return None

    def connected() -> list[str]:
        """The agents whose page is connected to this node (`AcdRuntime.connected`)."""
        is_connected = getattr(acd, "connected", None)
        if not callable(is_connected):
            return []
        return [
            name
            for name in engine.config.agents
            if engine.is_local_agent(name) and is_connected(name)
        ]

    def agent_node(agent: str) -> str | None:
        try:
            node: str | None = engine.agent_node(agent)
        except RuntimeError:  # the shared ACD is not started (or stopped)
            return None
        return node

    return ClusterBoard(
        cluster.redis_url,
        cluster.node,
        [n.name for n in cluster.nodes],
        calls=lambda: calls_of(acd.callers),
        connected=connected,
        agent_node=agent_node,
    )
