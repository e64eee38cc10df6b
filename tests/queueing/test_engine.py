"""Simulated-time tests of every queue option: who is offered what, and when."""

from __future__ import annotations

from typing import Any

import pytest

from queueing.config import Destination, DestinationKind
from queueing.engine import AcdEngine, CallerState
from queueing.events import (
    AgentState,
    AgentStateChanged,
    Announce,
    CallbackDial,
    CancelOffer,
    Joined,
    LogEvent,
    OfferCall,
    Overflow,
    Overflowed,
)
from queueing.exceptions import (
    AgentStateError,
    DuplicateCallError,
    UnknownAgentError,
    UnknownQueueError,
)

from .sim import Recorder, log, make_engine, of_type


def support(**options: Any) -> dict[str, dict[str, Any]]:
    options.setdefault("members", ["a1", "a2"])
    options.setdefault("strategy", "linear")
    return {"support": options}


def offers(engine: AcdEngine) -> list[tuple[str, str]]:
    return [(e.call_id, e.agent) for e in of_type(engine.events(), OfferCall)]


def assert_no_ghost(engine: AcdEngine, queue: str = "support") -> None:
    status = engine.queue_status(queue, 1e9)
    assert (status.waiting, status.ringing, status.callbacks) == (0, 0, 0)
    assert status.members_busy == 0


# -- order ------------------------------------------------------------------------------------


def test_higher_priority_caller_is_offered_first_then_arrival_order() -> None:
    engine = make_engine(support(members=["a1"]))
    engine.agent_pause("a1", "x", 0.0)
    engine.caller_enter("low1", "support", 1.0)
    engine.caller_enter("low2", "support", 2.0)
    engine.caller_enter("high", "support", 3.0, priority=5)
    engine.caller_enter("high2", "support", 4.0, priority=5)
    assert engine.position("high") == 1
    assert engine.position("low2") == 4
    engine.agent_unpause("a1", 10.0)
    served = []
    for t in range(4):
        ((call_id, _),) = offers(engine)
        served.append(call_id)
        engine.offer_answered(call_id, "a1", 20.0 + t)
        engine.call_completed(call_id, "a1", 21.0 + t)
    assert served == ["high", "high2", "low1", "low2"]


def test_join_result_reports_position_counting_higher_priorities() -> None:
    engine = make_engine(support(), login=False)
    assert engine.caller_enter("c1", "support", 1.0) == Joined("c1", "support", 1)
    assert engine.caller_enter("c2", "support", 2.0, priority=1) == Joined("c2", "support", 1)
    assert engine.caller_enter("c3", "support", 3.0) == Joined("c3", "support", 3)
    assert [engine.position(c) for c in ("c1", "c2", "c3")] == [2, 1, 3]


def test_agent_in_two_queues_is_offered_the_caller_who_waited_longest() -> None:
    queues = {
        "support": {"members": ["a1"]},
        "sales": {"members": ["a1"]},
    }
    engine = make_engine(queues)
    engine.agent_pause("a1", "x", 0.0)
    engine.caller_enter("sales-old", "sales", 1.0)
    engine.caller_enter("support-new", "support", 2.0)
    engine.caller_enter("sales-new", "sales", 3.0)
    engine.agent_unpause("a1", 5.0)
    assert offers(engine) == [("sales-old", "a1")]
    engine.offer_answered("sales-old", "a1", 6.0)
    engine.call_completed("sales-old", "a1", 7.0)
    assert offers(engine) == [("support-new", "a1")]


def test_priority_beats_wait_time_across_queues() -> None:
    engine = make_engine({"support": {"members": ["a1"]}, "sales": {"members": ["a1"]}})
    engine.agent_pause("a1", "x", 0.0)
    engine.caller_enter("old", "sales", 1.0)
    engine.caller_enter("vip", "support", 2.0, priority=3)
    engine.agent_unpause("a1", 5.0)
    assert offers(engine) == [("vip", "a1")]


# -- penalty ----------------------------------------------------------------------------------


def test_penalty_escalation_offers_higher_penalty_members_after_the_wait() -> None:
    members = [{"agent": "a1", "penalty": 0}, {"agent": "a2", "penalty": 2}]
    engine = make_engine(
        support(members=members, max_penalty=0, escalation=[{"after": 30, "max_penalty": 2}])
    )
    engine.agent_pause("a1", "x", 0.0)
    engine.caller_enter("c1", "support", 10.0)
    assert offers(engine) == []
    assert engine.get_timer() == 40.0
    engine.handle_timer(39.9)
    assert offers(engine) == []
    engine.handle_timer(40.0)
    assert offers(engine) == [("c1", "a2")]


