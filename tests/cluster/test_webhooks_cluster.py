"""Webhooks of two real nodes on one throwaway PostgreSQL database: a local HTTPS receiver
counts the deliveries of the agent-state events both nodes publish while their agents' pages
change state in a burst; node a is killed with SIGKILL in the middle of it, with deliveries of
its events in flight and waiting. Every event committed by either node reaches the receiver
(node b takes over a's deliveries: `omlmedia.webhook_worker`, advisory locks), b's own events
exactly once, and a's sent twice only if they were in flight when a died (at-least-once, the
receiver deduplicates by ``webhook-id``); started again, a takes its deliveries back. Prints
the delivery latency and how long the takeover took."""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
from aiohttp import web

from benchmarks import harness
from benchmarks.harness import API_TOKEN, DEMO_PASSWORD
from sip.tls import ensure_self_signed, server_context
from tests.cluster import postgres
from tests.cluster.nodes import TLS, Page, sections, started
from tests.omlmedia.test_webhooks import verify

BURST = 120
"""State changes of each node's agent."""
KILL_AFTER = 70
"""State changes of a's agent before a is killed."""
RECEIVER_DELAY = 0.3
"""Seconds the receiver takes to answer during the burst (4 at once per worker: deliveries
wait in the worker at the kill)."""
GRACE = 1.0
"""Seconds a killed node's worker may go on sending (it gets SIGTERM when its server dies)."""


class Receiver:
    """An HTTPS webhook receiver: every delivery, verified, with its arrival time."""

    def __init__(self, tmp_path: Path) -> None:
        self.cert, self.key = tmp_path / "receiver.crt", tmp_path / "receiver.key"
        ensure_self_signed(self.cert, self.key, ["localhost"], ["127.0.0.1"])
        self.port = postgres.free_port()
        self.secret = ""
        self.received: list[tuple[int, float, dict[str, Any]]] = []
        """(``webhook-id``, arrival, the event) of each delivery, duplicates included."""
        self.runner: web.AppRunner | None = None
        self.delay = RECEIVER_DELAY

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        headers = {k.lower(): v for k, v in request.headers.items()}
        event = verify(self.secret, headers, body)
        self.received.append((int(headers["webhook-id"]), time.time(), event))
        await asyncio.sleep(self.delay)  # a receiver that takes its time
        return web.Response(status=204)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        context = server_context(self.cert, self.key)
        await web.TCPSite(self.runner, "127.0.0.1", self.port, ssl_context=context).start()

    async def until(self, ids: set[int], what: str, within: float = 90.0) -> None:
        deadline = time.monotonic() + within
        while not ids <= {ident for ident, _, _ in self.received}:
            missing = ids - {ident for ident, _, _ in self.received}
            assert time.monotonic() < deadline, f"{what}: {len(missing)} never delivered"
            await asyncio.sleep(0.05)


async def call_api(
    server: harness.RunningServer, method: str, path: str, body: Any = None
) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession(headers={"Authorization": f"Bearer {API_TOKEN}"}) as session,
        session.request(
            method, f"https://127.0.0.1:{server.http_port}{path}", json=body, ssl=TLS
        ) as response,
    ):
        text = await response.read()
        return response.status, json.loads(text) if text else None


async def burst(server: harness.RunningServer, agent: str, changes: int) -> int:
    """Log `agent` in on `server` and change its state `changes` times; the changes made."""
    async with Page(server) as page:
        ok = await page.request("login", username=agent, password=DEMO_PASSWORD)
        assert ok["type"] == "login-ok", ok
        for n in range(changes):
            reply = await page.request("state", state=("ready", "paused")[n % 2])
            assert reply["type"] == "ack", reply
    return changes


async def agent_events(dsn: str, since: float) -> dict[int, str]:
    """The agent-state events committed since `since` (wall clock): their node, by id."""
    db = await asyncpg.connect(dsn)
    try:
        rows = await db.fetch(
            "SELECT id, node FROM events WHERE type = 'agent.state' AND time >= $1", since
        )
        return {int(row["id"]): str(row["node"]) for row in rows}
    finally:
        await db.close()


async def pending(dsn: str) -> int:
    """The rows left in the outbox (pending or dead)."""
    db = await asyncpg.connect(dsn)
    try:
        return int(await db.fetchval("SELECT COUNT(*) FROM webhook_outbox"))
    finally:
        await db.close()


