"""Two real `omlmedia serve` nodes on one throwaway PostgreSQL database: what one node changes
(an API token revoked, an agent created, a webhook created or deleted) applies on the other
through the change notifications (`omlmedia.notify`: no periodic reload could do it instead;
the time it took is printed, a few milliseconds when idle); the events both write
have unique ids, increasing on each node, and the event stream of a node resumes after an id
exactly where it left."""

from __future__ import annotations

import asyncio
import json
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest

from benchmarks import harness
from benchmarks.harness import API_TOKEN, DEMO_PASSWORD
from omlmedia.storage import Store
from tests.cluster import postgres

_TLS = ssl.create_default_context()
_TLS.check_hostname = False
_TLS.verify_mode = ssl.CERT_NONE


@pytest.fixture(scope="module")
def nodes(
    pg: postgres.Postgres, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[harness.RunningServer, harness.RunningServer, str]]:
    """Nodes a and b on one fresh database, shared by the module's tests (one start-up instead
    of one a test). The events test runs first: it counts every event in the database; the
    others each make and check their own token, agent or webhook."""
    dsn = postgres.fresh_database(pg)
    tmp_path = tmp_path_factory.mktemp("shared-database")
    started: list[harness.RunningServer] = []
    try:
        for name in ("a", "b"):
            storage = f'\n[storage]\ndsn = "{dsn}"\nnode = "{name}"\n'
            started.append(
                harness.start_server(tmp_path / name, edit_config=lambda t, s=storage: t + s)
            )
        yield started[0], started[1], dsn
    finally:
        for server in started:
            assert server.stop() == 0, server.log()[-3000:]


def api(
    server: harness.RunningServer,
    method: str,
    path: str,
    body: dict[str, Any] | None = None,
    token: str = API_TOKEN,
) -> tuple[int, Any]:
    request = urllib.request.Request(
        f"https://127.0.0.1:{server.http_port}{path}",
        data=json.dumps(body).encode() if body is not None else None,
        method=method,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, context=_TLS, timeout=10) as response:
            text = response.read()
            return response.status, json.loads(text) if text else None
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def until(check: Any, what: str, timeout: float = 15.0) -> float:
    """Poll `check()` until true; the seconds it took. The deadline is generous: each look is an
    HTTPS request with its own TLS handshake, and a change reaches the other node through a
    PostgreSQL notification and a reload, on a shared machine that runs at load 16 at times (a
    1 s deadline there is a flake, not a proof: nothing but the notification applies it)."""
    start = time.monotonic()
    while not check():
        assert time.monotonic() - start < timeout, what
        time.sleep(0.02)
    return time.monotonic() - start


def read_stream(server: harness.RunningServer, since: int, count: int) -> list[tuple[int, str]]:
    """The first `count` events of `server`'s SSE stream after `since`: (id, type)."""
    request = urllib.request.Request(
        f"https://127.0.0.1:{server.http_port}/api/v1/events?since_id={since}",
        headers={"Authorization": f"Bearer {API_TOKEN}", "Accept": "text/event-stream"},
    )
    got: list[tuple[int, str]] = []
    with urllib.request.urlopen(request, context=_TLS, timeout=10) as response:
        ident, kind = 0, ""
        for raw in response:
            line = raw.decode().rstrip("\n")
            if line.startswith("id: "):
                ident = int(line[4:])
            elif line.startswith("event: "):
                kind = line[7:]
            elif line == "" and ident:
                got.append((ident, kind))
                ident = 0
                if len(got) == count:
                    break
    return got


