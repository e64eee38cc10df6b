"""The agent desk and the ACD runtime, driven without a server: SIP through a fake user agent,
the pages through a fake hub, time through a fake clock (`tests.omlmedia.deskfakes`).

These pin the handshakes between the desk, the ACD and the pages (offer, answer, attach;
reject, timeout and requeue; callbacks; transfers; supervisors) that full-server tests used to
be the only guard of.
"""

from __future__ import annotations

import inspect
import random
from collections.abc import AsyncIterator
from typing import Any

import pytest

from queueing.config import build_config
from queueing.engine import AcdEngine
from queueing.events import AgentState
from sip.ua import Call, CallState
from webrtc.exceptions import CommandError
from webrtc.signaling import AgentHub
from webrtc.webcaller import WebCaller, WebCallerInfo

from .deskfakes import (
    DeskWorld,
    FakeHub,
    caller_sdp,
    inbound_call,
    outbound_call,
    until,
)

RING = 20.0
WRAPUP = 5.0
QUEUE_WRAPUP = 3.0

ACD: dict[str, Any] = {
    "agents": {"agent1": {}, "agent2": {}},
    "queues": {
        "support": {
            "members": ["agent1", "agent2"],
            "strategy": "ringall",
            "ring_timeout": 15,
            "retry": 2,
            "wrapup": QUEUE_WRAPUP,
        },
        "sales": {"members": ["agent1", "agent2"], "strategy": "linear", "ring_timeout": 15},
    },
}


class World(DeskWorld):
    """The desk, the ACD runtime (queues `support`, ringall, and `sales`, linear, over agent1
    and agent2; agent3 takes direct calls only), and what surrounds them."""

    def __init__(self, *, trunk: bool = True) -> None:
        super().__init__()
        self.dialled: list[tuple[str, str, bytes, Call]] = []
        self.engine = AcdEngine(build_config(ACD), rng=random.Random(1))
        self.acd = self.runtime(self.engine)
        self.desk = self.agent_desk(
            dial_out=self.dial_out if trunk else None,
            resolve=lambda target: target if target.startswith("agent") else None,
            ring_timeout=RING,
            wrapup_time=WRAPUP,
        )

    @property
    def ua(self) -> Any:
        return self.service.ua

    def dial_out(self, number: str, trunk: str, sdp: bytes, related: Call | None) -> Call:
        call = outbound_call(number)
        self.dialled.append((number, trunk, sdp, call))
        return call

    async def ready(self, *agents: str) -> None:
        for agent in agents:
            await self.hub.login(agent)
            await self.desk.set_agent_state(agent, AgentState.READY, None)

    def route_ended(self, call: Call, cause: str) -> None:
        """What the router does with a `CallEnded`: the ACD's callers first, then the desk."""
        if self.acd.owns(call):
            self.acd.on_ended(call, cause)
        elif self.desk.owns(call):
            self.desk.on_ended(call, cause)

    def deliver(self) -> None:
        """The `CallEnded` events of the calls the desk and the ACD ended themselves."""
        while self.ua.ended:
            self.route_ended(*self.ua.ended.pop(0))

    def caller_hangs_up(self, call: Call) -> None:
        call.state = CallState.ENDED
        self.route_ended(call, "bye")

    async def queue_call(self, queue: str = "support") -> Call:
        call = inbound_call("support")
        self.acd.enter(call, queue)
        await until(lambda: call.call_id in self.acd.callers)
        return call

    def engine_state(self, agent: str) -> AgentState:
        return self.engine.agent_status(agent).state


@pytest.fixture
async def world() -> AsyncIterator[World]:
    w = World()
    yield w
    w.close()


def answer_of(ua: Any, call: Call) -> bytes:
    body: bytes = next(a[2] for a in ua.of(call) if a[0] == "answer")
    return body


# -- direct calls: offer, answer, attach, hang up, wrap-up --------------------------------------


async def test_direct_call_rings_then_answer_attaches_the_leg_to_the_channel(world: World) -> None:
    await world.ready("agent3")
    call = inbound_call("agent3")
    assert world.desk.offer(call, "agent3") is None
    assert ("ring", call.call_id, 180) in world.ua.actions
    assert world.hub.shown("agent3") is AgentState.RINGING
    assert world.hub.call_state("agent3", call.call_id) == "ringing"

    await world.desk.answer("agent3", call.call_id)
    body = answer_of(world.ua, call)
    assert b"m=audio" in body and b"PCMU" in body
    channel = world.hub.channel("agent3")
    assert channel is not None and channel.carrying and channel.attached_rate == 8000
    assert world.hub.call_state("agent3", call.call_id) == "active"
    assert world.hub.shown("agent3") is AgentState.ON_CALL
    assert world.desk.stats.answered == 1


