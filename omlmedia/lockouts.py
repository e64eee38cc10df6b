"""Failed-login lockouts shared by the nodes, in Redis (``[cluster] redis_url``).

Theory of operation. Each node counts an agent page's failed logins itself
(`webrtc.accounts.AccountStore`): behind a balancer, a guesser spreading tries over N nodes
would get N times the node's allowance. With Redis, every node also counts each failure in
Redis (`RedisLockouts.failed`, one Lua script per count, so two nodes counting at once cannot
both miss the limit) and asks Redis before checking a password (`locked`):

- per (account, source): ``omlmedia:lockout:pair:<SHA-256 of account NUL source, hex>``, a
  counter that lives `failure_window` seconds from its first failure; at `max_failures` the pair
  is locked (``...:lock``) for `lockout` seconds, doubled at each new lock of the pair up to
  `max_lockout` (its level, ``...:level``, is kept for `max_lockout` + `failure_window`
  seconds); a good login of the pair clears its counter and level;
- per source: the same under ``omlmedia:lockout:source:<SHA-256 of source, hex>`` at
  `max_address_failures`, whatever the names;
- per account (failures from many sources): ``omlmedia:lockout:account:<SHA-256 of account,
  hex>``, a sorted set of the hashed sources that failed, scored by Redis's own clock (``TIME``
  inside the script: the nodes' clocks never meet); sources older than `failure_window` are
  dropped at each failure, and `account_lock_sources` of them lock the account (``...:lock``)
  for `account_lockout` seconds, except from the source of its last good login on any node
  (``...:good``, kept 30 days).

The source is the node's `webrtc.accounts.source_key` (an IPv4 address, an IPv6 /64); names
and sources are hashed into the keys, so nothing a page sends is used as a key as such. The
limits are the node's store's. Unlike a node's sliding window, a shared count starts its window
at its first failure (a fixed window): a guesser gets at most the limit per window either way.

Redis unreachable: `locked` answers False and `failed`/`succeeded` do nothing, each failure
logged (1 s timeouts); the node's own counts then are the only ones (as without a cluster).
The agent page (`webrtc.signaling`) and the API's password logins (`omlmedia.accounts.
PasswordLogins`) count in the same keys: account names never collide (an account of
``[[accounts]]`` or of the API cannot take an agent's name), and a source's failures at either
door count against the one per-source limit. `locked` is one script (one round trip): the pair,
the source, then the account unless the source is the account's last good one.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any, Final

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from webrtc.accounts import AccountStore

__all__ = ["PREFIX", "RedisLockouts"]

logger = logging.getLogger(__name__)

PREFIX: Final = "omlmedia:lockout:"
"""Key prefix of the shared counts."""

TIMEOUT: Final = 1.0
"""Seconds to wait for Redis (connect and each command)."""

_FAIL: Final = """
-- KEYS: count, lock, level. ARGV: limit, window ms, lockout ms, max lockout ms, level ms.
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
if n < tonumber(ARGV[1]) then return 0 end
redis.call('DEL', KEYS[1])
local level = redis.call('INCR', KEYS[3])
redis.call('PEXPIRE', KEYS[3], ARGV[5])
local ms = tonumber(ARGV[3]) * 2 ^ math.min(level - 1, 32)
ms = math.min(ms, tonumber(ARGV[4]))
redis.call('SET', KEYS[2], '1', 'PX', string.format('%d', math.max(1, math.floor(ms))))
return 1
"""


_ACCOUNT_FAIL: Final = """
-- KEYS: sources, lock. ARGV: source, window ms, limit, lockout ms.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
redis.call('PEXPIRE', KEYS[1], ARGV[2])
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[3]) then return 0 end
redis.call('DEL', KEYS[1])
redis.call('SET', KEYS[2], '1', 'PX', ARGV[4])
return 1
"""

_LOCKED: Final = """
-- KEYS: pair lock, source lock, account lock, account's last good source. ARGV: source.
if redis.call('EXISTS', KEYS[1], KEYS[2]) > 0 then return 1 end
if redis.call('EXISTS', KEYS[3]) == 0 then return 0 end
if redis.call('GET', KEYS[4]) == ARGV[1] then return 0 end
return 1
"""

GOOD_TTL: Final = 30 * 86400
"""Seconds an account's last good source is kept (it spares that source the account lock)."""


def _digest(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode("utf-8", "surrogatepass")).hexdigest()


def _key(kind: str, *parts: str) -> str:
    return f"{PREFIX}{kind}:{_digest(*parts)}"


class RedisLockouts:
    """The `webrtc.accounts.SharedLockouts` of the cluster, in Redis at `url`, with the limits
    of `store` (the node's `AccountStore`)."""

    def __init__(self, url: str, store: AccountStore) -> None:
        self.url = url
        self.errors = 0
        """Redis calls that failed since start (each one logged)."""
        self.max_failures = store.max_failures
        self.max_address_failures = store.max_address_failures
        self._window_ms = round(store.failure_window * 1000)
        self._lockout_ms = round(store.lockout * 1000)
        self._max_lockout_ms = round(store.max_lockout * 1000)
        self.account_lock_sources = store.account_lock_sources
        self._account_lockout_ms = max(1, round(store.account_lockout * 1000))
        self._redis: Any = aioredis.from_url(
            url, socket_timeout=TIMEOUT, socket_connect_timeout=TIMEOUT
        )

    def _failed(self, what: str, exc: Exception) -> None:
        self.errors += 1
        logger.warning("shared lockouts: %s failed: %s", what, exc)

    async def locked(self, name: str, source: str) -> bool:
        account = _key("account", name)
        keys = [
            _key("pair", name, source) + ":lock",
            _key("source", source) + ":lock",
            account + ":lock",
            account + ":good",
        ]
        try:
            return int(await self._redis.eval(_LOCKED, 4, *keys, _digest(source))) > 0
        except (RedisError, OSError) as exc:
            self._failed("lookup", exc)
            return False

    async def failed(self, name: str, source: str, known: bool) -> None:
        counts = [(_key("source", source), self.max_address_failures)]
        if known:  # unknown names are counted against the source only, as on the node
            counts.append((_key("pair", name, source), self.max_failures))
        level_ms = self._max_lockout_ms + self._window_ms
        try:
            for key, limit in counts:
                await self._redis.eval(
                    _FAIL,
                    3,
                    key,
                    key + ":lock",
                    key + ":level",
                    limit,
                    self._window_ms,
                    self._lockout_ms,
                    self._max_lockout_ms,
                    level_ms,
                )
            if known:
                account = _key("account", name)
                await self._redis.eval(
                    _ACCOUNT_FAIL,
                    2,
                    account,
                    account + ":lock",
                    _digest(source),
                    self._window_ms,
                    self.account_lock_sources,
                    self._account_lockout_ms,
                )
        except (RedisError, OSError) as exc:
            self._failed("count", exc)

    async def succeeded(self, name: str, source: str) -> None:
        key = _key("pair", name, source)
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.delete(key, key + ":level")
                pipe.set(_key("account", name) + ":good", _digest(source), ex=GOOD_TTL)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            self._failed("reset", exc)

    async def close(self) -> None:
        """Close the connection pool."""
        await self._redis.aclose()