def test_events_of_both_nodes_have_unique_ids_and_a_nodes_stream_resumes_after_an_id(
    nodes: tuple[harness.RunningServer, harness.RunningServer, str],
) -> None:
    a, b, dsn = nodes
    made: dict[str, list[str]] = {"a": [], "b": []}
    for i in range(12):  # changes on both nodes, interleaved: each publishes an event
        node, server = (("a", a), ("b", b))[i % 2]
        status, _ = api(server, "POST", "/api/v1/agents", {"name": f"x{i}", "password": "p" * 8})
        assert status == 201
        made[node].append(f"x{i}")
    store = Store(dsn)
    try:
        rows: list[Any] = []

        def created() -> bool:
            rows[:] = [
                row for row in store.all_events(0, 10_000) if row[2] == "admin.agent.created"
            ]
            return len(rows) == 12

        until(created, "the 12 admin.agent.created events never all reached the database")
        db = store.connect()
        try:
            by_node = {
                node: [
                    int(r[0])
                    for r in db.execute(
                        "SELECT id FROM events WHERE node = ? ORDER BY time, id", (node,)
                    )
                ]
                for node in ("a", "b")
            }
            total = db.execute("SELECT COUNT(*), COUNT(DISTINCT id) FROM events").fetchone()
        finally:
            db.close()
    finally:
        store.close()
    assert total[0] == total[1], total
    for node, ids in by_node.items():
        assert ids == sorted(ids) and ids, (node, ids)
    assert set(by_node["a"]).isdisjoint(by_node["b"])
    # b's stream: all its events, then resumed after the third: the rest, exactly once.
    everything = read_stream(b, 0, len(by_node["b"]))
    assert [ident for ident, _ in everything] == by_node["b"]
    cut = everything[2][0]
    resumed = read_stream(b, cut, len(everything) - 3)
    assert resumed == everything[3:]
    assert all(ident not in by_node["a"] for ident, _ in resumed)


def test_a_token_revoked_on_one_node_is_refused_on_the_other(
    nodes: tuple[harness.RunningServer, harness.RunningServer, str],
) -> None:
    a, b, _ = nodes
    status, made = api(a, "POST", "/api/v1/tokens", {"integration": "crm", "role": "supervisor"})
    assert status == 201, made
    token = made["token"]
    # Made on a, known on b once b heard of it.
    until(lambda: api(b, "GET", "/api/v1/status", token=token)[0] == 200, "b never took it")
    status, revoked = api(a, "DELETE", f"/api/v1/tokens/{made['id']}")
    assert status == 200, revoked
    took = until(
        lambda: api(b, "GET", "/api/v1/status", token=token)[0] == 401,
        "b still takes a token revoked on a",
    )
    print(f"token revoked on a refused on b after {took * 1000:.0f} ms")
    assert api(a, "GET", "/api/v1/status", token=token)[0] == 401


async def agent_login(server: harness.RunningServer, name: str, password: str) -> dict[str, Any]:
    """The agent page's first message on `server`'s socket: its answer to a password login."""
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(
            f"wss://127.0.0.1:{server.http_port}/ws",
            ssl=_TLS,
            origin=f"https://127.0.0.1:{server.http_port}",
        ) as ws:
            await ws.send_json({"v": 1, "type": "login", "username": name, "password": password})
            while True:
                message = await asyncio.wait_for(ws.receive_json(), 10)
                if message.get("type") in ("login-ok", "error", "login-failed"):
                    return dict(message)


def test_an_agent_created_on_one_node_logs_in_on_the_other(
    nodes: tuple[harness.RunningServer, harness.RunningServer, str],
) -> None:
    a, b, _ = nodes
    body = {
        "name": "agent9",
        "password": DEMO_PASSWORD,
        "queues": [{"queue": "support", "penalty": 0}],
    }
    status, made = api(a, "POST", "/api/v1/agents", body)
    assert status == 201, made
    took = until(
        lambda: api(b, "GET", "/api/v1/agents/agent9")[0] == 200,
        "b never learnt of the agent created on a",
    )
    print(f"agent created on a known on b after {took * 1000:.0f} ms")
    answer = asyncio.run(agent_login(b, "agent9", DEMO_PASSWORD))
    assert answer.get("type") == "login-ok", answer
    # b's queue has the new member too.
    status, queue = api(b, "GET", "/api/v1/queues/support")
    assert status == 200, queue
    assert "agent9" in json.dumps(queue), queue


def test_a_webhook_created_or_deleted_on_one_node_is_known_or_gone_on_the_other(
    nodes: tuple[harness.RunningServer, harness.RunningServer, str],
) -> None:
    a, b, _ = nodes
    status, hook = api(a, "POST", "/api/v1/webhooks", {"url": "https://crm.example/hook"})
    assert status == 201, hook
    path = f"/api/v1/webhooks/{hook['id']}"
    took = until(lambda: api(b, "GET", path)[0] == 200, "b never learnt of the webhook")
    status, _ = api(a, "DELETE", path)
    assert status == 204
    gone = until(lambda: api(b, "GET", path)[0] == 404, "b still has the webhook")
    print(f"webhook known on b after {took * 1000:.0f} ms, gone after {gone * 1000:.0f} ms")
