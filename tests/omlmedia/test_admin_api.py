"""The administration routes: accounts and tokens through the API (validation as problem
documents naming each field, never a 500), the token shown once, revocation at once, and the
audit log of every change and every supervisor action, read back through ``/api/v1/audit``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from omlmedia.accounts import AccountBook, config_seeds
from omlmedia.api import create_app
from tests.omlmedia.test_api import TOKEN, FakeSupervision
from tests.omlmedia.test_authz import demo

ADMIN = {"Authorization": f"Bearer {TOKEN}"}


class Admin:
    def __init__(
        self, client: TestClient[Any, Any], book: AccountBook, acd: FakeSupervision, password: str
    ):
        self.client = client
        self.book = book
        self.acd = acd
        self.password = password
        """The demo password of this configuration's accounts."""

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        status: int = 200,
        headers: dict[str, str] | None = None,
    ) -> Any:
        response = await self.client.request(
            method, f"/api/v1{path}", json=body, headers=headers or ADMIN
        )
        if response.status == 204:
            assert status == 204
            return None
        answer = await response.json()
        assert response.status == status, answer
        if status >= 400:
            assert response.content_type == "application/problem+json"
            assert answer["status"] == status and answer["title"] and answer["detail"]
        return answer


@pytest.fixture
async def admin(tmp_path: Path) -> AsyncIterator[Admin]:
    config = demo()
    book = AccountBook(tmp_path / "omlmedia.db", config.api.token_matches)
    book.seed(config_seeds(config.accounts, config.webrtc.agents))
    acd = FakeSupervision()
    app = create_app(config, dict, acd=acd, accounts=book)
    async with TestClient(TestServer(app)) as client:
        assert config.generated.demo_password is not None
        yield Admin(client, book, acd, config.generated.demo_password)
    book.close()


async def test_the_demo_accounts_are_listed(admin: Admin) -> None:
    listed = (await admin.call("GET", "/accounts"))["accounts"]
    assert {a["name"]: a["role"] for a in listed} == {
        "admin": "admin",
        "supervisor1": "supervisor",
        "agent1": "agent",
        "agent2": "agent",
        "agent3": "agent",
    }
    assert all("password_hash" not in a and a["origin"] == "config" for a in listed)
    one = await admin.call("GET", "/accounts/supervisor1")
    assert one["scope"] is None and one["disabled"] is False
    await admin.call("GET", "/accounts/nobody", status=404)


async def test_an_account_is_created_changed_and_removed(admin: Admin) -> None:
    made = await admin.call(
        "POST",
        "/accounts",
        {"name": "rita", "role": "reporting", "password": "long-enough", "scope": ["sales"]},
        201,
    )
    assert (made["name"], made["role"], made["scope"], made["origin"]) == (
        "rita",
        "reporting",
        ["sales"],
        "api",
    )
    await admin.call(
        "POST", "/accounts", {"name": "rita", "role": "admin", "password": "long-enough"}, 409
    )
    changed = await admin.call(
        "PATCH", "/accounts/rita", {"role": "supervisor", "scope": None, "display_name": "Rita"}
    )
    assert (changed["role"], changed["scope"], changed["display_name"]) == (
        "supervisor",
        None,
        "Rita",
    )
    await admin.call("PATCH", "/accounts/rita", {"password": "another-one"})
    await admin.call("DELETE", "/accounts/rita", status=204)
    await admin.call("GET", "/accounts/rita", status=404)
    await admin.call("DELETE", "/accounts/rita", status=404)


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({}, ["name", "password", "role"]),
        ({"name": "Bad Name", "role": "admin", "password": "long-enough"}, ["name"]),
        ({"name": "x", "role": "root", "password": "long-enough"}, ["role"]),
        ({"name": "x", "role": "agent", "password": "long-enough"}, ["role"]),
        ({"name": "x", "role": "admin", "password": "short"}, ["password"]),
        ({"name": "x", "role": "admin", "password": 12345678}, ["password"]),
        ({"name": "x", "role": "admin", "password": "long-enough", "scope": "sales"}, ["scope"]),
        ({"name": "x", "role": "admin", "password": "long-enough", "scope": ["x"]}, ["scope[0]"]),
        ({"name": "x", "role": "admin", "password": "long-enough", "admin": True}, ["admin"]),
        ({"name": ["x"], "role": None, "password": None, "display_name": 5}, None),
    ],
)
async def test_invalid_accounts_are_problem_documents_naming_each_field(
    admin: Admin, body: dict[str, Any], fields: list[str] | None
) -> None:
    problem = await admin.call("POST", "/accounts", body, 400)
    named = sorted({e["field"] for e in problem["errors"]})
    assert named == (fields or ["display_name", "name", "password", "role"])
    assert all(e["detail"] for e in problem["errors"])
    assert problem["type"] == "about:blank" and problem["title"] == "Bad Request"
    assert (await admin.call("GET", "/accounts"))["accounts"][0]["name"] == "admin"


