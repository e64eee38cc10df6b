"""One event stream for the whole cluster: two real nodes with one ACD (``[cluster] acd =
"shared"``, a throwaway Redis and PostgreSQL), their agents' pages changing state on both at
once. Any node's stream (SSE) carries every node's committed events, in the order they
committed (``events.pos``), each once: read live on the other node, resumed on the other node
after the last id a client received, and after a node's ``kill -9`` nothing committed is
missed. A supervisor's token scoped to a queue or a campaign reads on b every event of node a
in its scope and nothing else (SSE and WebSocket), as on one node, and an open scoped stream
on b follows a queue's members changed on a (an agent who joins is seen, one who leaves no
longer), and a token revoked on a ends its streams on b (SSE and WebSocket, code 1008). What a
stream delivered is compared with the database, in commit order."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import aiohttp
import asyncpg
import pytest

from benchmarks import harness
from benchmarks.crossnode import sip_port
from benchmarks.harness import API_TOKEN, DEMO_PASSWORD
from benchmarks.kamailio import setup_time
from tests.cluster import postgres, redis
from tests.cluster.nodes import TLS, Page
from tests.cluster.test_cluster_queues import _edit
from tests.cluster.test_crossnode import SECRET
from tests.cluster.test_shared_database import api

TYPES = "type=agent.state&agent=agent1,agent2"
"""What the test's clients read: the two agents' states (both nodes change them)."""


@pytest.fixture(scope="module")
def nodes(
    shared: redis.Redis, pg: postgres.Postgres, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[harness.RunningServer, harness.RunningServer, str]]:
    dsn = postgres.fresh_database(pg)
    tmp_path = tmp_path_factory.mktemp("events-cluster")
    secret = tmp_path / "cluster.secret"
    secret.write_bytes(SECRET)
    ports = {"a": sip_port(), "b": sip_port()}
    started: list[harness.RunningServer] = []
    try:
        for name in ("a", "b"):
            started.append(
                harness.start_server(
                    tmp_path / name, edit_config=_edit(name, ports, shared.url, secret, dsn)
                )
            )
            started[-1].ports["sip"] = ports[name]
        yield started[0], started[1], dsn
    finally:
        for node in started:
            if node.process.poll() is None:
                assert node.stop() == 0, node.log()[-3000:]


class Reader:
    """One SSE client of a node's stream (``since_id`` optional; `token` and `query`: the
    bootstrap token's, and the two agents' states): the ids it received, in order, until it is
    stopped."""

    def __init__(
        self,
        node: harness.RunningServer,
        since: int | None = None,
        token: str = API_TOKEN,
        query: str = TYPES,
    ) -> None:
        self.node = node
        self.since = since
        self.token = token
        self.query = query
        self.got: list[int] = []
        self.agents: list[str] = []
        """Whose state each event is."""
        self.events: list[dict[str, Any]] = []
        """The events as they came."""
        self.arrived: dict[int, float] = {}
        self.lags: list[float] = []
        """Seconds from each event's publication (its ``time``) to its arrival."""
        self.status = 0
        self.ended: dict[str, Any] = {}
        """How the server ended the stream (SSE's ``event: error``; a WebSocket's close code
        and message)."""
        self.task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        headers = {"Authorization": f"Bearer {self.token}", "Accept": "text/event-stream"}
        url = f"https://127.0.0.1:{self.node.http_port}/api/v1/events?{self._query()}"
        async with (
            aiohttp.ClientSession() as session,
            session.get(url, headers=headers, ssl=TLS) as response,
        ):
            self.status = response.status
            if response.status != 200:
                return
            error = False
            async for raw in response.content:
                line = raw.decode().rstrip("\n")
                if line == "event: error":
                    error = True
                elif line.startswith("data: ") and error:
                    self.ended = json.loads(line[6:])
                elif line.startswith("data: "):
                    self._arrived(json.loads(line[6:]))

    def _query(self) -> str:
        since = f"since_id={self.since}" if self.since is not None else ""
        return "&".join(part for part in (self.query, since) if part)

    def _arrived(self, event: dict[str, Any]) -> None:
        now = time.time()
        ident = int(event["id"])
        self.got.append(ident)
        self.agents.append(event["agent"])
        self.events.append(event)
        self.arrived[ident] = now
        self.lags.append(now - float(event["time"]))

    async def __aenter__(self) -> Reader:
        self.task = asyncio.create_task(self._run())
        deadline = time.monotonic() + 10
        while not self.status and not self.task.done():
            assert time.monotonic() < deadline, "the stream never answered"
            await asyncio.sleep(0.01)
        assert self.status == 200, self.status
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.stop()

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiohttp.ClientError, ConnectionError):
                await self.task


