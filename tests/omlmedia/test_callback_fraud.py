"""Callback fraud (issue 12 item 9): a waiting caller may ask to be called back only at a
national number (6-15 digits, no international 00 prefix, no short code), one waiting callback
per number, and a callback that has not come up within its campaign's ``callback_expiry`` (4 h
by default) is dropped, never dialled. The desk and the ACD run with fakes around them
(`tests.omlmedia.test_desk`)."""

from __future__ import annotations

import logging

import pytest

from omlmedia.acd import DEFAULT_CALLBACK_RULES
from sip.ua import Call
from tests.omlmedia.test_desk import World, world

__all__ = ["world"]  # the fixture of tests/omlmedia/test_desk.py
CALLBACK_EXPIRY = DEFAULT_CALLBACK_RULES.callback_expiry


def ask(world: World, call: Call, number: str) -> None:
    for digit in f"1{number}#":
        world.acd.on_dtmf(call, digit)


@pytest.mark.parametrize(
    "number",
    ["0044207946000", "00390612345678", "190", "11223", "1234567890123456"],
)
async def test_international_short_and_overlong_numbers_are_refused(
    world: World, number: str, caplog: pytest.LogCaptureFixture
) -> None:
    call = await world.queue_call()
    with caplog.at_level(logging.WARNING, logger="omlmedia.acd"):
        ask(world, call, number)
    assert world.acd.stats.callbacks == 0
    assert world.acd.callers[call.call_id].callback_number == ""
    [record] = [r for r in caplog.records if r.getMessage() == "queue-callback-refused"]
    assert record.__dict__["omlmedia_fields"]["reason"] == "number-not-allowed"


async def test_a_national_number_is_accepted_once_while_its_callback_waits(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    first, second = await world.queue_call(), await world.queue_call()
    ask(world, first, "1155550001")
    assert world.acd.stats.callbacks == 1
    world.caller_hangs_up(first)
    assert first.call_id in world.acd.callbacks
    with caplog.at_level(logging.WARNING, logger="omlmedia.acd"):
        ask(world, second, "1155550001")
    assert world.acd.stats.callbacks == 1
    [record] = [r for r in caplog.records if r.getMessage() == "queue-callback-refused"]
    assert record.__dict__["omlmedia_fields"]["reason"] == "already-pending"
    ask(world, second, "1155550002")  # another number is fine
    assert world.acd.stats.callbacks == 2


async def test_a_callback_that_comes_up_too_late_is_dropped_not_dialled(world: World) -> None:
    call = await world.queue_call()
    ask(world, call, "1155550001")
    world.caller_hangs_up(call)
    assert call.call_id in world.acd.callbacks
    world.clock.now += CALLBACK_EXPIRY + 1
    await world.ready("agent1")
    assert call.call_id not in world.acd.callbacks
    assert world.hub.call_state("agent1", call.call_id) is None
    assert world.dialled == []


async def test_a_callback_within_its_time_still_rings_an_agent(world: World) -> None:
    call = await world.queue_call()
    ask(world, call, "1155550001")
    world.caller_hangs_up(call)
    world.clock.now += CALLBACK_EXPIRY - 60
    await world.ready("agent1")
    assert world.hub.call_state("agent1", call.call_id) == "ringing"
