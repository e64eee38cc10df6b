"""Click-to-call on the desk (`omlmedia.originate`): the agent's page rings with the number, the
desk dials it through the trunk asked for when the agent answers, and each step is published."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

import pytest

from omlmedia.originate import CALL_CLICK_TO_CALL
from queueing.events import AgentState
from sip.ua import CallState
from tests.omlmedia.deskfakes import caller_sdp
from tests.omlmedia.test_desk import RING, WRAPUP, World
from webrtc.exceptions import CommandError


class Published:
    """An event sink that keeps what it is given."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, str, Mapping[str, Any]]] = []

    def publish(
        self,
        type: str,
        *,
        call_id: str = "",
        queue: str = "",
        agent: str = "",
        campaign: str = "",
        data: Mapping[str, Any] | None = None,
        time: float | None = None,
    ) -> None:
        self.events.append((type, call_id, agent, dict(data or {})))

    def stages(self, call_id: str) -> list[tuple[str, str]]:
        return [
            (d["stage"], d["reason"])
            for t, c, _, d in self.events
            if t == CALL_CLICK_TO_CALL and c == call_id
        ]


@pytest.fixture
async def world() -> AsyncIterator[tuple[World, Published]]:
    w = World()
    published = Published()
    w.desk.events = published
    yield w, published
    w.close()


async def test_the_page_rings_then_the_number_is_dialled_through_the_trunk(
    world: tuple[World, Published],
) -> None:
    w, published = world
    await w.ready("agent1")
    call_id = w.desk.originate("agent1", "5550002", trunk="pbx", campaign="support")
    info = w.hub.of("call-incoming", "agent1")[-1][2]
    assert (info.call_id, info.caller_number, info.direction) == (call_id, "5550002", "outbound")
    assert w.hub.shown("agent1") is AgentState.RINGING
    assert w.engine_state("agent1") is AgentState.PAUSED  # the ACD offers it nothing meanwhile
    assert w.dialled == []  # nothing is dialled before the agent answers

    await w.desk.answer("agent1", call_id)
    ((number, trunk, offer, outbound),) = w.dialled
    assert (number, trunk) == ("5550002", "pbx") and b"m=audio" in offer
    w.desk.on_progress(outbound, 200, caller_sdp(49210))
    outbound.state = CallState.CONFIRMED
    assert w.hub.call_state("agent1", call_id) == "active"
    assert w.hub.shown("agent1") is AgentState.ON_CALL

    w.caller_hangs_up(outbound)
    assert w.hub.of("call-ended", "agent1")[-1][2:] == (call_id, "bye")
    assert w.hub.shown("agent1") is AgentState.WRAPUP
    w.timers.advance(WRAPUP + 0.1)
    assert w.engine_state("agent1") is AgentState.READY
    assert published.stages(call_id) == [
        ("ringing-agent", ""),
        ("dialing", ""),
        ("answered", ""),
        ("ended", "bye"),
    ]


async def test_only_a_ready_agent_is_rung_and_only_a_number_is_dialled(
    world: tuple[World, Published],
) -> None:
    w, published = world
    with pytest.raises(CommandError) as refused:
        w.desk.originate("agent1", "5550002")
    assert refused.value.code == "not-ready"  # not logged in
    await w.hub.login("agent1")
    with pytest.raises(CommandError) as refused:
        w.desk.originate("agent1", "5550002")
    assert refused.value.code == "not-ready"  # paused
    await w.desk.set_agent_state("agent1", AgentState.READY, None)
    with pytest.raises(CommandError) as refused:
        w.desk.originate("agent1", "555;x")
    assert refused.value.code == "bad-number"
    page = w.hub.pages.pop("agent1")  # the page dropped; the session waits for it
    with pytest.raises(CommandError) as refused:
        w.desk.originate("agent1", "5550002")
    assert refused.value.code == "no-page"
    w.hub.pages["agent1"] = page
    assert [e for e in published.events if e[0] == CALL_CLICK_TO_CALL] == []
    assert w.hub.of("call-incoming") == []


async def test_an_unanswered_page_fails_the_call_and_the_agent_is_ready_again(
    world: tuple[World, Published],
) -> None:
    w, published = world
    await w.ready("agent1")
    call_id = w.desk.originate("agent1", "5550002")
    w.timers.advance(RING + 0.1)
    assert w.hub.of("call-ended", "agent1")[-1][2:] == (call_id, "no-answer")
    assert w.engine_state("agent1") is AgentState.READY and w.dialled == []
    assert published.stages(call_id) == [("ringing-agent", ""), ("failed", "no-answer")]


async def test_a_number_that_refuses_fails_the_call(world: tuple[World, Published]) -> None:
    w, published = world
    await w.ready("agent1")
    call_id = w.desk.originate("agent1", "5550002")
    await w.desk.answer("agent1", call_id)
    outbound = w.dialled[0][3]
    w.desk.on_progress(outbound, 486, b"")
    assert w.hub.of("call-ended", "agent1")[-1][2:] == (call_id, "status-486")
    assert published.stages(call_id)[-1] == ("failed", "status-486")
    assert w.engine_state("agent1") is AgentState.READY


async def test_no_trunk_to_dial_fails_the_call_when_the_agent_answers() -> None:
    w = World(trunk=False)
    published = Published()
    w.desk.events = published
    try:
        await w.ready("agent1")
        call_id = w.desk.originate("agent1", "5550002")
        with pytest.raises(CommandError) as refused:
            await w.desk.answer("agent1", call_id)
        assert refused.value.code == "no-trunk"
        assert published.stages(call_id)[-1] == ("failed", "no-trunk")
        assert w.hub.call_state("agent1", call_id) is None
        assert w.engine_state("agent1") is AgentState.READY
    finally:
        w.close()