def test_agent_member_of_many_queues_with_different_penalties() -> None:
    queues = {
        "support": {"members": [{"agent": "a1", "penalty": 0}], "max_penalty": 0},
        "sales": {
            "members": [{"agent": "a1", "penalty": 3}],
            "max_penalty": 1,
            "escalation": [{"after": 60, "max_penalty": 3}],
        },
    }
    engine = make_engine(queues)
    engine.caller_enter("s1", "sales", 0.0)
    assert offers(engine) == []
    engine.caller_enter("p1", "support", 1.0)
    assert offers(engine) == [("p1", "a1")]
    engine.offer_answered("p1", "a1", 2.0)
    engine.call_completed("p1", "a1", 10.0)
    assert offers(engine) == []
    engine.handle_timer(60.0)
    assert offers(engine) == [("s1", "a1")]


def test_lower_penalty_member_is_preferred_when_both_are_ready() -> None:
    members = [{"agent": "a1", "penalty": 1}, {"agent": "a2", "penalty": 0}]
    engine = make_engine(support(members=members))
    engine.caller_enter("c1", "support", 1.0)
    assert offers(engine) == [("c1", "a2")]
    engine.caller_enter("c2", "support", 2.0)
    assert offers(engine) == [("c2", "a1")]


# -- ring timeout, retry, auto-pause -------------------------------------------------------------


def test_ring_timeout_logs_no_answer_and_offers_the_next_member_at_once() -> None:
    engine = make_engine(support(ring_timeout=15, retry=5))
    rec = Recorder(engine)
    engine.caller_enter("c1", "support", 0.0)
    assert [(e.call_id, e.agent) for e in of_type(rec.drain(), OfferCall)] == [("c1", "a1")]
    events = rec.run_until(15.0)
    assert of_type(events, CancelOffer) == [CancelOffer("c1", "a1", "timeout")]
    assert [(e.agent, e.data["reason"]) for e in log(events, LogEvent.NO_ANSWER)] == [
        ("a1", "timeout")
    ]
    assert [(e.call_id, e.agent) for e in of_type(events, OfferCall)] == [("c1", "a2")]


def test_member_who_did_not_answer_is_offered_the_caller_again_after_retry() -> None:
    engine = make_engine(support(members=["a1"], ring_timeout=15, retry=5))
    rec = Recorder(engine)
    engine.caller_enter("c1", "support", 0.0)
    rec.drain()
    events = rec.run_until(15.0)
    assert of_type(events, OfferCall) == []
    assert engine.agent_status("a1").state is AgentState.READY
    events = rec.run_until(20.0)
    assert [e.agent for e in of_type(events, OfferCall)] == ["a1"]


def test_barred_member_still_gets_the_next_caller_behind() -> None:
    engine = make_engine(support(members=["a1"], retry=30))
    engine.caller_enter("c1", "support", 0.0)
    engine.caller_enter("c2", "support", 1.0)
    assert offers(engine) == [("c1", "a1")]
    engine.offer_rejected("c1", "a1", 2.0)
    assert offers(engine) == [("c2", "a1")]
    assert engine.position("c1") == 1


def test_rejected_offer_counts_as_unanswered_and_auto_pauses_after_n() -> None:
    engine = make_engine(support(members=["a1"], autopause=2, retry=0))
    rec = Recorder(engine)
    engine.caller_enter("c1", "support", 0.0)
    rec.drain()
    assert engine.offer_rejected("c1", "a1", 1.0)
    assert engine.agent_status("a1").state is AgentState.RINGING  # offered again, retry 0
    rec.drain()
    rec.run_until(16.0)
    status = engine.agent_status("a1")
    assert (status.state, status.reason) == (AgentState.PAUSED, "autopause")
    assert [e.data["reason"] for e in log(rec.all, LogEvent.PAUSE)] == ["autopause"]
    assert engine.call_state("c1") is CallerState.WAITING


def test_answer_resets_the_unanswered_count() -> None:
    engine = make_engine(support(members=["a1"], autopause=2, retry=0))
    for i in range(3):
        engine.caller_enter(f"c{i}", "support", 100.0 * i)
        engine.offer_rejected(f"c{i}", "a1", 100.0 * i + 1)
        assert engine.offer_answered(f"c{i}", "a1", 100.0 * i + 2)
        engine.call_completed(f"c{i}", "a1", 100.0 * i + 3)
    assert engine.agent_status("a1").state is AgentState.READY