async def test_malformed_bodies_are_400_never_500(admin: Admin) -> None:
    for data in (b"not json", b"[1]", b"\xff\xfe", b'{"name": '):
        response = await admin.client.post("/api/v1/accounts", data=data, headers=ADMIN)
        assert response.status == 400, await response.text()
        response = await admin.client.patch("/api/v1/accounts/admin", data=data, headers=ADMIN)
        assert response.status == 400
        response = await admin.client.post("/api/v1/tokens", data=data, headers=ADMIN)
        assert response.status == 400
    await admin.call("PATCH", "/accounts/admin", {"disabled": "yes"}, 400)


async def test_accounts_of_the_file_may_only_be_disabled(admin: Admin) -> None:
    conflict = await admin.call("PATCH", "/accounts/supervisor1", {"role": "admin"}, 409)
    assert conflict["errors"][0]["field"] == "role"
    assert "configuration file" in conflict["detail"]
    await admin.call("DELETE", "/accounts/supervisor1", status=409)
    assert (await admin.call("PATCH", "/accounts/supervisor1", {"disabled": True}))["disabled"]
    await admin.call("PATCH", "/accounts/agent1", {"disabled": True}, 409)


async def test_a_token_is_shown_once_listed_without_secret_and_revoked_at_once(
    admin: Admin,
) -> None:
    made = await admin.call(
        "POST", "/tokens", {"account": "supervisor1", "label": "wallboard"}, status=201
    )
    token = made["token"]
    assert token.startswith(f"oml_{made['id']}_")
    assert (made["role"], made["account"], made["active"]) == ("supervisor", "supervisor1", True)
    mine = {"Authorization": f"Bearer {token}"}
    assert (await admin.call("GET", "/queues", headers=mine))["queues"]
    await admin.call("GET", "/accounts", headers=mine, status=403)
    listed = (await admin.call("GET", "/tokens"))["tokens"]
    assert [t["id"] for t in listed] == ["bootstrap", made["id"]]
    assert all("token" not in t and "sha256" not in t for t in listed)
    assert token not in str(listed)
    only = (await admin.call("GET", "/tokens?account=supervisor1"))["tokens"]
    assert [t["label"] for t in only] == ["wallboard"]
    revoked = await admin.call("DELETE", f"/tokens/{made['id']}")
    assert revoked["revoked"] is not None and revoked["active"] is False
    await admin.call("GET", "/queues", headers=mine, status=401)
    await admin.call("DELETE", "/tokens/bootstrap", status=409)
    await admin.call("DELETE", "/tokens/000000000000", status=404)


