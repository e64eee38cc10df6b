"""Named disposition sets and route changes through the API: a set is created, changed and deleted
(409 while a campaign names it); a campaign that names a set takes its dispositions (the set wins
over its own list) and a change of the set reaches the running campaigns and the agent pages at
once; every change is audited and published; the file seeds sets once, the database keeps the
API's changes, export-config writes them back as check-config accepts. A route is changed with the
validation of a new one."""

from __future__ import annotations

import tomllib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from omlmedia.accounts import AccountBook, config_seeds
from omlmedia.api import create_app
from omlmedia.config import Campaign, ConfigError, load_config
from omlmedia.directory import Directory
from omlmedia.router import RouteTable
from tests.omlmedia.test_admin_api import Admin
from tests.omlmedia.test_api import FakeSupervision
from tests.omlmedia.test_authz import demo
from tests.omlmedia.test_directory import ADMIN as BOSS
from tests.omlmedia.test_directory import Events, start, write_config
from tests.omlmedia.test_pause_reasons import supervisor

OUTCOMES = ["sold", "no sale", "call back"]


class World(Admin):
    directory: Directory
    events: Events
    running: dict[str, Campaign]
    told: list[tuple[str, tuple[str, ...]]]
    routes: RouteTable


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    config = demo()
    book = AccountBook(tmp_path / "omlmedia.db", config.api.token_matches)
    book.seed(config_seeds(config.accounts, config.webrtc.agents))
    events = Events()
    directory = Directory(book, events=events)
    assert config.acd is not None
    directory.seed(
        config.webrtc.agents, config.acd.queues, config.campaigns, {"outcomes": OUTCOMES}
    )
    running = directory.campaigns_now()
    directory.campaign_tables.append(running)
    told: list[tuple[str, tuple[str, ...]]] = []
    directory.disposition_listeners.append(lambda c, d: told.append((c, d)))
    routes = RouteTable(config)
    directory.route_tables.append(routes)
    app = create_app(config, dict, acd=FakeSupervision(), accounts=book, directory=directory)
    async with TestClient(TestServer(app)) as client:
        assert config.generated.demo_password is not None
        made = World(client, book, FakeSupervision(), config.generated.demo_password)
        made.directory, made.events, made.running, made.told = directory, events, running, told
        made.routes = routes
        yield made
    book.close()


def fields(problem: dict[str, Any]) -> set[str]:
    return {e["field"] for e in problem["errors"]}