async def test_two_nodes_deliver_every_event_once_and_b_takes_over_a_killed_nodes_deliveries(
    pg: postgres.Postgres, tmp_path: Path
) -> None:
    dsn = postgres.fresh_database(pg)
    receiver = Receiver(tmp_path)
    await receiver.start()
    nodes = started(tmp_path, dsn=dsn)
    a, b = await asyncio.to_thread(nodes.__enter__)
    again: harness.RunningServer | None = None
    try:
        hook_body = {
            "url": f"https://127.0.0.1:{receiver.port}/hook",
            "types": ["agent.state"],
            "verify_tls": False,
        }
        status, hook = await call_api(a, "POST", "/api/v1/webhooks", hook_body)
        assert status == 201, hook
        receiver.secret = hook["secret"]
        deadline = time.monotonic() + 10
        while (await call_api(b, "GET", f"/api/v1/webhooks/{hook['id']}"))[0] != 200:
            assert time.monotonic() < deadline, "b never learnt of the webhook"
            await asyncio.sleep(0.05)
        since = time.time()

        on_b = asyncio.create_task(burst(b, "agent2", BURST))
        await burst(a, "agent1", KILL_AFTER)
        deadline = time.monotonic() + 30  # a's changes committed, most not yet delivered
        while len([n for n in (await agent_events(dsn, since)).values() if n == "a"]) < KILL_AFTER:
            assert time.monotonic() < deadline, "a's changes never reached the database"
            await asyncio.sleep(0.02)
        a.process.kill()  # kill -9 with its deliveries in flight and waiting
        killed = time.time()
        await asyncio.to_thread(a.process.wait)
        assert await on_b == BURST
        deadline = time.monotonic() + 30
        while len([n for n in (await agent_events(dsn, since)).values() if n == "b"]) < BURST:
            assert time.monotonic() < deadline, "b's changes never reached the database"
            await asyncio.sleep(0.1)
        # Everything pending is delivered (b takes over a's) and the outbox empties: b's server
        # writes the outcomes of a's deliveries too. (Without the takeover a's rows would wait
        # for a to start again.)
        deadline = time.monotonic() + 90
        while await pending(dsn):
            assert time.monotonic() < deadline, "the outbox never emptied"
            await asyncio.sleep(0.1)
        events = await agent_events(dsn, since)
        of_a = {ident for ident, node in events.items() if node == "a"}
        of_b = {ident for ident, node in events.items() if node == "b"}
        assert len(of_a) >= KILL_AFTER and len(of_b) >= BURST, (len(of_a), len(of_b))
        before = {i for i, when, _ in receiver.received if when <= killed + GRACE and i in of_a}
        assert len(before) < len(of_a), "the kill came after a had sent everything"
        await receiver.until(set(events), "events of the cluster")
        # (b's delivery of a's rows waits behind b's own: the receiver answers 4 at a time)
        drained = max(when for i, when, _ in receiver.received if i in of_a) - killed
        # Every committed event was delivered, and nothing else.
        counts = Counter(ident for ident, _, _ in receiver.received)
        assert set(counts) <= set(await agent_events(dsn, since)), set(counts) - set(events)
        for ident, _, event in receiver.received:
            assert event["id"] == ident and event["type"] == "agent.state"
        twice = {ident for ident, n in counts.items() if n > 1}
        assert not twice & of_b, sorted(twice & of_b)  # b's own: exactly once
        # a's: twice only those a had sent before its worker died (their outcome unwritten)
        assert twice <= before, sorted(twice - before)
        gone = "webhook-worker WARNING webhooks: node 'a' is gone; delivering its deliveries"
        line = next((text for text in b.log().splitlines() if gone in text), None)
        assert line is not None, b.log()[-3000:]
        stamp = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")  # the worker's local time
        took_over = stamp.timestamp() - killed

        # a, started again, takes its deliveries back once b let them go.
        deadline = time.monotonic() + 30
        while "the deliveries of node 'a' are done here" not in b.log():
            assert time.monotonic() < deadline, b.log()[-3000:]
            await asyncio.sleep(0.1)
        again = await asyncio.to_thread(
            harness.start_server,
            tmp_path / "a-again",
            edit_config=lambda text: text + sections("a", dsn=dsn),
        )
        # Quiet now: a receiver that answers at once, 30 changes on each node; the latency
        # from publishing to the receiver.
        receiver.delay = 0.0
        restarted = time.time()
        await asyncio.gather(burst(again, "agent1", 30), burst(b, "agent2", 30))
        # Each node's changes (its log-in and log-out publish too, so a node's count alone
        # says when its 30 landed; a total of 60 may come before the slower node's last flush).
        deadline = time.monotonic() + 30
        while True:
            fresh = await agent_events(dsn, restarted)
            per_node = Counter(fresh.values())
            if per_node["a"] >= 30 and per_node["b"] >= 30:
                break
            assert time.monotonic() < deadline, (
                f"the changes never reached the database: {per_node}"
            )
            await asyncio.sleep(0.1)
        await receiver.until(set(fresh), "events of a started again and b", 30)
        counts = Counter(ident for ident, _, _ in receiver.received)
        assert all(counts[ident] == 1 for ident in fresh), fresh
        assert "is gone; delivering" not in again.log()
        latencies = sorted(
            when - event["time"] for ident, when, event in receiver.received if ident in fresh
        )
        print(
            f"\n{len(of_a)} events of a (killed), {len(of_b)} of b; {len(before)} of a's sent"
            f" before its worker died; {len(twice)} delivered twice; b took a's over"
            f" {took_over:.2f} s after the kill, delivered a's last {drained:.2f} s after;"
            f" quiet latency (publish to receiver, 60 events)"
            f" p50 {statistics.median(latencies) * 1000:.0f} ms,"
            f" p99 {latencies[int(len(latencies) * 0.99)] * 1000:.0f} ms,"
            f" max {latencies[-1] * 1000:.0f} ms"
        )
    finally:
        if again is not None:
            assert await asyncio.to_thread(again.stop) == 0, again.log()[-3000:]
        await asyncio.to_thread(nodes.__exit__, None, None, None)
        if receiver.runner is not None:
            await receiver.runner.cleanup()


