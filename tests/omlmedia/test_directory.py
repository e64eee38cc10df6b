"""The directory: how the file and the database combine, validation that names fields, audit and
``admin.*`` events, and export-config's round trip through check-config."""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from benchmarks.harness import server_config
from omlmedia.accounts import AccountBook
from omlmedia.authz import Identity, Role
from omlmedia.config import Config, load_config
from omlmedia.directory import Directory, dumps_toml, file_users, queue_settings
from omlmedia.problems import ApiError

ADMIN = Identity("boss", Role.ADMIN, None, "t1", "boss")
PORTS = {"sip": 15060, "tls": 15061, "http": 18443, "pbx": 15070, "rtp_low": 40000}


class Events:
    def __init__(self) -> None:
        self.published: list[tuple[str, dict[str, Any]]] = []

    def publish(self, type: str, **fields: Any) -> None:
        self.published.append((type, fields))


_TEXTS: dict[Path, str] = {}


def write_config(tmp_path: Path, edit: Any = None) -> tuple[Path, Config]:
    """The test configuration (the same text, password hashes included, for one test), edited."""
    text = _TEXTS.setdefault(tmp_path, server_config(tmp_path / "data", PORTS))
    if edit is not None:
        text = edit(text)
    path = tmp_path / "omlmedia.toml"
    path.write_text(text)
    return path, load_config(path)


def start(config: Config, events: Events | None = None) -> tuple[AccountBook, Directory]:
    """What the server does at start: the book, the directory, seeded from the file."""
    book = AccountBook(config.server.data_dir / "omlmedia.db")
    book.seed(config.accounts)
    directory = Directory(
        book,
        campaigns={c.name: c.queue for c in config.campaigns},
        used_by=file_users((), config.routes),
        trunks=[t.name for t in config.trunks],
        events=events or Events(),
    )
    assert config.acd is not None
    directory.seed(config.webrtc.agents, config.acd.queues, config.campaigns)
    return book, directory


def settings(directory: Directory, queue: str) -> Mapping[str, Any]:
    return next(q.settings for q in directory.queues() if q.name == queue)


async def test_the_file_seeds_then_the_database_keeps_what_the_api_changed(
    tmp_path: Path,
) -> None:
    _, config = write_config(tmp_path)
    book, directory = start(config)
    assert [a.name for a in directory.agents()] == ["agent1", "agent2"]
    assert [q.name for q in directory.queues()] == ["support", "sales", "billing"]
    assert directory.acd_config().queues == config.acd.queues  # type: ignore[union-attr]
    await directory.update_queue(ADMIN, "sales", {"strategy": "linear", "members": []})
    await directory.create_agent(ADMIN, "newbie", "password-1", queues=["support"])
    book.close()

    book, directory = start(config)  # a restart with the same file
    assert settings(directory, "sales")["strategy"] == "linear"
    assert settings(directory, "sales")["members"] == []
    assert [m["agent"] for m in settings(directory, "support")["members"]] == [
        "agent1",
        "agent2",
        "newbie",
    ]
    assert book.account("newbie").origin == "api"
    book.close()

    # The file's declaration of sales changes: the file wins for sales, and only for sales.
    _, edited = write_config(
        tmp_path,
        lambda text: text.replace(
            'strategy = "ringall"\nmembers = ["agent2"]\nmax_wait = 4',
            'strategy = "random"\nmembers = ["agent2"]\nmax_wait = 4',
        ),
    )
    book, directory = start(edited)
    assert settings(directory, "sales")["strategy"] == "random"
    assert [m["agent"] for m in settings(directory, "sales")["members"]] == ["agent2"]
    assert [m["agent"] for m in settings(directory, "support")["members"]][-1] == "newbie"
    book.close()


