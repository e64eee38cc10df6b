"""Runtime administration of the engine: agents, queues and members change while callers wait;
callers keep their order, no agent is offered two callers, a call in progress goes on."""

from __future__ import annotations

from dataclasses import replace

import pytest

from queueing.config import AgentConfig, MemberConfig, QueueConfig, Strategy
from queueing.engine import AcdEngine, CallerState
from queueing.events import AgentState, CancelOffer, LogEvent, OfferCall, Overflow
from queueing.exceptions import AcdUsageError, AgentStateError

from .sim import log, make_engine, of_type


def offers(engine: AcdEngine) -> list[tuple[str, str]]:
    return [(e.call_id, e.agent) for e in of_type(engine.events(), OfferCall)]


def assert_one_call_per_agent(engine: AcdEngine, agents: list[str]) -> None:
    """No agent rings or talks for two callers, and every ringing agent has its caller."""
    for agent in agents:
        status = engine.agent_status(agent)
        if status.state in (AgentState.RINGING, AgentState.ON_CALL):
            assert status.call_id
            assert engine.call_state(status.call_id) is not CallerState.GONE


def test_a_ready_agent_added_to_a_queue_is_offered_its_waiting_caller_at_once() -> None:
    engine = make_engine({"support": {"members": ["a1"]}}, ["a1", "a2"])
    engine.agent_pause("a1", "lunch", 0.0)
    engine.agent_ready("a2", 0.0)
    engine.caller_enter("c1", "support", 1.0)
    engine.events()
    engine.set_member("support", "a2", 0, 2.0)
    assert offers(engine) == [("c1", "a2")]
    assert engine.config.queues["support"].member("a2") == MemberConfig("a2", 0)
    assert engine.agent_status("a2").queues == ("support",)


def test_a_logged_out_agent_added_to_a_queue_is_offered_once_it_logs_in() -> None:
    engine = make_engine({"support": {"members": []}}, ["a1"], login=False)
    engine.caller_enter("c1", "support", 1.0)
    engine.set_member("support", "a1", 0, 2.0)
    assert offers(engine) == []
    assert engine.queue_status("support", 2.0).members_logged_in == 0
    engine.agent_login("a1", 3.0)
    assert offers(engine) == [("c1", "a1")]


def test_a_new_agent_created_at_run_time_takes_calls_of_its_queues() -> None:
    engine = make_engine({"support": {"members": []}}, [], login=False)
    engine.caller_enter("c1", "support", 1.0)
    engine.add_agent(AgentConfig("new1", "New"), 2.0)
    engine.set_member("support", "new1", 0, 2.0)
    engine.agent_login("new1", 3.0)
    assert offers(engine) == [("c1", "new1")]
    with pytest.raises(AcdUsageError):
        engine.add_agent(AgentConfig("new1"), 4.0)


def test_removing_a_ringing_member_withdraws_its_offer_and_the_caller_goes_to_another() -> None:
    engine = make_engine(
        {"support": {"members": ["a1", "a2"], "strategy": "linear"}, "sales": {"members": ["a1"]}}
    )
    engine.agent_pause("a2", "x", 0.0)
    engine.caller_enter("c1", "support", 1.0)
    engine.caller_enter("s1", "sales", 1.5)
    assert offers(engine) == [("c1", "a1")]
    engine.agent_unpause("a2", 2.0)
    engine.events()
    engine.remove_member("support", "a1", 3.0)
    events = engine.events()
    assert [(e.call_id, e.agent, e.reason) for e in of_type(events, CancelOffer)] == [
        ("c1", "a1", "member-removed")
    ]
    # c1 waits again in its place; a2 (still a member) gets it; a1 is free for sales.
    assert sorted((e.call_id, e.agent) for e in of_type(events, OfferCall)) == [
        ("c1", "a2"),
        ("s1", "a1"),
    ]
    assert engine.agent_status("a1").queues == ("sales",)
    assert_one_call_per_agent(engine, ["a1", "a2"])


def test_a_removed_member_on_a_call_keeps_its_call_until_it_ends() -> None:
    engine = make_engine({"support": {"members": ["a1"], "wrapup": 0}})
    engine.caller_enter("c1", "support", 1.0)
    engine.offer_answered("c1", "a1", 2.0)
    engine.events()
    assert engine.remove_member("support", "a1", 3.0)
    assert engine.agent_status("a1").state is AgentState.ON_CALL
    assert engine.call_completed("c1", "a1", 10.0)
    assert engine.agent_status("a1").state is AgentState.READY
    assert engine.remove_member("support", "a1", 11.0) is False


