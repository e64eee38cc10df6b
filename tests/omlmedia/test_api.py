"""The HTTPS API application: every route needs the bearer token; errors are JSON."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from omlmedia.api import create_app
from omlmedia.config import ApiConfig, Config, load_demo_config

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
        assert (await response.json()) == {"error": "a valid bearer token is required"}
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