async def test_a_worker_whose_session_lost_its_nodes_lock_takes_it_again_or_stops_reading(
    pg: postgres.Postgres,
) -> None:
    from omlmedia.storage import open_database
    from omlmedia.webhook_worker import Worker, node_lock

    dsn = postgres.fresh_database(pg)
    open_database(dsn).close()  # migrated
    worker = Worker(dsn, node="a")
    other = await asyncpg.connect(dsn)
    await worker.start()
    try:
        assert worker.nodes == {"a"}  # its own lock, taken at start

        async def session_lost_its_locks() -> None:
            # what a connection lost and made again leaves: a session without the locks
            await worker._call(worker._db.execute, "SELECT pg_advisory_unlock_all()")
            worker._claimed = float("-inf")  # look now

        async def taken_elsewhere() -> bool:
            got = bool(await other.fetchval("SELECT pg_try_advisory_lock($1, $2)", *node_lock("a")))
            if got:
                await other.execute("SELECT pg_advisory_unlock($1, $2)", *node_lock("a"))
            return got

        await session_lost_its_locks()
        await worker._adopt()
        assert worker.nodes == {"a"} and not await taken_elsewhere()  # taken again

        await session_lost_its_locks()
        assert await other.fetchval("SELECT pg_try_advisory_lock($1, $2)", *node_lock("a"))
        await worker._adopt()
        assert worker.nodes == set()  # another session has it: a's rows are no longer read here
        await other.execute("SELECT pg_advisory_unlock($1, $2)", *node_lock("a"))
        worker._claimed = float("-inf")
        await worker._adopt()
        assert worker.nodes == {"a"} and not await taken_elsewhere()

        # The real thing: the worker's backend ends; its connection is made again at a later
        # statement (`PgConnection`), a new session without the lock, which the worker takes.
        row = await worker._call(lambda: worker._db.execute("SELECT pg_backend_pid()").fetchone())
        assert await other.fetchval("SELECT pg_terminate_backend($1)", row[0])
        deadline = time.monotonic() + 10
        while True:
            worker._claimed = float("-inf")
            try:
                await worker._adopt()
                break
            except Exception:  # the statements that find the connection gone, as the reader
                assert time.monotonic() < deadline, "the worker's connection never came back"
                await asyncio.sleep(0.05)
        assert worker.nodes == {"a"} and not await taken_elsewhere()
    finally:
        await worker.close()
        await other.close()