async def test_an_agent_the_file_stops_declaring_stays_and_one_deleted_stays_deleted(
    tmp_path: Path,
) -> None:
    _, config = write_config(tmp_path)
    book, directory = start(config)
    await directory.delete_agent(ADMIN, "agent1")
    assert [m["agent"] for m in settings(directory, "support")["members"]] == ["agent2"]
    book.close()
    book, directory = start(config)  # agent1 is still in the file, unchanged: stays deleted
    assert [a.name for a in directory.agents()] == ["agent2"]
    assert directory.acd_config().agents.keys() == {"agent2"}
    book.close()

    def drop_agent2(text: str) -> str:
        text = text[: text.index('[[agents]]\nname = "agent2"')]
        text = text.replace('members = ["agent1", "agent2"]', 'members = ["agent1"]')
        return text.replace('members = ["agent2"]', "members = []")

    _, without = write_config(tmp_path, drop_agent2)
    book, directory = start(without)  # the queues changed in the file: the file wins for them
    assert [a.name for a in directory.agents()] == ["agent2"]  # agent2 stays
    assert settings(directory, "sales")["members"] == []
    book.close()


async def test_every_invalid_setting_is_refused_naming_its_field(tmp_path: Path) -> None:
    _, config = write_config(tmp_path)
    book, directory = start(config)
    with pytest.raises(ApiError) as caught:
        await directory.create_queue(
            ADMIN,
            "vip",
            {
                "strategy": "best",
                "members": [{"agent": "ghost"}],
                "ring_timeout": -1,
                "overflow": {"queue": "nowhere"},
                "retyr": 5,
                "escalation": [{"after": 30}],
            },
        )
    assert caught.value.status == 400
    fields = {field for field, _ in caught.value.errors}
    assert fields == {
        "strategy",
        "members[0].agent",
        "ring_timeout",
        "overflow.queue",
        "retyr",
        "escalation[0]",
    }, caught.value.errors
    assert "vip" not in {q.name for q in directory.queues()}
    with pytest.raises(ApiError) as caught:
        await directory.create_agent(
            ADMIN,
            "ana",
            "password-1",
            queues=["support", {"queue": "x"}, {"queue": "sales", "penalty": -1}],
        )
    assert [f for f, _ in caught.value.errors] == ["queues[1].queue", "queues[2].penalty"]
    with pytest.raises(ApiError) as caught:
        await directory.create_agent(ADMIN, "agent1", "password-1")
    assert caught.value.status == 409
    with pytest.raises(ApiError) as caught:
        await directory.delete_queue(ADMIN, "support")  # the campaign of the file uses it
    assert caught.value.status == 409 and "campaign support" in caught.value.reason
    with pytest.raises(ApiError) as caught:
        await directory.update_queue(ADMIN, "nothing", {})
    assert caught.value.status == 404
    book.close()


async def test_changes_are_audited_with_before_and_after_and_published(tmp_path: Path) -> None:
    _, config = write_config(tmp_path)
    events = Events()
    book, directory = start(config, events)
    await directory.create_queue(ADMIN, "vip", {"strategy": "linear"})
    await directory.create_agent(ADMIN, "ana", "password-1", display_name="Ana")
    await directory.set_member(ADMIN, "vip", "ana", 2)
    await directory.update_agent(ADMIN, "ana", password="password-2", queues=[])
    await directory.delete_queue(ADMIN, "vip")
    await directory.delete_agent(ADMIN, "ana")
    entries = [e for e in book.audit() if e.actor == "boss"]
    assert [(e.action, e.target) for e in entries] == [
        ("queue.create", "vip"),
        ("agent.create", "ana"),
        ("queue.member.set", "vip"),
        ("agent.update", "ana"),
        ("queue.delete", "vip"),
        ("agent.delete", "ana"),
    ]
    member = entries[2]
    assert member.before is not None and member.before["members"] == []
    assert member.after is not None and member.after["members"] == [{"agent": "ana", "penalty": 2}]
    update = entries[3]
    assert update.before is not None and update.before["queues"] == [{"queue": "vip", "penalty": 2}]
    assert update.after is not None and update.after["queues"] == []
    assert update.after["password"] == "changed"
    assert "password_hash" not in str([e.view() for e in entries])
    assert [t for t, _ in events.published] == [
        "admin.queue.created",
        "admin.agent.created",
        "admin.member.set",
        "admin.agent.updated",
        "admin.queue.deleted",
        "admin.agent.deleted",
    ]
    assert events.published[2][1]["queue"] == "vip" and events.published[2][1]["agent"] == "ana"
    assert events.published[2][1]["data"]["by"] == "boss"
    book.close()