# -- wrap-up ----------------------------------------------------------------------------------


def test_wrapup_per_queue_and_agent_override() -> None:
    engine = make_engine(support(wrapup=10), agents={"a1": {"wrapup": 3}, "a2": {}})
    engine.caller_enter("c1", "support", 0.0)
    engine.caller_enter("c2", "support", 0.0)
    engine.offer_answered("c1", "a1", 1.0)
    engine.offer_answered("c2", "a2", 1.0)
    engine.call_completed("c1", "a1", 5.0)
    engine.call_completed("c2", "a2", 5.0)
    assert engine.agent_status("a1").state is AgentState.WRAPUP
    engine.handle_timer(8.0)
    assert engine.agent_status("a1").state is AgentState.READY
    assert engine.agent_status("a2").state is AgentState.WRAPUP
    engine.handle_timer(15.0)
    assert engine.agent_status("a2").state is AgentState.READY


def test_agent_ready_cuts_wrapup_short_and_takes_the_next_caller() -> None:
    engine = make_engine(support(members=["a1"], wrapup=60))
    engine.caller_enter("c1", "support", 0.0)
    engine.caller_enter("c2", "support", 0.0)
    engine.offer_answered("c1", "a1", 1.0)
    engine.call_completed("c1", "a1", 5.0)
    offers(engine)
    engine.agent_ready("a1", 6.0)
    assert offers(engine) == [("c2", "a1")]


def test_transfer_out_logs_transfer_and_starts_wrapup() -> None:
    engine = make_engine(support(members=["a1"], wrapup=5))
    engine.caller_enter("c1", "support", 0.0)
    engine.offer_answered("c1", "a1", 1.0)
    assert engine.call_transferred("c1", "a1", "pbx:2001", 30.0)
    (entry,) = log(engine.events(), LogEvent.TRANSFER)
    assert entry.data == {"wait": 1.0, "talk": 29.0, "destination": "pbx:2001"}
    assert engine.agent_status("a1").state is AgentState.WRAPUP
    assert not engine.call_completed("c1", "a1", 31.0)


# -- limits and overflow ----------------------------------------------------------------------


def test_full_queue_overflows_to_its_destination() -> None:
    engine = make_engine(support(max_callers=1, overflow={"record": "support-vm"}), login=False)
    assert isinstance(engine.caller_enter("c1", "support", 0.0), Joined)
    result = engine.caller_enter("c2", "support", 1.0)
    destination = Destination(DestinationKind.RECORD, "support-vm")
    assert result == Overflowed("c2", "support", destination, "full")
    events = engine.events()
    assert of_type(events, Overflow) == [Overflow("c2", "support", destination, "full")]
    assert engine.call_state("c2") is CallerState.GONE


def test_overflow_to_another_queue_enters_the_caller_there() -> None:
    queues: dict[str, dict[str, Any]] = {
        "support": {"members": ["a1"], "max_callers": 1, "overflow": {"queue": "sales"}},
        "sales": {"members": ["a2"], "overflow": {"number": "5551234", "trunk": "pbx"}},
    }
    engine = make_engine(queues, login=False)
    engine.caller_enter("c1", "support", 0.0)
    assert engine.caller_enter("c2", "support", 1.0) == Joined("c2", "sales", 1)
    assert engine.call_queue("c2") == "sales"
    engine.agent_login("a2", 2.0)
    assert offers(engine) == [("c2", "a2")]


def test_max_wait_exits_with_timeout_and_overflows() -> None:
    engine = make_engine(support(max_wait=60, overflow={"hangup": "closed"}), login=False)
    rec = Recorder(engine)
    engine.caller_enter("c1", "support", 0.0)
    events = rec.run_until(60.0)
    assert [e.event for e in log(events)] == [
        LogEvent.ENTER,
        LogEvent.EXIT_TIMEOUT,
        LogEvent.OVERFLOW,
    ]
    assert of_type(events, Overflow)[0].destination == Destination(DestinationKind.HANGUP, "closed")
    assert engine.call_state("c1") is CallerState.GONE
    assert engine.get_timer() is None


def test_max_wait_while_ringing_cancels_the_offer() -> None:
    engine = make_engine(support(members=["a1"], max_wait=10, ring_timeout=30))
    rec = Recorder(engine)
    engine.caller_enter("c1", "support", 0.0)
    events = rec.run_until(10.0)
    assert of_type(events, CancelOffer) == [CancelOffer("c1", "a1", "overflow")]
    assert engine.agent_status("a1").state is AgentState.READY
    assert not engine.offer_answered("c1", "a1", 11.0)
    assert_no_ghost(engine)


