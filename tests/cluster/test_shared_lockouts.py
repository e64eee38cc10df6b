"""Login lockouts counted by all the nodes in a throwaway Redis (`omlmedia.lockouts`): failures
spread over two nodes lock the pair on both at the node's limit; a good login starts the pair's
count again; the backoff doubles; failures from many sources spread over two nodes lock the
account on both, but not for the source of its last good login on either, and the lock lapses
on both; with Redis down each node counts on its own; and two real nodes with ``[cluster]
redis_url`` refuse the sixth try whichever node gets it, lock the account for many sources, and
do the same for the API's password logins (``POST /api/v1/sessions``)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from benchmarks.harness import DEMO_PASSWORD
from omlmedia.lockouts import RedisLockouts
from tests.cluster import redis
from tests.cluster.nodes import Page, api_login, started
from tests.webrtc.fakes import FakeCallControl, FakeChannel, FakeClock, FakeConnection
from webrtc.accounts import Account, AccountStore, hash_password, verify_password
from webrtc.exceptions import LoginError
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

    def __init__(self, url: str, **limits: float) -> None:
        self.accounts = AccountStore(
            [Account("agent1", "Ana", HASH)],
            clock=FakeClock(),
            **limits,  # type: ignore[arg-type]
        )
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
    with started(tmp_path, redis_url=shared.url) as (a, b):

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


ACCOUNTS = "".join(
    f'\n[[accounts]]\nname = "{name}"\nrole = "supervisor"\npassword_hash = "{HASH}"\n'
    for name in ("sup1", "sup2")
)


def test_two_real_nodes_lock_an_account_tried_from_many_sources_at_both_doors(
    shared: redis.Redis, tmp_path: Path
) -> None:
    many = [f"127.0.0.{n}" for n in range(2, 12)]  # the shipped limit: 10 sources
    with started(tmp_path, redis_url=shared.url, extra=ACCOUNTS) as (a, b):

        async def agent_page() -> list[str]:
            async with Page(b, "127.0.0.1") as page:  # the agent's usual desk, on b
                ok = await page.request("login", username="agent1", password=DEMO_PASSWORD)
                assert ok["type"] == "login-ok", ok
            for n, source in enumerate(many):
                async with Page((a, b)[n % 2], source) as page:
                    reply = await page.request("login", username="agent1", password="wrong")
                    assert reply.get("code") == "bad-credentials", reply
            codes = []
            for server, source in ((a, "127.0.0.12"), (b, "127.0.0.12"), (a, "127.0.0.1")):
                async with Page(server, source) as page:
                    right = await page.request("login", username="agent1", password=DEMO_PASSWORD)
                    codes.append(str(right.get("code", right["type"])))
            return codes

        # Five sources failed on each node (each node alone locks at ten): the account is
        # locked on both, but not for its usual desk, even on the node it did not log in on.
        assert asyncio.run(agent_page()) == ["locked-out", "locked-out", "login-ok"]

        async def api() -> tuple[list[int], list[int]]:
            pair = [await api_login((a, b)[n % 2], "sup1", "wrong") for n in range(6)]
            pair.append(await api_login(a, "sup1", "pw1"))
            spread = [
                await api_login((a, b)[n % 2], "sup2", "wrong", source)
                for n, source in enumerate(many)
            ]
            spread += [await api_login(server, "sup2", "pw1", "127.0.0.12") for server in (a, b)]
            return pair, spread

        pair, spread = asyncio.run(api())
        # The API's logins: three failures on a and two on b lock the pair on both (429)...
        assert pair == [401] * 5 + [429] * 2, pair
        # ...and ten sources spread over both lock the account on both.
        assert spread == [401] * 10 + [429] * 2, spread


async def test_failures_from_many_sources_over_two_nodes_lock_the_account_on_both_and_lapse(
    shared: redis.Redis,
) -> None:
    limits = {
        "max_failures": 100,
        "max_address_failures": 100,
        "account_lock_sources": 4,
        "account_lockout": 1.0,
    }
    a, b = Node(shared.url, **limits), Node(shared.url, **limits)
    desk, other = "192.0.2.1", "203.0.113.1"
    try:
        assert (await a.login("pw1", desk))["type"] == "login-ok"  # its usual desk, on a
        for n, node in enumerate((a, b, a)):
            assert (await node.login("wrong", f"198.51.100.{n}"))["code"] == "bad-credentials"
        assert not await b.lockouts.locked("agent1", other)  # three sources: not yet
        assert (await b.login("wrong", "198.51.100.3"))["code"] == "bad-credentials"
        # Two sources on each node, four together: the account is locked on both...
        for node in (a, b):
            assert (await node.login("pw1", other))["code"] == "locked-out"
            assert not node.accounts.locked("agent1", other)  # (not by the node's own counts)
        # ...except for the source of its last good login, even on the other node.
        assert (await b.login("pw1", desk))["type"] == "login-ok"
        # The lock lapses on both after account_lockout (Redis's own expiry).
        deadline = asyncio.get_running_loop().time() + 10
        while await a.lockouts.locked("agent1", other) or await b.lockouts.locked("agent1", other):
            assert asyncio.get_running_loop().time() < deadline, "the account lock never lapsed"
            await asyncio.sleep(0.05)
        assert (await a.login("pw1", other))["type"] == "login-ok"
        assert (await b.login("pw1", other))["type"] == "login-ok"
        assert a.lockouts.errors == b.lockouts.errors == 0
    finally:
        await a.lockouts.close()
        await b.lockouts.close()


async def test_api_password_logins_on_two_nodes_share_the_counts_and_the_lock_lapses(
    shared: redis.Redis, tmp_path: Path
) -> None:
    from omlmedia.accounts import AccountBook, AccountSeed, PasswordLogins
    from omlmedia.authz import Role

    limits = AccountStore([], clock=FakeClock(), lockout=1.0, max_lockout=1.0)
    logins: list[PasswordLogins] = []
    for name in ("a", "b"):
        book = AccountBook(tmp_path / name / "store.db")
        book.seed([AccountSeed("sup1", Role.SUPERVISOR, HASH)])
        logins.append(PasswordLogins(book, check=check, lockouts=RedisLockouts(shared.url, limits)))
    a, b = logins

    async def code(node: PasswordLogins, password: str) -> str:
        try:
            await node.login("sup1", password, GUESSER)
        except LoginError as exc:
            return exc.code
        return "ok"

    try:
        assert [await code(node, "wrong") for node in (a, b, a, b, a)] == ["bad-credentials"] * 5
        assert [await code(node, "pw1") for node in (b, a)] == ["locked-out"] * 2
        assert not a.gate.locked("sup1", GUESSER) and not b.gate.locked("sup1", GUESSER)
        deadline = asyncio.get_running_loop().time() + 10
        while (result := await code(b, "pw1")) == "locked-out":
            assert asyncio.get_running_loop().time() < deadline, "the pair lock never lapsed"
            await asyncio.sleep(0.05)
        assert result == "ok" and await code(a, "pw1") == "ok"
    finally:
        for node in logins:
            assert node.lockouts is not None
            await node.lockouts.close()  # type: ignore[attr-defined]
            node.book.close()