async def test_caller_hangup_ends_the_call_then_wrapup_then_ready(world: World) -> None:
    await world.ready("agent3")
    call = inbound_call("agent3")
    world.desk.offer(call, "agent3")
    await world.desk.answer("agent3", call.call_id)
    in_use = world.pool.in_use

    world.caller_hangs_up(call)
    assert world.hub.of("call-ended", "agent3") == [("call-ended", "agent3", call.call_id, "bye")]
    channel = world.hub.channel("agent3")
    assert channel is not None and not channel.carrying
    assert world.pool.in_use == in_use - 1
    assert world.hub.shown("agent3") is AgentState.WRAPUP
    world.timers.advance(WRAPUP - 0.1)
    assert world.hub.shown("agent3") is AgentState.WRAPUP
    world.timers.advance(0.2)
    assert world.hub.shown("agent3") is AgentState.READY


async def test_agent_hangup_sends_bye_and_wraps_up(world: World) -> None:
    await world.ready("agent3")
    call = inbound_call("agent3")
    world.desk.offer(call, "agent3")
    await world.desk.answer("agent3", call.call_id)
    await world.desk.hangup("agent3", call.call_id)
    assert ("hangup", call.call_id) in world.ua.actions
    world.deliver()
    assert world.hub.of("call-ended", "agent3")[-1][3] == "agent-hangup"
    assert world.hub.shown("agent3") is AgentState.WRAPUP
    assert not world.desk.calls


async def test_direct_call_unanswered_is_refused_480_at_ring_timeout(world: World) -> None:
    await world.ready("agent3")
    call = inbound_call("agent3")
    world.desk.offer(call, "agent3")
    world.timers.advance(RING + 0.1)
    assert ("reject", call.call_id, 480) in world.ua.actions
    world.deliver()
    assert world.hub.of("call-ended", "agent3")[-1][3] == "no-answer"
    assert world.hub.shown("agent3") is AgentState.READY  # no wrap-up for a missed call
    assert world.desk.stats.unanswered == 1


async def test_agent_declines_a_direct_call_with_486(world: World) -> None:
    await world.ready("agent3")
    call = inbound_call("agent3")
    world.desk.offer(call, "agent3")
    await world.desk.hangup("agent3", call.call_id)
    assert ("reject", call.call_id, 486) in world.ua.actions
    world.deliver()
    assert world.hub.shown("agent3") is AgentState.READY


async def test_caller_hangs_up_while_the_page_rings(world: World) -> None:
    await world.ready("agent3")
    call = inbound_call("agent3")
    world.desk.offer(call, "agent3")
    world.caller_hangs_up(call)
    assert world.hub.of("call-ended", "agent3") == [("call-ended", "agent3", call.call_id, "bye")]
    assert world.hub.shown("agent3") is AgentState.READY
    world.timers.advance(RING + 1)  # the ring timer was cancelled: nothing more happens
    assert not [a for a in world.ua.of(call) if a[0] == "reject"]


async def test_offer_is_refused_unless_the_agent_is_ready(world: World) -> None:
    await world.hub.login("agent3")  # paused after login
    assert world.hub.shown("agent3") is AgentState.PAUSED
    assert world.desk.offer(inbound_call("agent3"), "agent3") == 480
    assert world.desk.offer(inbound_call("agent9"), "agent9") == 480
    await world.desk.set_agent_state("agent3", AgentState.READY, None)
    assert world.desk.offer(inbound_call("agent3", sdp=b""), "agent3") == 488
    assert world.desk.stats.refused == 3


async def test_answer_of_a_caller_who_left_is_refused(world: World) -> None:
    await world.ready("agent3")
    call = inbound_call("agent3")
    world.desk.offer(call, "agent3")
    call.state = CallState.ENDED  # the CANCEL is still on its way to the router
    with pytest.raises(CommandError) as error:
        await world.desk.answer("agent3", call.call_id)
    assert error.value.code == "gone"


