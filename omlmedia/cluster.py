"""Agents' page sessions shared by the nodes, in Redis (``[cluster] redis_url``).

Theory of operation. A node that logs an agent in (`webrtc.signaling.AgentHub`, password
login) writes the session to Redis: the hash ``omlmedia:session:<SHA-256 of the token, hex>``
with the agent's name and its last state, expiring with the session (``PEXPIRE``). The token
itself is never stored, only its hash, as on the node. While the agent works, each change of its
state (ready, paused, on a call...) is noted in the same hash. When the page's node dies, the
page reconnects (through the load balancer) to another node and sends ``auth`` with its token,
as it does after any drop: that node, which has no such session, looks the hash up, adopts the
session (the same token, the time it has left), logs the agent in to its desk and ACD, and, when
the last state noted was ``ready``, makes it Ready again. The page never asks for the password.

An explicit logout deletes the session from Redis; a session that ends otherwise (its page closed
past the reconnect grace, or expired) is left to expire, so a page that lost its node can still
come back to another. Redis unreachable: logins and the pages on their node go on (the session
is then known to that node only); every failure is logged, none reaches the page, and the
latest change of each session is sent again every second until Redis takes it, so the shared
sessions catch up once it is back.

Failed agent logins are counted by all the nodes together in `omlmedia/lockouts.py`, not here.

Where each agent's page lives (`AgentLocator`): a node publishes, for every agent logged in to
it, the key ``omlmedia:agent-node:<agent>`` = its node name, with a short TTL (``NODE_TTL``),
refreshed while the agent stays, deleted (only if it still names this node) when the agent
leaves. Another node that must ring that agent reads the key and sends the call there
(`omlmedia.crossnode`). A node that died stops refreshing: its agents' keys lapse within the
TTL, or are overwritten at once when the page reconnects to another node.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Final

import redis.asyncio as aioredis
from redis.exceptions import RedisError

__all__ = ["NODE_PREFIX", "NODE_TTL", "PREFIX", "AgentLocator", "RedisSessions"]

logger = logging.getLogger(__name__)

PREFIX: Final = "omlmedia:session:"
"""Key prefix of a shared session (followed by the token's SHA-256, hex)."""

TIMEOUT: Final = 1.0
"""Seconds to wait for Redis (connect and each command)."""

NODE_PREFIX: Final = "omlmedia:agent-node:"
"""Key prefix of the node an agent's page is on (followed by the agent's name)."""

NODE_TTL: Final = 15.0
"""Seconds an agent's node is published for; refreshed every third of it while it stays."""

_FORGET_NODE: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

_NOTE_STATE: Final = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  return redis.call('HSET', KEYS[1], 'state', ARGV[1])
end
return 0
"""


RETRY_INTERVAL: Final = 1.0
"""Seconds between two tries to share again what Redis refused (`RedisSessions`)."""


class RedisSessions:
    """The `webrtc.accounts.SharedSessions` of the cluster, in Redis at `url`.

    What Redis could not take (it was away) is not dropped: the latest change of each session
    (stored, its state noted, deleted) is kept and sent again every `RETRY_INTERVAL` until Redis
    takes it, so the shared sessions catch up with the agents once it is back: an agent who
    paused during an outage is not made Ready by another node after it, and a session logged
    out during it cannot be adopted. Changes to one session are sent in order (a later one
    waits behind a pending one)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.errors = 0
        """Redis calls that failed since start (each one logged)."""
        self._redis: Any = aioredis.from_url(
            url, socket_timeout=TIMEOUT, socket_connect_timeout=TIMEOUT
        )
        self._pending: dict[bytes, tuple[str, str, str, float]] = {}
        """Per token hash, its latest change Redis has not taken: (``put``, agent, state,
        expiry on `time.monotonic`), (``note``, "", state, 0) or (``drop``, "", "", 0)."""
        self._retry: asyncio.Task[None] | None = None

    @property
    def pending(self) -> int:
        """Sessions whose latest change waits for Redis."""
        return len(self._pending)

    def _failed(self, what: str, exc: Exception) -> None:
        self.errors += 1
        logger.warning("shared sessions: %s failed: %s", what, exc)

    def _later(self, token_hash: bytes, change: tuple[str, str, str, float]) -> None:
        """Keep `change` for the retry loop (merged with a change already pending)."""
        kind, _, state, _ = change
        earlier = self._pending.get(token_hash)
        if kind == "note" and earlier is not None and earlier[0] == "put":
            change = ("put", earlier[1], state, earlier[3])  # not stored yet: store it so
        elif kind == "note" and earlier is not None and earlier[0] == "drop":
            return  # logged out: nothing to note
        self._pending[token_hash] = change
        if self._retry is None or self._retry.done():
            self._retry = asyncio.get_running_loop().create_task(self._retry_loop())

    async def _send(self, token_hash: bytes, change: tuple[str, str, str, float]) -> None:
        kind, agent, state, expires = change
        key = PREFIX + token_hash.hex()
        if kind == "put":
            ttl = expires - time.monotonic()
            if ttl <= 0:
                return  # expired meanwhile: nothing to share
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.hset(key, mapping={"agent": agent, "state": state})
                pipe.pexpire(key, max(1, int(ttl * 1000)))
                await pipe.execute()
        elif kind == "note":
            await self._redis.eval(_NOTE_STATE, 1, key, state)
        else:
            await self._redis.delete(key)

    async def _apply(self, token_hash: bytes, change: tuple[str, str, str, float]) -> None:
        if token_hash in self._pending:  # an earlier change waits: this one goes after it
            self._later(token_hash, change)
            return
        try:
            await self._send(token_hash, change)
        except (RedisError, OSError) as exc:
            self._failed(f"{change[0]} of a session", exc)
            self._later(token_hash, change)

    async def _retry_loop(self) -> None:
        while self._pending:
            await asyncio.sleep(RETRY_INTERVAL)
            for token_hash, change in list(self._pending.items()):
                try:
                    await self._send(token_hash, change)
                except (RedisError, OSError) as exc:
                    logger.debug("shared sessions: retry failed: %s", exc)
                    break  # still away: try them all again later
                if self._pending.get(token_hash) == change:  # nothing newer came meanwhile
                    del self._pending[token_hash]
            else:
                if not self._pending:
                    logger.warning("shared sessions: the changes made while away are shared")

    async def put(self, token_hash: bytes, agent: str, ttl: float) -> None:
        """Share a new session of `agent`, expiring in `ttl` seconds."""
        await self._apply(token_hash, ("put", agent, "paused", time.monotonic() + ttl))

    async def get(self, token_hash: bytes) -> tuple[str, float, str] | None:
        """The shared session of this token hash: its agent, the seconds it has left and the
        agent's last state; None when there is none (or Redis is unreachable)."""
        key = PREFIX + token_hash.hex()
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.hgetall(key)
                pipe.pttl(key)
                fields, left = await pipe.execute()
        except (RedisError, OSError) as exc:
            self._failed("reading a session", exc)
            return None
        agent = fields.get(b"agent")
        if not agent or left is None or left <= 0:
            return None
        state = fields.get(b"state", b"paused").decode("utf-8", "replace")
        return agent.decode("utf-8", "replace"), left / 1000.0, state

    async def note_state(self, token_hash: bytes, state: str) -> None:
        """Note the agent's state in its shared session (if it is still there)."""
        await self._apply(token_hash, ("note", "", state, 0.0))

    async def drop(self, token_hash: bytes) -> None:
        """Forget a session (the agent logged out)."""
        await self._apply(token_hash, ("drop", "", "", 0.0))

    async def close(self) -> None:
        """Close the connections (what is still pending is given up: logged)."""
        if self._retry is not None:
            self._retry.cancel()
            try:
                await self._retry
            except asyncio.CancelledError:
                pass
        if self._pending:
            logger.warning("shared sessions: %d changes never reached Redis", len(self._pending))
        await self._redis.aclose()


class AgentLocator:
    """Which node each agent's page is on, shared in Redis at `url` (this node is `node`)."""

    def __init__(self, url: str, node: str, ttl: float = NODE_TTL) -> None:
        self.url = url
        self.node = node
        self.ttl = ttl
        self.errors = 0
        """Redis calls that failed since start (each one logged)."""
        self._redis: Any = aioredis.from_url(
            url, socket_timeout=TIMEOUT, socket_connect_timeout=TIMEOUT
        )

    def _failed(self, what: str, exc: Exception) -> None:
        self.errors += 1
        logger.warning("agent locator: %s failed: %s", what, exc)

    async def publish(self, agents: list[str]) -> None:
        """Say that `agents` are on this node, for the next `ttl` seconds."""
        if not agents:
            return
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for agent in agents:
                    pipe.set(NODE_PREFIX + agent, self.node, px=max(1, int(self.ttl * 1000)))
                await pipe.execute()
        except (RedisError, OSError) as exc:
            self._failed("publishing agents", exc)

    async def forget(self, agent: str) -> None:
        """`agent` left this node: its key goes, unless another node already took it."""
        try:
            await self._redis.eval(_FORGET_NODE, 1, NODE_PREFIX + agent, self.node)
        except (RedisError, OSError) as exc:
            self._failed("forgetting an agent", exc)

    async def node_of(self, agent: str) -> str | None:
        """The node `agent`'s page is on; None when no node has it (or Redis is unreachable)."""
        try:
            value = await self._redis.get(NODE_PREFIX + agent)
        except (RedisError, OSError) as exc:
            self._failed("locating an agent", exc)
            return None
        return value.decode("utf-8", "replace") if value else None

    async def close(self) -> None:
        """Close the connections."""
        await self._redis.aclose()