async def test_a_set_named_by_a_campaign_gives_it_its_dispositions_and_a_change_reaches_it_at_once(
    world: World,
) -> None:
    listed = await world.call("GET", "/disposition-sets")
    assert [(s["name"], s["dispositions"], s["origin"]) for s in listed["disposition_sets"]] == [
        ("outcomes", OUTCOMES, "config")
    ]
    sup = await supervisor(world)
    await world.call("GET", "/disposition-sets", status=403, headers=sup)
    await world.call("POST", "/disposition-sets", {"name": "x", "dispositions": ["a"]}, 403, sup)

    bad = await world.call("POST", "/disposition-sets", {"name": "Bad!", "dispositions": []}, 400)
    assert fields(bad) == {"name"}
    bad = await world.call(
        "POST", "/disposition-sets", {"name": "twice", "dispositions": ["a", "a"], "colour": 1}, 400
    )
    assert fields(bad) == {"colour"}
    bad = await world.call("POST", "/disposition-sets", {"name": "twice", "dispositions": []}, 400)
    assert fields(bad) == {"dispositions"}
    bad = await world.call(
        "POST", "/disposition-sets", {"name": "twice", "dispositions": ["a", "a", 3]}, 400
    )
    assert fields(bad) == {"dispositions[2]"}
    bad = await world.call(
        "POST", "/disposition-sets", {"name": "twice", "dispositions": ["a", "a"]}, 400
    )
    assert fields(bad) == {"dispositions[1]"}
    await world.call("POST", "/disposition-sets", {"name": "outcomes", "dispositions": ["a"]}, 409)
    made = await world.call(
        "POST", "/disposition-sets", {"name": "short", "dispositions": ["ok"]}, 201
    )
    assert made["dispositions"] == ["ok"] and made["origin"] == "api" and made["campaigns"] == []

    # The campaign names the set: its calls offer the set's dispositions, not its own list.
    assert world.running["support"].dispositions == ("solved", "escalated", "wrong number")
    bad = await world.call("PATCH", "/campaigns/support", {"disposition_set": "nope"}, 400)
    assert fields(bad) == {"disposition_set"}
    support = await world.call("PATCH", "/campaigns/support", {"disposition_set": "outcomes"})
    assert support["disposition_set"] == "outcomes" and support["dispositions"] == OUTCOMES
    assert world.running["support"].dispositions == tuple(OUTCOMES)
    assert world.told == [("support", tuple(OUTCOMES))]
    one = await world.call("GET", "/disposition-sets/outcomes")
    assert one["campaigns"] == ["support"]

    # A change of the set reaches the campaign at once (the next call and the pages' calls).
    changed = await world.call(
        "PATCH", "/disposition-sets/outcomes", {"dispositions": ["sold", "later"]}
    )
    assert changed["dispositions"] == ["sold", "later"] and changed["campaigns"] == ["support"]
    assert world.running["support"].dispositions == ("sold", "later")
    assert world.told[-1] == ("support", ("sold", "later"))
    assert world.running["sales"].dispositions == ("sale", "no sale", "call back later")
    bad = await world.call("PATCH", "/disposition-sets/outcomes", {"dispositions": [""]}, 400)
    assert fields(bad) == {"dispositions[0]"}
    await world.call("PATCH", "/disposition-sets/outcomes", {"name": "x"}, 400)
    await world.call("PATCH", "/disposition-sets/nothing", {"dispositions": ["a"]}, 404)

    # In use: 409 naming the campaign; free again, it goes.
    problem = await world.call("DELETE", "/disposition-sets/outcomes", status=409)
    assert "campaign support" in problem["detail"]
    support = await world.call("PATCH", "/campaigns/support", {"disposition_set": ""})
    assert "disposition_set" not in support and support["dispositions"] == ["sold", "later"]
    await world.call("DELETE", "/disposition-sets/outcomes", status=204)
    await world.call("GET", "/disposition-sets/outcomes", status=404)
    await world.call("DELETE", "/disposition-sets/outcomes", status=404)

    audit = [(e.action, e.target) for e in world.book.audit() if e.action.startswith("disp")]
    assert audit == [
        ("disposition_set.create", "outcomes"),  # the file's, seeded
        ("disposition_set.create", "short"),
        ("disposition_set.update", "outcomes"),
        ("disposition_set.delete", "outcomes"),
    ]
    update = next(e for e in world.book.audit(action="disposition_set.update"))
    assert update.before is not None and update.before["dispositions"] == OUTCOMES
    assert update.after is not None and update.after["dispositions"] == ["sold", "later"]
    published = [t for t, _ in world.events.published if t.startswith("admin.disposition_set")]
    assert published == [
        "admin.disposition_set.created",
        "admin.disposition_set.updated",
        "admin.disposition_set.deleted",
    ]


async def test_a_route_is_changed_with_the_checks_of_a_new_one_and_matched_at_once(
    world: World,
) -> None:
    await world.call("POST", "/routes", {"name": "promo", "user": "5551000", "target": "echo"}, 201)
    assert world.routes.route_for("5551000") is not None
    bad = await world.call("PATCH", "/routes/promo", {"target": "queue:nowhere"}, 400)
    assert fields(bad) == {"target"}
    bad = await world.call("PATCH", "/routes/promo", {"strip": -1, "colour": "red"}, 400)
    assert fields(bad) == {"colour"}
    bad = await world.call("PATCH", "/routes/promo", {"strip": -1}, 400)
    assert fields(bad) == {"strip"}
    await world.call("PATCH", "/routes/nothing", {"target": "echo"}, 404)
    route = await world.call("PATCH", "/routes/promo", {"target": "queue:support", "strip": 3})
    assert route["target"] == "queue:support" and route["strip"] == 3
    assert route["user"] == "5551000" and route["updated"] >= route["created"]
    found = world.routes.route_for("5551000")
    assert found is not None and found[0].target == "queue:support"
    route = await world.call("PATCH", "/routes/promo", {"user": None, "pattern": "^555[0-9]+$"})
    assert "user" not in route and route["pattern"] == "^555[0-9]+$"
    found = world.routes.route_for("5559999")
    assert found is not None and found[0].target == "queue:support"
    problem = await world.call("DELETE", "/queues/support", status=409)
    assert "campaign support" in problem["detail"] or "route promo" in problem["detail"]
    audit = [e for e in world.book.audit(action="route.update")]
    assert len(audit) == 2 and audit[0].before is not None and audit[0].before["target"] == "echo"
    published = [t for t, _ in world.events.published if t.startswith("admin.route")]
    assert published == ["admin.route.created", "admin.route.updated", "admin.route.updated"]
    listed = await world.call("GET", "/routes")
    assert listed["routes"] == [route]