async def test_ready_and_paused_only_and_not_during_a_call(world: World) -> None:
    await world.ready("agent3")
    with pytest.raises(CommandError):
        await world.desk.set_agent_state("agent3", AgentState.ON_CALL, None)
    call = inbound_call("agent3")
    world.desk.offer(call, "agent3")
    with pytest.raises(CommandError) as error:
        await world.desk.set_agent_state("agent3", AgentState.PAUSED, "lunch")
    assert error.value.code == "busy"


async def test_hold_resume_mute_and_digits(world: World) -> None:
    await world.ready("agent3")
    call = inbound_call("agent3")
    world.desk.offer(call, "agent3")
    await world.desk.answer("agent3", call.call_id)
    await world.desk.hold("agent3", call.call_id)
    assert world.hub.call_state("agent3", call.call_id) == "held"
    await world.desk.resume("agent3", call.call_id)
    assert world.hub.call_state("agent3", call.call_id) == "active"
    await world.desk.mute("agent3", call.call_id, True)
    world.desk.on_dtmf(call, "5")
    assert world.hub.of("dtmf", "agent3") == [("dtmf", "agent3", call.call_id, "5")]
    await world.desk.send_dtmf("agent3", call.call_id, "7")  # telephone-event was offered


# -- queues: ringall, reject, timeout, requeue ---------------------------------------------------


async def test_agent_login_is_paused_in_the_engine_and_ready_on_request(world: World) -> None:
    await world.hub.login("agent1")
    assert world.engine_state("agent1") is AgentState.PAUSED
    assert world.hub.shown("agent1") is AgentState.PAUSED
    await world.desk.set_agent_state("agent1", AgentState.READY, None)
    assert world.engine_state("agent1") is AgentState.READY
    assert world.hub.shown("agent1") is AgentState.READY
    await world.desk.set_agent_state("agent1", AgentState.PAUSED, "lunch")
    assert world.engine_state("agent1") is AgentState.PAUSED
    assert world.hub.of("state", "agent1")[-1] == ("state", "agent1", "paused", "lunch")


async def test_ringall_offers_every_member_and_the_first_answer_takes_it(world: World) -> None:
    await world.ready("agent1", "agent2")
    call = await world.queue_call()
    assert answer_of(world.ua, call)  # the queue answers at once
    assert world.hub.call_state("agent1", call.call_id) == "ringing"
    assert world.hub.call_state("agent2", call.call_id) == "ringing"
    assert world.hub.shown("agent1") is AgentState.RINGING

    await world.desk.answer("agent2", call.call_id)
    assert world.hub.call_state("agent2", call.call_id) == "active"
    assert world.hub.of("call-ended", "agent1") == [
        ("call-ended", "agent1", call.call_id, "answered-elsewhere")
    ]
    assert world.engine_state("agent2") is AgentState.ON_CALL
    assert world.engine_state("agent1") is AgentState.READY
    assert world.hub.shown("agent2") is AgentState.ON_CALL
    channel = world.hub.channel("agent2")
    assert channel is not None and channel.carrying
    with pytest.raises(CommandError):
        await world.desk.answer("agent1", call.call_id)


async def test_queue_call_answered_on_a_page_the_engine_withdrew_is_gone(world: World) -> None:
    await world.ready("agent1", "agent2")
    call = await world.queue_call()
    await world.desk.answer("agent1", call.call_id)
    # agent2's page had not heard of the withdrawal yet: the desk has forgotten its offer.
    with pytest.raises(CommandError) as error:
        await world.desk.answer("agent2", call.call_id)
    assert error.value.code == "unknown-call"


async def test_declined_offer_goes_to_the_next_member(world: World) -> None:
    await world.ready("agent1", "agent2")
    call = await world.queue_call("sales")
    ringing = [a for a in ("agent1", "agent2") if world.hub.call_state(a, call.call_id)]
    assert len(ringing) == 1
    first = ringing[0]
    other = "agent2" if first == "agent1" else "agent1"
    await world.desk.hangup(first, call.call_id)
    assert world.hub.of("call-ended", first)[-1][3] == "declined"
    assert world.hub.call_state(other, call.call_id) == "ringing"
    assert call.state is not CallState.ENDED  # the caller waits on


