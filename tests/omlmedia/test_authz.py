"""The role/scope matrix: every route of the application (enumerated from its router) against
every role, in and out of scope, and every WebSocket message type against its rule."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from omlmedia.accounts import AccountBook, ConfiguredToken
from omlmedia.api import create_app
from omlmedia.authz import (
    PAGE_RULES,
    ROLE_PERMISSIONS,
    RULES,
    WS_RULES,
    Identity,
    Role,
    Scope,
    Scopes,
    WsRule,
    authorize,
    rule_for,
)
from omlmedia.config import ApiConfig, Config, load_demo_config
from omlmedia.metrics import Metrics
from tests.omlmedia.test_api import TOKEN, FakeSupervision, fill_store
from tests.omlmedia.test_metrics import STATUS
from tests.webrtc.test_signaling import CALL, World
from webrtc.app import create_app as create_agent_app
from webrtc.signaling import CLIENT_MESSAGES

IN_SCOPE = frozenset({"support"})
OUT_OF_SCOPE = frozenset({"sales"})
SCOPES: dict[str, frozenset[str] | None] = {
    "unscoped": None,
    "in-scope": IN_SCOPE,
    "out-of-scope": OUT_OF_SCOPE,
}


def demo() -> Config:
    """The demo (its campaigns, queues and agents) with the tests' configured token."""
    digest = hashlib.sha256(TOKEN.encode()).hexdigest()
    return dataclasses.replace(load_demo_config(), api=ApiConfig(digest))


class Matrix:
    def __init__(self, app: web.Application, client: TestClient[Any, Any], book: AccountBook):
        self.app = app
        self.client = client
        self.book = book
        self.tokens: dict[tuple[Role, str], str] = {}
        admin = Identity("test", Role.ADMIN)
        for role in Role:
            for label, scope in SCOPES.items():
                token, _ = book.create_token(
                    admin, integration=f"{role.value}-{label}", role=role, scope=scope
                )
                self.tokens[role, label] = token


@pytest.fixture
async def matrix(tmp_path: Path) -> AsyncIterator[Matrix]:
    config = demo()
    fill_store(tmp_path / "omlmedia.db")
    book = AccountBook(tmp_path / "omlmedia.db", config.api.token_matches)
    pages = create_agent_app(World().hub)
    app = create_app(
        config,
        dict,
        pages,
        acd=FakeSupervision(),
        database=tmp_path / "omlmedia.db",
        metrics=Metrics(lambda: STATUS),
        accounts=book,
    )
    async with TestClient(TestServer(app)) as client:
        yield Matrix(app, client, book)
    book.close()


def routes_of(app: web.Application) -> set[tuple[str, str]]:
    """Every (method, path template) the application serves (HEAD follows GET)."""
    found = set()
    for route in app.router.routes():
        resource = route.resource
        assert resource is not None
        if route.method != "HEAD":
            found.add((route.method, resource.canonical))
    return found


def concrete(template: str) -> str:
    """A path for a template: a queue in scope for {name} of a queue, an agent member of the
    in-scope queue only (agent1 is in support, not sales), names that exist nowhere else."""
    if template.startswith("/api/v1/queues/"):
        return template.replace("{name}", "support").replace("{agent}", "agent1")
    if template.startswith("/api/v1/agents/"):
        return template.replace("{name}", "agent1")
    path = template.replace("{name}", "nobody").replace("{id}", "000000000000")
    return path.replace("{delivery_id}", "1")


def expected(rule_scope: Scope, role: Role, label: str, permission: Any) -> str:
    """``allowed``, ``permission`` (403 for the role) or ``scope`` (403 for the scope)."""
    if permission not in ROLE_PERMISSIONS[role]:
        return "permission"
    if label == "unscoped" or rule_scope is Scope.NONE:
        return "allowed"
    if rule_scope is Scope.GLOBAL:
        return "scope"
    if rule_scope is Scope.FILTER:
        return "allowed" if label == "in-scope" else "scope"
    return "allowed" if label == "in-scope" else "scope"


async def test_every_route_of_the_application_has_a_rule(matrix: Matrix) -> None:
    served = routes_of(matrix.app)
    missing = {route for route in served if rule_for(*route) is None}
    assert not missing, f"routes without an access rule: {sorted(missing)}"
    stale = (set(RULES) | set(PAGE_RULES)) - served
    assert not stale, f"rules for routes that do not exist: {sorted(stale)}"
    public_api = {route for route, rule in RULES.items() if rule.permission is None}
    # the password login, the OpenAPI document and its docs page (no data), nothing else
    assert public_api == {
        ("POST", "/api/v1/sessions"),
        ("GET", "/api/v1/openapi.json"),
        ("GET", "/api/docs"),
        ("GET", "/api/docs/{file}"),
    }
    for method, template in served - public_api:
        rule = rule_for(method, template)
        assert rule is not None
        assert (rule.permission is None) == (not template.startswith(("/api/", "/metrics")))