def test_join_empty_false_refuses_when_no_member_is_logged_in_and_unpaused() -> None:
    engine = make_engine(support(members=["a1"], join_empty=False), login=False)
    assert isinstance(engine.caller_enter("c1", "support", 0.0), Overflowed)
    engine.agent_login("a1", 1.0, paused_reason="meeting")
    result = engine.caller_enter("c2", "support", 2.0)
    assert isinstance(result, Overflowed) and result.reason == "join-empty"
    engine.agent_unpause("a1", 3.0)
    engine.agent_pause("a1", "x", 3.5)
    engine.agent_unpause("a1", 4.0)
    assert isinstance(engine.caller_enter("c3", "support", 5.0), Joined)


def test_leave_when_empty_sends_waiting_callers_out_when_the_last_member_goes() -> None:
    engine = make_engine(
        support(members=["a1"], leave_when_empty=True, overflow={"agent": "a2"}),
        agents=["a1", "a2"],
    )
    engine.caller_enter("c1", "support", 0.0)
    engine.caller_enter("c2", "support", 1.0)
    engine.caller_enter("c3", "support", 1.0)
    engine.callback_request("c3", "5550001", 2.0)
    engine.events()
    engine.agent_logout("a1", 3.0)
    events = engine.events()
    assert [(o.call_id, o.reason) for o in of_type(events, Overflow)] == [
        ("c1", "leave-empty"),
        ("c2", "leave-empty"),
    ]
    assert of_type(events, CancelOffer) == [CancelOffer("c1", "a1", "logout")]
    assert [e.call_id for e in log(events, LogEvent.EXIT_EMPTY)] == ["c1", "c2"]
    assert engine.queue_status("support", 3.0).callbacks == 1


# -- abandon at any moment ----------------------------------------------------------------------


def test_abandon_while_waiting_leaves_no_ghost() -> None:
    engine = make_engine(support(), login=False)
    engine.caller_enter("c1", "support", 0.0)
    assert engine.caller_abandon("c1", 5.0)
    (entry,) = log(engine.events(), LogEvent.ABANDON)
    assert entry.data == {"wait": 5.0, "position": 1, "state": "waiting"}
    assert not engine.caller_abandon("c1", 6.0)
    assert_no_ghost(engine)
    engine.agent_login("a1", 7.0)
    assert offers(engine) == []


def test_abandon_while_ringing_all_cancels_every_offer_and_frees_the_agents() -> None:
    engine = make_engine(support(strategy="ringall"))
    engine.caller_enter("c1", "support", 0.0)
    engine.events()
    engine.caller_abandon("c1", 3.0)
    assert of_type(engine.events(), CancelOffer) == [
        CancelOffer("c1", "a1", "abandoned"),
        CancelOffer("c1", "a2", "abandoned"),
    ]
    assert not engine.offer_answered("c1", "a1", 3.1)
    assert {engine.agent_status(a).state for a in ("a1", "a2")} == {AgentState.READY}
    assert engine.get_timer() is None
    assert_no_ghost(engine)


def test_abandon_while_ringing_offers_the_freed_agent_the_next_caller() -> None:
    engine = make_engine(support(members=["a1"]))
    engine.caller_enter("c1", "support", 0.0)
    engine.caller_enter("c2", "support", 1.0)
    engine.events()
    engine.caller_abandon("c1", 2.0)
    assert offers(engine) == [("c2", "a1")]


def test_abandon_during_an_announcement_cancels_its_timers() -> None:
    engine = make_engine(support(announce_frequency=20, max_wait=600), login=False)
    rec = Recorder(engine)
    engine.caller_enter("c1", "support", 0.0)
    events = rec.run_until(20.0)
    assert of_type(events, Announce) == [Announce("c1", "support", 1, None)]
    engine.caller_abandon("c1", 20.5)
    assert engine.get_timer() is None
    assert_no_ghost(engine)


def test_hang_up_while_on_call_completes_the_call() -> None:
    engine = make_engine(support(members=["a1"], wrapup=5))
    engine.caller_enter("c1", "support", 0.0)
    engine.offer_answered("c1", "a1", 1.0)
    assert engine.caller_abandon("c1", 40.0)
    (entry,) = log(engine.events(), LogEvent.COMPLETE)
    assert entry.data["reason"] == "caller"
    assert engine.agent_status("a1").state is AgentState.WRAPUP