class WsReader(Reader):
    """The same client over a WebSocket: one event's JSON a message."""

    async def _run(self) -> None:
        url = f"wss://127.0.0.1:{self.node.http_port}/api/v1/events?{self._query()}"
        headers = {"Authorization": f"Bearer {self.token}"}
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(url, headers=headers, ssl=TLS) as ws,
        ):
            self.status = 200
            while True:
                message = await ws.receive()
                if message.type != aiohttp.WSMsgType.TEXT:
                    break
                self._arrived(json.loads(message.data))
            self.ended = {"code": ws.close_code, "error": str(message.extra or "")}


async def changes(node: harness.RunningServer, agent: str, count: int) -> list[float]:
    """Log `agent` in on `node` and change its state `count` times: when each was acknowledged."""
    acked: list[float] = []
    async with Page(node) as page:
        ok = await page.request("login", username=agent, password=DEMO_PASSWORD)
        assert ok["type"] == "login-ok", ok
        for n in range(count):
            reply = await page.request("state", state=("ready", "paused")[n % 2])
            assert reply["type"] == "ack", reply
            acked.append(time.time())
    return acked


async def committed(dsn: str, after_id: int = 0) -> list[int]:
    """The ids of the agents' state events committed after the event `after_id` (0: all), in
    commit order (their places)."""
    db = await asyncpg.connect(dsn)
    try:
        start = 0
        if after_id:
            start = int(await db.fetchval("SELECT pos FROM events WHERE id = $1", after_id))
        rows = await db.fetch(
            "SELECT id FROM events WHERE type = 'agent.state' AND agent IN ('agent1', 'agent2') "
            "AND pos > $1 ORDER BY pos",
            start,
        )
        return [int(row["id"]) for row in rows]
    finally:
        await db.close()


async def last_committed(dsn: str) -> int:
    """The id of the last event committed by any node (in commit order)."""
    db = await asyncpg.connect(dsn)
    try:
        return int(await db.fetchval("SELECT id FROM events ORDER BY pos DESC LIMIT 1") or 0)
    finally:
        await db.close()


async def until_read(
    readers: list[Reader], dsn: str, after_id: int, least: int, within: float = 30
) -> list[int]:
    """Wait until the database holds at least `least` agent state events after `after_id` and
    the readers, one after the other, have received every one of them; what they received, in
    order."""
    deadline = time.monotonic() + within
    while True:
        got = [ident for reader in readers for ident in reader.got]
        stored = await committed(dsn, after_id)
        if len(stored) >= least and got[: len(stored)] == stored:
            return got
        assert time.monotonic() < deadline, (len(got), len(stored), got[-5:], stored[-5:])
        await asyncio.sleep(0.05)


def in_order(got: list[int], stored: list[int]) -> bool:
    """Whether a client got the stored events in commit order, each once, and nothing else (it
    may not have got the last ones yet)."""
    return len(got) == len(set(got)) and got == stored[: len(got)]


async def test_an_event_made_on_node_a_is_read_live_on_node_bs_sse_and_websocket(
    nodes: tuple[harness.RunningServer, harness.RunningServer, str],
) -> None:
    a, b, dsn = nodes
    start = await last_committed(dsn)
    async with Reader(b) as on_b, WsReader(b) as ws_on_b:  # live: from the last event on
        acked = await changes(a, "agent1", 10)
        got = await until_read([on_b], dsn, start, 10)
        over_ws = await until_read([ws_on_b], dsn, start, 10)
    stored = await committed(dsn, start)  # (logging out, later, may have added some)
    assert got == over_ws[: len(got)] and in_order(got, stored)
    lag = on_b.arrived[got[-1]] - acked[-1]
    print(f"a's last state change acknowledged -> on b's stream: {lag * 1000:.0f} ms")


MEMBERS = {"sales": {"agent2"}, "support": {"agent1", "agent2"}}
"""The members of the queues `benchmarks.harness` configures (campaign ``support`` is queue
``support``'s)."""


