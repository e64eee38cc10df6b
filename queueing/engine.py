"""The ACD engine: queues, agents, offers and timers, sans-IO with the clock passed in.

Theory of operation
-------------------
`AcdEngine` is driven like aioquic's connection: every input is a method call that takes
``now``; outputs are events drained with `next_event()` (or `events()`); `get_timer()` tells when
`handle_timer(now)` is next due. It never sleeps, reads a clock or does I/O.

A caller *enters* a queue and waits in it, ordered by (priority descending, arrival). Callers of
one priority sit in a heap keyed by a global arrival sequence, so "the caller who waited longest,
after priority" is the head of one of a few heaps; a Fenwick tree per priority gives positions.

*Dispatch* runs after every change that could make an offer possible (a caller joins, an agent
becomes ready, an escalation or retry delay expires). It merges the heads of the queues concerned
in (priority, arrival) order and offers each head to the member its queue's strategy picks among
the ready members allowed to take it: penalty at most the caller's current cap (raised by the
escalation rules over wait time), lowest penalty first (except ``wrandom``), and not barred. A
member who let an offer ring out or rejected it is barred from that caller for ``retry`` seconds
(app_queue's retry, kept per member so that the others are offered at once). When a head cannot
be offered because no ready member has a low enough penalty, nobody behind it of the same
priority can be either (they waited less, so their cap is no higher), and its heap is skipped;
this keeps dispatch proportional to the offers it makes, not to the callers waiting. Because it
runs on every change, a ready agent is never left idle while a caller it may take is waiting;
an agent in several queues therefore gets the caller who waited longest after priority.

An *offer* rings one member (``ringall``: every ready member of the lowest penalty) until it is
answered, rejected or times out. A caller may hang up at any moment (`caller_abandon`); every
structure that refers to it is cleaned at once and ringing agents get a `CancelOffer`.

*Callback* keeps the caller's place: the entry stays in its heap as a virtual caller; when its turn
comes the chosen agent gets a `CallbackDial` instead of an `OfferCall`.

Every change is logged as a `QueueLogEntry` event and fed to `Statistics`, which reads nothing
else, so the same reports can be rebuilt from a stored queue log.
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
from collections import deque
from collections.abc import Iterable
from dataclasses import replace
from enum import Enum
from typing import Final

from queueing.config import (
    AcdConfig,
    AgentConfig,
    DestinationKind,
    MemberConfig,
    QueueConfig,
    Strategy,
)
from queueing.events import (
    AgentState,
    AgentStateChanged,
    AgentStatus,
    Announce,
    CallbackDial,
    CancelOffer,
    EnterResult,
    Event,
    Joined,
    LogEvent,
    LogValue,
    OfferCall,
    Overflow,
    Overflowed,
    QueueLogEntry,
    QueueStatus,
)
from queueing.exceptions import (
    AcdUsageError,
    AgentStateError,
    DuplicateCallError,
    UnknownAgentError,
    UnknownQueueError,
)
from queueing.rank import ArrivalRank
from queueing.stats import DEFAULT_RETENTION, Statistics

NO_LIMIT: Final = 1 << 62
_HANDLE_EWMA_WEIGHT: Final = 0.25


class CallerState(Enum):
    """Where a caller is in the engine (not the SIP dialog's `sip.ua.CallState`, nor the
    agent page's `webrtc.signaling.AgentCallState`)."""

    WAITING = "waiting"
    RINGING = "ringing"
    ON_CALL = "on-call"
    GONE = "gone"


class _TimerKind(Enum):
    RING_TIMEOUT = 1
    WRAPUP_END = 2
    MAX_WAIT = 3
    ESCALATE = 4
    ANNOUNCE = 5
    RETRY = 6


class _Timer:
    __slots__ = ("kind", "live", "target", "when")

    def __init__(self, when: float, kind: _TimerKind, target: object) -> None:
        self.when = when
        self.kind = kind
        self.target = target
        self.live = True


class _Offer:
    __slots__ = ("agents", "call", "queue", "started", "timer")

    def __init__(
        self, call: _Call, queue: _Queue, agents: list[str], started: float, timer: _Timer
    ) -> None:
        self.call = call
        self.queue = queue
        self.agents = agents
        self.started = started
        self.timer = timer


class _Call:
    __slots__ = (
        "agent",
        "answered",
        "barred",
        "call_id",
        "callback",
        "caller_name",
        "caller_number",
        "cap",
        "entered",
        "escalation",
        "offer",
        "priority",
        "queue",
        "seq",
        "state",
        "timers",
        "token",
    )

    def __init__(
        self, call_id: str, priority: int, caller_number: str, caller_name: str, now: float
    ) -> None:
        self.call_id = call_id
        self.priority = priority
        self.caller_number = caller_number
        self.caller_name = caller_name
        self.queue: _Queue | None = None
        self.state = CallerState.WAITING
        self.entered = now
        self.seq = 0
        self.token = 0
        self.cap = NO_LIMIT
        self.escalation = 0
        self.barred: dict[str, float] | None = None
        self.callback = ""
        self.offer: _Offer | None = None
        self.agent = ""
        self.answered = 0.0
        self.timers: list[_Timer] = []


_HeapEntry = tuple[int, int, _Call]


class _Queue:
    __slots__ = (
        "calls",
        "calls_done",
        "classes",
        "config",
        "handle_ewma",
        "index",
        "last_call",
        "members",
        "name",
        "present",
        "ranks",
        "ready",
        "rr_last",
    )

    def __init__(self, config: QueueConfig) -> None:
        self.name = config.name
        self.config = config
        self.members = {m.agent: m.penalty for m in config.members}
        self.index = {m.agent: i for i, m in enumerate(config.members)}
        self.classes: dict[int, list[_HeapEntry]] = {}
        self.ranks: dict[int, ArrivalRank] = {}
        self.calls: dict[str, _Call] = {}
        self.ready: dict[str, None] = {}
        self.present = 0
        self.rr_last = -1
        self.last_call: dict[str, float] = {}
        self.calls_done: dict[str, int] = {}
        self.handle_ewma: float | None = None


class _Agent:
    __slots__ = (
        "call",
        "idle_since",
        "name",
        "paused",
        "queues",
        "reason",
        "since",
        "state",
        "unanswered",
        "wrapup",
        "wrapup_timer",
    )

    def __init__(self, name: str, wrapup: float | None) -> None:
        self.name = name
        self.wrapup = wrapup
        self.state = AgentState.LOGGED_OUT
        self.paused = False
        self.reason = ""
        self.since = 0.0
        self.idle_since = 0.0
        self.call: _Call | None = None
        self.queues: list[_Queue] = []
        self.unanswered = 0
        self.wrapup_timer: _Timer | None = None


class AcdEngine:
    """Queues, agents and offers of one contact center; sans-IO, every input takes `now`.

    `rng` drives the ``random`` and ``wrandom`` strategies (seed it for reproducible runs);
    `stats_period` is the bucket size, in seconds, of the period statistics, and
    `stats_retention` how many seconds of them are kept (None: all; see `queueing.stats`).
    """

    def __init__(
        self,
        config: AcdConfig,
        *,
        rng: random.Random | None = None,
        stats_period: float = 900.0,
        stats_retention: float | None = DEFAULT_RETENTION,
    ) -> None:
        self.config = config
        self._rng = rng if rng is not None else random.Random()
        self._queues = {name: _Queue(q) for name, q in config.queues.items()}
        self._agents = {name: _Agent(name, a.wrapup) for name, a in config.agents.items()}
        for queue in self._queues.values():
            for agent in queue.members:
                self._agents[agent].queues.append(queue)
        self._calls: dict[str, _Call] = {}
        self._events: deque[Event] = deque()
        self._timers: list[tuple[float, int, _Timer]] = []
        self._seq = 0
        self._now = -math.inf
        self._deferred: dict[str, _Queue] | None = None
        self.statistics = Statistics(
            {name: q.service_level for name, q in config.queues.items()},
            period=stats_period,
            retention=stats_retention,
        )
        """Statistics fed from this engine's queue log."""

    # -- events and timers ------------------------------------------------------------------

    def next_event(self) -> Event | None:
        """The oldest event not yet drained, or None."""
        return self._events.popleft() if self._events else None

    def events(self) -> list[Event]:
        """Drain every pending event, oldest first."""
        drained = list(self._events)
        self._events.clear()
        return drained

    def get_timer(self) -> float | None:
        """When `handle_timer` is next due, or None when no timer is armed."""
        timers = self._timers
        while timers and not timers[0][2].live:
            heapq.heappop(timers)
        return timers[0][0] if timers else None

    def handle_timer(self, now: float) -> None:
        """Run every timer due at or before `now`, each at its own time, in order.

        Timers due at the same instant are applied together before anyone is offered a caller,
        so that, e.g., two callers escalating at once are offered in priority order.
        """
        timers = self._timers
        while timers and timers[0][0] <= now:
            instant = timers[0][0]
            at = max(instant, self._now)
            self._deferred = {}
            while timers and timers[0][0] == instant:
                timer = heapq.heappop(timers)[2]
                if timer.live:
                    timer.live = False
                    self._fire(timer, at)
            deferred, self._deferred = self._deferred, None
            self._dispatch(deferred.values(), at)
        self._tick(now)

    def _fire(self, timer: _Timer, at: float) -> None:
        kind = timer.kind
        if kind is _TimerKind.RING_TIMEOUT:
            assert isinstance(timer.target, _Offer)
            self._ring_timeout(timer.target, at)
        elif kind is _TimerKind.WRAPUP_END:
            assert isinstance(timer.target, _Agent)
            timer.target.wrapup_timer = None
            self._end_wrapup(timer.target, at)
        else:
            assert isinstance(timer.target, _Call)
            call = timer.target
            call.timers.remove(timer)
            if call.state is CallerState.GONE or call.queue is None:
                return
            if kind is _TimerKind.MAX_WAIT:
                self._max_wait(call, at)
            elif kind is _TimerKind.ESCALATE:
                self._escalate(call, at)
            elif kind is _TimerKind.ANNOUNCE:
                self._announce(call, at)
            else:
                self._dispatch((call.queue,), at)

    def _tick(self, now: float) -> None:
        if now > self._now:
            self._now = now

    def _schedule(self, when: float, kind: _TimerKind, target: object) -> _Timer:
        timer = _Timer(when, kind, target)
        self._seq += 1
        heapq.heappush(self._timers, (when, self._seq, timer))
        return timer

    def _call_timer(self, call: _Call, when: float, kind: _TimerKind) -> None:
        call.timers.append(self._schedule(when, kind, call))

    def _cancel_call_timers(self, call: _Call, *kinds: _TimerKind) -> None:
        keep: list[_Timer] = []
        for timer in call.timers:
            if not kinds or timer.kind in kinds:
                timer.live = False
            else:
                keep.append(timer)
        call.timers = keep

    def _log(
        self,
        now: float,
        queue: str,
        call_id: str,
        agent: str,
        event: LogEvent,
        data: dict[str, LogValue],
    ) -> None:
        entry = QueueLogEntry(now, queue, call_id, agent, event, data)
        self._events.append(entry)
        self.statistics.feed(entry)

    # -- lookups ----------------------------------------------------------------------------

    def _agent(self, agent: str) -> _Agent:
        try:
            return self._agents[agent]
        except KeyError:
            raise UnknownAgentError(agent) from None

    def _queue(self, queue: str) -> _Queue:
        try:
            return self._queues[queue]
        except KeyError:
            raise UnknownQueueError(queue) from None

    def agent_status(self, agent: str) -> AgentStatus:
        """A snapshot of `agent`."""
        a = self._agent(agent)
        return AgentStatus(
            agent,
            a.state,
            a.reason if a.paused else "",
            a.since,
            a.call.call_id if a.call is not None else "",
            tuple(q.name for q in a.queues),
        )

    def queue_status(self, queue: str, now: float) -> QueueStatus:
        """A live snapshot of `queue` at `now`."""
        q = self._queue(queue)
        ringing = sum(1 for c in q.calls.values() if c.state is CallerState.RINGING)
        callbacks = sum(1 for c in q.calls.values() if c.callback)
        oldest = next(iter(q.calls.values()), None)
        states = [self._agents[a].state for a in q.members]
        return QueueStatus(
            queue=queue,
            waiting=len(q.calls),
            ringing=ringing,
            callbacks=callbacks,
            longest_wait=max(0.0, now - oldest.entered) if oldest is not None else 0.0,
            members_logged_in=sum(1 for s in states if s is not AgentState.LOGGED_OUT),
            members_ready=sum(1 for s in states if s is AgentState.READY),
            members_paused=sum(1 for s in states if s is AgentState.PAUSED),
            members_busy=sum(
                1
                for s in states
                if s in (AgentState.RINGING, AgentState.ON_CALL, AgentState.WRAPUP)
            ),
        )

    def call_state(self, call_id: str) -> CallerState:
        """Where `call_id` is (`CallerState.GONE` once it left the engine or was never seen)."""
        call = self._calls.get(call_id)
        return call.state if call is not None else CallerState.GONE

    def call_queue(self, call_id: str) -> str:
        """The queue `call_id` is in or was answered from ("" when unknown)."""
        call = self._calls.get(call_id)
        return call.queue.name if call is not None and call.queue is not None else ""

    def position(self, call_id: str) -> int:
        """1-based position of a caller in its queue (0 when it is not waiting in one)."""
        call = self._calls.get(call_id)
        if call is None or call.queue is None or call.state is CallerState.ON_CALL:
            return 0
        return self._position(call.queue, call)

    def _position(self, queue: _Queue, call: _Call) -> int:
        ahead = sum(len(r) for p, r in queue.ranks.items() if p > call.priority)
        return ahead + queue.ranks[call.priority].rank(call.seq) + 1

    def estimated_wait(self, queue: str, position: int) -> float | None:
        """Seconds a caller at `position` may still wait: position x average handle time over
        the members logged in and unpaused; None before the first completed call."""
        return self._estimate(self._queue(queue), position)

    def _estimate(self, queue: _Queue, position: int) -> float | None:
        if queue.handle_ewma is None or queue.present == 0:
            return None
        return position * queue.handle_ewma / queue.present

    # -- agents -----------------------------------------------------------------------------

    def agent_login(self, agent: str, now: float, *, paused_reason: str | None = None) -> None:
        """Log `agent` in, ready (or paused with `paused_reason`)."""
        self._tick(now)
        a = self._agent(agent)
        if a.state is not AgentState.LOGGED_OUT:
            raise AgentStateError(f"agent {agent} is already logged in")
        self._log(now, "", "", agent, LogEvent.LOGIN, {})
        a.idle_since = now
        a.unanswered = 0
        a.paused = paused_reason is not None
        a.reason = paused_reason or ""
        if a.paused:
            self._log(now, "", "", agent, LogEvent.PAUSE, {"reason": a.reason})
        else:
            for queue in a.queues:
                queue.present += 1
        if a.call is not None:
            self._set_state(a, AgentState.ON_CALL, now)
        else:
            self._become_idle(a, now)

    def agent_logout(self, agent: str, now: float) -> None:
        """Log `agent` out; an offer ringing it is cancelled, a call in progress goes on (and
        the agent is back on it if it logs in again before the call ends)."""
        self._logout(agent, now, "")

    def force_logout(self, agent: str, now: float, *, supervisor: str = "") -> None:
        """A supervisor logs `agent` out."""
        self._logout(agent, now, f"forced by {supervisor}" if supervisor else "forced")

    def _logout(self, agent: str, now: float, reason: str) -> None:
        self._tick(now)
        a = self._agent(agent)
        if a.state is AgentState.LOGGED_OUT:
            raise AgentStateError(f"agent {agent} is not logged in")
        was_present = not a.paused
        if a.paused:
            self._log(now, "", "", agent, LogEvent.UNPAUSE, {"reason": a.reason})
        a.paused = False
        a.reason = ""
        if a.wrapup_timer is not None:
            a.wrapup_timer.live = False
            a.wrapup_timer = None
        self._leave_ready(a)
        ringing = a.call if a.state is AgentState.RINGING else None
        if a.state is not AgentState.ON_CALL:
            a.call = None
        self._set_state(a, AgentState.LOGGED_OUT, now)
        self._log(now, "", "", agent, LogEvent.LOGOUT, {"reason": reason})
        if ringing is not None:
            self._withdraw(a, ringing, now, "logout")
        if was_present:
            self._members_left(a, now)

    def agent_pause(self, agent: str, reason: str, now: float) -> None:
        """Pause `agent` with `reason`: at once when idle or ringing (the offer is cancelled),
        at the end of the call or wrap-up otherwise."""
        self._pause(agent, reason, now, "")

    def force_pause(self, agent: str, reason: str, now: float, *, supervisor: str = "") -> None:
        """A supervisor pauses `agent`."""
        self._pause(agent, reason, now, supervisor or "supervisor")

    def _pause(self, agent: str, reason: str, now: float, by: str) -> None:
        self._tick(now)
        a = self._agent(agent)
        if a.state is AgentState.LOGGED_OUT:
            raise AgentStateError(f"agent {agent} is not logged in")
        if a.paused and a.reason == reason:
            return
        was_paused = a.paused
        a.paused = True
        a.reason = reason
        data: dict[str, LogValue] = {"reason": reason}
        if by:
            data["by"] = by
        self._log(now, "", "", agent, LogEvent.PAUSE, data)
        if a.state is AgentState.RINGING:
            ringing = a.call
            assert ringing is not None
            a.call = None
            self._set_state(a, AgentState.PAUSED, now)
            self._withdraw(a, ringing, now, "paused")
        elif a.state in (AgentState.READY, AgentState.PAUSED):
            self._leave_ready(a)
            self._set_state(a, AgentState.PAUSED, now)
        if not was_paused:
            self._members_left(a, now)

    def agent_unpause(self, agent: str, now: float) -> None:
        """End `agent`'s pause (no-op when not paused)."""
        self._tick(now)
        a = self._agent(agent)
        if a.state is AgentState.LOGGED_OUT:
            raise AgentStateError(f"agent {agent} is not logged in")
        if not a.paused:
            return
        self._log(now, "", "", agent, LogEvent.UNPAUSE, {"reason": a.reason})
        a.paused = False
        a.reason = ""
        for queue in a.queues:
            queue.present += 1
        if a.state is AgentState.PAUSED:
            self._become_idle(a, now)

    def agent_ready(self, agent: str, now: float) -> None:
        """Make `agent` ready: end its pause and cut its wrap-up short."""
        self._tick(now)
        a = self._agent(agent)
        if a.state is AgentState.LOGGED_OUT:
            raise AgentStateError(f"agent {agent} is not logged in")
        if a.paused:
            self.agent_unpause(agent, now)
        if a.state is AgentState.WRAPUP:
            assert a.wrapup_timer is not None
            a.wrapup_timer.live = False
            a.wrapup_timer = None
            self._end_wrapup(a, now)

    def _set_state(self, a: _Agent, state: AgentState, now: float) -> None:
        a.state = state
        a.since = now
        call_id = a.call.call_id if a.call is not None else ""
        self._events.append(
            AgentStateChanged(a.name, state, a.reason if a.paused else "", now, call_id)
        )

    def _become_idle(self, a: _Agent, now: float) -> None:
        """The agent has no call: paused, or ready (and offered a waiting caller at once)."""
        a.call = None
        if a.paused:
            self._set_state(a, AgentState.PAUSED, now)
            return
        self._set_state(a, AgentState.READY, now)
        for queue in a.queues:
            queue.ready[a.name] = None
        self._dispatch(a.queues, now)

    def _leave_ready(self, a: _Agent) -> None:
        for queue in a.queues:
            queue.ready.pop(a.name, None)

    def _end_wrapup(self, a: _Agent, now: float) -> None:
        self._become_idle(a, now)

    def _members_left(self, a: _Agent, now: float) -> None:
        """`a` stopped counting as present in its queues (logout or pause)."""
        for queue in a.queues:
            self._member_left(queue, now)

    def _member_left(self, queue: _Queue, now: float) -> None:
        """One member stopped counting as present in `queue` (logout, pause, removal)."""
        queue.present -= 1
        if queue.present == 0 and queue.config.leave_when_empty:
            for call in list(queue.calls.values()):
                if call.state is CallerState.WAITING and not call.callback:
                    self._log(
                        now,
                        queue.name,
                        call.call_id,
                        "",
                        LogEvent.EXIT_EMPTY,
                        {"wait": now - call.entered, "position": self._position(queue, call)},
                    )
                    self._overflow(call, queue, "leave-empty", now)

    # -- callers ----------------------------------------------------------------------------

    def caller_enter(
        self,
        call_id: str,
        queue: str,
        now: float,
        *,
        priority: int = 0,
        caller_number: str = "",
        caller_name: str = "",
    ) -> EnterResult:
        """Put a caller in `queue`; it may be refused (full, join-empty) and overflow.

        The outcome is also reported through events (`QueueLogEntry`, `Overflow`).
        """
        self._tick(now)
        q = self._queue(queue)
        if call_id in self._calls:
            raise DuplicateCallError(call_id)
        call = _Call(call_id, priority, caller_number, caller_name, now)
        return self._enter(call, q, now, 0)

    def _enter(self, call: _Call, q: _Queue, now: float, hops: int) -> EnterResult:
        config = q.config
        reason = ""
        if config.max_callers and len(q.calls) >= config.max_callers:
            reason = "full"
        elif not config.join_empty and q.present == 0:
            reason = "join-empty"
        if reason:
            return self._refuse(call, q, reason, now, hops)
        self._calls[call.call_id] = call
        self._seq += 1
        call.queue = q
        call.seq = self._seq
        call.entered = now
        call.state = CallerState.WAITING
        call.barred = None
        call.cap = config.max_penalty if config.max_penalty >= 0 else NO_LIMIT
        call.escalation = 0
        q.calls[call.call_id] = call
        rank = q.ranks.get(call.priority)
        if rank is None:
            rank = q.ranks[call.priority] = ArrivalRank()
            q.classes[call.priority] = []
        rank.add(call.seq)
        position = self._position(q, call)
        self._log(
            now,
            q.name,
            call.call_id,
            "",
            LogEvent.ENTER,
            {"priority": call.priority, "position": position, "caller_number": call.caller_number},
        )
        if config.max_wait > 0:
            self._call_timer(call, now + config.max_wait, _TimerKind.MAX_WAIT)
        if config.announce_frequency > 0:
            self._call_timer(call, now + config.announce_frequency, _TimerKind.ANNOUNCE)
        self._apply_escalation(call, now)
        self._push(call)
        self._dispatch((q,), now)
        return Joined(call.call_id, q.name, position)

    def _refuse(self, call: _Call, q: _Queue, reason: str, now: float, hops: int) -> EnterResult:
        destination = q.config.overflow
        self._log(
            now,
            q.name,
            call.call_id,
            "",
            LogEvent.OVERFLOW,
            {"reason": reason, "destination": str(destination), "wait": 0.0},
        )
        self._events.append(Overflow(call.call_id, q.name, destination, reason))
        if destination.kind is DestinationKind.QUEUE and hops < len(self._queues):
            return self._enter(call, self._queues[destination.target], now, hops + 1)
        call.state = CallerState.GONE
        return Overflowed(call.call_id, q.name, destination, reason)

    def _push(self, call: _Call) -> None:
        assert call.queue is not None
        call.token += 1
        heapq.heappush(call.queue.classes[call.priority], (call.seq, call.token, call))

    def _apply_escalation(self, call: _Call, now: float) -> None:
        assert call.queue is not None
        rules = call.queue.config.escalation
        while call.escalation < len(rules):
            rule = rules[call.escalation]
            due = call.entered + rule.after
            if due > now:
                self._call_timer(call, due, _TimerKind.ESCALATE)
                return
            call.cap = rule.max_penalty
            call.escalation += 1

    def _escalate(self, call: _Call, now: float) -> None:
        self._apply_escalation(call, now)
        assert call.queue is not None
        if call.state is CallerState.WAITING:
            self._dispatch((call.queue,), now)

    def caller_abandon(self, call_id: str, now: float) -> bool:
        """The caller hung up, at any moment; False when the call is not (or no longer) here.

        A caller who hangs up while connected to an agent completes the call (reason "caller").
        """
        self._tick(now)
        call = self._calls.get(call_id)
        if call is None:
            return False
        if call.state is CallerState.ON_CALL:
            return self.call_completed(call_id, call.agent, now, reason="caller")
        q = call.queue
        assert q is not None
        state = "callback" if call.callback else call.state.value
        self._log(
            now,
            q.name,
            call_id,
            "",
            LogEvent.ABANDON,
            {"wait": now - call.entered, "position": self._position(q, call), "state": state},
        )
        self._remove(call, now, "abandoned")
        return True

    def callback_request(self, call_id: str, number: str, now: float) -> bool:
        """The caller asks to be called back at `number` and hangs up, keeping its place."""
        self._tick(now)
        call = self._calls.get(call_id)
        if call is None or call.queue is None or call.state is CallerState.ON_CALL:
            return False
        q = call.queue
        call.callback = number
        self._cancel_call_timers(call, _TimerKind.ANNOUNCE, _TimerKind.MAX_WAIT)
        self._log(
            now,
            q.name,
            call_id,
            "",
            LogEvent.CALLBACK,
            {"number": number, "wait": now - call.entered, "position": self._position(q, call)},
        )
        if call.state is CallerState.RINGING:
            offer = call.offer
            assert offer is not None
            self._requeue(call, now, self._cancel_offer(offer, now, "callback"))
        return True

    def _remove(self, call: _Call, now: float, cancel_reason: str) -> None:
        """Take `call` out of its queue and of the engine, releasing any agent it rings."""
        q = call.queue
        assert q is not None
        offer = call.offer
        freed: list[_Agent] = []
        if offer is not None:
            freed = self._cancel_offer(offer, now, cancel_reason)
        self._leave_queue(call)
        call.state = CallerState.GONE
        self._cancel_call_timers(call)
        self._calls.pop(call.call_id, None)
        if freed:
            self._dispatch((q for a in freed for q in a.queues), now)

    def _leave_queue(self, call: _Call) -> None:
        q = call.queue
        assert q is not None
        if q.calls.pop(call.call_id, None) is not None:
            q.ranks[call.priority].remove(call.seq)
        call.token += 1

    def _overflow(self, call: _Call, q: _Queue, reason: str, now: float) -> None:
        destination = q.config.overflow
        self._log(
            now,
            q.name,
            call.call_id,
            "",
            LogEvent.OVERFLOW,
            {"reason": reason, "destination": str(destination), "wait": now - call.entered},
        )
        self._events.append(Overflow(call.call_id, q.name, destination, reason))
        offer = call.offer
        freed = self._cancel_offer(offer, now, "overflow") if offer is not None else []
        self._leave_queue(call)
        self._cancel_call_timers(call)
        self._calls.pop(call.call_id, None)
        if destination.kind is DestinationKind.QUEUE:
            self._enter(call, self._queues[destination.target], now, 1)
        else:
            call.state = CallerState.GONE
        if freed:
            self._dispatch((q for a in freed for q in a.queues), now)

    def _max_wait(self, call: _Call, now: float) -> None:
        q = call.queue
        assert q is not None
        if call.callback or call.state is CallerState.ON_CALL:
            return
        self._log(
            now,
            q.name,
            call.call_id,
            "",
            LogEvent.EXIT_TIMEOUT,
            {"wait": now - call.entered, "position": self._position(q, call)},
        )
        self._overflow(call, q, "timeout", now)

    def _announce(self, call: _Call, now: float) -> None:
        q = call.queue
        assert q is not None
        if call.state is CallerState.WAITING and not call.callback:
            position = self._position(q, call)
            estimate = self._estimate(q, position)
            self._events.append(Announce(call.call_id, q.name, position, estimate))
        if call.state is not CallerState.ON_CALL and not call.callback:
            self._call_timer(call, now + q.config.announce_frequency, _TimerKind.ANNOUNCE)

    # -- offers -----------------------------------------------------------------------------

    def _dispatch(self, queues: Iterable[_Queue], now: float | None = None) -> None:
        """Offer waiting callers of `queues` to their ready members; see the module docstring.

        While `handle_timer` applies the timers of one instant, only notes the queues.
        """
        if self._deferred is not None:
            for q in queues:
                self._deferred[q.name] = q
            return
        at = self._now if now is None else now
        heads: list[tuple[int, int, _Queue, int]] = []
        seen: set[str] = set()
        for q in queues:
            if not q.ready or q.name in seen:
                continue
            seen.add(q.name)
            for priority, heap in q.classes.items():
                head = self._head(heap)
                if head is not None:
                    heads.append((-priority, head.seq, q, priority))
        if not heads:
            return
        heapq.heapify(heads)
        skipped: list[tuple[list[_HeapEntry], _HeapEntry]] = []
        while heads:
            _, _, q, priority = heapq.heappop(heads)
            if not q.ready:
                continue
            heap = q.classes[priority]
            head = self._head(heap)
            if head is None:
                continue
            outcome = self._try_offer(q, head, at)
            if outcome == _NO_PENALTY:
                continue
            if outcome == _BARRED:
                skipped.append((heap, heap[0]))
            heapq.heappop(heap)
            following = self._head(heap)
            if following is not None:
                heapq.heappush(heads, (-priority, following.seq, q, priority))
        for heap, entry in skipped:
            heapq.heappush(heap, entry)

    @staticmethod
    def _head(heap: list[_HeapEntry]) -> _Call | None:
        while heap:
            _, token, call = heap[0]
            if call.token == token and call.state is CallerState.WAITING:
                return call
            heapq.heappop(heap)
        return None

    def _try_offer(self, q: _Queue, call: _Call, now: float) -> int:
        members = q.members
        cap = call.cap
        barred = call.barred
        if barred is not None:
            for agent, until in list(barred.items()):
                if until <= now:
                    del barred[agent]
            if not barred:
                barred = call.barred = None
        strategy = q.config.strategy
        candidates: list[str] = []
        best = NO_LIMIT
        any_penalty = False
        for agent in q.ready:
            penalty = members[agent]
            if penalty > cap:
                continue
            any_penalty = True
            if barred is not None and agent in barred:
                continue
            if strategy is Strategy.WRANDOM or penalty == best:
                candidates.append(agent)
            elif penalty < best:
                best = penalty
                candidates = [agent]
        if not candidates:
            return _BARRED if any_penalty else _NO_PENALTY
        chosen = self._choose(q, strategy, candidates)
        self._start_offer(q, call, chosen, now)
        return _MATCHED

    def _choose(self, q: _Queue, strategy: Strategy, candidates: list[str]) -> list[str]:
        if strategy is Strategy.RINGALL or len(candidates) == 1:
            if strategy in (Strategy.RRMEMORY, Strategy.RRORDERED):
                q.rr_last = q.index[candidates[0]]
            return candidates
        index = q.index
        if strategy is Strategy.LINEAR:
            return [min(candidates, key=index.__getitem__)]
        if strategy in (Strategy.RRMEMORY, Strategy.RRORDERED):
            size = len(index)
            last = q.rr_last
            chosen = min(candidates, key=lambda a: (index[a] - last - 1) % size)
            q.rr_last = index[chosen]
            return [chosen]
        if strategy is Strategy.LEASTRECENT:
            last_call = q.last_call
            return [min(candidates, key=lambda a: (last_call.get(a, -math.inf), index[a]))]
        if strategy is Strategy.FEWESTCALLS:
            done = q.calls_done
            return [min(candidates, key=lambda a: (done.get(a, 0), index[a]))]
        if strategy is Strategy.LONGEST_IDLE:
            agents = self._agents
            return [min(candidates, key=lambda a: (agents[a].idle_since, index[a]))]
        ordered = sorted(candidates, key=index.__getitem__)
        if strategy is Strategy.RANDOM:
            return [self._rng.choice(ordered)]
        members = q.members
        rng = self._rng
        return [min(ordered, key=lambda a: rng.random() * (members[a] + 1))]

    def _start_offer(self, q: _Queue, call: _Call, agents: list[str], now: float) -> None:
        timeout = q.config.ring_timeout
        call.state = CallerState.RINGING
        call.token += 1
        timer = self._schedule(now + timeout, _TimerKind.RING_TIMEOUT, None)
        offer = timer.target = _Offer(call, q, agents, now, timer)
        call.offer = offer
        waited = now - call.entered
        for name in agents:
            a = self._agents[name]
            self._leave_ready(a)
            a.call = call
            self._set_state(a, AgentState.RINGING, now)
            if call.callback:
                self._events.append(
                    CallbackDial(
                        call.call_id, name, q.name, call.callback, timeout, call.caller_name, waited
                    )
                )
            else:
                self._events.append(
                    OfferCall(
                        call.call_id,
                        name,
                        q.name,
                        timeout,
                        call.caller_number,
                        call.caller_name,
                        call.priority,
                        waited,
                    )
                )
            self._log(
                now,
                q.name,
                call.call_id,
                name,
                LogEvent.OFFER,
                {"ring_timeout": timeout, "callback": call.callback},
            )

    def _cancel_offer(self, offer: _Offer, now: float, reason: str) -> list[_Agent]:
        """End `offer` for every agent it still rings; they become idle (not yet dispatched)."""
        offer.timer.live = False
        offer.call.offer = None
        freed = []
        for name in offer.agents:
            a = self._agents[name]
            self._events.append(CancelOffer(offer.call.call_id, name, reason))
            a.call = None
            if a.paused:
                self._set_state(a, AgentState.PAUSED, now)
            else:
                self._set_state(a, AgentState.READY, now)
                for queue in a.queues:
                    queue.ready[name] = None
                freed.append(a)
        offer.agents = []
        return freed

    def _withdraw(self, a: _Agent, call: _Call, now: float, reason: str) -> None:
        """Stop ringing `a` alone (it paused or logged out); the caller stays in the queue."""
        offer = call.offer
        assert offer is not None
        self._events.append(CancelOffer(call.call_id, a.name, reason))
        offer.agents.remove(a.name)
        if not offer.agents:
            offer.timer.live = False
            self._requeue(call, now)

    def _requeue(self, call: _Call, now: float, freed: Iterable[_Agent] = ()) -> None:
        """A ringing caller that nobody rings any more waits again in its old place; it and the
        agents `freed` from its offer are dispatched."""
        q = call.queue
        assert q is not None
        call.state = CallerState.WAITING
        call.offer = None
        self._push(call)
        self._dispatch(itertools.chain((q,), (fq for a in freed for fq in a.queues)), now)

    def offer_answered(self, call_id: str, agent: str, now: float) -> bool:
        """`agent` answered the offer of `call_id`; False when the offer no longer stands (the
        call layer must then hang the agent's leg up)."""
        self._tick(now)
        a = self._agent(agent)
        call = self._calls.get(call_id)
        if call is None or call.offer is None or agent not in call.offer.agents:
            return False
        offer = call.offer
        q = call.queue
        assert q is not None
        offer.agents.remove(agent)
        freed = self._cancel_offer(offer, now, "answered-elsewhere")
        self._log(
            now,
            q.name,
            call_id,
            agent,
            LogEvent.ANSWER,
            {"wait": now - call.entered, "ring": now - offer.started, "callback": call.callback},
        )
        self._leave_queue(call)
        self._cancel_call_timers(call)
        call.state = CallerState.ON_CALL
        call.agent = agent
        call.answered = now
        a.unanswered = 0
        a.call = call
        self._set_state(a, AgentState.ON_CALL, now)
        if freed:
            self._dispatch((q for f in freed for q in f.queues), now)
        return True

    def offer_rejected(self, call_id: str, agent: str, now: float) -> bool:
        """`agent` declined the offer; counts as unanswered (auto-pause, retry bar)."""
        return self._no_answer(call_id, agent, now, "rejected")

    def offer_timeout(self, call_id: str, agent: str, now: float) -> bool:
        """The call layer saw the offer ring out before the engine's own ring timer did."""
        return self._no_answer(call_id, agent, now, "timeout")

    def _no_answer(self, call_id: str, agent: str, now: float, reason: str) -> bool:
        self._tick(now)
        a = self._agent(agent)
        call = self._calls.get(call_id)
        if call is None or call.offer is None or agent not in call.offer.agents:
            return False
        offer = call.offer
        offer.agents.remove(agent)
        if not offer.agents:
            offer.timer.live = False
            call.offer = None
            call.state = CallerState.WAITING
            self._push(call)
        freed = [a] if self._missed(offer, a, now, reason) else []
        self._dispatch_after_miss(call, freed, now)
        return True

    def _ring_timeout(self, offer: _Offer, now: float) -> None:
        call = offer.call
        agents = [self._agents[name] for name in offer.agents]
        offer.agents = []
        call.offer = None
        call.state = CallerState.WAITING
        self._push(call)
        freed: list[_Agent] = []
        for a in agents:
            self._events.append(CancelOffer(call.call_id, a.name, "timeout"))
            if self._missed(offer, a, now, "timeout"):
                freed.append(a)
        self._dispatch_after_miss(call, freed, now)

    def _dispatch_after_miss(self, call: _Call, freed: Iterable[_Agent], now: float) -> None:
        queues = [fq for a in freed for fq in a.queues]
        if call.queue is not None and call.state is CallerState.WAITING:
            queues.append(call.queue)
        self._dispatch(queues, now)

    def _missed(self, offer: _Offer, a: _Agent, now: float, reason: str) -> bool:
        """`a` let `offer` ring out or declined it: log it, bar it from the caller for `retry`
        seconds, auto-pause it or make it ready (not yet dispatched); True when ready."""
        call = offer.call
        q = offer.queue
        self._log(
            now,
            q.name,
            call.call_id,
            a.name,
            LogEvent.NO_ANSWER,
            {"ring": now - offer.started, "reason": reason},
        )
        retry = q.config.retry
        if retry > 0 and call.queue is q and call.state is not CallerState.GONE:
            if call.barred is None:
                call.barred = {}
            call.barred[a.name] = now + retry
            self._call_timer(call, now + retry, _TimerKind.RETRY)
        a.unanswered += 1
        a.call = None
        autopause = q.config.autopause
        if autopause and a.unanswered >= autopause and not a.paused:
            a.unanswered = 0
            a.paused = True
            a.reason = "autopause"
            self._log(now, "", "", a.name, LogEvent.PAUSE, {"reason": "autopause"})
            self._set_state(a, AgentState.PAUSED, now)
            self._members_left(a, now)
            return False
        if a.paused:
            self._set_state(a, AgentState.PAUSED, now)
            return False
        self._set_state(a, AgentState.READY, now)
        for queue in a.queues:
            queue.ready[a.name] = None
        return True

    # -- runtime administration -------------------------------------------------------------
    #
    # Agents, queues and memberships change while callers wait. Waiting callers keep their
    # place (their heaps are ordered by priority and arrival, never by strategy or member), an
    # agent ringing for a caller of a queue it leaves is withdrawn (the caller waits again in
    # its place), and a call in progress goes on whatever changes.

    def add_agent(self, agent: AgentConfig, now: float) -> None:
        """A new agent, logged out and in no queue (`set_member` adds it to queues)."""
        self._tick(now)
        if agent.agent in self._agents:
            raise AcdUsageError(f"agent {agent.agent} exists already")
        self._agents[agent.agent] = _Agent(agent.agent, agent.wrapup)
        self.config = replace(self.config, agents={**self.config.agents, agent.agent: agent})

    def update_agent(self, agent: AgentConfig) -> None:
        """Change an agent's display name and wrap-up (from its next call on)."""
        a = self._agent(agent.agent)
        a.wrapup = agent.wrapup
        self.config = replace(self.config, agents={**self.config.agents, agent.agent: agent})

    def remove_agent(self, agent: str, now: float) -> None:
        """Forget `agent` and its memberships; it must be logged out with no call in progress
        (`AgentStateError` otherwise)."""
        self._tick(now)
        a = self._agent(agent)
        if a.state is not AgentState.LOGGED_OUT or a.call is not None:
            raise AgentStateError(f"agent {agent} is logged in or on a call")
        for queue in list(a.queues):
            self.remove_member(queue.name, agent, now)
        del self._agents[agent]
        agents = dict(self.config.agents)
        agents.pop(agent, None)
        self.config = replace(self.config, agents=agents)

    def set_member(self, queue: str, agent: str, penalty: int, now: float) -> None:
        """Make `agent` a member of `queue` with `penalty` (or change its penalty): a ready
        agent is offered a waiting caller at once."""
        self._tick(now)
        q = self._queue(queue)
        a = self._agent(agent)
        if agent not in q.members:
            a.queues.append(q)
            if a.state is not AgentState.LOGGED_OUT and not a.paused:
                q.present += 1
            if a.state is AgentState.READY:
                q.ready[agent] = None
        q.members[agent] = penalty
        self._members_changed(q)
        self._dispatch((q,), now)

    def remove_member(self, queue: str, agent: str, now: float) -> bool:
        """Take `agent` out of `queue`; False when it was not a member. An offer of a caller
        of `queue` ringing it is withdrawn (the caller waits again in its place, offered to
        the others) and the agent goes on with its other queues; a call in progress goes on."""
        self._tick(now)
        q = self._queue(queue)
        a = self._agent(agent)
        if agent not in q.members:
            return False
        ringing = a.call if a.state is AgentState.RINGING else None
        withdrawn = (
            ringing is not None
            and ringing.queue is q
            and ringing.offer is not None
            and agent in ringing.offer.agents
        )
        del q.members[agent]
        q.ready.pop(agent, None)
        a.queues.remove(q)
        self._members_changed(q)
        if withdrawn:
            assert ringing is not None
            a.call = None
            self._withdraw(a, ringing, now, "member-removed")
        if a.state is not AgentState.LOGGED_OUT and not a.paused:
            self._member_left(q, now)
        if withdrawn:
            if a.paused:
                self._set_state(a, AgentState.PAUSED, now)
            else:
                self._become_idle(a, now)
        return True

    def add_queue(self, config: QueueConfig, now: float) -> None:
        """A new queue with its members (agents the engine knows)."""
        self._tick(now)
        if config.name in self._queues:
            raise AcdUsageError(f"queue {config.name} exists already")
        for member in config.members:
            self._agent(member.agent)
        self._queues[config.name] = _Queue(replace(config, members=()))
        self.statistics.service_levels[config.name] = config.service_level
        self._sync_queues()
        for member in config.members:
            self.set_member(config.name, member.agent, member.penalty, now)

    def update_queue(self, config: QueueConfig, now: float) -> None:
        """Apply a queue's new settings and members at once. Waiting callers keep their order
        (a new strategy picks among the members from the next offer on); a new wait limit,
        announcement period or penalty cap and escalation apply to them from their arrival."""
        self._tick(now)
        q = self._queue(config.name)
        for member in config.members:
            self._agent(member.agent)
        old = q.config
        q.config = replace(config, members=old.members)
        self.statistics.service_levels[config.name] = config.service_level
        wanted = {m.agent: m.penalty for m in config.members}
        for agent in [a for a in q.members if a not in wanted]:
            self.remove_member(config.name, agent, now)
        for member in config.members:
            if q.members.get(member.agent) != member.penalty:
                self.set_member(config.name, member.agent, member.penalty, now)
        q.members = {agent: q.members[agent] for agent in wanted}
        self._members_changed(q)
        timing = ("max_wait", "announce_frequency", "max_penalty", "escalation")
        if any(getattr(old, key) != getattr(config, key) for key in timing):
            for call in list(q.calls.values()):
                self._retime(call, q, now)
        self._dispatch((q,), now)

    def _retime(self, call: _Call, q: _Queue, now: float) -> None:
        """Re-arm a waiting caller's limits after its queue's settings changed."""
        config = q.config
        self._cancel_call_timers(
            call, _TimerKind.MAX_WAIT, _TimerKind.ANNOUNCE, _TimerKind.ESCALATE
        )
        if not call.callback:
            if config.max_wait > 0:
                self._call_timer(
                    call, max(now, call.entered + config.max_wait), _TimerKind.MAX_WAIT
                )
            if config.announce_frequency > 0:
                self._call_timer(call, now + config.announce_frequency, _TimerKind.ANNOUNCE)
        call.cap = config.max_penalty if config.max_penalty >= 0 else NO_LIMIT
        call.escalation = 0
        self._apply_escalation(call, now)

    def remove_queue(self, queue: str, now: float) -> None:
        """Forget an empty queue; `AcdUsageError` while callers wait in it (or are called back
        from it) or another queue overflows into it. Calls already answered from it go on."""
        self._tick(now)
        q = self._queue(queue)
        if q.calls:
            raise AcdUsageError(f"{len(q.calls)} caller(s) wait in queue {queue}")
        for other in self._queues.values():
            target = other.config.overflow
            if other is not q and target.kind is DestinationKind.QUEUE and target.target == queue:
                raise AcdUsageError(f"queue {other.name} overflows into queue {queue}")
        for agent in list(q.members):
            self.remove_member(queue, agent, now)
        del self._queues[queue]
        self._sync_queues()

    def _members_changed(self, q: _Queue) -> None:
        """`q.members` changed: its order (for linear and round robin) and its configuration."""
        q.index = {agent: i for i, agent in enumerate(q.members)}
        q.config = replace(
            q.config, members=tuple(MemberConfig(a, p) for a, p in q.members.items())
        )
        self._sync_queues()

    def _sync_queues(self) -> None:
        self.config = replace(
            self.config, queues={name: q.config for name, q in self._queues.items()}
        )

    # -- connected calls --------------------------------------------------------------------

    def call_completed(
        self, call_id: str, agent: str, now: float, *, reason: str = "agent"
    ) -> bool:
        """The answered call ended (`reason`: who hung up, or a disposition); wrap-up starts."""
        return self._finish(call_id, agent, now, LogEvent.COMPLETE, {"reason": reason})

    def call_transferred(self, call_id: str, agent: str, destination: str, now: float) -> bool:
        """The agent transferred the answered call out to `destination`; wrap-up starts."""
        return self._finish(call_id, agent, now, LogEvent.TRANSFER, {"destination": destination})

    def _finish(
        self, call_id: str, agent: str, now: float, event: LogEvent, data: dict[str, LogValue]
    ) -> bool:
        self._tick(now)
        a = self._agent(agent)
        call = self._calls.get(call_id)
        if call is None or call.state is not CallerState.ON_CALL or call.agent != agent:
            return False
        q = call.queue
        assert q is not None
        talk = now - call.answered
        self._log(
            now,
            q.name,
            call_id,
            agent,
            event,
            {"wait": call.answered - call.entered, "talk": talk, **data},
        )
        call.state = CallerState.GONE
        del self._calls[call_id]
        q.last_call[agent] = now
        q.calls_done[agent] = q.calls_done.get(agent, 0) + 1
        wrapup = a.wrapup if a.wrapup is not None else q.config.wrapup
        handle = talk + wrapup
        if q.handle_ewma is None:
            q.handle_ewma = handle
        else:
            q.handle_ewma += _HANDLE_EWMA_WEIGHT * (handle - q.handle_ewma)
        if a.call is not call:
            return True
        if a.state is AgentState.LOGGED_OUT:
            a.call = None
            return True
        a.idle_since = now
        if wrapup > 0:
            self._set_state(a, AgentState.WRAPUP, now)
            a.call = None
            a.wrapup_timer = self._schedule(now + wrapup, _TimerKind.WRAPUP_END, a)
        else:
            self._become_idle(a, now)
        return True


_MATCHED: Final = 0
_NO_PENALTY: Final = 1
_BARRED: Final = 2
