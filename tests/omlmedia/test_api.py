"""The HTTPS API application: every route needs the bearer token; errors are JSON; queues and
agents come from the ACD runtime, call records and the queue log from SQLite."""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from omlmedia.acd import AcdRuntime, engine_log, queue_figures
from omlmedia.api import create_app
from omlmedia.config import ApiConfig, Config, load_demo_config
from omlmedia.storage import AsyncStore, CallRecord, QueueLogRow, Store
from queueing import Statistics
from queueing.config import build_config as build_acd_config
from queueing.engine import AcdEngine
from queueing.events import AgentState, QueueLogEntry
from queueing.exceptions import AgentStateError, UnknownAgentError

TOKEN = "api-test-token"


def config() -> Config:
    demo = load_demo_config()
    api = ApiConfig(token_sha256=hashlib.sha256(TOKEN.encode()).hexdigest())
    return Config(
        server=demo.server, sip=demo.sip, security=demo.security, api=api, routes=demo.routes
    )


@pytest.fixture
async def client() -> AsyncIterator[TestClient[Any, Any]]:
    status = {"sip": {"transactions": 0, "dialogs": 0, "calls": 0}}
    async with TestClient(TestServer(create_app(config(), lambda: status))) as test_client:
        yield test_client


async def test_status_needs_the_bearer_token(client: TestClient[Any, Any]) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}):
        response = await client.get("/api/v1/status", headers=headers)
        assert response.status == 401
        assert response.content_type == "application/problem+json"
        assert (await response.json()) == {
            "type": "about:blank",
            "title": "Unauthorized",
            "status": 401,
            "detail": "a valid bearer token is required",
            "error": "a valid bearer token is required",
        }
        assert response.headers["WWW-Authenticate"].startswith("Bearer")