async def test_the_matrix_every_route_every_role_in_and_out_of_scope(matrix: Matrix) -> None:
    gaps: list[str] = []
    api = sorted(
        route
        for route in routes_of(matrix.app)
        if route in RULES and RULES[route].permission is not None
    )
    assert len(api) >= 20
    for method, template in api:
        rule = RULES[method, template]
        path = concrete(template)
        if rule.scope is Scope.FILTER:
            path += "?queue=support"
        for (role, label), token in matrix.tokens.items():
            want = expected(rule.scope, role, label, rule.permission)
            body = b"{}" if method in ("POST", "PATCH") else None
            response = await matrix.client.request(
                method, path, data=body, headers={"Authorization": f"Bearer {token}"}
            )
            got: str
            if response.status == 403:
                problem = await response.json()
                got = "permission" if "missing_permission" in problem else "scope"
                if got == "permission":
                    assert problem["missing_permission"] == str(rule.permission)
                assert problem["status"] == 403 and problem["detail"]
            elif response.status == 401:
                got = "unauthenticated"
            else:
                got = "allowed"
            response.release()
            if got != want:
                gaps.append(f"{method} {path} as {role}/{label}: {got}, the table says {want}")
    assert not gaps, "\n".join(gaps)


async def test_every_api_route_needs_a_token_and_refuses_one_in_the_url(matrix: Matrix) -> None:
    admin = matrix.tokens[Role.ADMIN, "unscoped"]
    for method, template in sorted(routes_of(matrix.app)):
        rule = rule_for(method, template)
        if rule is None or rule.permission is None:
            continue
        path = concrete(template)
        for headers in ({}, {"Authorization": "Bearer oml_000000000000_" + "A" * 43}):
            response = await matrix.client.request(method, path, headers=headers)
            assert response.status == 401, (method, path)
            assert response.headers["WWW-Authenticate"].startswith("Bearer")
            response.release()
        response = await matrix.client.request(
            method, f"{path}?token={admin}", headers={"Authorization": f"Bearer {admin}"}
        )
        assert response.status == 400, (method, path)
        assert (await response.json())["errors"] == [
            {"field": "token", "detail": "not accepted in the URL"}
        ]


async def test_lists_keep_only_what_the_scope_covers(matrix: Matrix) -> None:
    async def get(path: str, label: str) -> Any:
        token = matrix.tokens[Role.SUPERVISOR, label]
        response = await matrix.client.get(path, headers={"Authorization": f"Bearer {token}"})
        assert response.status == 200, await response.text()
        return await response.json()

    queues = await get("/api/v1/queues", "in-scope")
    assert [q["queue"] for q in queues["queues"]] == ["support"]
    agents = await get("/api/v1/agents", "out-of-scope")
    assert [a["agent"] for a in agents["agents"]] == ["agent2"]  # agent1 is not in sales
    records = await get("/api/v1/calls/records", "out-of-scope")
    assert {r["queue"] for r in records["records"]} == {"sales"}
    log = await get("/api/v1/queue-log", "in-scope")
    assert {e["queue"] for e in log["entries"]} == {"support"}
    everything = await get("/api/v1/calls/records", "unscoped")
    assert everything["total"] == 5


async def test_a_route_without_a_rule_is_refused(tmp_path: Path) -> None:
    async def secret(request: web.Request) -> web.Response:
        return web.json_response({"secret": True})

    config = demo()
    app = web.Application(
        middlewares=[authorize(ConfiguredToken(config.api.token_matches), lambda: Scopes())]
    )
    api = web.Application()
    api.router.add_get("/v1/new", secret)
    app.add_subapp("/api", api)
    app.router.add_get("/page", secret)
    async with TestClient(TestServer(app)) as client:
        response = await client.get("/api/v1/new", headers=AUTH_HEADERS)
        assert response.status == 403
        assert (await response.json())["missing_permission"] == "rule"
        assert (await client.get("/page")).status == 403


AUTH_HEADERS = {"Authorization": f"Bearer {TOKEN}"}


# -- the agent WebSocket ----------------------------------------------------------------------