async def test_export_config_writes_what_check_config_accepts_and_the_database_holds(
    tmp_path: Path,
) -> None:
    path, config = write_config(tmp_path)
    book, directory = start(config)
    await directory.create_queue(
        ADMIN,
        "vip",
        {
            "strategy": "wrandom",
            "escalation": [{"after": 30, "max_penalty": 2}],
            "overflow": {"number": "5551234", "trunk": "pbx"},
        },
    )
    await directory.create_agent(
        ADMIN, "ana", "password-1", queues=[{"queue": "vip", "penalty": 1}]
    )
    await directory.create_agent(ADMIN, "gone", "password-1", queues=["vip"])
    await directory.update_agent(ADMIN, "gone", disabled=True)
    text = directory.export(tomllib.loads(path.read_text()))
    assert "Disabled agents, left out: gone" in text
    exported = tmp_path / "exported.toml"
    exported.write_text(text)
    again = load_config(exported)  # what check-config does
    assert again.acd is not None
    assert [a.name for a in again.webrtc.agents] == ["agent1", "agent2", "ana"]
    for row in directory.queues():
        members = [m for m in row.settings["members"] if m["agent"] != "gone"]
        assert queue_settings(again.acd.queues[row.name]) == {**row.settings, "members": members}
    assert again.trunks == config.trunks and again.campaigns == config.campaigns
    assert again.routes == config.routes
    book.close()


def test_the_toml_writer_round_trips_what_tomllib_reads() -> None:
    data = {
        "title": 'a "quoted" name',
        "n": 1.5,
        "flag": False,
        "server": {"listen": ["127.0.0.1"], "nested": {"k": 1}},
        "queues": {"with space": {"members": [{"agent": "a", "penalty": 0}]}},
        "agents": [{"name": "a"}, {"name": "b"}],
    }
    assert tomllib.loads(dumps_toml(data)) == data


async def test_the_export_config_command_round_trips_through_check_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from omlmedia.cli import main

    path, config = write_config(tmp_path)
    book, directory = start(config)
    await directory.create_agent(ADMIN, "ana", "password-1", queues=["sales"])
    book.close()
    out = tmp_path / "exported.toml"
    assert main(["export-config", str(path), "--output", str(out)]) == 0
    assert main(["check-config", str(out)]) == 0
    assert "OK" in capsys.readouterr().out
    exported = load_config(out)
    assert exported.acd is not None
    assert [m.agent for m in exported.acd.queues["sales"].members] == ["agent2", "ana"]
    assert main(["export-config", str(tmp_path / "missing.toml")]) == 2