async def test_ring_timeout_withdraws_the_offer_and_the_caller_is_offered_again(
    world: World,
) -> None:
    await world.ready("agent1")
    call = await world.queue_call("sales")
    assert world.hub.call_state("agent1", call.call_id) == "ringing"
    world.timers.advance(15.1)
    assert world.hub.of("call-ended", "agent1")[-1][2:] == (call.call_id, "timeout")
    assert world.desk.stats.unanswered == 1
    world.timers.advance(4.8)
    assert world.hub.call_state("agent1", call.call_id) is None
    world.timers.advance(0.2)  # the queue's retry time (5 s) after the miss
    assert world.hub.call_state("agent1", call.call_id) == "ringing"  # offered again


async def test_caller_leaves_while_agents_are_rung(world: World) -> None:
    await world.ready("agent1", "agent2")
    call = await world.queue_call()
    world.caller_hangs_up(call)
    for agent in ("agent1", "agent2"):
        assert world.hub.call_state(agent, call.call_id) is None
        assert world.hub.shown(agent) is AgentState.READY
        assert world.engine_state(agent) is AgentState.READY
    assert call.call_id not in world.acd.callers
    assert world.engine.queue_status("support", world.clock()).waiting == 0


async def test_agent_hangs_up_a_queue_call_then_the_queue_wrapup(world: World) -> None:
    await world.ready("agent1", "agent2")
    call = await world.queue_call()
    await world.desk.answer("agent1", call.call_id)
    await world.desk.hangup("agent1", call.call_id)
    assert ("hangup", call.call_id) in world.ua.actions
    world.deliver()
    assert world.hub.call_state("agent1", call.call_id) is None
    assert world.engine_state("agent1") is AgentState.WRAPUP
    assert world.hub.shown("agent1") is AgentState.WRAPUP
    world.timers.advance(QUEUE_WRAPUP + 0.1)
    assert world.engine_state("agent1") is AgentState.READY
    assert world.hub.shown("agent1") is AgentState.READY
    assert not world.desk.calls and not world.acd.callers


async def test_caller_hangs_up_a_queue_call(world: World) -> None:
    await world.ready("agent1", "agent2")
    call = await world.queue_call()
    await world.desk.answer("agent1", call.call_id)
    world.caller_hangs_up(call)
    assert world.hub.of("call-ended", "agent1")[-1][2:] == (call.call_id, "bye")
    assert world.engine_state("agent1") is AgentState.WRAPUP
    channel = world.hub.channel("agent1")
    assert channel is not None and not channel.carrying


async def test_agent_gone_mid_call_requeues_the_caller_first_in_line(world: World) -> None:
    await world.ready("agent1", "agent2")
    call = await world.queue_call("sales")
    first = next(a for a in ("agent1", "agent2") if world.hub.call_state(a, call.call_id))
    other = "agent2" if first == "agent1" else "agent1"
    await world.desk.answer(first, call.call_id)
    await world.hub.logout(first, "closed")
    assert world.engine_state(first) is AgentState.LOGGED_OUT
    assert first not in world.desk.logged_in
    assert call.state is not CallState.ENDED
    assert call.call_id in world.acd.callers
    assert world.hub.call_state(other, call.call_id) == "ringing"


async def test_agent_gone_while_rung_counts_as_a_rejection(world: World) -> None:
    await world.ready("agent1", "agent2")
    call = await world.queue_call("sales")
    first = next(a for a in ("agent1", "agent2") if world.hub.call_state(a, call.call_id))
    other = "agent2" if first == "agent1" else "agent1"
    await world.hub.logout(first, "logout")
    assert world.hub.call_state(other, call.call_id) == "ringing"


# -- callbacks ---------------------------------------------------------------------------------