EXAMPLES: dict[str, dict[str, Any]] = {
    "login": {"username": "agent2", "password": "pw1"},
    "auth": {"token": "t" * 43},
    "logout": {},
    "ping": {},
    "state": {"state": "paused", "reason": "lunch"},
    "offer": {"sdp": "v=0\r\n"},
    "ice-restart": {"sdp": "v=0\r\n"},
    "dial": {"number": "+541100"},
    "answer": {"call_id": "c1"},
    "hangup": {"call_id": "c1"},
    "hold": {"call_id": "c1"},
    "resume": {"call_id": "c1"},
    "mute": {"call_id": "c1", "muted": True},
    "recording": {"call_id": "c1", "paused": True},
    "dtmf": {"call_id": "c1", "digit": "#"},
    "transfer-blind": {"call_id": "c1", "to": "2001"},
    "transfer-consult": {"call_id": "c1", "to": "2001"},
    "transfer-complete": {"call_id": "c1"},
    "transfer-cancel": {"call_id": "c1"},
    "disposition": {"call_id": "c1", "disposition": "sale"},
    "web-call-prepare": {"target": "sales"},
    "web-call": {"target": "sales", "sdp": "v=0\r\n"},
    "web-call-hangup": {"call_id": "web-1"},
    "web-call-dtmf": {"call_id": "web-1", "digit": "5"},
    "supervisor-auth": {"token": "oml_" + "a" * 60},
    "supervisor-offer": {"sdp": "v=0\r\n"},
    "monitor": {"call_id": "c1", "mode": "listen"},
    "monitor-stop": {},
}


def test_every_websocket_message_has_a_rule() -> None:
    assert set(WS_RULES) == set(CLIENT_MESSAGES)
    assert set(EXAMPLES) == set(CLIENT_MESSAGES)


@pytest.mark.parametrize("kind", sorted(WS_RULES))
async def test_a_socket_that_is_not_logged_in_may_only_open_a_session(kind: str) -> None:
    world = World()
    conn = world.connect()
    reply = await world.send(conn, kind, **EXAMPLES[kind])
    rule = WS_RULES[kind]
    if rule is WsRule.OPENS_SESSION:
        assert reply["type"] != "error" or reply["code"] in ("bad-credentials", "session-invalid")
    elif rule in (WsRule.WEB_CALLER, WsRule.OPENS_SUPERVISOR, WsRule.SUPERVISOR):
        assert reply["code"] == "unknown-type"  # web calls and monitoring are off in this hub
    else:
        assert reply["code"] == "not-authenticated", reply
    assert [c for c in world.control.calls if c[0] != "agent_logged_in"] == []


@pytest.mark.parametrize("kind", sorted(k for k, r in WS_RULES.items() if r is WsRule.OWN_CALL))
async def test_an_agent_acts_only_on_its_own_calls(kind: str) -> None:
    world = World()
    await world.login("agent1")
    other = await world.login("agent2")
    world.hub.offer_call("agent1", CALL)
    before = list(world.control.calls)
    reply = await world.send(other, kind, **EXAMPLES[kind])
    assert reply["type"] == "error" and reply["code"] == "unknown-call", reply
    assert world.control.calls == before


@pytest.mark.parametrize("kind", sorted(k for k, r in WS_RULES.items() if r is not WsRule.OWN_CALL))
async def test_an_agent_socket_acts_on_its_own_session_only(kind: str) -> None:
    world = World()
    conn = await world.login("agent1")
    await world.login("agent2")
    reply = await world.send(conn, kind, **EXAMPLES[kind])
    rule = WS_RULES[kind]
    if rule is WsRule.OPENS_SESSION:
        assert reply["code"] == "already-authenticated"
    elif rule in (WsRule.WEB_CALLER, WsRule.OPENS_SUPERVISOR, WsRule.SUPERVISOR):
        assert reply["type"] == "error"
    assert all(c[1] == "agent1" for c in world.control.calls if c[0] != "agent_logged_in")


async def test_tokens_never_reach_the_logs(
    matrix: Matrix, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG")
    secrets = list(matrix.tokens.values())
    for token in secrets:
        for path in ("/api/v1/status", f"/api/v1/status?token={token}", "/api/v1/nothing"):
            response = await matrix.client.get(path, headers={"Authorization": f"Bearer {token}"})
            response.release()
    made = await matrix.client.post(
        "/api/v1/tokens", json={"integration": "crm", "role": "admin"}, headers=AUTH_HEADERS
    )
    secrets.append((await made.json())["token"])
    # The test server's access log is the harness's: the server runs without one (start_api).
    text = "\n".join(r.getMessage() for r in caplog.records if r.name != "aiohttp.access")
    assert not [token for token in secrets if token in text or token[-43:] in text]


async def test_metrics_are_read_with_any_token_allowed_to(matrix: Matrix) -> None:
    for role, status in ((Role.REPORTING, 200), (Role.SUPERVISOR, 200), (Role.AGENT, 403)):
        token = matrix.tokens[role, "unscoped"]
        response = await matrix.client.get("/metrics", headers={"Authorization": f"Bearer {token}"})
        assert response.status == status, await response.text()
        response.release()
    scoped = matrix.tokens[Role.REPORTING, "in-scope"]
    response = await matrix.client.get("/metrics", headers={"Authorization": f"Bearer {scoped}"})
    assert response.status == 403  # server-wide figures: a scoped token may not read them