async def test_a_campaign_changes_at_run_time_and_keeps_the_change_across_a_restart(
    tmp_path: Path,
) -> None:
    _, config = write_config(tmp_path)
    events = Events()
    book, directory = start(config, events)
    running = {c.name: c for c in config.campaigns}
    directory.campaign_tables.append(running)
    assert directory.campaigns_now() == running  # seeded from the file
    view = await directory.update_campaign(
        ADMIN,
        "support",
        {"dispositions": ["sold", "no-sale"], "url": "https://crm.example/{caller}"},
    )
    assert view["dispositions"] == ["sold", "no-sale"] and view["queue"] == "support"
    assert running["support"].dispositions == ("sold", "no-sale")  # the next call gets them
    assert running["support"].url == "https://crm.example/{caller}"
    with pytest.raises(ApiError) as caught:
        await directory.update_campaign(
            ADMIN, "support", {"url": "ftp://x", "queue": "nowhere", "colour": "red"}
        )
    assert [f for f, _ in caught.value.errors] == ["colour"]
    with pytest.raises(ApiError) as caught:
        await directory.update_campaign(ADMIN, "support", {"url": "ftp://x", "queue": "nowhere"})
    assert {f for f, _ in caught.value.errors} == {"url", "queue"}, caught.value.errors
    with pytest.raises(ApiError) as caught:
        await directory.update_campaign(ADMIN, "nothing", {})
    assert caught.value.status == 404
    await directory.create_queue(ADMIN, "vip", {"members": ["agent1"]})
    await directory.update_campaign(ADMIN, "support", {"queue": "vip"})
    assert directory.scopes().campaigns["support"] == "vip"
    assert running["support"].queue == "vip"
    with pytest.raises(ApiError) as caught:
        await directory.delete_queue(ADMIN, "vip")  # the campaign sends callers there now
    assert caught.value.status == 409 and "campaign support" in caught.value.reason
    published = [(t, f["campaign"]) for t, f in events.published if t.startswith("admin.c")]
    assert published == [("admin.campaign.updated", "support")] * 2
    entries = [e for e in book.audit(action="campaign.update") if e.actor == "boss"]
    assert len(entries) == 2 and entries[0].before is not None
    assert entries[0].before["dispositions"] == ["solved", "escalated"]
    book.close()

    book, directory = start(config)  # the same file: the database keeps the change
    assert directory.campaigns_now()["support"].queue == "vip"
    assert directory.campaigns_now()["support"].dispositions == ("sold", "no-sale")
    text = directory.export(tomllib.loads((tmp_path / "omlmedia.toml").read_text()))
    out = tmp_path / "exported.toml"
    out.write_text(text)
    again = load_config(out)
    assert {c.name: c for c in again.campaigns} == directory.campaigns_now()
    book.close()


