"""Agents' page sessions shared through Redis (``[cluster] redis_url``, `omlmedia.cluster`)."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from benchmarks import harness
from benchmarks.harness import DEMO_PASSWORD
from omlmedia.config import ConfigError, load_config
from tests.cluster import redis
from tests.cluster.nodes import Page, started
from tests.cluster.test_shared_database import api

CONFIG = f"""
[api]
token_sha256 = "{hashlib.sha256(b"token").hexdigest()}"
"""


def test_the_cluster_section_takes_a_redis_url_and_defaults_to_none(tmp_path: Path) -> None:
    (tmp_path / "a.toml").write_text(
        CONFIG + '[cluster]\nredis_url = "redis://127.0.0.1:6390/0"\n', encoding="utf-8"
    )
    assert load_config(tmp_path / "a.toml").cluster.redis_url == "redis://127.0.0.1:6390/0"
    (tmp_path / "b.toml").write_text(CONFIG, encoding="utf-8")
    assert load_config(tmp_path / "b.toml").cluster.redis_url is None


@pytest.mark.parametrize(
    ("cluster", "error"),
    [
        ('redis_url = "http://h:6379"', "cluster.redis_url: must be a Redis URL"),
        ("redis_url = 5", "cluster.redis_url"),
        ('redis = "redis://h"', "cluster.redis: unknown key"),
    ],
)
def test_a_bad_cluster_section_is_refused_naming_the_key(
    tmp_path: Path, cluster: str, error: str
) -> None:
    (tmp_path / "c.toml").write_text(CONFIG + f"[cluster]\n{cluster}\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "c.toml")
    assert any(error in e for e in info.value.errors), info.value.errors


def agent_state(server: harness.RunningServer, agent: str) -> str:
    status, view = api(server, "GET", f"/api/v1/agents/{agent}")
    assert status == 200, view
    return str(view.get("state"))


def shared_state(shared: redis.Redis, token: str) -> Callable[[], bytes | None]:
    """Reads the agent state noted in the shared session of `token`."""
    import redis as redis_client

    client = redis_client.Redis(port=shared.port)
    key = "omlmedia:session:" + hashlib.sha256(token.encode()).hexdigest()
    return lambda: client.hget(key, "state")  # type: ignore[return-value]


def test_a_page_whose_node_died_is_taken_by_another_node_with_its_token_and_is_ready_again(
    shared: redis.Redis, tmp_path: Path
) -> None:
    with started(tmp_path, redis_url=shared.url) as (a, b):

        async def on_a() -> str:
            async with Page(a) as page:
                ok = await page.request("login", username="agent1", password=DEMO_PASSWORD)
                assert ok["type"] == "login-ok", ok
                ready = await page.request("state", state="ready")
                assert ready["type"] == "ack", ready
                return str(ok["token"])

        token = asyncio.run(on_a())
        assert agent_state(a, "agent1") == "ready"
        # the node notes a state in Redis after acknowledging it: a change in the last
        # milliseconds before a crash is lost by design, so wait until this one was noted
        noted = shared_state(shared, token)
        deadline = time.monotonic() + 5
        while noted() != b"ready":
            assert time.monotonic() < deadline, f"a never noted ready in Redis: {noted()!r}"
            time.sleep(0.02)
        a.process.kill()  # kill -9: the node dies with its page's socket
        a.process.wait()

        async def on_b() -> tuple[dict[str, Any], dict[str, Any]]:
            async with Page(b) as page:
                back = await page.request("auth", token=token)
                wrong = await Page(b).__aenter__()
                try:
                    refused = await wrong.request("auth", token="x" * 43)
                finally:
                    await wrong.__aexit__()
                return back, refused

        start = time.monotonic()
        back, refused = asyncio.run(on_b())
        took = time.monotonic() - start
        assert back["type"] == "auth-ok", back
        assert back.get("state") == "ready", back
        assert refused["type"] == "error" and refused["code"] == "session-invalid", refused
        print(f"auth on b with a's token answered in {took * 1000:.0f} ms")
        assert agent_state(b, "agent1") == "ready"  # in b's ACD, offered b's calls


def test_a_node_stopped_gracefully_lets_its_pages_move_to_another_node(
    shared: redis.Redis, tmp_path: Path
) -> None:
    with started(tmp_path, redis_url=shared.url) as (a, b):

        async def run() -> tuple[list[str], dict[str, Any]]:
            async with Page(a) as page:
                ok = await page.request("login", username="agent2", password=DEMO_PASSWORD)
                assert ok["type"] == "login-ok", ok
                assert (await page.request("state", state="ready"))["type"] == "ack"
                assert await asyncio.to_thread(a.stop) == 0  # SIGTERM: a graceful stop
                assert page.ws is not None
                told: list[str] = []
                async for message in page.ws:  # what the page hears before its socket closes
                    if message.type == aiohttp.WSMsgType.TEXT:
                        told.append(str(message.json().get("type")))
            async with Page(b) as page:
                back = await page.request("auth", token=ok["token"])
            return told, back

        told, back = asyncio.run(run())
        assert "session-ended" not in told, told  # the page reconnects instead of logging out
        assert back["type"] == "auth-ok" and back.get("state") == "ready", back