async def test_integration_tokens_and_their_validation(admin: Admin) -> None:
    made = await admin.call(
        "POST",
        "/tokens",
        {"integration": "crm", "role": "reporting", "scope": ["support"], "expires_in": 3600},
        status=201,
    )
    assert (made["integration"], made["role"], made["scope"]) == ("crm", "reporting", ["support"])
    assert made["expires"] > made["created"]
    for body, field in (
        ({}, "account"),
        ({"account": "admin", "integration": "crm", "role": "admin"}, "account"),
        ({"integration": "crm"}, "role"),
        ({"account": "admin", "role": "admin"}, "role"),
        ({"integration": "crm", "role": "admin", "expires": 1}, "expires"),
        ({"integration": "crm", "role": "admin", "expires_in": -5}, "expires_in"),
        ({"integration": "crm", "role": "admin", "expires_in": True}, "expires_in"),
        ({"integration": "crm", "role": "admin", "expires": 10**400}, "expires"),
        ({"integration": "crm", "role": "admin", "expires_in": 10**400}, "expires_in"),
        ({"integration": "crm", "role": "admin", "expires": 1e12, "expires_in": 5}, "expires_in"),
        ({"integration": "crm", "role": "admin", "label": "x" * 65}, "label"),
        ({"integration": "CRM!", "role": "admin"}, "integration"),
    ):
        problem = await admin.call("POST", "/tokens", body, 400)
        assert field in {e["field"] for e in problem["errors"]}, (body, problem)
    await admin.call("POST", "/tokens", {"account": "nobody"}, 404)


async def test_supervisor_actions_are_audited_as_the_token_says(admin: Admin) -> None:
    made = await admin.call("POST", "/tokens", {"account": "supervisor1"}, status=201)
    sup = {"Authorization": f"Bearer {made['token']}"}
    await admin.call("POST", "/agents/agent1/pause", {"reason": "coaching"}, headers=sup)
    await admin.call("POST", "/agents/agent1/unpause", {}, headers=sup)
    await admin.call("POST", "/agents/agent1/logout", {}, headers=sup)
    assert admin.acd.commands == [
        ("pause", "agent1", "coaching", "supervisor1"),
        ("unpause", "agent1", "supervisor1"),
        ("logout", "agent1", "supervisor1"),
    ]
    entries = (await admin.call("GET", "/audit?actor=supervisor1"))["entries"]
    assert [(e["action"], e["target"], e["role"]) for e in entries] == [
        ("agent.pause", "agent1", "supervisor"),
        ("agent.unpause", "agent1", "supervisor"),
        ("agent.logout", "agent1", "supervisor"),
    ]
    assert entries[0]["before"] == {"state": "ready", "reason": ""}
    assert entries[0]["after"] == {"state": "paused", "reason": "coaching"}
    await admin.call("GET", "/audit", headers=sup, status=403)


async def test_the_audit_log_is_filtered_and_paged(admin: Admin) -> None:
    await admin.call(
        "POST", "/accounts", {"name": "rita", "role": "reporting", "password": "long-enough"}, 201
    )
    await admin.call("PATCH", "/accounts/rita", {"display_name": "Rita"})
    made = await admin.call("POST", "/tokens", {"account": "rita"}, status=201)
    await admin.call("DELETE", f"/tokens/{made['id']}")
    everything = await admin.call("GET", "/audit")
    assert everything["total"] == 5 + 4  # the five seeded accounts, then four changes
    mine = await admin.call("GET", "/audit?actor=bootstrap")
    assert [e["action"] for e in mine["entries"]] == [
        "account.create",
        "account.update",
        "token.create",
        "token.revoke",
    ]
    assert made["token"] not in str(mine)
    rita = await admin.call("GET", "/audit?target=rita")
    assert [e["action"] for e in rita["entries"]] == ["account.create", "account.update"]
    tokens = await admin.call("GET", "/audit?action=token.")
    assert [e["action"] for e in tokens["entries"]] == ["token.create", "token.revoke"]
    page = await admin.call("GET", "/audit?actor=bootstrap&limit=3&offset=1")
    assert (page["total"], page["offset"], page["limit"], page["next"]) == (4, 1, 3, None)
    assert [e["action"] for e in page["entries"]] == [
        "account.update",
        "token.create",
        "token.revoke",
    ]
    late = await admin.call("GET", f"/audit?since={mine['entries'][2]['time']}&actor=bootstrap")
    assert [e["action"] for e in late["entries"]] == ["token.create", "token.revoke"]
    for query in ("since=yesterday", "limit=0", "until=-1"):
        await admin.call("GET", f"/audit?{query}", status=400)


