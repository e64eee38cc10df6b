"""Signed webhooks against local receivers (aiohttp on 127.0.0.1): Standard Webhooks signatures
verify, deliveries of one call keep their order, 500s are retried, a hanging receiver delays no
other, dead deliveries are listed and replayed, and what was accepted before a restart is
delivered after it, as stored."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import hmac
import json
import os
import signal
import sqlite3
import ssl
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from omlmedia import audit, eventstream
from omlmedia.api import create_app
from omlmedia.authz import Identity, Role, Scopes
from omlmedia.config import ApiConfig, load_demo_config
from omlmedia.events import EventLog
from omlmedia.storage import AsyncStore, Store
from omlmedia.webhooks import WebhookCollector, WebhookService
from sip.tls import ensure_self_signed, server_context
from tests.omlmedia.test_api import TOKEN

ADMIN = Identity("admin", Role.ADMIN)


def verify(secret: str, headers: Mapping[str, str], body: bytes, tolerance: int = 300) -> Any:
    """A Standard Webhooks verifier written from the specification (not from our signer): the
    body's JSON when one ``v1`` signature of the header matches, ValueError otherwise."""
    msg_id = headers["webhook-id"]
    timestamp = headers["webhook-timestamp"]
    if abs(time.time() - int(timestamp)) > tolerance:
        raise ValueError("timestamp out of tolerance")
    key = base64.b64decode(secret.split("_", 1)[1])
    signed = msg_id.encode() + b"." + timestamp.encode() + b"." + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    for candidate in headers["webhook-signature"].split(" "):
        version, _, value = candidate.partition(",")
        if version == "v1" and hmac.compare_digest(value, expected):
            return json.loads(body)
    raise ValueError("no matching signature")


class Receiver:
    """A local webhook receiver: records every request; `answer` says what to do with one."""

    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.arrived: asyncio.Queue[tuple[dict[str, str], bytes]] = asyncio.Queue()
        self.answer: Callable[[dict[str, str], bytes], int] = lambda headers, body: 200
        self.hang = False
        self.release = asyncio.Event()
        self.server: TestServer | None = None

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        headers = {k.lower(): v for k, v in request.headers.items()}
        if self.hang:
            await self.release.wait()
        self.requests.append((headers, body))
        self.arrived.put_nowait((headers, body))
        return web.Response(status=self.answer(headers, body))

    async def start(self, context: ssl.SSLContext | None = None) -> str:
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        self.server = TestServer(app, host="127.0.0.1")
        await self.server.start_server(ssl=context)
        return str(self.server.make_url("/hook"))

    async def next(self, within: float = 10.0) -> tuple[dict[str, str], bytes]:
        return await asyncio.wait_for(self.arrived.get(), within)

    async def close(self) -> None:
        self.release.set()
        if self.server is not None:
            await self.server.close()


class World:
    """A store, its event log and a webhook service, as the server wires them."""

    def __init__(self, path: Path, **options: Any) -> None:
        self.store = AsyncStore(Store(path), flush_interval=0.05)
        self.events = EventLog(self.store)
        options.setdefault("delays", (0.01, 0.02))
        options.setdefault("timeout", 30.0)
        self.webhooks = WebhookService(self.store, allow_http_loopback=True, **options)
        self.events.outbox = self.webhooks.outbox

    def start(self) -> None:
        self.store.start()
        self.webhooks.start()

    async def ready(self) -> None:
        """Wait for the delivery worker's process."""
        await self.webhooks.worker.ready()

    async def close(self) -> None:
        await self.events.close()
        await self.webhooks.close()
        await self.store.close()


@pytest.fixture
async def receivers() -> AsyncIterator[Callable[[], Any]]:
    made: list[Receiver] = []

    async def make(context: ssl.SSLContext | None = None) -> tuple[Receiver, str]:
        receiver = Receiver()
        made.append(receiver)
        return receiver, await receiver.start(context)

    yield make
    for receiver in made:
        await receiver.close()


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    w = World(tmp_path / "omlmedia.db")
    w.start()
    yield w
    await w.close()