async def test_callback_keeps_the_place_then_rings_an_agent_who_dials_the_number(
    world: World,
) -> None:
    call = await world.queue_call()
    for digit in "15550001#":
        world.acd.on_dtmf(call, digit)
    assert world.acd.stats.callbacks == 1
    world.caller_hangs_up(call)  # before the confirmation ends: its place is kept
    assert call.call_id in world.acd.callbacks

    await world.ready("agent1")
    assert world.hub.call_state("agent1", call.call_id) == "ringing"
    info = world.hub.of("call-incoming", "agent1")[-1][2]
    assert info.direction == "outbound" and info.caller_number == "5550001"

    await world.desk.answer("agent1", call.call_id)
    ((number, _, offer, outbound),) = world.dialled
    assert number == "5550001" and b"m=audio" in offer
    assert world.engine_state("agent1") is AgentState.ON_CALL
    assert world.hub.of("notice", "agent1")

    world.desk.on_progress(outbound, 200, caller_sdp(49200))
    outbound.state = CallState.CONFIRMED
    assert world.hub.call_state("agent1", call.call_id) == "active"
    channel = world.hub.channel("agent1")
    assert channel is not None and channel.carrying

    world.caller_hangs_up(outbound)
    assert call.call_id not in world.acd.callbacks
    assert world.hub.call_state("agent1", call.call_id) is None
    assert world.engine_state("agent1") is AgentState.WRAPUP


async def test_callback_whose_number_refuses_ends_the_agent_call(world: World) -> None:
    call = await world.queue_call()
    for digit in "15550001#":
        world.acd.on_dtmf(call, digit)
    world.caller_hangs_up(call)
    await world.ready("agent1")
    await world.desk.answer("agent1", call.call_id)
    outbound = world.dialled[0][3]
    world.desk.on_progress(outbound, 486, b"")
    assert world.hub.of("call-ended", "agent1")[-1][2:] == (call.call_id, "status-486")
    assert call.call_id not in world.acd.callbacks


# -- supervisors -------------------------------------------------------------------------------


async def test_supervisor_force_logout_ends_the_session_and_the_engine_agent(world: World) -> None:
    await world.ready("agent1")
    report = await world.acd.force_logout("agent1", "boss")
    assert report["state"] == "logged-out"
    assert ("session-ended", "agent1", "forced-logout") in world.hub.pushes
    assert "agent1" not in world.desk.logged_in
    assert world.engine_state("agent1") is AgentState.LOGGED_OUT


async def test_supervisor_force_pause_is_shown_on_the_page(world: World) -> None:
    await world.ready("agent1")
    world.acd.force_pause("agent1", "coaching", "boss")
    assert world.hub.shown("agent1") is AgentState.PAUSED
    assert world.hub.of("state", "agent1")[-1][3] == "coaching"
    world.acd.force_unpause("agent1", "boss")
    assert world.hub.shown("agent1") is AgentState.READY


async def test_a_direct_call_keeps_queue_offers_away(world: World) -> None:
    await world.ready("agent1")
    direct = inbound_call("agent1")
    world.desk.offer(direct, "agent1")
    assert world.engine_state("agent1") is AgentState.PAUSED  # held by the desk
    assert world.hub.shown("agent1") is AgentState.RINGING
    queued = await world.queue_call("sales")
    assert world.hub.call_state("agent1", queued.call_id) is None
    await world.desk.answer("agent1", direct.call_id)
    world.caller_hangs_up(direct)
    assert world.hub.shown("agent1") is AgentState.WRAPUP
    world.timers.advance(WRAPUP + 0.1)
    assert world.engine_state("agent1") in (AgentState.READY, AgentState.RINGING)
    assert world.hub.call_state("agent1", queued.call_id) == "ringing"


# -- transfers ---------------------------------------------------------------------------------


async def test_blind_transfer_to_a_queue_hands_the_leg_to_the_acd(world: World) -> None:
    await world.ready("agent3", "agent1")
    call = inbound_call("agent3")
    world.desk.offer(call, "agent3")
    await world.desk.answer("agent3", call.call_id)
    await world.desk.transfer_blind("agent3", call.call_id, "sales")
    assert world.hub.of("call-ended", "agent3")[-1][2:] == (call.call_id, "transferred")
    assert call.call_id in world.acd.callers
    assert world.hub.call_state("agent1", call.call_id) == "ringing"
    assert world.hub.shown("agent3") is AgentState.WRAPUP
    assert world.desk.stats.transfers == 1
    await world.desk.answer("agent1", call.call_id)
    channel = world.hub.channel("agent1")
    assert channel is not None and channel.carrying