# -- callback ---------------------------------------------------------------------------------


def test_callback_keeps_the_callers_place_and_dials_when_its_turn_comes() -> None:
    engine = make_engine(support(members=["a1"], max_wait=30, announce_frequency=10))
    engine.agent_pause("a1", "x", 0.0)
    engine.caller_enter("c1", "support", 1.0, caller_name="Zoe")
    engine.caller_enter("c2", "support", 2.0)
    assert engine.callback_request("c1", "5551000", 3.0)
    engine.events()
    engine.handle_timer(100.0)  # c2 timed out; c1 (virtual) is exempt from max wait
    assert engine.call_state("c1") is CallerState.WAITING
    assert engine.call_state("c2") is CallerState.GONE
    engine.caller_enter("c3", "support", 101.0)
    engine.agent_unpause("a1", 102.0)
    events = engine.events()
    (dial,) = of_type(events, CallbackDial)
    assert (dial.call_id, dial.agent, dial.number, dial.caller_name) == (
        "c1",
        "a1",
        "5551000",
        "Zoe",
    )
    assert of_type(events, OfferCall) == []
    assert engine.offer_answered("c1", "a1", 103.0)
    assert engine.call_completed("c1", "a1", 200.0)
    assert offers(engine) == [("c3", "a1")]


def test_callback_requested_while_ringing_cancels_the_offer_and_keeps_the_place() -> None:
    engine = make_engine(support(members=["a1"]))
    engine.caller_enter("c1", "support", 0.0)
    engine.caller_enter("c2", "support", 1.0)
    engine.events()
    engine.callback_request("c1", "5551000", 2.0)
    events = engine.events()
    assert of_type(events, CancelOffer) == [CancelOffer("c1", "a1", "callback")]
    assert [e.call_id for e in of_type(events, CallbackDial)] == ["c1"]
    assert engine.position("c2") == 2


# -- announcements ----------------------------------------------------------------------------


def test_periodic_announcements_give_position_and_estimated_wait() -> None:
    engine = make_engine(support(members=["a1"], announce_frequency=30))
    rec = Recorder(engine)
    engine.caller_enter("c0", "support", 0.0)
    engine.offer_answered("c0", "a1", 1.0)
    engine.caller_enter("c1", "support", 2.0)
    engine.caller_enter("c2", "support", 3.0)
    engine.caller_enter("c3", "support", 4.0)
    engine.call_completed("c0", "a1", 21.0)  # handle time 20 s, one member
    engine.offer_answered("c1", "a1", 22.0)
    rec.drain()
    events = rec.run_until(34.0)
    assert of_type(events, Announce) == [
        Announce("c2", "support", 1, 20.0),
        Announce("c3", "support", 2, 40.0),
    ]
    events = rec.run_until(63.0)
    assert [a.call_id for a in of_type(events, Announce)] == ["c2"]


# -- agents -----------------------------------------------------------------------------------


def test_pause_while_ringing_cancels_the_offer_and_offers_another_member() -> None:
    engine = make_engine(support())
    engine.caller_enter("c1", "support", 0.0)
    engine.events()
    engine.force_pause("a1", "coaching", 1.0, supervisor="sup1")
    events = engine.events()
    assert of_type(events, CancelOffer) == [CancelOffer("c1", "a1", "paused")]
    assert [(e.call_id, e.agent) for e in of_type(events, OfferCall)] == [("c1", "a2")]
    (pause,) = log(events, LogEvent.PAUSE)
    assert pause.data == {"reason": "coaching", "by": "sup1"}
    assert engine.agent_status("a1").reason == "coaching"


def test_pause_during_a_call_takes_effect_after_wrapup() -> None:
    engine = make_engine(support(members=["a1"], wrapup=5))
    engine.caller_enter("c1", "support", 0.0)
    engine.offer_answered("c1", "a1", 1.0)
    engine.agent_pause("a1", "lunch", 2.0)
    assert engine.agent_status("a1").state is AgentState.ON_CALL
    engine.call_completed("c1", "a1", 10.0)
    engine.handle_timer(15.0)
    states = [e.state for e in of_type(engine.events(), AgentStateChanged)]
    assert states == [AgentState.RINGING, AgentState.ON_CALL, AgentState.WRAPUP, AgentState.PAUSED]


