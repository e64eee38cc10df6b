"""Pause reasons as an administered object: seeded from the file, added and removed through the
API (admin), persisted and audited, read by supervisors, and the only reasons a supervisor's pause
through the API accepts (400 naming ``reason`` otherwise)."""

from __future__ import annotations

import tomllib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from omlmedia.accounts import AccountBook, config_seeds
from omlmedia.api import create_app
from omlmedia.directory import Directory
from tests.omlmedia.test_admin_api import ADMIN, Admin
from tests.omlmedia.test_api import FakeSupervision
from tests.omlmedia.test_authz import demo
from tests.omlmedia.test_directory import Events


class World(Admin):
    directory: Directory
    events: Events


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    config = demo()
    book = AccountBook(tmp_path / "omlmedia.db", config.api.token_matches)
    book.seed(config_seeds(config.accounts, config.webrtc.agents))
    events = Events()
    directory = Directory(book, events=events)
    assert directory.seed_pause_reasons(["break", "lunch"])
    acd = FakeSupervision()
    app = create_app(config, dict, acd=acd, accounts=book, directory=directory)
    async with TestClient(TestServer(app)) as client:
        assert config.generated.demo_password is not None
        made = World(client, book, acd, config.generated.demo_password)
        made.directory, made.events = directory, events
        yield made
    book.close()


async def supervisor(world: World) -> dict[str, str]:
    session = await world.call(
        "POST", "/sessions", {"name": "supervisor1", "password": world.password}, 201
    )
    return {"Authorization": f"Bearer {session['token']}"}


async def test_pause_reasons_are_added_and_removed_through_the_api_and_checked_on_pause(
    world: World,
) -> None:
    sup = await supervisor(world)
    assert await world.call("GET", "/pause-reasons", headers=sup) == {"reasons": ["break", "lunch"]}
    await world.call("POST", "/pause-reasons", {"name": "coaching"}, 403, headers=sup)
    added = await world.call("POST", "/pause-reasons", {"name": "coaching"}, 201)
    assert added == {"reasons": ["break", "lunch", "coaching"]}
    await world.call("POST", "/pause-reasons", {"name": "coaching"}, 409)
    for bad in ["", " padded", "x" * 65, 7, "tab\there"]:
        problem = await world.call("POST", "/pause-reasons", {"name": bad}, 400)
        assert [e["field"] for e in problem["errors"]] == ["name"], bad

    problem = await world.call("POST", "/agents/agent1/pause", {"reason": "nap"}, 400, headers=sup)
    assert [e["field"] for e in problem["errors"]] == ["reason"]
    assert "coaching" in problem["errors"][0]["detail"]
    assert world.acd.commands == []  # refused before the ACD was asked
    await world.call("POST", "/agents/agent1/pause", {"reason": "coaching"}, headers=sup)
    assert world.acd.commands[-1] == ("pause", "agent1", "coaching", "supervisor1")

    removed = await world.call("DELETE", "/pause-reasons/coaching")
    assert removed == {"reasons": ["break", "lunch"]}
    # The agent paused with it stays paused, with it.
    agent = await world.call("GET", "/agents/agent1", headers=sup)
    assert (agent["state"], agent["reason"]) == ("paused", "coaching")
    await world.call("POST", "/agents/agent1/unpause", {}, headers=sup)
    await world.call("POST", "/agents/agent1/pause", {"reason": "coaching"}, 400, headers=sup)
    await world.call("DELETE", "/pause-reasons/coaching", status=404)
    await world.call("DELETE", "/pause-reasons/break")
    problem = await world.call("DELETE", "/pause-reasons/lunch", status=409)
    assert "last pause reason" in problem["detail"]

    types = [t for t, _ in world.events.published]
    assert types == [
        "admin.pause_reason.created",
        "admin.pause_reason.deleted",
        "admin.pause_reason.deleted",
    ]
    audit = await world.call("GET", "/audit?target=coaching", headers=ADMIN)
    assert [(e["action"], e["after"]["reasons"]) for e in audit["entries"]] == [
        ("pause_reason.create", ["break", "lunch", "coaching"]),
        ("pause_reason.delete", ["break", "lunch"]),
    ]


async def test_the_file_seeds_the_reasons_once_and_the_database_keeps_the_apis_changes(
    tmp_path: Path,
) -> None:
    from tests.omlmedia.test_directory import ADMIN as BOSS

    book = AccountBook(tmp_path / "omlmedia.db")
    directory = Directory(book)
    assert directory.seed_pause_reasons(["break", "lunch"])
    await directory.create_pause_reason(BOSS, "coaching")
    book.close()

    book = AccountBook(tmp_path / "omlmedia.db")
    directory = Directory(book)  # a restart, the same file: the API's change is kept
    assert not directory.seed_pause_reasons(["break", "lunch"])
    assert directory.pause_reasons() == ["break", "lunch", "coaching"]
    text = directory.export({"wallboard": {"mos_threshold": 3.0}})
    exported: dict[str, Any] = tomllib.loads(text)
    assert exported["wallboard"] == {
        "mos_threshold": 3.0,
        "pause_reasons": ["break", "lunch", "coaching"],
    }
    assert directory.seed_pause_reasons(["break", "meeting"])  # the file edited: it wins
    assert directory.pause_reasons() == ["break", "meeting"]
    book.close()