def covered(scope: str, event: Any) -> bool:
    """Whether a token scoped to `scope` (a queue, or a campaign of the same name) may see
    `event` (a row or a JSON event): one of its queue or campaign, or an agent's own event (no
    queue, no campaign) of a member (`omlmedia.eventstream.in_scope`, as on one node)."""
    if event["queue"] or event["campaign"]:
        return scope in (event["queue"], event["campaign"])
    return event["agent"] in MEMBERS[scope]


def scoped_token(node: harness.RunningServer, scope: str) -> str:
    """A supervisor integration's token, scoped to `scope`, issued on `node` (the accounts are
    in the shared PostgreSQL)."""
    status, made = api(
        node,
        "POST",
        "/api/v1/tokens",
        {"integration": f"wall-{scope}", "role": "supervisor", "scope": [scope]},
    )
    assert status == 201, made
    return str(made["token"])


def calls(node: harness.RunningServer, users: list[str]) -> None:
    """One call to each of `users` on `node`: answered, then hung up at once."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(10)
        for n, user in enumerate(users):
            setup_time(sock, ("127.0.0.1", node.sip_port), n, user)


async def stored_rows(dsn: str, after_id: int) -> list[asyncpg.Record]:
    """Every event committed after the event `after_id`, in commit order."""
    db = await asyncpg.connect(dsn)
    try:
        start = int(await db.fetchval("SELECT pos FROM events WHERE id = $1", after_id) or 0)
        return list(
            await db.fetch(
                "SELECT id, type, queue, agent, campaign FROM events WHERE pos > $1 ORDER BY pos",
                start,
            )
        )
    finally:
        await db.close()


async def test_a_scoped_token_on_node_b_reads_node_as_events_of_its_scope_only_and_all_of_them(
    nodes: tuple[harness.RunningServer, harness.RunningServer, str],
) -> None:
    a, b, dsn = nodes
    sales, support = scoped_token(b, "sales"), scoped_token(b, "support")
    start = await last_committed(dsn)
    everything = ""  # no filter of the client's own: the scope alone decides
    readers = {
        "sales": [Reader(b, start, sales, everything), WsReader(b, start, sales, everything)],
        "support": [Reader(b, start, support, everything)],
    }
    async with contextlib.AsyncExitStack() as stack:
        for reader in (r for group in readers.values() for r in group):
            await stack.enter_async_context(reader)
        # On node a: agent1 (a member of support only) and agent2 (of support and sales)...
        await asyncio.gather(changes(a, "agent1", 6), changes(a, "agent2", 6))
        # ...a call to echo (of no queue: for unscoped tokens only) and a caller of the
        # campaign support who hangs up at once (its queue's events: support's only).
        await asyncio.to_thread(calls, a, ["echo", "support"])
        deadline = time.monotonic() + 30
        while True:
            rows = await stored_rows(dsn, start)
            made = {(r["type"], r["queue"]) for r in rows}
            ids = {s: [r["id"] for r in rows if covered(s, r)] for s in readers}
            if {("call.ended", ""), ("queue.abandoned", "support")} <= made and all(
                r.got[: len(ids[s])] == ids[s] for s, group in readers.items() for r in group
            ):
                break
            assert time.monotonic() < deadline, {
                s: (ids[s][-5:], [r.got[-5:] for r in group]) for s, group in readers.items()
            }
            await asyncio.sleep(0.05)
    rows = await stored_rows(dsn, start)
    for scope, group in readers.items():
        wanted = [r["id"] for r in rows if covered(scope, r)]
        assert any(not covered(scope, r) for r in rows), f"nothing outside {scope} was made"
        for reader in group:
            # Every event of its scope, once, in commit order; nothing of another.
            assert in_order(reader.got, wanted)
            assert all(covered(scope, event) for event in reader.events), reader.events
    # Left out for sales: agent1's own events, the support caller's, the echo call; for
    # support: the echo call (no queue, no agent).
    (sales_sse, sales_ws), (support_sse,) = readers["sales"], readers["support"]
    assert sales_sse.got == sales_ws.got
    assert {e["agent"] for e in sales_sse.events} == {"agent2"}
    assert {e["queue"] for e in support_sse.events} == {"", "support"}
    assert {"agent1", "agent2"} <= {e["agent"] for e in support_sse.events}


async def last_state_of(dsn: str, agent: str) -> int:
    """The id of `agent`'s last committed state event (in commit order; 0: none)."""
    db = await asyncpg.connect(dsn)
    try:
        return int(
            await db.fetchval(
                "SELECT id FROM events WHERE type = 'agent.state' AND agent = $1 "
                "ORDER BY pos DESC LIMIT 1",
                agent,
            )
            or 0
        )
    finally:
        await db.close()