async def test_blind_transfer_to_an_agent_rings_it_with_the_same_leg(world: World) -> None:
    await world.ready("agent3", "agent1")
    await world.desk.set_agent_state("agent1", AgentState.PAUSED, None)
    call = inbound_call("agent3")
    world.desk.offer(call, "agent3")
    await world.desk.answer("agent3", call.call_id)
    with pytest.raises(CommandError) as error:
        await world.desk.transfer_blind("agent3", call.call_id, "agent1")  # paused
    assert error.value.code == "unavailable"
    await world.desk.set_agent_state("agent1", AgentState.READY, None)
    in_use = world.pool.in_use
    await world.desk.transfer_blind("agent3", call.call_id, "agent1")
    assert world.hub.call_state("agent1", call.call_id) == "ringing"
    assert world.hub.shown("agent1") is AgentState.RINGING
    await world.desk.answer("agent1", call.call_id)
    assert world.pool.in_use == in_use  # the same leg
    assert [a for a in world.ua.of(call) if a[0] == "answer"] == [
        ("answer", call.call_id, world.desk.calls[(call.call_id, "agent1")].local_sdp)
    ]
    channel = world.hub.channel("agent1")
    assert channel is not None and channel.carrying


async def test_blind_transfer_to_a_number_without_a_trunk_is_referred() -> None:
    world = World(trunk=False)
    await world.ready("agent3")
    call = inbound_call("agent3")
    world.desk.offer(call, "agent3")
    await world.desk.answer("agent3", call.call_id)
    await world.desk.transfer_blind("agent3", call.call_id, "2000")
    ((_, _, target),) = [a for a in world.ua.of(call) if a[0] == "refer"]
    assert target == "<sip:2000@127.0.0.1:5080>"
    world.desk.on_transfer_outcome(call, 200)
    assert ("hangup", call.call_id) in world.ua.actions
    world.close()


async def test_blind_transfer_to_a_number_joins_the_two_legs_when_it_answers(world: World) -> None:
    await world.ready("agent3")
    call = inbound_call("agent3")
    world.desk.offer(call, "agent3")
    await world.desk.answer("agent3", call.call_id)
    await world.desk.transfer_blind("agent3", call.call_id, "2000")
    ((_, _, _, target),) = world.dialled
    assert world.hub.call_state("agent3", call.call_id) is None
    (joined,) = world.desk.joined
    world.desk.on_progress(target, 200, caller_sdp(49300))
    assert joined.bridge is not None
    world.caller_hangs_up(target)
    assert ("hangup", call.call_id) in world.ua.actions
    assert not world.desk.joined


async def test_consult_an_agent_then_complete(world: World) -> None:
    await world.ready("agent3", "agent1")
    call = inbound_call("agent3")
    world.desk.offer(call, "agent3")
    await world.desk.answer("agent3", call.call_id)
    info = await world.desk.transfer_attended_consult("agent3", call.call_id, "agent1")
    world.hub.placed("agent3", info)
    assert world.hub.call_state("agent3", call.call_id) == "held"
    assert world.hub.call_state("agent1", info.call_id) == "ringing"
    incoming = world.hub.of("call-incoming", "agent1")[-1][2]
    assert incoming.direction == "consult-in" and incoming.consult_for.startswith("5551234")
    await world.desk.answer("agent1", info.call_id)
    assert world.hub.shown("agent1") is AgentState.ON_CALL

    await world.desk.transfer_attended_complete("agent3", call.call_id)
    assert world.hub.call_state("agent1", call.call_id) == "active"
    assert world.hub.of("call-joined", "agent1")
    channel = world.hub.channel("agent1")
    assert channel is not None and channel.carrying
    assert world.hub.call_state("agent3", call.call_id) is None
    assert world.hub.shown("agent3") is AgentState.WRAPUP


async def test_consult_an_agent_who_declines(world: World) -> None:
    await world.ready("agent3", "agent1")
    call = inbound_call("agent3")
    world.desk.offer(call, "agent3")
    await world.desk.answer("agent3", call.call_id)
    info = await world.desk.transfer_attended_consult("agent3", call.call_id, "agent1")
    world.hub.placed("agent3", info)
    await world.desk.hangup("agent1", info.call_id)
    assert world.hub.of("call-ended", "agent3")[-1][2:] == (info.call_id, "declined")
    assert world.hub.call_state("agent3", call.call_id) == "held"  # still held
    assert world.hub.shown("agent1") is AgentState.READY
    channel = world.hub.channel("agent3")
    assert channel is not None and channel.carrying  # back on the held caller