async def test_an_account_logs_in_with_its_password_and_gets_a_session_token(
    admin: Admin,
) -> None:
    password = admin.password
    client = admin.client
    wrong = await client.post("/api/v1/sessions", json={"name": "supervisor1", "password": "x"})
    assert wrong.status == 401 and (await wrong.json())["detail"] == "wrong name or password"
    # An agent logs in on the agent page, not here; a name nobody has gets the same answer.
    for name in ("agent1", "nobody"):
        other = await client.post("/api/v1/sessions", json={"name": name, "password": "x"})
        assert other.status == 401 and (await other.json())["detail"] == "wrong name or password"
    response = await client.post(
        "/api/v1/sessions", json={"name": "supervisor1", "password": password}
    )
    made = await response.json()
    assert response.status == 201, made
    assert response.headers["Cache-Control"] == "no-store"
    assert (made["account"], made["role"], made["label"]) == (
        "supervisor1",
        "supervisor",
        "session",
    )
    assert made["expires"] == pytest.approx(made["created"] + 12 * 3600)
    mine = {"Authorization": f"Bearer {made['token']}"}
    assert (await admin.call("GET", "/agents", headers=mine))["agents"]
    created = (await admin.call("GET", "/audit?action=token.create"))["entries"]
    assert [(e["actor"], e["target"]) for e in created] == [("supervisor1", made["id"])]
    await admin.call("PATCH", "/accounts/supervisor1", {"disabled": True})
    await admin.call("GET", "/agents", headers=mine, status=401)
    refused = await client.post(
        "/api/v1/sessions", json={"name": "supervisor1", "password": password}
    )
    assert refused.status == 401


async def test_failed_logins_lock_the_name_out_from_that_source(admin: Admin) -> None:
    password = admin.password
    for _ in range(5):
        wrong = await admin.client.post(
            "/api/v1/sessions", json={"name": "admin", "password": "guess"}
        )
        assert wrong.status == 401
    locked = await admin.client.post(
        "/api/v1/sessions", json={"name": "admin", "password": password}
    )
    assert locked.status == 429, await locked.text()
    bad = await admin.client.post("/api/v1/sessions", json={"name": "admin"})
    assert bad.status == 400
    assert (await bad.json())["errors"] == [{"field": "password", "detail": "is required"}]


async def test_without_an_account_store_the_admin_routes_are_404(tmp_path: Path) -> None:
    app = create_app(demo(), dict)
    async with TestClient(TestServer(app)) as client:
        for path in ("/api/v1/accounts", "/api/v1/tokens", "/api/v1/audit"):
            response = await client.get(path, headers=ADMIN)
            assert response.status == 404, path


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=10**300, max_value=10**400)
    | st.floats()
    | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner),
    max_leaves=12,
)
FIELDS = st.sampled_from(
    [
        "name",
        "role",
        "password",
        "display_name",
        "scope",
        "disabled",
        "account",
        "integration",
        "label",
        "expires",
        "expires_in",
    ]
)
BODIES = st.dictionaries(FIELDS, JSON, max_size=6) | JSON


def test_any_json_body_gets_an_answer_never_a_500(tmp_path: Path) -> None:
    config = demo()
    book = AccountBook(tmp_path / "omlmedia.db", config.api.token_matches)
    book.seed(config_seeds(config.accounts, ()))
    loop = asyncio.new_event_loop()

    async def start() -> TestClient[Any, Any]:
        client = TestClient(TestServer(create_app(config, dict, accounts=book)))
        await client.start_server()
        return client

    client = loop.run_until_complete(start())

    async def check(method: str, path: str, body: Any) -> None:
        response = await client.request(method, f"/api/v1{path}", json=body, headers=ADMIN)
        assert response.status in (200, 201, 400, 401, 404, 409, 429), await response.text()
        if response.status >= 400:
            problem = await response.json()
            assert problem["status"] == response.status and problem["detail"]

    @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(
        route=st.sampled_from(
            [
                ("POST", "/accounts"),
                ("PATCH", "/accounts/admin"),
                ("POST", "/tokens"),
                ("POST", "/sessions"),
            ]
        ),
        body=BODIES,
    )
    def any_body(route: tuple[str, str], body: Any) -> None:
        loop.run_until_complete(check(*route, body))

    try:
        any_body()
    finally:
        loop.run_until_complete(client.close())
        loop.close()
        book.close()
