"""Per-campaign callback rules (issue 12 item 9): the number length, the international prefix,
one waiting callback per number and the expiry are ``[[campaigns]]`` keys with safe defaults,
validated naming the key, administered at run time by the directory, and applied by the ACD."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from omlmedia.config import Campaign, Config, ConfigError, load_config
from omlmedia.problems import ApiError
from sip.ua import Call
from tests.omlmedia.deskfakes import inbound_call, until
from tests.omlmedia.test_desk import World, world
from tests.omlmedia.test_directory import ADMIN, start, write_config

__all__ = ["world"]  # the fixture of tests/omlmedia/test_desk.py

TOKEN = hashlib.sha256(b"t").hexdigest()
QUEUE = "[queues.support]\nmembers = []\n\n"


def load(tmp_path: Path, campaign: str) -> Config:
    path = tmp_path / "omlmedia.toml"
    path.write_text(
        f'[api]\ntoken_sha256 = "{TOKEN}"\n{QUEUE}'
        f"[[campaigns]]\nname = 'sales'\nqueue = 'support'\n{campaign}"
    )
    return load_config(path)


def test_the_callback_rules_default_to_the_safe_values(tmp_path: Path) -> None:
    (campaign,) = load(tmp_path, "").campaigns
    assert (
        campaign.callback_min_digits,
        campaign.callback_max_digits,
        campaign.callback_international,
        campaign.callback_one_per_number,
        campaign.callback_expiry,
    ) == (6, 15, False, True, 14400.0)
    assert campaign == Campaign("sales", "support")


def test_a_campaign_sets_its_own_callback_rules(tmp_path: Path) -> None:
    text = (
        "callback_min_digits = 9\ncallback_max_digits = 9\ncallback_international = true\n"
        "callback_one_per_number = false\ncallback_expiry = 600\n"
    )
    (campaign,) = load(tmp_path, text).campaigns
    assert (
        campaign.callback_min_digits,
        campaign.callback_max_digits,
        campaign.callback_international,
        campaign.callback_one_per_number,
        campaign.callback_expiry,
    ) == (9, 9, True, False, 600.0)


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("callback_min_digits = 0", "campaigns[0].callback_min_digits: must be an integer from 1"),
        ("callback_max_digits = 21", "campaigns[0].callback_max_digits: must be an integer from"),
        (
            "callback_min_digits = 10\ncallback_max_digits = 8",
            "campaigns[0].callback_max_digits: must be at least callback_min_digits",
        ),
        ('callback_international = "yes"', "campaigns[0].callback_international"),
        ("callback_one_per_number = 1", "campaigns[0].callback_one_per_number"),
        ("callback_expiry = 0", "campaigns[0].callback_expiry: must be greater than 0"),
    ],
)
def test_a_bad_callback_rule_names_its_key(tmp_path: Path, text: str, error: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text + "\n")
    assert any(e.startswith(error) for e in info.value.errors), info.value.errors


def ask(world: World, call: Call, number: str) -> None:
    for digit in f"1{number}#":
        world.acd.on_dtmf(call, digit)


async def campaign_call(world: World, campaign: Campaign) -> Call:
    world.acd.campaigns[campaign.name] = campaign
    call = inbound_call("support")
    world.acd.enter(call, "support", campaign)
    await until(lambda: call.call_id in world.acd.callers)
    return call


async def test_a_campaign_may_allow_international_callbacks_while_the_default_refuses_them(
    world: World,
) -> None:
    plain = await world.queue_call()  # no campaign: the defaults
    ask(world, plain, "0044207946000")
    assert world.acd.stats.callbacks == 0
    abroad = Campaign("abroad", "support", callback_international=True, callback_max_digits=20)
    call = await campaign_call(world, abroad)
    ask(world, call, "0044207946000")
    assert world.acd.callers[call.call_id].callback_number == "0044207946000"
    short = await campaign_call(world, abroad)
    ask(world, short, "11223")  # still at least callback_min_digits (6)
    assert world.acd.callers[short.call_id].callback_number == ""


async def test_a_campaign_may_allow_several_callbacks_per_number(world: World) -> None:
    shared = Campaign("office", "support", callback_one_per_number=False)
    first, second = await campaign_call(world, shared), await campaign_call(world, shared)
    ask(world, first, "1155550001")
    ask(world, second, "1155550001")
    assert world.acd.stats.callbacks == 2


async def test_a_campaign_s_short_expiry_drops_its_callback(world: World) -> None:
    brief = Campaign("brief", "support", callback_expiry=600.0)
    call = await campaign_call(world, brief)
    ask(world, call, "1155550001")
    world.caller_hangs_up(call)
    world.clock.now += 601
    await world.ready("agent1")
    assert call.call_id not in world.acd.callbacks
    assert world.dialled == []


async def test_a_patch_of_the_campaign_reaches_callers_already_waiting(
    world: World, tmp_path: Path
) -> None:
    _, config = write_config(tmp_path)
    _, directory = start(config)
    world.acd.campaigns.update(directory.campaigns_now())
    directory.campaign_tables.append(world.acd.campaigns)
    call = inbound_call("support")
    world.acd.enter(call, "support", world.acd.campaigns["support"])
    await until(lambda: call.call_id in world.acd.callers)
    ask(world, call, "0044207946000")
    assert world.acd.callers[call.call_id].callback_number == ""
    with pytest.raises(ApiError) as caught:
        await directory.update_campaign(ADMIN, "support", {"callback_expiry": 0})
    assert [field for field, _ in caught.value.errors] == ["callback_expiry"]
    view = await directory.update_campaign(
        ADMIN, "support", {"callback_international": True, "callback_max_digits": 20}
    )
    assert (view["callback_international"], view["callback_max_digits"]) == (True, 20)
    ask(world, call, "0044207946000")  # the same caller, still waiting
    assert world.acd.callers[call.call_id].callback_number == "0044207946000"