async def test_a_scoped_stream_on_b_follows_a_queues_members_changed_on_a_while_it_is_open(
    nodes: tuple[harness.RunningServer, harness.RunningServer, str],
) -> None:
    a, b, dsn = nodes
    token = scoped_token(b, "sales")

    def covered_on_b() -> set[str]:
        # The agents b's directory puts in the scope (the same check as the stream's).
        status, view = api(b, "GET", "/api/v1/agents", token=token)
        assert status == 200, view
        return {agent["agent"] for agent in view["agents"]}

    async def until_covered(wanted: set[str]) -> None:
        deadline = time.monotonic() + 10
        while await asyncio.to_thread(covered_on_b) != wanted:
            assert time.monotonic() < deadline, covered_on_b()
            await asyncio.sleep(0.05)

    async def round_trip() -> int:
        """agent1's state changes on a, then agent2's (in scope all along): once agent2's event
        is on b's stream, the stream has decided on agent1's; the id of agent1's."""
        before = [await last_state_of(dsn, agent) for agent in ("agent1", "agent2")]
        for page in (one, two):
            reply = await page.request("state", state=next(states[page]))
            assert reply["type"] == "ack", reply
        deadline = time.monotonic() + 10
        while True:  # both committed
            mine, after = [await last_state_of(dsn, agent) for agent in ("agent1", "agent2")]
            if [mine, after] != before and mine != before[0] and after != before[1]:
                break
            assert time.monotonic() < deadline, "the state changes were not committed"
            await asyncio.sleep(0.02)
        while after not in reader.got:
            assert time.monotonic() < deadline, (after, reader.got[-5:])
            await asyncio.sleep(0.02)
        return mine

    start = await last_committed(dsn)
    async with (
        Reader(b, start, token, "type=agent.state") as reader,
        Page(a) as one,
        Page(a) as two,
    ):
        states = {page: itertools.cycle(("ready", "paused")) for page in (one, two)}
        for page, agent in ((one, "agent1"), (two, "agent2")):
            ok = await page.request("login", username=agent, password=DEMO_PASSWORD)
            assert ok["type"] == "login-ok", ok
        await round_trip()
        assert set(reader.agents) == {"agent2"}  # agent1 is no member of sales
        try:
            # agent1 joins sales on node a: b's open stream gets its events from then on.
            status, view = api(a, "PUT", "/api/v1/queues/sales/members/agent1", {})
            assert status == 200, view
            await until_covered({"agent1", "agent2"})
            deadline = time.monotonic() + 10
            while await round_trip() not in reader.got:
                assert time.monotonic() < deadline, "agent1's events never reached the stream"
            joined = await round_trip()
            assert joined in reader.got
        finally:
            # ...and leaves it: the same stream stops getting them.
            status, view = api(a, "DELETE", "/api/v1/queues/sales/members/agent1")
            assert status == 200, view
        await until_covered({"agent2"})
        deadline = time.monotonic() + 10
        while await round_trip() in reader.got:
            assert time.monotonic() < deadline, "agent1's events still reach the stream"
        left = await round_trip()
        assert left not in reader.got
    assert len(reader.got) == len(set(reader.got))


