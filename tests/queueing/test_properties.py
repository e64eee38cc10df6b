"""Property tests: random configurations, arrivals and agent behaviour in simulated time.

An independent model is rebuilt from the engine's events alone and checked after every input:
no caller lost or duplicated, no agent offered two calls at once, a ready agent never idle while
a caller it may take waits, offers in priority-then-arrival order, statistics that add up.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from queueing.config import AcdConfig, DestinationKind, Strategy, build_config
from queueing.engine import AcdEngine, CallerState
from queueing.events import (
    AgentState,
    AgentStateChanged,
    CallbackDial,
    CancelOffer,
    Event,
    LogEvent,
    OfferCall,
    QueueLogEntry,
)
from queueing.stats import Statistics

AGENT_NAMES = [f"a{i}" for i in range(5)]
QUEUE_NAMES = ["q0", "q1", "q2"]


@st.composite
def configs(draw: st.DrawFn) -> dict[str, Any]:
    agents = AGENT_NAMES[: draw(st.integers(1, 5))]
    queues: dict[str, Any] = {}
    count = draw(st.integers(1, 3))
    for index, name in enumerate(QUEUE_NAMES[:count]):
        members = draw(st.lists(st.sampled_from(agents), unique=True, max_size=len(agents)))
        queue: dict[str, Any] = {
            "strategy": draw(st.sampled_from([s.value for s in Strategy])),
            "members": [{"agent": a, "penalty": draw(st.integers(0, 2))} for a in members],
            "ring_timeout": draw(st.sampled_from([5, 10])),
            "retry": draw(st.sampled_from([0, 3])),
            "wrapup": draw(st.sampled_from([0, 4])),
            "autopause": draw(st.sampled_from([0, 2])),
            "max_callers": draw(st.sampled_from([0, 3])),
            "max_wait": draw(st.sampled_from([0, 40])),
            "join_empty": draw(st.booleans()),
            "leave_when_empty": draw(st.booleans()),
            "announce_frequency": draw(st.sampled_from([0, 7])),
            "max_penalty": draw(st.sampled_from([-1, 0, 1])),
        }
        if draw(st.booleans()):
            queue["escalation"] = [{"after": 10, "max_penalty": 2}]
        later = QUEUE_NAMES[index + 1 : count]
        overflow: bool = draw(st.booleans())
        if later and overflow:
            queue["overflow"] = {"queue": draw(st.sampled_from(later))}
        queues[name] = queue
    return {"agents": {a: {} for a in agents}, "queues": queues}


ACTIONS = [
    "enter",
    "enter",
    "enter",
    "answer",
    "answer",
    "reject",
    "complete",
    "complete",
    "abandon",
    "callback",
    "transfer",
    "login",
    "logout",
    "pause",
    "unpause",
    "ready",
]
actions = st.lists(
    st.tuples(
        st.sampled_from([0.0, 0.5, 1.0, 2.0, 4.0, 9.0]),
        st.sampled_from(ACTIONS),
        st.integers(0, 1000),
        st.integers(0, 2),
    ),
    min_size=15,
    max_size=80,
)


@dataclass
class ModelCall:
    queue: str
    priority: int
    order: int
    entered: float
    state: str = "waiting"
    ringing: set[str] = field(default_factory=set)
    agent: str = ""


class Model:
    """What the events say: calls, agents, bars; checks the promised properties."""

    def __init__(self, config: AcdConfig) -> None:
        self.config = config
        self.calls: dict[str, ModelCall] = {}
        self.ended: set[str] = set()
        self.agent_state = {a: AgentState.LOGGED_OUT for a in config.agents}
        self.busy: dict[str, str] = {}
        self.bars: dict[tuple[str, str], float] = {}
        self.order = 0
        self.log: list[QueueLogEntry] = []
        self.now = 0.0

    def cap(self, call: ModelCall, now: float) -> float:
        queue = self.config.queues[call.queue]
        cap: float = queue.max_penalty if queue.max_penalty >= 0 else math.inf
        for rule in queue.escalation:
            if call.entered + rule.after <= now:
                cap = rule.max_penalty
        return cap

    def may_take(self, agent: str, call_id: str, now: float) -> bool:
        call = self.calls[call_id]
        member = self.config.queues[call.queue].member(agent)
        if member is None or member.penalty > self.cap(call, now):
            return False
        return self.bars.get((call_id, agent), -math.inf) <= now

    def apply(self, event: Event) -> None:
        if isinstance(event, QueueLogEntry):
            self.log.append(event)
            self.apply_log(event)
        elif isinstance(event, AgentStateChanged):
            self.agent_state[event.agent] = event.state
        elif isinstance(event, OfferCall | CallbackDial):
            self.offer(event.call_id, event.agent, event.queue)
        elif isinstance(event, CancelOffer):
            self.release(event.call_id, event.agent)

    def offer(self, call_id: str, agent: str, queue: str) -> None:
        assert agent not in self.busy, f"{agent} offered {call_id} while busy with {self.busy}"
        call = self.calls[call_id]
        assert call.queue == queue
        assert call.state == "waiting" or (call.state == "ringing" and call.ringing), call
        now = self.now
        assert self.may_take(agent, call_id, now), (call_id, agent)
        key = (-call.priority, call.order)
        for other_id, other in self.calls.items():
            if (
                other.state == "waiting"
                and other_id != call_id
                and self.may_take(agent, other_id, now)
            ):
                assert (-other.priority, other.order) > key, (
                    f"{agent} offered {call_id} before {other_id}"
                )
        call.state = "ringing"
        call.ringing.add(agent)
        self.busy[agent] = call_id

    def release(self, call_id: str, agent: str) -> None:
        if self.busy.get(agent) == call_id:
            del self.busy[agent]
        call = self.calls.get(call_id)
        if call is not None and call.state == "ringing":
            call.ringing.discard(agent)
            if not call.ringing:
                call.state = "waiting"

    def apply_log(self, entry: QueueLogEntry) -> None:
        event, call_id = entry.event, entry.call_id
        if event is LogEvent.ENTER:
            assert call_id not in self.calls and call_id not in self.ended, call_id
            self.order += 1
            priority = entry.data["priority"]
            assert isinstance(priority, int)
            self.calls[call_id] = ModelCall(entry.queue, priority, self.order, entry.time)
            for key in [k for k in self.bars if k[0] == call_id]:
                del self.bars[key]  # a caller overflowing into a queue starts afresh there
        elif event is LogEvent.NO_ANSWER:
            self.release(call_id, entry.agent)
            retry = self.config.queues[entry.queue].retry
            call = self.calls.get(call_id)
            if retry > 0 and call is not None and call.queue == entry.queue:
                self.bars[(call_id, entry.agent)] = entry.time + retry
        elif event is LogEvent.ANSWER:
            call = self.calls[call_id]
            assert call.ringing == {entry.agent}, (call, entry)
            call.state = "on-call"
            call.agent = entry.agent
            call.ringing.clear()
        elif event in (LogEvent.COMPLETE, LogEvent.TRANSFER):
            call = self.calls.pop(call_id)
            assert call.state == "on-call" and call.agent == entry.agent
            self.busy.pop(entry.agent, None)
            self.end(call_id)
        elif event is LogEvent.ABANDON:
            call = self.calls.pop(call_id)
            assert call.state in ("waiting", "ringing")
            self.end(call_id)
        elif event is LogEvent.OVERFLOW:
            call_or_none = self.calls.pop(call_id, None)
            if call_or_none is not None:
                assert call_or_none.state in ("waiting", "ringing")
            destination = self.config.queues[entry.queue].overflow
            if destination.kind is not DestinationKind.QUEUE:
                self.end(call_id)

    def end(self, call_id: str) -> None:
        assert call_id not in self.ended, f"{call_id} ended twice"
        self.ended.add(call_id)
        for key in [k for k in self.bars if k[0] == call_id]:
            del self.bars[key]

    def check(self, engine: AcdEngine, now: float) -> None:
        for agent, state in self.agent_state.items():
            assert engine.agent_status(agent).state is state, agent
            if state is not AgentState.READY:
                continue
            for call_id, call in self.calls.items():
                assert not (call.state == "waiting" and self.may_take(agent, call_id, now)), (
                    f"ready {agent} idle while {call_id} waits at {now}"
                )
        for call_id, call in self.calls.items():
            expected = {
                "waiting": CallerState.WAITING,
                "ringing": CallerState.RINGING,
                "on-call": CallerState.ON_CALL,
            }[call.state]
            assert engine.call_state(call_id) is expected, call_id
        for name in self.config.queues:
            in_queue = [c for c in self.calls.values() if c.queue == name and c.state != "on-call"]
            assert engine.queue_status(name, now).waiting == len(in_queue)


def check_statistics(model: Model, engine: AcdEngine) -> None:
    rebuilt = Statistics.from_log(
        model.log, {n: q.service_level for n, q in model.config.queues.items()}, period=60.0
    )
    for name in model.config.queues:
        live = engine.statistics.queue(name)
        assert live == rebuilt.queue(name)
        periods = rebuilt.queue(name, 0.0, math.inf)
        assert periods == live
        entries = [e for e in model.log if e.queue == name]

        def count(event: LogEvent, entries: list[QueueLogEntry] = entries) -> int:
            return sum(1 for e in entries if e.event is event)

        assert live.entered == count(LogEvent.ENTER)
        assert live.answered == count(LogEvent.ANSWER)
        exits = sum(
            1
            for e in entries
            if e.event is LogEvent.OVERFLOW and e.data["reason"] in ("timeout", "leave-empty")
        )
        waiting = sum(1 for c in model.calls.values() if c.queue == name and c.state != "on-call")
        assert live.entered == live.answered + live.abandoned + exits + waiting
        talking = sum(1 for c in model.calls.values() if c.queue == name and c.state == "on-call")
        assert live.answered == live.completed + live.transferred + talking
        assert live.offers >= live.answered + live.no_answers
        if live.answered:
            assert live.average_wait is not None and live.average_wait >= 0
    for agent in model.config.agents:
        counters = engine.statistics.agent(agent)
        assert counters == rebuilt.agent(agent)
        assert counters.answered == sum(
            1 for e in model.log if e.event is LogEvent.ANSWER and e.agent == agent
        )


def run(config_data: dict[str, Any], steps: list[tuple[float, str, int, int]], seed: int) -> None:
    config = build_config(config_data)
    engine = AcdEngine(config, rng=random.Random(seed), stats_period=60.0)
    model = Model(config)
    now = 0.0
    call_ids = 0

    def drain() -> None:
        for event in engine.events():
            model.apply(event)

    def advance(until: float) -> None:
        while (when := engine.get_timer()) is not None and when <= until:
            model.now = when
            engine.handle_timer(when)
            drain()
            model.check(engine, when)
        model.now = until

    for agent in config.agents:
        if seed % 2 or agent != "a0":
            engine.agent_login(agent, 0.0)
    drain()
    for dt, action, pick, priority in steps:
        now += dt
        advance(now)
        agents = sorted(config.agents)
        agent = agents[pick % len(agents)]
        state = engine.agent_status(agent).state
        waiting = sorted(c for c, m in model.calls.items() if m.state != "on-call")
        ringing = sorted((c, a) for c, m in model.calls.items() for a in m.ringing)
        talking = sorted((c, m.agent) for c, m in model.calls.items() if m.state == "on-call")
        if action == "enter":
            call_ids += 1
            queues = sorted(config.queues)
            engine.caller_enter(f"c{call_ids}", queues[pick % len(queues)], now, priority=priority)
        elif action in ("answer", "reject") and ringing:
            call_id, who = ringing[pick % len(ringing)]
            if action == "answer":
                assert engine.offer_answered(call_id, who, now)
            else:
                assert engine.offer_rejected(call_id, who, now)
        elif action in ("complete", "transfer") and talking:
            call_id, who = talking[pick % len(talking)]
            if action == "complete":
                assert engine.call_completed(call_id, who, now)
            else:
                assert engine.call_transferred(call_id, who, "pbx:100", now)
        elif action == "abandon" and (waiting or talking):
            every = waiting + [c for c, _ in talking]
            assert engine.caller_abandon(every[pick % len(every)], now)
        elif action == "callback" and waiting:
            assert engine.callback_request(waiting[pick % len(waiting)], "5550000", now)
        elif action == "login" and state is AgentState.LOGGED_OUT:
            engine.agent_login(agent, now, paused_reason="start" if priority == 2 else None)
        elif action == "logout" and state is not AgentState.LOGGED_OUT:
            if priority:
                engine.agent_logout(agent, now)
            else:
                engine.force_logout(agent, now, supervisor="sup")
        elif action == "pause" and state is not AgentState.LOGGED_OUT:
            engine.agent_pause(agent, f"r{priority}", now)
        elif action == "unpause" and state is not AgentState.LOGGED_OUT:
            engine.agent_unpause(agent, now)
        elif action == "ready" and state is not AgentState.LOGGED_OUT:
            engine.agent_ready(agent, now)
        drain()
        model.check(engine, now)
    # Everyone answers and hangs up until nothing is left but callers nobody can serve.
    for agent in sorted(config.agents):
        if engine.agent_status(agent).state is AgentState.LOGGED_OUT:
            engine.agent_login(agent, now)
        engine.agent_ready(agent, now)
    drain()
    for _ in range(400):
        ringing = sorted((c, a) for c, m in model.calls.items() for a in m.ringing)
        talking = sorted((c, m.agent) for c, m in model.calls.items() if m.state == "on-call")
        if not ringing and not talking:
            break
        for call_id, who in ringing[:1]:
            engine.offer_answered(call_id, who, now)
        for call_id, who in talking:
            engine.call_completed(call_id, who, now)
        drain()
        model.check(engine, now)
        now += 1.0
        advance(now)
    check_statistics(model, engine)
    tracked = {c for c in model.calls}
    assert {c for c in tracked if engine.call_state(c) is not CallerState.GONE} == tracked
    for call_id in model.ended:
        assert engine.call_state(call_id) is CallerState.GONE
    assert all(call.state == "waiting" for call in model.calls.values())


@settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(configs(), actions, st.integers(0, 3))
def test_random_traffic_keeps_every_acd_promise(
    config_data: dict[str, Any], steps: list[tuple[float, str, int, int]], seed: int
) -> None:
    run(config_data, steps, seed)