async def until(check: Callable[[], bool], within: float = 20.0) -> None:
    """Wait for `check` to hold (polled; fails after `within` seconds)."""
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.005)


async def test_a_delivery_is_signed_so_a_standard_webhooks_verifier_accepts_it(
    world: World, receivers: Any
) -> None:
    receiver, url = await receivers()
    hook = await world.webhooks.create(ADMIN, url=url)
    assert hook.secret.startswith("whsec_") and len(base64.b64decode(hook.secret[6:])) == 32
    ev = world.events.publish("call.started", call_id="c1", data={"from": "1001"})
    headers, body = await receiver.next()
    assert verify(hook.secret, headers, body) == ev.view()
    assert headers["webhook-id"] == str(ev.id)
    assert headers["content-type"] == "application/json"
    with pytest.raises(ValueError):
        verify(hook.secret, headers, body.replace(b"1001", b"1002"))
    other = dataclasses.replace(hook, secret="whsec_" + base64.b64encode(b"x" * 32).decode())
    with pytest.raises(ValueError):
        verify(other.secret, headers, body)


async def test_types_and_scope_choose_what_a_webhook_receives(world: World, receivers: Any) -> None:
    receiver, url = await receivers()
    await world.webhooks.create(ADMIN, url=url, types=("queue.",), scope=frozenset({"support"}))
    world.events.publish("call.started", call_id="c1", queue="support")
    world.events.publish("queue.entered", call_id="c1", queue="sales")
    wanted = world.events.publish("queue.entered", call_id="c2", queue="support")
    _, body = await receiver.next()
    assert json.loads(body)["id"] == wanted.id
    await world.store.flush()
    assert receiver.arrived.empty() and len(receiver.requests) == 1