async def test_a_stream_on_b_ends_within_seconds_when_its_token_is_revoked_on_a(
    nodes: tuple[harness.RunningServer, harness.RunningServer, str],
) -> None:
    a, b, _ = nodes
    status, made = api(
        b, "POST", "/api/v1/tokens", {"integration": "wall-revoked", "role": "supervisor"}
    )
    assert status == 201, made
    token = str(made["token"])
    async with (
        Reader(b, None, token, "type=agent.state") as sse,
        WsReader(b, None, token, "type=agent.state") as ws,
    ):
        status, view = api(a, "DELETE", f"/api/v1/tokens/{made['id']}")
        assert status == 200, view
        revoked = time.monotonic()
        deadline = revoked + 10
        while not (sse.ended and ws.ended):
            assert time.monotonic() < deadline, "the streams went on after the revocation"
            await asyncio.sleep(0.02)
        ended_after = time.monotonic() - revoked
    # SSE's last message and the WebSocket's close say why (1008: policy violation).
    assert sse.ended["code"] == ws.ended["code"] == 1008, (sse.ended, ws.ended)
    assert "no longer valid" in sse.ended["error"] and "no longer valid" in ws.ended["error"]
    status, _ = api(b, "GET", "/api/v1/events", token=token)
    assert status == 401  # and it cannot come back
    print(f"token revoked on a -> its streams on b ended after {ended_after:.2f} s")


async def test_a_client_stopped_on_a_resumes_on_b_with_nothing_missed_or_twice(
    nodes: tuple[harness.RunningServer, harness.RunningServer, str],
) -> None:
    a, b, dsn = nodes
    start = await last_committed(dsn)
    async with Reader(a, since=start) as on_a:
        producing = asyncio.gather(changes(a, "agent1", 60), changes(b, "agent2", 60))
        deadline = time.monotonic() + 30
        while len(on_a.got) < 20:
            assert time.monotonic() < deadline, f"a's stream got {len(on_a.got)} events"
            await asyncio.sleep(0.01)
    resumed_after = on_a.got[-1]  # stopped while both nodes produce
    async with Reader(b, since=resumed_after) as on_b:
        await producing
        # and both go on producing once it reads on b
        await asyncio.gather(changes(a, "agent1", 30), changes(b, "agent2", 30))
        got = await until_read([on_a, on_b], dsn, start, 180)
    assert len(got) == len(set(got)), "an event was delivered twice"
    stored = await committed(dsn, start)
    assert in_order(got, stored)
    assert on_b.got and on_b.got[0] == stored[len(on_a.got)]
    lags = sorted(on_b.lags[-100:])  # both nodes' events, live on b
    print(
        f"published -> on b's stream, {len(lags)} events of both nodes: "
        f"p50 {lags[len(lags) // 2] * 1000:.0f} ms, p99 {lags[len(lags) * 99 // 100] * 1000:.0f} ms"
    )


async def test_an_unknown_since_id_is_refused_naming_it(
    nodes: tuple[harness.RunningServer, harness.RunningServer, str],
) -> None:
    _, b, _ = nodes
    reader = Reader(b, since=10**12)
    with pytest.raises(AssertionError):
        async with reader:
            pass
    assert reader.status == 400


async def test_after_a_kill_9_a_client_of_the_dead_node_resumes_on_the_other_losing_nothing(
    nodes: tuple[harness.RunningServer, harness.RunningServer, str],
) -> None:
    a, b, dsn = nodes
    start = await last_committed(dsn)
    on_a = Reader(a, since=start)
    await on_a.__aenter__()
    async with Reader(b, since=start) as watcher:
        producing = asyncio.gather(
            changes(a, "agent1", 200), changes(b, "agent2", 60), return_exceptions=True
        )
        deadline = time.monotonic() + 30
        while on_a.agents.count("agent1") < 20:  # a's own, read on a
            assert time.monotonic() < deadline, f"a's stream got {len(on_a.got)} events"
            await asyncio.sleep(0.01)
        a.process.kill()  # kill -9, a's page mid-burst, its last events maybe not flushed
        await asyncio.to_thread(a.process.wait)
        await on_a.stop()
        outcome = await producing
        assert not isinstance(outcome[1], BaseException), outcome[1]
        async with Reader(b, since=on_a.got[-1]) as on_b:
            got = await until_read([on_a, on_b], dsn, start, 80)
            seen = await until_read([watcher], dsn, start, 80)
    stored = await committed(dsn, start)
    assert in_order(got, stored) and in_order(seen, stored)
    db = await asyncpg.connect(dsn)
    try:
        of_a = await db.fetchval(
            "SELECT COUNT(*) FROM events WHERE node = 'a' AND type = 'agent.state' "
            "AND pos > COALESCE((SELECT pos FROM events WHERE id = $1), 0)",
            start,
        )
    finally:
        await db.close()
    assert of_a >= 20  # a's committed events are in the stream read on b