SETS = """
[disposition_sets.outcomes]
dispositions = ["sold", "no sale"]
"""


def with_set(text: str) -> str:
    """The test configuration with a disposition set that its first campaign names."""
    text = text.replace("[[campaigns]]", '[[campaigns]]\ndisposition_set = "outcomes"', 1)
    return text + SETS


async def test_the_file_seeds_sets_once_and_export_config_writes_them_as_check_config_accepts(
    tmp_path: Path,
) -> None:
    path, config = write_config(tmp_path, with_set)
    assert config.disposition_sets == {"outcomes": ("sold", "no sale")}
    first = config.campaigns[0]
    assert first.disposition_set == "outcomes" and first.dispositions == ("sold", "no sale")
    book, directory = start(config)
    directory.seed(config.webrtc.agents, {}, (), config.disposition_sets)
    assert directory.campaigns_now()[first.name].dispositions == ("sold", "no sale")
    await directory.update_disposition_set(BOSS, "outcomes", {"dispositions": ["sold", "later"]})
    await directory.create_disposition_set(BOSS, "extra", {"dispositions": ["x"]})
    book.close()

    book, directory = start(config)  # a restart, the same file: the API's changes are kept
    directory.seed(config.webrtc.agents, {}, (), config.disposition_sets)
    assert directory.campaigns_now()[first.name].dispositions == ("sold", "later")
    assert [r.name for r in directory.disposition_set_rows()] == ["outcomes", "extra"]
    out = tmp_path / "exported.toml"
    out.write_text(directory.export(tomllib.loads(path.read_text())))
    again = load_config(out)  # check-config accepts it
    assert again.disposition_sets == {"outcomes": ("sold", "later"), "extra": ("x",)}
    assert {c.name: c for c in again.campaigns} == directory.campaigns_now()
    edited = dict(config.disposition_sets, outcomes=("won", "lost"))
    assert directory.seed(config.webrtc.agents, {}, (), edited) == ["disposition_set:outcomes"]
    assert directory.campaigns_now()[first.name].dispositions == ("won", "lost")  # the file wins
    book.close()


def test_check_config_names_the_key_of_a_bad_set_and_of_an_unknown_set(tmp_path: Path) -> None:
    def broken(text: str) -> str:
        text = text.replace("[[campaigns]]", '[[campaigns]]\ndisposition_set = "nope"', 1)
        return text + "\n[disposition_sets.empty]\ndispositions = []\n"

    with pytest.raises(ConfigError) as caught:
        write_config(tmp_path, broken)
    text = str(caught.value)
    assert "campaigns[0].disposition_set: unknown disposition set" in text, text
    assert "disposition_sets.empty.dispositions: must list at least one" in text, text


async def test_another_nodes_change_of_a_set_reaches_this_nodes_campaigns_on_reload(
    tmp_path: Path,
) -> None:
    _, config = write_config(tmp_path, with_set)
    book, here = start(config)
    here.seed(config.webrtc.agents, {}, (), config.disposition_sets)
    running = here.campaigns_now()
    here.campaign_tables.append(running)
    told: list[tuple[str, tuple[str, ...]]] = []
    here.disposition_listeners.append(lambda c, d: told.append((c, d)))
    other_book = AccountBook(config.server.data_dir / "omlmedia.db")
    there = Directory(other_book)  # another node on the same database
    await there.update_disposition_set(BOSS, "outcomes", {"dispositions": ["won"]})
    name = config.campaigns[0].name
    assert running[name].dispositions == ("sold", "no sale")  # not told yet
    await here.reload()
    assert running[name].dispositions == ("won",)
    assert told == [(name, ("won",))]
    assert [r.settings["dispositions"] for r in here.disposition_set_rows()] == [["won"]]
    other_book.close()
    book.close()