async def test_a_scoped_webhook_follows_the_queues_members_as_they_change(
    tmp_path: Path, receivers: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(eventstream, "SCOPE_REFRESH", 0.0)  # read again at every event
    members = {"support": frozenset({"agent1"})}
    w = World(tmp_path / "omlmedia.db", scopes=lambda: Scopes({}, dict(members)))
    w.start()
    try:
        receiver, url = await receivers()
        await w.webhooks.create(ADMIN, url=url, types=("agent.",), scope=frozenset({"support"}))
        w.events.publish("agent.state", agent="agent9", data={"state": "ready"})  # no member
        members["support"] = frozenset({"agent1", "agent9"})  # agent9 joins support
        joined = w.events.publish("agent.state", agent="agent9", data={"state": "paused"})
        _, body = await receiver.next()
        assert json.loads(body)["id"] == joined.id
        members["support"] = frozenset({"agent1"})  # and leaves it
        w.events.publish("agent.state", agent="agent9", data={"state": "ready"})
        member = w.events.publish("agent.state", agent="agent1", data={"state": "ready"})
        _, body = await receiver.next()
        assert json.loads(body)["id"] == member.id
        await w.store.flush()
        assert receiver.arrived.empty() and len(receiver.requests) == 2
    finally:
        await w.close()


async def test_a_webhook_that_cannot_match_never_fails_the_publisher(
    tmp_path: Path, receivers: Any
) -> None:
    receiver, url = await receivers()

    def broken() -> Any:
        raise RuntimeError("scopes are gone")

    w = World(tmp_path / "omlmedia.db", scopes=broken)
    w.start()
    try:
        await w.webhooks.create(ADMIN, url=url, scope=frozenset({"support"}))
        await w.webhooks.create(ADMIN, url=url)
        ev = w.events.publish("call.started", call_id="c1", queue="support")
        _, body = await receiver.next()
        assert json.loads(body)["id"] == ev.id
        assert w.webhooks.outcomes["unmatched"] == 1
    finally:
        await w.close()


async def test_500s_are_retried_with_the_same_id_and_one_call_keeps_its_order(
    tmp_path: Path, receivers: Any
) -> None:
    world = World(tmp_path / "omlmedia.db", delays=(0.01,) * 50)
    world.start()
    try:
        await _retried_in_order(world, receivers)
    finally:
        await world.close()


async def _retried_in_order(world: World, receivers: Any) -> None:
    receiver, url = await receivers()
    failures = {"n": 0}

    def answer(headers: dict[str, str], body: bytes) -> int:
        # Call a's first event fails until call b is all delivered (and at least twice):
        # b must not wait behind a's retries, and a's later events must wait for its first.
        event = json.loads(body)
        b_done = sum(json.loads(b)["call_id"] == "b" for _, b in receiver.requests) == 2
        if event["call_id"] == "a" and event["type"] == "call.started":
            if failures["n"] < 2 or not b_done:
                failures["n"] += 1
                return 500
        return 200

    receiver.answer = answer
    await world.webhooks.create(ADMIN, url=url)
    a_ids = [
        world.events.publish(t, call_id="a").id
        for t in ("call.started", "call.answered", "call.ended")
    ]
    b_ids = [world.events.publish(t, call_id="b").id for t in ("call.started", "call.ended")]
    await until(lambda: world.webhooks.outcomes["delivered"] == 5)
    tries = failures["n"] + 1
    seen = [(json.loads(body)["call_id"], int(h["webhook-id"])) for h, body in receiver.requests]
    assert tries >= 3
    assert [i for c, i in seen if c == "a"] == [a_ids[0]] * tries + a_ids[1:]
    assert [i for c, i in seen if c == "b"] == b_ids
    assert world.webhooks.outcomes == {"failed": tries - 1, "delivered": 5}
    await until(lambda: world.webhooks.depth == 0)
    assert await world.webhooks.deliveries(next(iter(world.webhooks.hooks))) == []


async def test_a_receiver_that_hangs_delays_no_other_receiver(world: World, receivers: Any) -> None:
    stuck, stuck_url = await receivers()
    stuck.hang = True
    good, good_url = await receivers()
    await world.webhooks.create(ADMIN, url=stuck_url)
    await world.webhooks.create(ADMIN, url=good_url)
    ids = [world.events.publish("call.started", call_id=f"c{n}").id for n in range(20)]
    got = [json.loads((await good.next())[1])["id"] for _ in ids]
    assert sorted(got) == ids
    await until(lambda: world.webhooks.depth == 20)
    assert stuck.requests == []


async def test_a_receiver_over_the_memory_limit_waits_in_the_store_and_loses_nothing(
    tmp_path: Path, receivers: Any
) -> None:
    receiver, url = await receivers()
    receiver.hang = True
    w = World(tmp_path / "omlmedia.db", memory_limit=3)
    w.start()
    try:
        await w.webhooks.create(ADMIN, url=url)
        ids = [w.events.publish("call.started", call_id=f"c{n}").id for n in range(10)]
        ids += [w.events.publish("call.ended", call_id=f"c{n}").id for n in range(10)]
        # The worker holds 3; the other 17 wait in the store, counted there.
        await until(lambda: (w.webhooks.memory, w.webhooks.depth, w.webhooks.spilled) == (3, 20, 1))
        receiver.hang = False
        receiver.release.set()
        await until(lambda: w.webhooks.outcomes["delivered"] == 20)
        got = [json.loads(body) for _, body in receiver.requests]
        assert sorted(ev["id"] for ev in got) == ids
        for n in range(10):
            assert [ev["type"] for ev in got if ev["call_id"] == f"c{n}"] == [
                "call.started",
                "call.ended",
            ]
        await until(lambda: w.webhooks.depth == w.webhooks.spilled == 0)
    finally:
        await w.close()


async def test_a_delivery_is_dead_after_its_attempts_and_replay_sends_it_again(
    world: World, receivers: Any
) -> None:
    receiver, url = await receivers()
    receiver.answer = lambda headers, body: 500
    hook = await world.webhooks.create(ADMIN, url=url)
    ev = world.events.publish("call.started", call_id="c1")
    await until(lambda: world.webhooks.outcomes["dead"] == 1)
    assert len(receiver.requests) == world.webhooks.attempts == 3
    dead = await world.webhooks.deliveries(hook.id, "dead")
    assert [(d.event_id, d.attempts, d.last_error) for d in dead] == [(ev.id, 3, "HTTP 500")]
    receiver.answer = lambda headers, body: 204
    assert await world.webhooks.replay(ADMIN, hook.id, ev.id) == 1
    headers, body = await receiver.next()
    while receiver.arrived.qsize():
        headers, body = await receiver.next()
    await until(lambda: world.webhooks.outcomes["delivered"] == 1)
    assert headers["webhook-id"] == str(ev.id) and verify(hook.secret, headers, body)["id"] == ev.id
    assert await world.webhooks.deliveries(hook.id) == []


async def test_what_was_accepted_before_a_restart_is_delivered_after_it_as_stored(
    tmp_path: Path, receivers: Any
) -> None:
    receiver, url = await receivers()
    first = World(tmp_path / "omlmedia.db")
    first.store.start()  # the delivery worker never starts: the process stops before delivery
    hook = await first.webhooks.create(ADMIN, url=url)
    published = [
        first.events.publish(t, call_id="c1", data={"n": n})
        for n, t in enumerate(("call.started", "call.answered", "call.ended"))
    ]
    await first.close()
    assert receiver.requests == []

    second = World(tmp_path / "omlmedia.db")
    second.start()
    try:
        got = [await receiver.next() for _ in published]
        for (headers, body), ev in zip(got, published, strict=True):
            assert headers["webhook-id"] == str(ev.id)
            assert verify(hook.secret, headers, body) == ev.view()
            assert body.decode() == ev.to_json()
        await until(lambda: second.webhooks.outcomes["delivered"] == 3)
        await second.store.flush()
        assert await second.webhooks.deliveries(hook.id) == []
    finally:
        await second.close()


async def test_https_receivers_are_verified_unless_a_webhook_says_not_to(
    tmp_path: Path, receivers: Any
) -> None:
    cert, key = tmp_path / "receiver.crt", tmp_path / "receiver.key"
    ensure_self_signed(cert, key, ["localhost"], ["127.0.0.1"])
    receiver, url = await receivers(server_context(cert, key))
    assert url.startswith("https://127.0.0.1:")
    plain = World(tmp_path / "plain.db")  # the system's CAs: the receiver's is not one of them
    plain.start()
    trusting = World(tmp_path / "trusting.db", cafile=cert)
    trusting.start()
    try:
        verified = await plain.webhooks.create(ADMIN, url=url)
        unverified = await plain.webhooks.create(ADMIN, url=url, verify_tls=False)
        ev = plain.events.publish("call.started", call_id="c1")
        headers, body = await receiver.next()
        assert verify(unverified.secret, headers, body)["id"] == ev.id
        await until(lambda: plain.webhooks.outcomes["dead"] == 1)
        dead = await plain.webhooks.deliveries(verified.id, "dead")
        assert "certificate" in dead[0].last_error.lower()
        assert len(receiver.requests) == 1
        hook = await trusting.webhooks.create(ADMIN, url=url)
        ev = trusting.events.publish("call.started", call_id="c2")
        headers, body = await receiver.next()
        assert verify(hook.secret, headers, body)["id"] == ev.id
    finally:
        await plain.close()
        await trusting.close()


async def test_the_outbox_depth_and_outcomes_are_in_the_metrics(world: World) -> None:
    world.webhooks.outcomes["dead"] = 2
    samples = {
        (s.name, s.labels.get("outcome", "")): s.value
        for family in WebhookCollector(world.webhooks).collect()
        for s in family.samples
    }
    assert samples[("omlmedia_webhook_outbox_depth", "")] == 0
    assert samples[("omlmedia_webhook_deliveries_total", "dead")] == 2


@pytest.fixture
async def api(world: World) -> AsyncIterator[TestClient[Any, Any]]:
    digest = hashlib.sha256(TOKEN.encode()).hexdigest()
    config = dataclasses.replace(load_demo_config(), api=ApiConfig(digest))
    app = create_app(config, dict, webhooks=world.webhooks)
    async with TestClient(TestServer(app)) as client:
        yield client


AUTH = {"Authorization": f"Bearer {TOKEN}"}


async def test_the_api_creates_lists_changes_and_deletes_webhooks_with_audit(
    api: TestClient[Any, Any], world: World, tmp_path: Path
) -> None:
    created = await api.post(
        "/api/v1/webhooks",
        json={"url": "https://crm.example.com/hook", "types": ["call."], "scope": ["support"]},
        headers=AUTH,
    )
    assert created.status == 201
    hook = await created.json()
    assert hook["secret"].startswith("whsec_") and hook["verify_tls"] is True
    listed = await (await api.get("/api/v1/webhooks", headers=AUTH)).json()
    assert [h["id"] for h in listed["webhooks"]] == [hook["id"]]
    assert "secret" not in listed["webhooks"][0]
    path = f"/api/v1/webhooks/{hook['id']}"
    changed = await api.patch(path, json={"verify_tls": False}, headers=AUTH)
    assert changed.status == 200 and (await changed.json())["verify_tls"] is False
    assert (await api.delete(path, headers=AUTH)).status == 204
    assert (await api.get(path, headers=AUTH)).status == 404
    db = sqlite3.connect(tmp_path / "omlmedia.db")
    entries = audit.entries(db, action="webhook.")
    db.close()
    assert [e.action for e in entries] == ["webhook.create", "webhook.update", "webhook.delete"]
    assert entries[1].before is not None and entries[1].before["verify_tls"] is True
    assert entries[1].after is not None and entries[1].after["verify_tls"] is False
    assert all("whsec_" not in json.dumps(e.view()) for e in entries)


async def test_the_api_names_every_invalid_field(api: TestClient[Any, Any]) -> None:
    response = await api.post(
        "/api/v1/webhooks",
        json={"url": "http://crm.example.com/hook", "types": "call.", "verify_tls": "no", "x": 1},
        headers=AUTH,
    )
    assert response.status == 400
    problem = await response.json()
    assert {e["field"] for e in problem["errors"]} == {"url", "types", "verify_tls", "x"}
    missing = await api.post("/api/v1/webhooks", json={}, headers=AUTH)
    assert [e["field"] for e in (await missing.json())["errors"]] == ["url"]
    hook = await (
        await api.post("/api/v1/webhooks", json={"url": "http://127.0.0.1:9/h"}, headers=AUTH)
    ).json()
    deliveries = f"/api/v1/webhooks/{hook['id']}/deliveries"
    bad = await api.get(deliveries + "?status=gone", headers=AUTH)
    assert bad.status == 400
    assert (await api.get(deliveries + "?status=dead", headers=AUTH)).status == 200
    unknown = await api.post(deliveries + "/12345/replay", headers=AUTH)
    assert unknown.status == 404
    replayed = await api.post(deliveries + "/replay", headers=AUTH)
    assert replayed.status == 202 and await replayed.json() == {"replayed": 0}


async def test_a_killed_delivery_worker_is_started_again_and_loses_no_delivery(
    world: World, receivers: Any
) -> None:
    receiver, url = await receivers()
    hook = await world.webhooks.create(ADMIN, url=url)
    await world.ready()
    first = world.webhooks.worker.pid
    assert first is not None and world.webhooks.status()["worker"] == "running"
    ids = [world.events.publish("call.started", call_id=f"c{n % 7}").id for n in range(600)]
    await until(lambda: len(receiver.requests) >= 20)
    os.kill(first, signal.SIGKILL)
    assert len(receiver.requests) < len(ids)  # in the middle of the deliveries
    await until(lambda: world.webhooks.worker.restarts == 1)
    ids += [world.events.publish("call.ended", call_id=f"c{n}").id for n in range(7)]
    await until(lambda: {int(h["webhook-id"]) for h, _ in receiver.requests} == set(ids), 20)
    status = world.webhooks.status()
    assert status["worker"] == "running" and status["worker_pid"] not in (None, first)
    assert status["worker_restarts"] == 1
    for headers, body in receiver.requests:
        assert verify(hook.secret, headers, body)["id"] == int(headers["webhook-id"])
    per_call: dict[str, list[int]] = {}
    for _, body in receiver.requests:
        event = json.loads(body)
        seen = per_call.setdefault(event["call_id"], [])
        if event["id"] not in seen:
            seen.append(event["id"])
    assert all(seen == sorted(seen) for seen in per_call.values())  # order per call kept
    # Every outcome reaches the outbox: the rows go. Waited for as rows, not as the reported
    # depth: the receiver may hold the last delivery before the worker's next report (~50 ms)
    # carries its outcome, while the depth is still the one the killed worker reported last.
    deadline = time.monotonic() + 20
    while left := await world.webhooks.deliveries(hook.id):
        assert time.monotonic() < deadline, f"{len(left)} deliveries still pending: {left[:3]}"
        await asyncio.sleep(0.02)
    await until(lambda: world.webhooks.depth == 0)


async def test_a_started_worker_reports_no_depth_before_it_has_read_the_outbox(
    tmp_path: Path, receivers: Any
) -> None:
    from omlmedia.webhook_worker import Worker

    receiver, url = await receivers()
    receiver.hang = True  # nothing is delivered: the depth stays what the outbox holds
    world = World(tmp_path / "omlmedia.db")  # not started: no worker process of its own
    await world.webhooks.create(ADMIN, url=url)
    for n in range(50):  # what a killed worker left pending
        world.events.publish("call.started", call_id=f"c{n}")
    await world.store.flush()
    reports: list[dict[str, Any]] = []
    worker = Worker(tmp_path / "omlmedia.db", report=reports.append)
    await worker.start()
    reading = threading.Event()
    worker._executor.submit(reading.wait)  # its first read of the outbox waits behind this
    try:
        worker.write()  # a report due before the first read: the depth is not known yet
        assert reports == []
        reading.set()
        await until(lambda: bool(reports))
        assert reports[0]["depth"] == 50  # not the 0 a server once took for an empty outbox
    finally:
        reading.set()
        await worker.close()
        await world.close()


SERVER = """
import asyncio, sys
from pathlib import Path
from omlmedia.storage import AsyncStore, Store
from omlmedia.webhooks import WebhookService

async def main():
    service = WebhookService(AsyncStore(Store(Path(sys.argv[1]))))
    service.start()
    await service.worker.ready()
    print(service.worker.pid, flush=True)
    await asyncio.sleep(120)

asyncio.run(main())
"""


async def test_the_delivery_worker_does_not_outlive_a_killed_server(tmp_path: Path) -> None:
    server = await asyncio.create_subprocess_exec(
        sys.executable, "-c", SERVER, str(tmp_path / "omlmedia.db"), stdout=asyncio.subprocess.PIPE
    )
    assert server.stdout is not None
    try:
        worker = int(await asyncio.wait_for(server.stdout.readline(), 30))
    finally:
        server.kill()  # no chance to stop its worker
        await server.wait()

    def gone() -> bool:
        try:
            os.kill(worker, 0)
        except ProcessLookupError:
            return True
        try:
            with open(f"/proc/{worker}/stat") as stat:
                return stat.read().split(")")[-1].split()[0] == "Z"  # exited, not yet reaped
        except FileNotFoundError:  # reaped between the two looks
            return True

    await until(gone)