async def test_a_campaign_and_a_did_route_created_through_the_api_take_calls_at_once_and_persist(
    tmp_path: Path,
) -> None:
    from omlmedia.router import RouteTable

    path, config = write_config(tmp_path)
    events = Events()
    book, directory = start(config, events)
    directory.file_routes = config.routes
    running = {c.name: c for c in config.campaigns}
    directory.campaign_tables.append(running)
    table = RouteTable(config)
    directory.route_tables.append(table)
    assert table.route_for("5551000") is None  # cached as unrouted

    view = await directory.create_campaign(
        ADMIN, "promo", {"queue": "sales", "dispositions": ["sold", "no-sale"]}
    )
    assert view["origin"] == "api" and view["recording"] is False
    assert running["promo"].queue == "sales" and running["promo"].dispositions == (
        "sold",
        "no-sale",
    )
    assert directory.scopes().campaigns["promo"] == "sales"
    with pytest.raises(ApiError) as caught:
        await directory.create_campaign(ADMIN, "promo", {"queue": "sales"})
    assert caught.value.status == 409
    with pytest.raises(ApiError) as caught:
        await directory.create_campaign(ADMIN, "bad", {"queue": "nowhere", "url": "ftp://x"})
    assert caught.value.status == 400
    assert {f for f, _ in caught.value.errors} == {"queue", "url"}, caught.value.errors

    route = await directory.create_route(
        ADMIN, "promo-did", {"user": "5551000", "target": "campaign:promo"}
    )
    assert route == {
        "name": "promo-did",
        "user": "5551000",
        "target": "campaign:promo",
        "origin": "api",
        "created": route["created"],
        "updated": route["updated"],
    }
    found = table.route_for("5551000")  # the cache was dropped: the next call is routed
    assert found is not None and found[0].target == "campaign:promo" and found[1] == "5551000"
    await directory.create_route(ADMIN, "catch", {"pattern": "^echo$", "target": "moh"})
    found = table.route_for("echo")  # the API's routes come before the file's
    assert found is not None and found[0].target == "moh"
    bad: list[tuple[dict[str, Any], set[str]]] = [
        ({"user": "1", "target": "campaign:nope"}, {"target"}),
        ({"user": "1", "target": "queue:nope"}, {"target"}),
        ({"user": "1", "target": "trunk:nope"}, {"target"}),
        ({"user": "1", "pattern": "(", "target": "echo"}, {"settings", "pattern"}),
        ({"user": "1", "target": "echo", "strip": -1, "colour": 1}, {"strip", "colour"}),
    ]
    for settings, fields in bad:
        with pytest.raises(ApiError) as caught:
            await directory.create_route(ADMIN, "bad", settings)
        assert caught.value.status == 400
        assert {f for f, _ in caught.value.errors} == fields, (settings, caught.value.errors)
    with pytest.raises(ApiError) as caught:
        await directory.create_route(ADMIN, "catch", {"user": "2", "target": "echo"})
    assert caught.value.status == 409

    with pytest.raises(ApiError) as caught:  # in use: 409 naming the route
        await directory.delete_campaign(ADMIN, "promo")
    assert caught.value.status == 409 and "route promo-did" in caught.value.reason
    with pytest.raises(ApiError) as caught:  # the file's route reaches it
        await directory.delete_campaign(ADMIN, "support")
    assert caught.value.status == 409 and "routes[" in caught.value.reason
    await directory.create_queue(ADMIN, "vip", {"members": ["agent1"]})
    await directory.create_route(ADMIN, "vip-did", {"user": "5552000", "target": "queue:vip"})
    with pytest.raises(ApiError) as caught:
        await directory.delete_queue(ADMIN, "vip")
    assert caught.value.status == 409 and "route vip-did" in caught.value.reason
    await directory.create_agent(ADMIN, "ana", "password-1")
    await directory.create_route(ADMIN, "ana-did", {"user": "5553000", "target": "agent:ana"})
    with pytest.raises(ApiError) as caught:
        await directory.delete_agent(ADMIN, "ana")
    assert caught.value.status == 409 and "route ana-did" in caught.value.reason
    await directory.delete_route(ADMIN, "ana-did")
    await directory.delete_agent(ADMIN, "ana")
    book.close()

    book, directory = start(config)  # a restart: the database keeps them
    assert [r.name for r in directory.route_rows()] == ["promo-did", "catch", "vip-did"]
    assert directory.routes_now()[0].target == "campaign:promo"
    assert directory.campaigns_now()["promo"].queue == "sales"
    out = tmp_path / "exported.toml"
    out.write_text(directory.export(tomllib.loads(path.read_text())))
    again = load_config(out)  # check-config accepts it, the API's routes first
    assert [r.target for r in again.routes[:3]] == ["campaign:promo", "moh", "queue:vip"]
    assert again.routes[3:] == config.routes
    assert "promo" in {c.name for c in again.campaigns}
    directory.file_routes = config.routes
    directory.route_tables.append(table)
    directory.campaign_tables.append(running)
    await directory.delete_route(ADMIN, "promo-did")
    assert table.route_for("5551000") is None
    await directory.delete_campaign(ADMIN, "promo")
    assert "promo" not in running and "promo" not in directory.campaigns_now()
    with pytest.raises(ApiError) as caught:
        await directory.delete_route(ADMIN, "promo-did")
    assert caught.value.status == 404
    book.close()

    published = [t for t, _ in events.published if t.startswith(("admin.campaign", "admin.route"))]
    assert published == [
        "admin.campaign.created",
        "admin.route.created",
        "admin.route.created",
        "admin.route.created",
        "admin.route.created",
        "admin.route.deleted",
    ]
    book = AccountBook(config.server.data_dir / "omlmedia.db")
    actions = [e.action for e in book.audit() if e.actor == "boss"]
    for action in ("campaign.create", "route.create", "route.delete", "campaign.delete"):
        assert action in actions
    deleted = next(e for e in book.audit(action="campaign.delete"))
    assert deleted.before is not None and deleted.before["queue"] == "sales"
    assert deleted.after is None
    book.close()
