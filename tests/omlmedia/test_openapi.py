"""The OpenAPI document: generated from the router, every route described by `OPERATIONS`, its
roles from `RULES`, served without a token (Schemathesis runs over it in
tests/interop/test_schemathesis.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from omlmedia.accounts import AccountBook
from omlmedia.api import create_app
from omlmedia.authz import ROLE_PERMISSIONS, RULES, Role
from omlmedia.metrics import Metrics
from omlmedia.openapi import OPERATIONS, api_routes, document
from tests.omlmedia.test_api import TOKEN, FakeSupervision, fill_store
from tests.omlmedia.test_authz import demo
from tests.omlmedia.test_metrics import STATUS
from tests.webrtc.test_signaling import World
from webrtc.app import create_app as create_agent_app


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[web.Application, TestClient[Any, Any]]]:
    config = demo()
    fill_store(tmp_path / "omlmedia.db")
    book = AccountBook(tmp_path / "omlmedia.db", config.api.token_matches)
    app = create_app(
        config,
        dict,
        create_agent_app(World().hub),
        acd=FakeSupervision(),
        database=tmp_path / "omlmedia.db",
        metrics=Metrics(lambda: STATUS),
        accounts=book,
    )
    async with TestClient(TestServer(app)) as client:
        yield app, client
    book.close()


def _refs(value: Any) -> set[str]:
    if isinstance(value, dict):
        found = {value["$ref"]} if "$ref" in value else set()
        return found.union(*(_refs(v) for v in value.values()))
    if isinstance(value, list):
        return set().union(*(_refs(v) for v in value))
    return set()


async def test_every_api_route_has_an_operations_entry(
    served: tuple[web.Application, TestClient[Any, Any]],
) -> None:
    app, _ = served
    routes = {(method, path) for method, path, _ in api_routes(app)}
    missing = sorted(routes - OPERATIONS.keys())
    assert not missing, (
        f"routes without an entry in omlmedia.openapi.OPERATIONS: {missing}; add one "
        "(parameters, body schema, responses, refusals) so the OpenAPI document describes them"
    )
    stale = sorted(OPERATIONS.keys() - routes)
    assert not stale, f"OPERATIONS entries for routes that do not exist: {stale}"
    assert not [r for r in routes if r not in RULES], "every API route has a rule"


async def test_the_document_lists_every_route_with_its_roles_and_docstring(
    served: tuple[web.Application, TestClient[Any, Any]],
) -> None:
    app, _ = served
    spec = document(app)
    assert spec["openapi"] == "3.1.0"
    listed = {(m.upper(), p) for p, ops in spec["paths"].items() for m in ops}
    assert listed == {(m, p) for m, p, _ in api_routes(app)}
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            rule = RULES[(method.upper(), path)]
            if op.get("x-undocumented"):
                continue  # the test above names it
            assert op["summary"] and op["summary"] != f"{method.upper()} {path}", (method, path)
            assert "400" in op["responses"]
            if rule.permission is None:
                assert op["security"] == []
                continue
            roles = [r.value for r in Role if rule.permission in ROLE_PERMISSIONS[r]]
            assert op["x-roles"] == roles
            assert ", ".join(roles) in op["description"]
            assert {"401", "403"} <= op["responses"].keys()
    names = {ref.rsplit("/", 1)[1] for ref in _refs(spec)}
    assert names <= spec["components"]["schemas"].keys()


async def test_the_document_is_served_without_a_token(
    served: tuple[web.Application, TestClient[Any, Any]],
) -> None:
    _, client = served
    response = await client.get("/api/v1/openapi.json")
    assert response.status == 200
    spec = await response.json()
    assert "/api/v1/openapi.json" in spec["paths"]
    assert "/metrics" in spec["paths"]
    assert spec["paths"]["/api/v1/agents/{name}/pause"]["post"]["x-roles"] == [
        "admin",
        "supervisor",
    ]


async def test_a_route_without_an_entry_is_marked_undocumented() -> None:
    app = web.Application()

    async def handler(request: web.Request) -> web.Response:
        """A new route."""
        return web.json_response({})

    app.router.add_get("/api/v1/newthing", handler)
    op = document(app)["paths"]["/api/v1/newthing"]["get"]
    assert op["x-undocumented"] is True
    assert op["responses"]["403"]


async def test_a_method_the_route_lacks_is_a_405_with_allow(
    served: tuple[web.Application, TestClient[Any, Any]],
) -> None:
    _, client = served
    response = await client.put("/api/v1/tokens", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status == 405
    assert set(response.headers["Allow"].split(",")) >= {"GET", "POST"}
    assert (await response.json())["status"] == 405
