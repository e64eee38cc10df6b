"""Input streams for the replicated ACD's tests: a plan of steps (hypothesis's or a seeded
generator's) becomes plausible inputs for a live owner, the way the nodes and the adapter write
them (a `Tick` when a timer is due unless the step skips it, offers answered that really ring).

A step is ``(dt, action, pick, priority, tick)``: the time goes on by ``dt``, ``action`` names
the input, ``pick`` chooses the agent, queue, call or variant, ``priority`` the caller's priority
or the member's penalty, and ``tick`` whether due timers are fired by a `Tick` first (otherwise
the next input fires them). `drive` turns a plan into inputs and hands each to the caller's
``append``, which applies it and returns the decisions, so that each test keeps its own stream
format (with or without senders, retried appends).
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from hypothesis import strategies as st

from queueing.config import (
    AgentConfig,
    Destination,
    DestinationKind,
    EscalationRule,
    MemberConfig,
    QueueConfig,
    Strategy,
)
from queueing.events import CallbackDial, CancelOffer, LogEvent, OfferCall, QueueLogEntry
from queueing.replica import (
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
    ForceLogout,
    ForcePause,
    Input,
    OfferAnswered,
    OfferRejected,
    OfferTimeout,
    RemoveAgent,
    RemoveMember,
    RemoveQueue,
    ReplicatedAcd,
    SetMember,
    Tick,
    UpdateAgent,
    UpdateQueue,
)

Step = tuple[float, str, int, int, bool]
Append = Callable[[Input, str, bool], list[Decision]]
"""``append(item, sender, retry)``: apply `item` (from node `sender`; `retry`: the same append
again) and return its decisions."""

EXTRA_AGENTS = ["x0", "x1"]
"""Agents that plans may add (and name before they exist: refused inputs)."""
EXTRA_QUEUE = "qx"

DELAYS = [0.0, 0.5, 1.0, 3.0, 9.0]

CALLS = [*["enter"] * 3, *["answer"] * 2, "reject", "timeout", *["complete"] * 2, "transfer"]
CALLS += ["abandon", "callback"]
"""Actions on callers and offers, the most frequent drawn more often."""
AGENTS = ["login", "logout", "pause", "unpause", "ready", "member", "unmember"]
"""Actions of agents and on queue membership."""
ADMINISTRATION = ["force-logout", "force-pause", "add-agent", "update-agent", "remove-agent"]
ADMINISTRATION += ["add-queue", "update-queue", "remove-queue"]
"""Supervisors' actions and configuration changes."""


def wire(data: Any) -> Any:
    """Through JSON and back, as the stream carries it."""
    return json.loads(json.dumps(data))


@dataclass
class Tracker:
    """What the decisions say is ringing and talking, to script plausible inputs."""

    ringing: set[tuple[str, str]] = field(default_factory=set)
    talking: set[tuple[str, str]] = field(default_factory=set)
    waiting: set[str] = field(default_factory=set)

    def feed(self, decision: Decision) -> None:
        out = decision.output
        if isinstance(out, OfferCall | CallbackDial):
            self.ringing.add((out.call_id, out.agent))
        elif isinstance(out, CancelOffer):
            self.ringing.discard((out.call_id, out.agent))
        elif isinstance(out, QueueLogEntry):
            pair = (out.call_id, out.agent)
            if out.event is LogEvent.ENTER:
                self.waiting.add(out.call_id)
            elif out.event is LogEvent.NO_ANSWER:
                self.ringing.discard(pair)
            elif out.event is LogEvent.ANSWER:
                self.ringing = {r for r in self.ringing if r[0] != out.call_id}
                self.waiting.discard(out.call_id)
                self.talking.add(pair)
            elif out.event in (LogEvent.COMPLETE, LogEvent.TRANSFER):
                self.talking.discard(pair)
            elif out.event in (LogEvent.ABANDON, LogEvent.OVERFLOW):
                self.ringing = {r for r in self.ringing if r[0] != out.call_id}
                self.waiting.discard(out.call_id)


def plans(actions: Sequence[str], max_size: int) -> st.SearchStrategy[list[Step]]:
    """Hypothesis plans of 10 to `max_size` steps over `actions`."""
    return st.lists(
        st.tuples(
            st.sampled_from(DELAYS),
            st.sampled_from(list(actions)),
            st.integers(0, 1000),
            st.integers(0, 2),
            st.booleans(),
        ),
        min_size=10,
        max_size=max_size,
    )


def random_steps(
    rng: random.Random, count: int, actions: Sequence[str], scale: float = 1.0
) -> list[Step]:
    """`count` seeded steps over `actions`, their delays times `scale`."""
    return [
        (
            rng.choice(DELAYS) * scale,
            rng.choice(actions),
            rng.randrange(1001),
            rng.randrange(3),
            rng.random() < 0.5,
        )
        for _ in range(count)
    ]