async def test_consulting_a_queue_is_refused(world: World) -> None:
    await world.ready("agent3")
    call = inbound_call("agent3")
    world.desk.offer(call, "agent3")
    await world.desk.answer("agent3", call.call_id)
    with pytest.raises(CommandError) as error:
        await world.desk.transfer_attended_consult("agent3", call.call_id, "sales")
    assert error.value.code == "bad-target"


async def test_manual_dial_joins_the_agent_when_the_number_answers(world: World) -> None:
    await world.ready("agent3")
    info = await world.desk.dial("agent3", "5550009")
    ((_, _, _, outbound),) = world.dialled
    world.hub.placed("agent3", info)
    world.desk.on_progress(outbound, 200, caller_sdp(49400))
    assert world.hub.shown("agent3") is AgentState.ON_CALL
    channel = world.hub.channel("agent3")
    assert channel is not None and channel.carrying
    world.caller_hangs_up(outbound)
    assert world.hub.shown("agent3") is AgentState.WRAPUP


# -- web callers -------------------------------------------------------------------------------


def visitor(name: str = "Ana") -> WebCallerInfo:
    return WebCallerInfo("198.51.100.7", name, False, WebCaller("web"))


async def test_web_caller_rings_the_agent_its_target_names_and_is_joined_on_answer(
    world: World,
) -> None:
    await world.ready("agent3")
    call_id = await world.desk.web_call("agent3", visitor())
    assert world.hub.call_state("agent3", call_id) == "ringing"
    info = world.hub.of("call-incoming", "agent3")[-1][2]
    assert (info.caller_number, info.caller_name) == ("web", "Ana")
    assert world.hub.shown("agent3") is AgentState.RINGING
    await world.desk.answer("agent3", call_id)
    assert world.hub.call_state("agent3", call_id) == "active"
    assert world.hub.shown("agent3") is AgentState.ON_CALL
    channel = world.hub.channel("agent3")
    assert channel is not None and channel.carrying and channel.attached_rate == 48000

    await world.desk.web_hangup(call_id)
    assert world.hub.of("call-ended", "agent3")[-1][2:] == (call_id, "caller-hangup")
    assert not channel.carrying
    assert world.hub.shown("agent3") is AgentState.WRAPUP


async def test_web_call_to_nobody_ready_is_refused(world: World) -> None:
    await world.hub.login("agent3")  # paused
    with pytest.raises(CommandError) as error:
        await world.desk.web_call("agent3", visitor())
    assert error.value.code == "unavailable"
    with pytest.raises(CommandError):
        await world.desk.web_call("sales-page", visitor())  # names no agent
    assert world.desk.stats.refused == 2


async def test_web_caller_unanswered_rings_out(world: World) -> None:
    await world.ready("agent3")
    call_id = await world.desk.web_call("agent3", visitor())
    world.timers.advance(RING + 0.1)
    assert world.hub.of("call-ended", "agent3")[-1][2:] == (call_id, "no-answer")
    assert world.hub.shown("agent3") is AgentState.READY


async def test_a_pause_asked_in_queue_wrapup_shows_when_the_engine_applies_it(
    world: World,
) -> None:
    await world.ready("agent1", "agent2")
    call = await world.queue_call()
    await world.desk.answer("agent1", call.call_id)
    world.caller_hangs_up(call)
    assert world.hub.shown("agent1") is AgentState.WRAPUP
    await world.desk.set_agent_state("agent1", AgentState.PAUSED, "lunch")
    assert world.engine_state("agent1") is AgentState.WRAPUP  # the engine pauses it after
    assert world.hub.shown("agent1") is AgentState.WRAPUP  # the page shows the engine's state
    world.timers.advance(QUEUE_WRAPUP + 0.1)
    assert world.engine_state("agent1") is AgentState.PAUSED
    assert world.hub.of("state", "agent1")[-1] == ("state", "agent1", "paused", "lunch")


def test_the_fake_hub_has_the_real_hubs_push_methods_and_signatures() -> None:
    """The fake stays honest: every method the desk calls on it exists on `AgentHub`, with the
    same parameters."""
    own = {"login", "shown", "call_state", "of", "placed"}  # the tests' side of the fake
    for name, method in inspect.getmembers(FakeHub, inspect.isfunction):
        if name.startswith("_") or name in own:
            continue
        real = getattr(AgentHub, name)
        assert list(inspect.signature(method).parameters) == list(
            inspect.signature(real).parameters
        ), name
