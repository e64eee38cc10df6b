"""The replicated ACD core: strict serialisation of every input and decision, stream-order
application, rebuild by replay, the epoch fence, and the invariant checker."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from queueing.config import (
    AgentConfig,
    Destination,
    DestinationKind,
    QueueConfig,
    Strategy,
    build_config,
)
from queueing.events import (
    AgentStateChanged,
    CallbackDial,
    CancelOffer,
    Joined,
    LogEvent,
    OfferCall,
    QueueLogEntry,
)
from queueing.replica import (
    INPUT_TYPES,
    AddAgent,
    AddQueue,
    AgentLogin,
    AgentLogout,
    AgentPause,
    AgentReady,
    AgentUnpause,
    CallbackRequest,
    CallCompleted,
    CallerAbandon,
    CallerEnter,
    CallTransferred,
    Decision,
    DecisionFence,
    ForceLogout,
    ForcePause,
    Input,
    OfferAnswered,
    OfferRejected,
    OfferTimeout,
    Refused,
    RemoveAgent,
    RemoveMember,
    RemoveQueue,
    ReplicaError,
    ReplicatedAcd,
    SetMember,
    Tick,
    UpdateAgent,
    UpdateQueue,
    check_decisions,
    config_from_dict,
    config_to_dict,
    input_from_dict,
)
from queueing.stats import Statistics
from tests.queueing.streams import AGENTS, CALLS, Step, drive, plans, wire
from tests.queueing.test_properties import configs

CONFIG = build_config(
    {
        "agents": {"a1": {}, "a2": {}, "a3": {}},
        "queues": {
            "sales": {"strategy": "linear", "members": ["a1", "a2"], "ring_timeout": 10},
            "all": {"strategy": "ringall", "members": ["a2", "a3"], "ring_timeout": 10},
        },
    }
)
QUEUE = QueueConfig(
    "extra",
    Strategy.RRMEMORY,
    overflow=Destination(DestinationKind.NUMBER, "100", "pbx"),
    escalation=(),
)

ONE_OF_EACH: list[Input] = [
    AgentLogin("a1", 1.0),
    AgentLogin("a2", 1.0, paused_reason="lunch"),
    AgentLogout("a1", 2.0),
    ForceLogout("a1", 2.0, supervisor="sup"),
    AgentPause("a1", "break", 3.0),
    ForcePause("a1", "coaching", 3.0, supervisor="sup"),
    AgentUnpause("a1", 4.0),
    AgentReady("a1", 4.0),
    CallerEnter("c1", "sales", 5.0, priority=2, caller_number="+331", caller_name="Ann"),
    CallerAbandon("c1", 6.0),
    CallbackRequest("c1", "+332", 6.0),
    OfferAnswered("c1", "a1", 7.0),
    OfferRejected("c1", "a1", 7.0),
    OfferTimeout("c1", "a1", 7.0),
    CallCompleted("c1", "a1", 8.0, reason="caller"),
    CallTransferred("c1", "a1", "pbx:100", 8.0),
    AddAgent(AgentConfig("a9", "Nine", 5.0), 9.0),
    UpdateAgent(AgentConfig("a9", "Nine", None), 9.0),
    RemoveAgent("a9", 9.0),
    SetMember("sales", "a3", 1, 9.0),
    RemoveMember("sales", "a3", 9.0),
    AddQueue(QUEUE, 9.0),
    UpdateQueue(QUEUE, 9.0),
    RemoveQueue("extra", 9.0),
    Tick(10.0),
]


def test_every_engine_input_has_a_serialised_form_that_round_trips() -> None:
    assert {type(item).kind for item in ONE_OF_EACH} == set(INPUT_TYPES)
    for item in ONE_OF_EACH:
        assert input_from_dict(wire(item.to_dict())) == item


def test_the_configuration_round_trips_and_bad_configurations_are_refused() -> None:
    assert config_from_dict(wire(config_to_dict(CONFIG))) == CONFIG
    data = wire(config_to_dict(CONFIG))
    data["queues"]["sales"]["members"].append({"agent": "ghost", "penalty": 0})
    with pytest.raises(ReplicaError, match="unknown member 'ghost'"):
        config_from_dict(data)
    data = wire(config_to_dict(CONFIG))
    data["queues"]["sales"]["strategy"] = "fastest"
    with pytest.raises(ReplicaError, match=r"config\.queues\.sales\.strategy: 'fastest'"):
        config_from_dict(data)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([], "input: expected an object"),
        ({"kind": "teleport", "now": 1}, "input.kind: 'teleport' is not a known input"),
        ({"kind": "caller-enter", "queue": "q", "now": 1}, "missing field 'call'"),
        ({"kind": "caller-enter", "call": 7, "queue": "q", "now": 1}, r"\.call: expected a str"),
        ({"kind": "tick", "now": "soon"}, r"\.now: expected a number"),
        ({"kind": "tick", "now": 1e999}, r"\.now: expected a finite number"),
        ({"kind": "tick", "now": True}, r"\.now: expected a number, got a boolean"),
        ({"kind": "tick", "now": 1, "extra": 1}, "unknown field 'extra'"),
        ({"kind": "set-member", "queue": "q", "agent": "a", "penalty": 1.5, "now": 1}, "integer"),
        ({"kind": "add-agent", "agent": {"agent": "x", "wrapup": "no"}, "now": 1}, "wrapup"),
        ({"kind": "add-queue", "config": {"name": "q", "strategy": "x"}, "now": 1}, "strategy"),
    ],
)
def test_malformed_inputs_are_refused_with_the_field_named(data: Any, message: str) -> None:
    with pytest.raises(ReplicaError, match=message):
        input_from_dict(data)


def test_inputs_apply_only_in_stream_order_and_an_out_of_order_one_changes_nothing() -> None:
    acd = ReplicatedAcd(CONFIG, seed=1, epoch=3)
    acd.apply("10-0", AgentLogin("a1", 1.0))
    with pytest.raises(ReplicaError, match="not after"):
        acd.apply("9-5", CallerEnter("c1", "sales", 2.0))
    with pytest.raises(ReplicaError, match="not after"):
        acd.apply("10-0", CallerEnter("c1", "sales", 2.0))
    with pytest.raises(ReplicaError, match="<ms>-<seq>"):
        acd.apply("later", CallerEnter("c1", "sales", 2.0))
    assert acd.applied == 1 and acd.last_entry == "10-0"
    decisions = acd.apply("10-1", CallerEnter("c1", "sales", 2.0))
    offers = [d for d in decisions if isinstance(d.output, OfferCall)]
    assert [(d.epoch, d.entry_id, d.agent) for d in offers] == [(3, "10-1", "a1")]
    assert [d.seq for d in decisions] == list(range(len(decisions)))
    assert any(isinstance(d.output, Joined) for d in decisions)


def test_engine_misuse_and_late_answers_become_refused_decisions_for_the_sender() -> None:
    acd = ReplicatedAcd(CONFIG, seed=1)
    acd.apply("1-0", AgentLogin("a1", 1.0))
    again = acd.apply("1-1", AgentLogin("a1", 1.5))
    assert [d.output for d in again] == [
        Refused("agent-login", "", "a1", "agent a1 is already logged in")
    ]
    late = acd.apply("1-2", OfferAnswered("nobody", "a1", 2.0))
    assert [d.output for d in late] == [Refused("offer-answered", "nobody", "a1", "not-applicable")]
    unknown = acd.apply("1-3", CallerEnter("c1", "nowhere", 2.0))
    assert isinstance(unknown[0].output, Refused) and "nowhere" in unknown[0].output.reason


def test_timers_fall_due_before_a_later_input_exactly_as_a_tick_would_fire_them() -> None:
    def run(with_tick: bool) -> list[Any]:
        acd = ReplicatedAcd(CONFIG, seed=1)
        acd.apply("1-0", AgentLogin("a1", 0.0))
        acd.apply("1-1", CallerEnter("c1", "sales", 0.0))
        assert acd.due() == 10.0
        out = []
        if with_tick:
            out += acd.apply("2-0", Tick(10.0))
        out += acd.apply("3-0", OfferAnswered("c1", "a1", 10.5))
        return [d.output for d in out]

    assert run(True) == run(False)
    assert any(isinstance(o, Refused) for o in run(False))  # the offer had rung out at 10


def test_time_never_goes_back_when_a_node_clock_lags() -> None:
    acd = ReplicatedAcd(CONFIG, seed=1)
    acd.apply("1-0", AgentLogin("a3", 50.0))
    decisions = acd.apply("1-1", CallerEnter("c1", "all", 40.0))
    enter = next(d.output for d in decisions if isinstance(d.output, QueueLogEntry))
    assert enter.event is LogEvent.ENTER and enter.time == 50.0


def test_rebuild_reproduces_the_engine_and_returns_only_what_was_not_published() -> None:
    stream: list[tuple[str, Input]] = [
        ("1-0", AgentLogin("a1", 0.0)),
        ("1-1", AgentLogin("a2", 0.0)),
        ("2-0", CallerEnter("c1", "sales", 1.0)),
        ("3-0", CallerEnter("c2", "all", 2.0)),
        ("4-0", OfferAnswered("c1", "a1", 3.0)),
        ("5-0", Tick(12.0)),
        ("6-0", CallCompleted("c1", "a1", 20.0)),
    ]
    live = ReplicatedAcd(CONFIG, seed=1, epoch=1)
    published = [d for entry, item in stream[:4] for d in live.apply(entry, item)]
    unpublished = [d for entry, item in stream[4:] for d in live.apply(entry, item)]
    assert published and unpublished
    successor = ReplicatedAcd(CONFIG, seed=1, epoch=1)
    resumed = successor.rebuild(stream, "3-0", epoch=2)
    assert [(d.entry_id, d.seq, d.output) for d in resumed] == [
        (d.entry_id, d.seq, d.output) for d in unpublished
    ]
    assert {d.epoch for d in resumed} == {2}
    assert_same_engine(live, successor)
    everything = successor.rebuild(stream, None)
    assert [d.output for d in everything] == [d.output for d in published + unpublished]


def test_every_decision_round_trips_and_malformed_ones_are_refused() -> None:
    acd = ReplicatedAcd(CONFIG, seed=1, epoch=7)
    items: list[Input] = [
        AgentLogin("a1", 0.0),
        AgentLogin("a2", 0.0, paused_reason="lunch"),
        CallerEnter("c1", "all", 1.0, priority=1, caller_number="+33"),
        CallbackRequest("c1", "+33", 2.0),
        AgentUnpause("a2", 3.0),
        Tick(30.0),
        CallerEnter("c2", "sales", 31.0),
        OfferAnswered("c9", "a3", 32.0),
    ]
    decisions = []
    for n, item in enumerate(items):
        decisions += acd.apply(f"{n + 1}-0", item)
    kinds = {type(d.output) for d in decisions}
    assert kinds == {
        OfferCall,
        CallbackDial,
        CancelOffer,
        QueueLogEntry,
        AgentStateChanged,
        Joined,
        Refused,
    }
    for decision in decisions:
        assert Decision.from_dict(wire(decision.to_dict())) == decision
    good = wire(decisions[0].to_dict())
    for key, value, message in [
        ("epoch", "7", "decision.epoch"),
        ("entry", "x", "<ms>-<seq>"),
        ("type", "shrug", "decision.type"),
        ("output", {}, "missing field"),
        ("spare", 1, "unknown field 'spare'"),
    ]:
        with pytest.raises(ReplicaError, match=message):
            Decision.from_dict({**good, key: value})


def test_the_fence_refuses_older_epochs_and_duplicates() -> None:
    fence = DecisionFence()
    offer = OfferCall("c1", "a1", "sales", 10.0, "", "", 0, 0.0)

    def d(epoch: int, entry: str, seq: int) -> Decision:
        return Decision(epoch, entry, seq, offer)

    assert fence.accept(d(2, "5-0", 0))
    assert fence.accept(d(2, "5-0", 1))
    assert not fence.accept(d(2, "5-0", 1))  # the same again
    assert not fence.accept(d(2, "4-9", 0))  # already passed
    assert fence.accept(d(3, "5-0", 0))  # a new owner replays from the last published entry
    assert not fence.accept(d(2, "6-0", 0))  # the old owner, resumed, is not acted on
    assert (fence.accepted, fence.duplicates, fence.stale) == (3, 2, 1)


def test_the_checker_reports_each_broken_promise() -> None:
    strategies = {"sales": Strategy.LINEAR, "all": Strategy.RINGALL}

    def enter(call: str, queue: str = "sales", priority: int = 0) -> QueueLogEntry:
        return QueueLogEntry(0.0, queue, call, "", LogEvent.ENTER, {"priority": priority})

    def offer(call: str, agent: str, queue: str = "sales") -> OfferCall:
        return OfferCall(call, agent, queue, 10.0, "", "", 0, 0.0)

    twice = [enter("c1"), enter("c2"), offer("c1", "a1"), offer("c2", "a1")]
    assert check_decisions(twice, strategies) == ["a1 offered c2 while ringing for c1"]
    two_agents = [enter("c1"), offer("c1", "a1"), offer("c1", "a2")]
    assert check_decisions(two_agents, strategies) == ["c1 offered to a2 while ringing ['a1']"]
    ringall = [enter("c1", "all"), offer("c1", "a1", "all"), offer("c1", "a2", "all")]
    assert check_decisions(ringall, strategies) == []
    unfair = [enter("c1"), enter("c2"), offer("c2", "a1")]
    assert check_decisions(unfair, strategies) == ["c2 offered before c1 (queue sales)"]
    by_priority = [enter("c1"), enter("c2", priority=1), offer("c2", "a1")]
    assert check_decisions(by_priority, strategies) == []
    answered = QueueLogEntry(1.0, "sales", "c1", "a1", LogEvent.ANSWER, {})
    on_call = [enter("c1"), offer("c1", "a1"), answered, enter("c2"), offer("c2", "a1")]
    assert check_decisions(on_call, strategies) == ["a1 offered c2 while on call c1"]
    freed = [*on_call[:3], QueueLogEntry(2.0, "sales", "c1", "a1", LogEvent.COMPLETE, {})]
    assert check_decisions([*freed, enter("c2"), offer("c2", "a1")], strategies) == []


# -- property: replay from scratch equals the live owner --------------------------------------


ACTIONS = [*CALLS, *AGENTS, "bogus"]
steps = plans(ACTIONS, 70)


def script(acd: ReplicatedAcd, plan: list[Step]) -> tuple[list[tuple[str, Input]], list[Decision]]:
    """Run `plan` on a live owner the way the adapter does (`tests.queueing.streams.drive`):
    the stream of entries and inputs, and every decision."""
    stream: list[tuple[str, Input]] = []
    decisions: list[Decision] = []

    def append(item: Input, sender: str, retry: bool) -> list[Decision]:
        entry = f"{1001 + len(stream)}-0"
        wired = input_from_dict(wire(item.to_dict()))
        out = acd.apply(entry, wired)
        stream.append((entry, wired))
        decisions.extend(out)
        return out

    drive(acd, plan, append)
    return stream, decisions


def assert_same_engine(a: ReplicatedAcd, b: ReplicatedAcd) -> None:
    ea, eb = a.engine, b.engine
    assert ea.config == eb.config
    assert ea.get_timer() == eb.get_timer()
    now = max(a._clock, 0.0)
    for agent in ea.config.agents:
        assert ea.agent_status(agent) == eb.agent_status(agent)
    for queue in ea.config.queues:
        assert ea.queue_status(queue, now) == eb.queue_status(queue, now)
        assert ea.statistics.queue(queue) == eb.statistics.queue(queue)
    for agent in ea.config.agents:
        assert ea.statistics.agent(agent) == eb.statistics.agent(agent)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(config_data=configs(), plan=steps, seed=st.integers(0, 3), cut=st.integers(0, 200))
def test_replaying_the_stream_from_scratch_equals_the_live_owner(
    config_data: dict[str, Any],
    plan: list[tuple[float, str, int, int, bool]],
    seed: int,
    cut: int,
) -> None:
    config = build_config(config_data)
    live = ReplicatedAcd(config, seed=seed, epoch=1, stats_period=60.0)
    stream, decisions = script(live, plan)

    replica = ReplicatedAcd(config_from_dict(wire(config_to_dict(config))), seed=seed)
    replayed = replica.rebuild(stream, None, epoch=1)
    assert [d.to_dict() for d in replayed] == [d.to_dict() for d in decisions]
    assert_same_engine(live, replica)

    # a successor that finds the first `cut` entries published resumes exactly after them
    cut = min(cut, len(stream))
    last = stream[cut - 1][0] if cut else None
    successor = ReplicatedAcd(config, seed=seed, stats_period=60.0)
    rest = successor.rebuild(stream, last, epoch=2)
    expected = [d for d in decisions if cut == 0 or d.key[1] > decisions_key(last)]
    assert [(d.entry_id, d.seq, d.output) for d in rest] == [
        (d.entry_id, d.seq, d.output) for d in expected
    ]
    assert_same_engine(live, successor)

    # the promises hold over the decision stream, and its queue log gives the same statistics
    strategies = {name: q.strategy for name, q in live.engine.config.queues.items()}
    assert check_decisions([d.output for d in decisions], strategies) == []
    log = [d.output for d in decisions if isinstance(d.output, QueueLogEntry)]
    levels = {name: q.service_level for name, q in live.engine.config.queues.items()}
    rebuilt = Statistics.from_log(log, levels, period=60.0)
    for queue in live.engine.config.queues:
        assert rebuilt.queue(queue) == live.engine.statistics.queue(queue)
        assert rebuilt.queue(queue, 0.0, math.inf) == live.engine.statistics.queue(queue)
    for agent in live.engine.config.agents:
        assert rebuilt.agent(agent) == live.engine.statistics.agent(agent)


def decisions_key(entry: str | None) -> tuple[int, int]:
    assert entry is not None
    ms, _, seq = entry.partition("-")
    return int(ms), int(seq)


def test_a_retried_append_is_applied_once_live_and_on_replay() -> None:
    stream: list[tuple[str, Input, tuple[str, int] | None]] = [
        ("1-0", AgentLogin("a1", 0.0), ("n1/1", 1)),
        ("2-0", CallerEnter("c1", "sales", 1.0), ("n2/1", 1)),
        ("3-0", CallerEnter("c1", "sales", 1.0), ("n2/1", 1)),  # the same append, retried
        ("4-0", CallerEnter("c2", "sales", 2.0), ("n2/1", 2)),
    ]
    acd = ReplicatedAcd(CONFIG, seed=1)
    outputs = [[d.output for d in acd.apply(*entry)] for entry in stream]
    assert outputs[2] == [] and acd.skipped == 1 and acd.applied == 3
    assert not any(isinstance(o, Refused) for out in outputs for o in out)
    replica = ReplicatedAcd(CONFIG, seed=1)
    assert [d.output for d in replica.rebuild(stream, None)] == [o for out in outputs for o in out]


def test_a_lost_node_leaves_inputs_that_abandon_its_callers_and_log_its_agents_out() -> None:
    acd = ReplicatedAcd(CONFIG, seed=1)
    stream: list[tuple[str, Input, tuple[str, int]]] = [
        ("1-0", AgentLogin("a1", 0.0), ("n1", 1)),
        ("1-1", AgentLogin("a2", 0.0), ("n2", 1)),
        ("2-0", CallerEnter("c1", "sales", 1.0), ("n2", 2)),  # offered to a1 (linear)
        ("3-0", OfferAnswered("c1", "a1", 2.0), ("n1", 2)),
        ("4-0", CallerEnter("c2", "sales", 3.0), ("n1", 3)),  # offered to a2
        ("5-0", CallerEnter("c3", "sales", 3.5), ("n1", 4)),  # waits
    ]
    for entry in stream:
        acd.apply(*entry)
    assert acd.senders() == {"n1", "n2"}
    lost = acd.lost("n1", 4.0)
    assert lost == [
        CallerAbandon("c2", 4.0),
        CallerAbandon("c3", 4.0),
        CallCompleted("c1", "a1", 4.0, reason="node-lost"),
        ForceLogout("a1", 4.0, supervisor="node-lost"),
    ]
    outputs = [d.output for n, item in enumerate(lost) for d in acd.apply(f"6-{n}", item)]
    logouts = [o for o in outputs if isinstance(o, QueueLogEntry) and o.event is LogEvent.LOGOUT]
    assert [(o.agent, o.data["reason"]) for o in logouts] == [("a1", "forced by node-lost")]
    assert not any(isinstance(o, Refused) for o in outputs)
    assert acd.senders() == {"n2"}  # n2's agent a2 is still logged in
    assert acd.engine.agent_status("a2").state.value == "ready"