def test_force_logout_during_a_call_lets_the_call_finish_without_wrapup() -> None:
    engine = make_engine(support(members=["a1"], wrapup=5))
    engine.caller_enter("c1", "support", 0.0)
    engine.offer_answered("c1", "a1", 1.0)
    engine.force_logout("a1", 2.0, supervisor="sup1")
    (logout,) = log(engine.events(), LogEvent.LOGOUT)
    assert logout.data == {"reason": "forced by sup1"}
    assert engine.call_completed("c1", "a1", 9.0)
    assert engine.agent_status("a1").state is AgentState.LOGGED_OUT
    assert engine.get_timer() is None


def test_logout_while_ringing_puts_the_caller_back_in_its_place() -> None:
    engine = make_engine(support(members=["a1"]))
    engine.caller_enter("c1", "support", 0.0)
    engine.agent_logout("a1", 1.0)
    assert engine.call_state("c1") is CallerState.WAITING
    assert engine.position("c1") == 1
    engine.agent_login("a1", 2.0)
    assert offers(engine)[-1] == ("c1", "a1")


def test_usage_errors_are_local_errors() -> None:
    engine = make_engine(support(), login=False)
    with pytest.raises(UnknownAgentError):
        engine.agent_login("nobody", 0.0)
    with pytest.raises(UnknownQueueError):
        engine.caller_enter("c1", "nowhere", 0.0)
    engine.caller_enter("c1", "support", 0.0)
    with pytest.raises(DuplicateCallError):
        engine.caller_enter("c1", "support", 0.0)
    with pytest.raises(AgentStateError):
        engine.agent_pause("a1", "x", 0.0)
    engine.agent_login("a1", 0.0)
    with pytest.raises(AgentStateError):
        engine.agent_login("a1", 0.0)


def test_stale_answers_and_completions_return_false() -> None:
    engine = make_engine(support(members=["a1"]), agents=["a1", "a2"])
    assert not engine.offer_answered("nope", "a1", 0.0)
    engine.caller_enter("c1", "support", 0.0)
    assert not engine.offer_answered("c1", "a2", 0.0)
    assert not engine.call_completed("c1", "a1", 0.0)
    assert engine.offer_answered("c1", "a1", 1.0)
    assert not engine.offer_answered("c1", "a1", 1.0)
    assert not engine.call_completed("c1", "a2", 2.0)


def test_timers_fire_in_order_at_their_own_time() -> None:
    engine = make_engine(support(members=["a1"], max_wait=50, announce_frequency=20), login=False)
    assert engine.get_timer() is None
    engine.caller_enter("c1", "support", 0.0)
    engine.events()
    engine.handle_timer(1000.0)
    entries = log(engine.events())
    assert [(e.event, e.time) for e in entries] == [
        (LogEvent.EXIT_TIMEOUT, 50.0),
        (LogEvent.OVERFLOW, 50.0),
    ]


# -- regressions found by the property tests ---------------------------------------------------


def test_callers_escalating_at_the_same_instant_are_offered_in_priority_order() -> None:
    members = [{"agent": "a1", "penalty": 1}]
    engine = make_engine(
        support(members=members, max_penalty=0, escalation=[{"after": 10, "max_penalty": 2}])
    )
    engine.caller_enter("low", "support", 0.0)
    engine.caller_enter("high", "support", 0.0, priority=1)
    engine.handle_timer(10.0)
    assert offers(engine) == [("high", "a1")]


def test_barred_head_does_not_let_a_later_caller_jump_another_queue() -> None:
    queues = {"support": {"members": ["a1"], "retry": 30}, "sales": {"members": ["a1"]}}
    engine = make_engine(queues)
    engine.caller_enter("s1", "support", 0.0)
    engine.caller_enter("x1", "sales", 1.0)
    engine.caller_enter("s2", "support", 2.0)
    engine.events()
    engine.offer_rejected("s1", "a1", 3.0)
    assert offers(engine) == [("x1", "a1")]


def test_agent_logging_back_in_during_its_call_is_on_that_call() -> None:
    engine = make_engine(support(members=["a1"]))
    engine.caller_enter("c1", "support", 0.0)
    engine.offer_answered("c1", "a1", 1.0)
    engine.agent_logout("a1", 2.0)
    engine.caller_enter("c2", "support", 3.0)
    engine.events()
    engine.agent_login("a1", 4.0)
    assert engine.agent_status("a1").state is AgentState.ON_CALL
    assert offers(engine) == []
    engine.call_completed("c1", "a1", 5.0)
    assert offers(engine) == [("c2", "a1")]