async def test_status_with_the_token_gives_the_live_counters(
    client: TestClient[Any, Any],
) -> None:
    response = await client.get("/api/v1/status", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status == 200
    assert (await response.json())["sip"] == {"transactions": 0, "dialogs": 0, "calls": 0}


async def test_unknown_paths_and_methods_are_json_errors(client: TestClient[Any, Any]) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    missing = await client.get("/api/v1/nothing", headers=headers)
    assert missing.status == 404 and "error" in await missing.json()
    wrong = await client.post("/api/v1/status", headers=headers, data=b"x")
    assert wrong.status == 405 and "error" in await wrong.json()


# -- queues and agents --------------------------------------------------------------------------

AUTH = {"Authorization": f"Bearer {TOKEN}"}
T0 = 1_800_000_450.0
"""A time in the middle of a 900 s statistics period."""


class FakeSupervision:
    """Queues and agents as the ACD runtime reports them; commands recorded."""

    def __init__(self) -> None:
        self.agents: dict[str, dict[str, Any]] = {
            "agent1": {"agent": "agent1", "state": "ready", "reason": "", "call": None},
            "agent2": {"agent": "agent2", "state": "logged-out", "reason": "", "call": None},
        }
        self.commands: list[tuple[str, ...]] = []
        self.spans: list[tuple[float, float] | None] = []

    def queue_report(self, span: tuple[float, float] | None = None) -> dict[str, dict[str, Any]]:
        self.spans.append(span)
        return {
            "support": {"queue": "support", "waiting": 2, "stats": {"answered": 1}},
            "sales": {"queue": "sales", "waiting": 0, "stats": {"answered": 0}},
        }

    def agent_report(self, span: tuple[float, float] | None = None) -> dict[str, dict[str, Any]]:
        self.spans.append(span)
        return self.agents

    def _logged_in(self, agent: str) -> dict[str, Any]:
        if agent not in self.agents:
            raise UnknownAgentError(agent)
        if self.agents[agent]["state"] == "logged-out":
            raise AgentStateError(f"agent {agent} is not logged in")
        return self.agents[agent]

    def force_pause(self, agent: str, reason: str, supervisor: str) -> dict[str, Any]:
        view = self._logged_in(agent)
        self.commands.append(("pause", agent, reason, supervisor))
        view.update(state="paused", reason=reason)
        return view

    def force_unpause(self, agent: str, supervisor: str) -> dict[str, Any]:
        view = self._logged_in(agent)
        self.commands.append(("unpause", agent, supervisor))
        view.update(state="ready", reason="")
        return view

    async def force_logout(self, agent: str, supervisor: str) -> dict[str, Any]:
        view = self._logged_in(agent)
        await asyncio.sleep(0)
        self.commands.append(("logout", agent, supervisor))
        view.update(state="logged-out", reason="")
        return view


def fill_store(path: Path) -> None:
    store = Store(path)
    for i in range(5):
        queue = "support" if i % 2 == 0 else "sales"
        start = T0 + 10 * i
        store.append(QueueLogRow(start, "enter", f"c{i}", queue, data={"position": 1}))
        store.append(QueueLogRow(start + 2, "answer", f"c{i}", queue, "agent1", {"wait": 2.0}))
        store.call_ended(
            CallRecord(
                f"c{i}",
                start,
                start + 8,
                start + 2,
                caller=f"555000{i}",
                queue=queue,
                agent="agent1" if i < 4 else "agent2",
                legs=({"role": "caller", "codec": "PCMU", "mos": 4.3},),
            )
        )
    store.append(QueueLogRow(T0 + 100, "closed-at-restart", "c9", "support"))
    store.flush()
    store.close()


@pytest.fixture
async def acd_client(
    tmp_path: Path,
) -> AsyncIterator[tuple[TestClient[Any, Any], FakeSupervision]]:
    fill_store(tmp_path / "omlmedia.db")
    fake = FakeSupervision()
    app = create_app(config(), dict, acd=fake, database=tmp_path / "omlmedia.db")
    async with TestClient(TestServer(app)) as test_client:
        yield test_client, fake


async def get(client: TestClient[Any, Any], path: str, status: int = 200) -> Any:
    response = await client.get(path, headers=AUTH)
    body = await response.json()
    assert response.status == status, body
    if status >= 400:
        assert isinstance(body["error"], str) and body["error"]
    return body


async def post(client: TestClient[Any, Any], path: str, body: Any, status: int = 200) -> Any:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = await client.post(path, headers=AUTH, data=data)
    answer = await response.json()
    assert response.status == status, answer
    if status >= 400:
        assert isinstance(answer["error"], str) and answer["error"]
    return answer


async def test_queues_are_listed_and_read_one_by_one(
    acd_client: tuple[TestClient[Any, Any], FakeSupervision],
) -> None:
    client, _ = acd_client
    listed = await get(client, "/api/v1/queues")
    assert [q["queue"] for q in listed["queues"]] == ["support", "sales"]
    support = await get(client, "/api/v1/queues/support")
    assert support["waiting"] == 2 and support["stats"]["answered"] == 1
    missing = await get(client, "/api/v1/queues/nope", 404)
    assert missing["error"] == "unknown queue: nope"


async def test_queue_and_agent_figures_cover_the_span_asked_for(
    acd_client: tuple[TestClient[Any, Any], FakeSupervision],
) -> None:
    client, fake = acd_client
    await get(client, "/api/v1/queues")
    await get(client, "/api/v1/queues/support?since=100")
    await get(client, "/api/v1/agents?since=100&until=2000")
    await get(client, "/api/v1/agents/agent1?until=3000")
    assert fake.spans == [None, (100.0, math.inf), (100.0, 2000.0), (0.0, 3000.0)]
    bad = await get(client, "/api/v1/queues?since=2000&until=100", 400)
    assert bad["error"] == "until must not be before since"
    assert (await get(client, "/api/v1/agents?since=soon", 400))["error"].startswith("since")


async def test_queue_routes_need_the_token(
    acd_client: tuple[TestClient[Any, Any], FakeSupervision],
) -> None:
    client, fake = acd_client
    for path in ("/api/v1/queues", "/api/v1/agents", "/api/v1/calls/records"):
        assert (await client.get(path)).status == 401
    response = await client.post("/api/v1/agents/agent1/pause", json={"reason": "x"})
    assert response.status == 401 and fake.commands == []


async def test_a_supervisor_pauses_unpauses_and_logs_out_an_agent(
    acd_client: tuple[TestClient[Any, Any], FakeSupervision],
) -> None:
    client, fake = acd_client
    agents = await get(client, "/api/v1/agents")
    assert [a["agent"] for a in agents["agents"]] == ["agent1", "agent2"]
    paused = await post(client, "/api/v1/agents/agent1/pause", {"reason": "coaching"})
    assert paused["state"] == "paused" and paused["reason"] == "coaching"
    assert (await get(client, "/api/v1/agents/agent1"))["reason"] == "coaching"
    assert (await post(client, "/api/v1/agents/agent1/unpause", b""))["state"] == "ready"
    assert (await post(client, "/api/v1/agents/agent1/logout", {}))["state"] == "logged-out"
    assert fake.commands == [
        ("pause", "agent1", "coaching", "bootstrap"),
        ("unpause", "agent1", "bootstrap"),
        ("logout", "agent1", "bootstrap"),
    ]


async def test_the_supervisor_is_the_token_not_a_field_of_the_body(
    acd_client: tuple[TestClient[Any, Any], FakeSupervision],
) -> None:
    client, fake = acd_client
    refused = await post(
        client, "/api/v1/agents/agent1/pause", {"reason": "x", "supervisor": "sue"}, 400
    )
    assert refused["errors"] == [
        {"field": "supervisor", "detail": "not accepted: the token says who acts"}
    ]
    await post(client, "/api/v1/agents/agent1/logout", {"supervisor": "sue"}, 400)
    assert fake.commands == []


async def test_bad_agent_commands_are_json_errors_and_change_nothing(
    acd_client: tuple[TestClient[Any, Any], FakeSupervision],
) -> None:
    client, fake = acd_client
    await get(client, "/api/v1/agents/nobody", 404)
    await post(client, "/api/v1/agents/nobody/pause", {"reason": "x"}, 404)
    await post(client, "/api/v1/agents/nobody/logout", {}, 404)
    conflict = await post(client, "/api/v1/agents/agent2/pause", {"reason": "x"}, 409)
    assert "not logged in" in conflict["error"]
    await post(client, "/api/v1/agents/agent2/unpause", {}, 409)
    await post(client, "/api/v1/agents/agent2/logout", {}, 409)
    for body in (b"not json", b"[1, 2]", {"reason": 5}, {"reason": ""}, {"reason": "x" * 65}):
        await post(client, "/api/v1/agents/agent1/pause", body, 400)
    await post(client, "/api/v1/agents/agent1/logout", {"supervisor": ["x"]}, 400)
    wrong = await client.get("/api/v1/agents/agent1/pause", headers=AUTH)
    assert wrong.status == 405 and "error" in await wrong.json()
    assert fake.commands == []


async def test_call_records_are_filtered_and_paged(
    acd_client: tuple[TestClient[Any, Any], FakeSupervision],
) -> None:
    client, _ = acd_client
    everything = await get(client, "/api/v1/calls/records")
    assert everything["total"] == 5 and everything["next"] is None
    first = everything["records"][0]
    assert first["call_id"] == "c0" and first["caller"] == "5550000"
    assert first["billsec"] == 6.0 and first["duration"] == 8.0
    assert first["legs"] == [{"role": "caller", "codec": "PCMU", "mos": 4.3}]
    support = await get(client, "/api/v1/calls/records?queue=support")
    assert [r["call_id"] for r in support["records"]] == ["c0", "c2", "c4"]
    page = await get(client, "/api/v1/calls/records?limit=2&offset=2")
    assert [r["call_id"] for r in page["records"]] == ["c2", "c3"]
    assert (page["total"], page["offset"], page["limit"], page["next"]) == (5, 2, 2, 4)
    span = await get(client, f"/api/v1/calls/records?since={T0 + 10}&until={T0 + 30}")
    assert [r["call_id"] for r in span["records"]] == ["c1", "c2"]
    agent2 = await get(client, "/api/v1/calls/records?agent=agent2")
    assert [r["call_id"] for r in agent2["records"]] == ["c4"]


async def test_the_queue_log_is_filtered_and_paged(
    acd_client: tuple[TestClient[Any, Any], FakeSupervision],
) -> None:
    client, _ = acd_client
    log = await get(client, "/api/v1/queue-log")
    assert log["total"] == 11
    assert log["entries"][1] == {
        "time": T0 + 2,
        "event": "answer",
        "call_id": "c0",
        "queue": "support",
        "agent": "agent1",
        "data": {"wait": 2.0},
    }
    c3 = await get(client, "/api/v1/queue-log?call_id=c3")
    assert [e["event"] for e in c3["entries"]] == ["enter", "answer"]
    late = await get(client, f"/api/v1/queue-log?since={T0 + 40}&limit=1")
    assert [e["call_id"] for e in late["entries"]] == ["c4"] and late["next"] == 1


@pytest.mark.parametrize(
    "query",
    [
        "since=yesterday",
        "until=nan",
        "since=-1",
        f"since={T0}&until={T0 - 1}",
        "limit=0",
        "limit=1001",
        "limit=ten",
        "offset=-1",
    ],
)
async def test_bad_numbers_are_400(
    acd_client: tuple[TestClient[Any, Any], FakeSupervision], query: str
) -> None:
    client, _ = acd_client
    for path in ("/api/v1/calls/records", "/api/v1/queue-log"):
        await get(client, f"{path}?{query}", 400)


async def test_without_queues_the_queue_routes_are_404(client: TestClient[Any, Any]) -> None:
    for path in ("/api/v1/queues", "/api/v1/agents", "/api/v1/calls/records", "/api/v1/queue-log"):
        assert (await get(client, path, 404))["error"].startswith("no queues are configured")
    await post(client, "/api/v1/agents/agent1/pause", {"reason": "x"}, 404)


# -- the ACD runtime's reports ------------------------------------------------------------------


class FakeAgents:
    """The agents' side (`AgentSide`) as the runtime's reports and supervisor commands use it:
    it rings nobody and keeps what it is told."""

    def __init__(self) -> None:
        self.states: list[tuple[str, str, str]] = []

    def offer_queued(self, *args: Any, **kwargs: Any) -> bool:
        return False

    def offer_callback(self, *args: Any) -> bool:
        return False

    def queued_call_ended(self, call_id: str, cause: str) -> None:
        pass

    def engine_state(self, agent: str, state: AgentState, reason: str) -> None:
        self.states.append((agent, state.value, reason))

    def cancel_offer(self, call_id: str, agent: str, reason: str) -> None:
        self.states.append((agent, "cancelled", reason))

    def connected(self, agent: str) -> bool:
        return False

    async def log_out(self, agent: str, reason: str) -> None:
        self.states.append((agent, "session-ended", reason))


AGENTS = FakeAgents()


def runtime(store: Store) -> AcdRuntime:
    """A runtime over a real engine whose queue log goes to `store`, at the fixed time T0."""
    acd = build_acd_config(
        {
            "agents": {"agent1": {"name": "Agent One"}, "agent2": {}},
            "queues": {
                "support": {"strategy": "rrmemory", "members": ["agent1", "agent2"]},
                "sales": {"members": [{"agent": "agent2", "penalty": 2}]},
            },
        }
    )
    result = AcdRuntime(AcdEngine(acd), None, "127.0.0.1", service=None)  # type: ignore[arg-type]
    AGENTS.states.clear()
    result.listen(AGENTS)
    result.now = lambda: T0  # type: ignore[method-assign]
    result.store = AsyncStore(store)

    def keep(events: list[object]) -> None:
        for ev in events:
            if isinstance(ev, QueueLogEntry):
                store.append(
                    QueueLogRow(ev.time, ev.event.value, ev.call_id, ev.queue, ev.agent, ev.data)
                )

    result.keep = keep  # type: ignore[attr-defined]
    return result


async def test_the_runtime_reports_live_figures_and_statistics_rebuilt_from_its_log(
    tmp_path: Path,
) -> None:
    store = Store(tmp_path / "omlmedia.db")
    acd = runtime(store)
    engine = acd.engine
    keep = acd.keep  # type: ignore[attr-defined]
    t = T0 - 100
    engine.agent_login("agent1", t)
    engine.agent_login("agent2", t, paused_reason="login")
    engine.caller_enter("c1", "support", t + 1, caller_number="5550001")
    engine.offer_answered("c1", "agent1", t + 4)
    engine.call_completed("c1", "agent1", t + 64)
    engine.caller_enter("c2", "support", t + 65)
    engine.caller_abandon("c2", t + 95)  # agent1 in wrap-up: nobody was offered c2
    engine.caller_enter("c3", "support", t + 96)
    keep(engine.events())
    store.flush()

    app = create_app(config(), dict, acd=acd, database=tmp_path / "omlmedia.db")
    async with TestClient(TestServer(app)) as client:
        support = await get(client, "/api/v1/queues/support")
        assert (support["waiting"], support["ringing"], support["longest_wait"]) == (1, 1, 4.0)
        assert support["members_by_state"]["ringing"] == 1
        assert support["members_by_state"]["paused"] == 1
        assert support["members"][1] == {
            "agent": "agent2",
            "penalty": 0,
            "state": "paused",
            "reason": "login",
        }
        stats = support["stats"]
        assert (stats["offered"], stats["answered"], stats["abandoned"]) == (3, 1, 1)
        assert stats["average_wait"] == 3.0 and stats["average_handle_time"] == 60.0
        assert stats["service_level"] == 0.5  # answered in 3 s, abandoned after 30 s
        assert stats["end"] - stats["start"] == 900.0 and stats["start"] <= T0 < stats["end"]

        # Over a span: the whole periods it touches (the figures of the earlier, empty ones
        # add nothing); a span before anything happened counts nothing.
        wide = (await get(client, f"/api/v1/queues/support?since={T0 - 2000}"))["stats"]
        assert wide["start"] == stats["start"] - 1800 and wide["end"] == stats["end"]
        assert (wide["offered"], wide["answered"], wide["abandoned"]) == (3, 1, 1)
        before = await get(client, f"/api/v1/queues/support?since={T0 - 5000}&until={T0 - 3000}")
        assert before["stats"]["offered"] == 0 and before["stats"]["end"] <= stats["start"]

        rebuilt = Statistics.from_log(engine_log(store.queue_log()), {"support": 20.0})
        for name in ("support", "sales"):
            queue = await get(client, f"/api/v1/queues/{name}")
            counters = rebuilt.queue(name, queue["stats"]["start"], queue["stats"]["end"])
            expected = queue_figures(counters, 20.0)
            assert {k: queue["stats"][k] for k in expected} == expected

        agent1 = await get(client, "/api/v1/agents/agent1")
        assert agent1["state"] == "ringing" and agent1["name"] == "Agent One"
        assert agent1["call"] == {
            "call_id": "c3",
            "queue": "support",
            "caller": "",
            "callback": "",
        }
        assert agent1["stats"]["answered"] == 1 and agent1["stats"]["talk"] == 60.0
        assert agent1["connected"] is False

        paused = await post(client, "/api/v1/agents/agent1/pause", {"reason": "coaching"})
        assert (paused["state"], paused["reason"], paused["call"]) == ("paused", "coaching", None)
        assert ("agent1", "paused", "coaching") in AGENTS.states
        assert (await get(client, "/api/v1/queues/support"))["ringing"] == 0
        # Ready again, and offered c3 at once: the runtime refuses it (it does not carry c3,
        # which the test put in the engine), so agent1 stays ready.
        ready = await post(client, "/api/v1/agents/agent1/unpause", {})
        assert ready["state"] == "ready" and ready["reason"] == ""
        gone = await post(client, "/api/v1/agents/agent2/logout", {})
        assert gone["state"] == "logged-out"
        store.flush()
        log = await get(client, "/api/v1/queue-log?agent=agent2")
        assert log["entries"][-1]["event"] == "logout"
        assert log["entries"][-1]["data"] == {"reason": "forced by bootstrap"}
        pause = (await get(client, "/api/v1/queue-log?agent=agent1"))["entries"]
        assert {"reason": "coaching", "by": "bootstrap"} in [e["data"] for e in pause]
    store.close()