def queue_settings(name: str, pick: int, agents: list[str], overflow: Destination) -> QueueConfig:
    """A queue configuration drawn from `pick` (every strategy, timing and limit varies)."""
    strategies = list(Strategy)
    members = tuple(
        MemberConfig(agent, (pick >> i) % 3) for i, agent in enumerate(agents) if (pick >> i) & 1
    )
    return QueueConfig(
        name,
        strategies[pick % len(strategies)],
        members,
        ring_timeout=(5.0, 10.0)[pick % 2],
        retry=(0.0, 3.0)[(pick >> 1) % 2],
        wrapup=(0.0, 4.0)[(pick >> 2) % 2],
        autopause=(0, 2)[(pick >> 3) % 2],
        max_callers=(0, 3)[(pick >> 4) % 2],
        max_wait=(0.0, 40.0)[(pick >> 5) % 2],
        leave_when_empty=bool((pick >> 6) % 2),
        overflow=overflow,
        announce_frequency=(0.0, 7.0)[(pick >> 7) % 2],
        max_penalty=(-1, 0, 1)[pick % 3],
        escalation=(EscalationRule(10.0, 2),) if (pick >> 8) % 2 else (),
    )


def drive(
    acd: ReplicatedAcd,
    plan: Sequence[Step],
    append: Append,
    *,
    logged_out: int = 0,
    senders: Sequence[str] = ("n1",),
) -> None:
    """Run `plan` on the live owner `acd` through `append`: first every agent logs in (but the
    last `logged_out`, from the last sender), then each step's input, sent by the sender `pick`
    chooses. Agents and queues are chosen among the configured ones as they are now, plus
    `EXTRA_AGENTS` and `EXTRA_QUEUE` (refused until a step adds them)."""
    tracker = Tracker()
    last: list[tuple[Input, str]] = []

    def feed(item: Input, sender: str = senders[0], retry: bool = False) -> None:
        last[:] = [(item, sender)]
        for decision in append(item, sender, retry):
            tracker.feed(decision)

    agents = sorted(acd.engine.config.agents)
    for agent in agents[: len(agents) - logged_out]:
        feed(AgentLogin(agent, 0.0), senders[-1])
    now, calls = 0.0, 0
    for dt, action, pick, priority, tick in plan:
        now += dt
        if tick:
            while (due := acd.due()) is not None and due <= now:
                feed(Tick(due))
        config = acd.engine.config
        known = sorted(config.agents)
        agent = (known + EXTRA_AGENTS)[pick % (len(known) + len(EXTRA_AGENTS))]
        queues = [*sorted(config.queues), EXTRA_QUEUE]
        queue = queues[pick % len(queues)]
        sender = senders[pick % len(senders)]
        ringing, talking = sorted(tracker.ringing), sorted(tracker.talking)
        waiting = sorted(tracker.waiting)
        if action == "enter":
            calls += 1
            feed(CallerEnter(f"c{calls}", queue, now, priority=priority), sender)
        elif action in ("answer", "reject", "timeout") and ringing:
            call, who = ringing[pick % len(ringing)]
            if action == "answer":
                feed(OfferAnswered(call, who, now))
            elif action == "reject":
                feed(OfferRejected(call, who, now))
            else:
                feed(OfferTimeout(call, who, now))
        elif action in ("complete", "transfer") and talking:
            call, who = talking[pick % len(talking)]
            if action == "complete":
                feed(CallCompleted(call, who, now, reason=("agent", "caller")[pick % 2]))
            else:
                feed(CallTransferred(call, who, "pbx:1", now))
        elif action == "abandon" and waiting:
            feed(CallerAbandon(waiting[pick % len(waiting)], now), sender)
        elif action == "callback" and waiting:
            feed(CallbackRequest(waiting[pick % len(waiting)], "+33", now))
        elif action == "login":  # refused when logged in: also part of the stream
            reason = "lunch" if pick % 4 == 0 else None
            feed(AgentLogin(agent, now, paused_reason=reason), sender)
        elif action == "logout":
            feed(AgentLogout(agent, now))
        elif action == "force-logout":
            feed(ForceLogout(agent, now, supervisor="sup"))
        elif action == "pause":
            feed(AgentPause(agent, ("break", "lunch")[pick % 2], now))
        elif action == "force-pause":
            feed(ForcePause(agent, "coaching", now, supervisor="sup"))
        elif action == "unpause":
            feed(AgentUnpause(agent, now))
        elif action == "ready":
            feed(AgentReady(agent, now))
        elif action == "member":
            feed(SetMember(queue, agent, priority, now))
        elif action == "unmember":
            feed(RemoveMember(queue, agent, now))
        elif action == "add-agent":
            wrapup = (None, 0.0, 3.0)[pick % 3]
            feed(AddAgent(AgentConfig(EXTRA_AGENTS[pick % 2], "Extra", wrapup), now))
        elif action == "update-agent":
            feed(UpdateAgent(AgentConfig(agent, "Renamed", (None, 2.0)[pick % 2]), now))
        elif action == "remove-agent":
            feed(RemoveAgent(agent, now))
        elif action in ("add-queue", "update-queue"):
            current = config.queues.get(queue)
            overflow = current.overflow if current else Destination(DestinationKind.HANGUP)
            settings = queue_settings(queue, pick, known, overflow)
            feed((AddQueue if action == "add-queue" else UpdateQueue)(settings, now))
        elif action == "remove-queue":
            feed(RemoveQueue(queue, now))
        elif action == "retry" and last:
            item, by = last[0]
            feed(item, by, retry=True)  # the same append again: skipped
        elif action == "bogus":
            feed(OfferAnswered(f"c{pick}", agent, now))