def test_a_strategy_change_keeps_the_waiting_callers_in_their_order() -> None:
    engine = make_engine({"support": {"members": ["a1", "a2"], "strategy": "ringall"}})
    for agent in ("a1", "a2"):
        engine.agent_pause(agent, "x", 0.0)
    for index, call in enumerate(["c1", "c2", "c3", "c4"]):
        engine.caller_enter(call, "support", 1.0 + index, priority=1 if call == "c3" else 0)
    before = [engine.position(c) for c in ("c1", "c2", "c3", "c4")]
    config = engine.config.queues["support"]
    engine.update_queue(replace(config, strategy=Strategy.LINEAR), 10.0)
    assert [engine.position(c) for c in ("c1", "c2", "c3", "c4")] == before == [2, 3, 1, 4]
    assert engine.config.queues["support"].strategy is Strategy.LINEAR
    engine.events()
    served = []
    now = 11.0
    engine.agent_unpause("a1", now)
    while (got := offers(engine)) and now < 100:
        assert len(got) == 1  # linear: one member at a time, never ringall's two
        call, agent = got[0]
        served.append(call)
        engine.offer_answered(call, agent, now + 1)
        engine.call_completed(call, agent, now + 2)
        now += 3
    assert served == ["c3", "c1", "c2", "c4"]


def test_new_limits_apply_to_callers_already_waiting_from_their_arrival() -> None:
    engine = make_engine({"support": {"members": ["a1"]}})
    engine.agent_pause("a1", "x", 0.0)
    engine.caller_enter("c1", "support", 0.0)
    engine.caller_enter("c2", "support", 50.0)
    engine.events()
    config = engine.config.queues["support"]
    engine.update_queue(replace(config, max_wait=60.0), 55.0)
    assert engine.get_timer() == 60.0  # c1 entered at 0
    engine.handle_timer(60.0)
    assert [e.call_id for e in of_type(engine.events(), Overflow)] == ["c1"]
    engine.handle_timer(engine.get_timer() or 0.0)
    assert [e.call_id for e in of_type(engine.events(), Overflow)] == ["c2"]


def test_members_replaced_by_a_queue_update_follow_the_new_order_and_penalties() -> None:
    engine = make_engine({"support": {"members": ["a1", "a2"], "strategy": "linear"}}, ["a1", "a2"])
    config = engine.config.queues["support"]
    members = (MemberConfig("a2", 0), MemberConfig("a1", 1))
    engine.update_queue(replace(config, members=members), 1.0)
    assert engine.config.queues["support"].members == members
    engine.caller_enter("c1", "support", 2.0)
    assert offers(engine) == [("c1", "a2")]


def test_a_queue_is_removed_only_when_nobody_waits_in_it() -> None:
    engine = make_engine({"support": {"members": ["a1"]}, "sales": {"members": ["a1"]}})
    engine.agent_pause("a1", "x", 0.0)
    engine.caller_enter("c1", "support", 1.0)
    with pytest.raises(AcdUsageError):
        engine.remove_queue("support", 2.0)
    assert engine.caller_abandon("c1", 3.0)
    engine.remove_queue("support", 4.0)
    assert "support" not in engine.config.queues
    assert engine.agent_status("a1").queues == ("sales",)
    assert engine.queue_status("sales", 4.0).members_logged_in == 1


def test_a_queue_another_overflows_into_cannot_be_removed() -> None:
    engine = make_engine(
        {"support": {"members": ["a1"], "overflow": {"queue": "sales"}}, "sales": {"members": []}}
    )
    with pytest.raises(AcdUsageError):
        engine.remove_queue("sales", 1.0)


def test_a_queue_created_at_run_time_offers_its_ready_members() -> None:
    engine = make_engine({"support": {"members": ["a1"]}})
    engine.add_queue(QueueConfig("vip", members=(MemberConfig("a1", 0),)), 1.0)
    engine.caller_enter("v1", "vip", 2.0)
    assert offers(engine) == [("v1", "a1")]
    assert engine.agent_status("a1").queues == ("support", "vip")
    assert engine.statistics.service_levels["vip"] == 20.0


def test_an_agent_is_removed_only_when_logged_out_and_off_calls() -> None:
    engine = make_engine({"support": {"members": ["a1", "a2"]}})
    with pytest.raises(AgentStateError):
        engine.remove_agent("a1", 1.0)
    engine.agent_logout("a1", 2.0)
    engine.remove_agent("a1", 3.0)
    assert "a1" not in engine.config.agents
    assert [m.agent for m in engine.config.queues["support"].members] == ["a2"]
    assert engine.queue_status("support", 3.0).members_logged_in == 1


def test_removing_the_last_present_member_empties_a_leave_when_empty_queue() -> None:
    engine = make_engine(
        {"support": {"members": [{"agent": "a1", "penalty": 5}], "leave_when_empty": True}}
    )
    engine.update_queue(replace(engine.config.queues["support"], max_penalty=0), 1.0)
    engine.caller_enter("c1", "support", 2.0)
    assert offers(engine) == []  # a1's penalty is above the cap: c1 waits
    engine.remove_member("support", "a1", 3.0)
    assert [e.call_id for e in log(engine.events(), LogEvent.EXIT_EMPTY)] == ["c1"]
    assert engine.call_state("c1") is CallerState.GONE
