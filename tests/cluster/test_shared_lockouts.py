"""Agent login lockouts counted by all the nodes in a throwaway Redis (`omlmedia.lockouts`):
failures spread over two nodes lock the pair on both at the node's limit; a good login starts
the pair's count again; the backoff doubles; with Redis down each node counts on its own; and
two real nodes with ``[cluster] redis_url`` refuse the sixth try whichever node gets it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from benchmarks import harness
from benchmarks.harness import DEMO_PASSWORD
from omlmedia.lockouts import RedisLockouts
from tests.cluster import redis
from tests.cluster.test_sessions import Page
from tests.webrtc.fakes import FakeCallControl, FakeChannel, FakeClock, FakeConnection
from webrtc.accounts import Account, AccountStore, hash_password, verify_password
from webrtc.signaling import AgentHub

HASH = hash_password("pw1", n=2**10)
GUESSER = "192.0.2.7"


@pytest.fixture
def shared() -> Iterator[redis.Redis]:
    redis.require()
    with redis.redis() as instance:
        yield instance


async def check(password: str, password_hash: str) -> bool:
    return verify_password(password, password_hash)


class Node:
    """One node's hub and account store (limits as shipped: 5 per pair, 20 per source),
    counting in Redis at `url` as a cluster node does."""

    def __init__(self, url: str) -> None:
        self.accounts = AccountStore([Account("agent1", "Ana", HASH)], clock=FakeClock())
        self.lockouts = RedisLockouts(url, self.accounts)
        self.accounts.lockouts = self.lockouts
        self.hub = AgentHub(
            self.accounts,
            FakeCallControl(),
            FakeChannel,
            clock=self.accounts.clock,
            check_password=check,
        )

    async def login(self, password: str, source: str = GUESSER) -> dict[str, Any]:
        """One login on a fresh socket from `source`: the hub's answer."""
        conn = FakeConnection(source)
        self.hub.connection_opened(conn)
        message = {"v": 1, "type": "login", "username": "agent1", "password": password, "id": 1}
        await self.hub.handle_text(conn, json.dumps(message))
        self.hub.connection_closed(conn)
        return conn.last()


async def test_failures_spread_over_two_nodes_lock_the_pair_on_both_at_the_nodes_limit(
    shared: redis.Redis,
) -> None:
    a, b = Node(shared.url), Node(shared.url)
    try:
        for node in (a, b, a, b):
            assert (await node.login("wrong"))["code"] == "bad-credentials"
        # Two failures on b, three on a (neither node alone is at its limit of 5)...
        assert (await a.login("wrong"))["code"] == "bad-credentials"
        # ...but together they are: the right password is refused on both nodes.
        assert (await b.login("pw1"))["code"] == "locked-out"
        assert (await a.login("pw1"))["code"] == "locked-out"
        assert not a.accounts.locked("agent1", GUESSER)  # a's own count alone would allow it
        # The agent from its own address is not locked out (the pair, not the account).
        assert (await b.login("pw1", "198.51.100.20"))["type"] == "login-ok"
        assert a.lockouts.errors == b.lockouts.errors == 0
    finally:
        await a.lockouts.close()
        await b.lockouts.close()


async def test_a_good_login_starts_the_pairs_shared_count_again(shared: redis.Redis) -> None:
    a, b = Node(shared.url), Node(shared.url)
    try:
        for node in (a, b, a, b):
            assert (await node.login("wrong"))["code"] == "bad-credentials"
        assert (await a.login("pw1"))["type"] == "login-ok"
        for node in (b, a, b, a):
            assert (await node.login("wrong"))["code"] == "bad-credentials"
        assert (await b.login("pw1"))["type"] == "login-ok"
    finally:
        await a.lockouts.close()
        await b.lockouts.close()


async def test_each_new_lock_of_the_pair_lasts_twice_as_long(shared: redis.Redis) -> None:
    import redis.asyncio as aioredis

    node = Node(shared.url)
    client: Any = aioredis.from_url(shared.url)
    try:
        lengths = []
        for _ in range(2):
            for _ in range(5):
                await node.lockouts.failed("agent1", GUESSER, True)
            assert await node.lockouts.locked("agent1", GUESSER)
            lock = list(await client.keys("omlmedia:lockout:pair:*:lock"))
            assert len(lock) == 1, lock
            lengths.append(int(await client.pttl(lock[0])))
            await client.delete(lock[0])  # the lock lapses
            assert not await node.lockouts.locked("agent1", GUESSER)
        assert 0 < lengths[0] <= 60_000 < lengths[1] <= 120_000, lengths
    finally:
        await client.aclose()
        await node.lockouts.close()


async def test_with_redis_down_each_node_counts_its_own_failures(shared: redis.Redis) -> None:
    a, b = Node(shared.url), Node(shared.url)
    shared.process.terminate()
    await asyncio.to_thread(shared.process.wait, 10)
    try:
        assert (await a.login("pw1"))["type"] == "login-ok"  # logins go on
        for _ in range(5):
            assert (await a.login("wrong"))["code"] == "bad-credentials"
        assert (await a.login("pw1"))["code"] == "locked-out"  # a's own count locks it on a
        assert (await b.login("pw1"))["type"] == "login-ok"  # b never saw those failures
        assert a.lockouts.errors > 0 and b.lockouts.errors > 0  # each failure counted (logged)
    finally:
        await a.lockouts.close()
        await b.lockouts.close()


def test_two_real_nodes_refuse_the_sixth_try_whichever_gets_it(
    shared: redis.Redis, tmp_path: Path
) -> None:
    cluster = f'\n[cluster]\nredis_url = "{shared.url}"\n'
    a = harness.start_server(tmp_path / "a", edit_config=lambda t: t + cluster)
    try:
        b = harness.start_server(tmp_path / "b", edit_config=lambda t: t + cluster)
    except BaseException:
        a.stop()
        raise
    try:

        async def tries() -> list[str]:
            codes = []
            for server in (a, b, a, b, a, b):
                async with Page(server) as page:
                    reply = await page.request("login", username="agent1", password="wrong")
                    codes.append(str(reply.get("code")))
            async with Page(a) as page:
                right = await page.request("login", username="agent1", password=DEMO_PASSWORD)
                codes.append(str(right.get("code", right["type"])))
            return codes

        codes = asyncio.run(tries())
        # Three failures on a and two on b: the fifth (on a) locks the pair on both nodes, so the
        # sixth try (on b) and then the right password (on a) are refused.
        assert codes == ["bad-credentials"] * 5 + ["locked-out"] * 2, codes
    finally:
        stopped = a.stop(), b.stop()
        assert stopped == (0, 0), a.log()[-3000:] + b.log()[-3000:]
