"""Snapshots of the ACD engine: everything that decides its future outputs, as JSON-able data.

Theory of operation
-------------------
`engine_state(engine)` reads an `AcdEngine` (whose events were drained) into plain lists, dicts,
strings and numbers; `engine_from_state(config, data)` builds an engine that, fed the same inputs
afterwards, emits exactly the same events as the original would have. It is what lets the owner
of the replicated ACD (`queueing.replica`) start from an image instead of replaying its whole
input stream.

What is stored: the clock and the sequence counter (callers' arrival order and timers' order share
it), the state of the `random.Random` of the random strategies, every agent (state, pause,
since/idle-since, the call it rings or talks to, its queues *in order*, unanswered offers in a row,
its wrap-up timer), every queue's live figures (its callers in arrival order, its ready members in
the order they became ready, members present, the round-robin cursor, last call and calls done per
member, the handle-time average), every caller the engine tracks (priority, place, state, penalty
cap and escalation step, bars, callback number, the offer ringing it with its agents in order, its
timers) and the statistics (all-time counters, and the per-period ones the retention keeps, name
by name in the order they were made, so that sums of floats come out bit for bit the same, with
the retention's horizon; an image without it, from before the retention, is trimmed on
reading). Each live timer is stored with its due time and sequence number, which together order
the timer heap.

What is derived again, not stored: a queue's members and their order (its configuration), the
per-priority heaps and `ArrivalRank` trees (rebuilt from the callers in the queue: stale heap
entries and dead rank slots change nothing a caller can observe), cancelled timers, and callers'
heap tokens. An answered call whose queue was removed since keeps a detached queue of its own, of
which only the name and the wrap-up can still be observed.

Reading is strict: every key, type, reference (an agent in a queue, a call an agent rings) and
cross-reference the engine relies on is checked, and any problem raises `SnapshotError` naming the
field (``engine.queues[2].ready[0]: unknown agent 'a9'``), before an engine is built.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable
from dataclasses import fields
from operator import attrgetter
from typing import Any, Final, NoReturn

from queueing.config import AcdConfig, QueueConfig
from queueing.engine import (
    NO_LIMIT,
    AcdEngine,
    CallerState,
    _Agent,
    _Call,
    _Offer,
    _Queue,
    _Timer,
    _TimerKind,
)
from queueing.events import AgentState
from queueing.exceptions import AcdUsageError
from queueing.rank import ArrivalRank
from queueing.stats import DEFAULT_RETENTION, AgentCounters, QueueCounters, Statistics

__all__ = ["SnapshotError", "engine_from_state", "engine_state"]


class SnapshotError(ValueError):
    """A snapshot is malformed or inconsistent; the message names the field."""


_CALL_TIMERS: Final = {
    "max-wait": _TimerKind.MAX_WAIT,
    "escalate": _TimerKind.ESCALATE,
    "announce": _TimerKind.ANNOUNCE,
    "retry": _TimerKind.RETRY,
}
_CALL_TIMER_NAMES: Final = {kind: name for name, kind in _CALL_TIMERS.items()}
_ENGINE_KEYS: Final = ("now", "seq", "rng", "agents", "queues", "calls", "statistics")
_AGENT_KEYS: Final = (
    "agent",
    "state",
    "paused",
    "reason",
    "since",
    "idle_since",
    "call",
    "queues",
    "unanswered",
    "wrapup_timer",
)
_QUEUE_KEYS: Final = (
    "queue",
    "calls",
    "ready",
    "present",
    "rr_last",
    "last_call",
    "calls_done",
    "handle_ewma",
)
_CALL_KEYS: Final = (
    "call",
    "priority",
    "caller_number",
    "caller_name",
    "queue",
    "detached_wrapup",
    "state",
    "entered",
    "seq",
    "cap",
    "escalation",
    "barred",
    "callback",
    "offer",
    "agent",
    "answered",
    "timers",
)
_OFFER_KEYS: Final = ("agents", "started", "timer")
_STATS_KEYS: Final = (
    "period",
    "service_levels",
    "queue_fields",
    "agent_fields",
    "queue_total",
    "agent_total",
    "queue_buckets",
    "agent_buckets",
    "paused_since",
    "login_since",
    "horizon",
)
_STATS_OPTIONAL: Final = ("horizon",)  # absent from the images of before the retention
_INDEX_LIMIT: Final = 2**53  # a bucket index times the period stays a float
_RNG_WORDS: Final = 625  # the Mersenne Twister's 624 words and its index


# -- writing ----------------------------------------------------------------------------------


def engine_state(engine: AcdEngine) -> dict[str, Any]:
    """The state of `engine` as JSON-able data (the engine's configuration apart: the caller
    stores `engine.config` with its own codec). The engine's events must have been drained
    (`AcdUsageError` otherwise); it is left untouched."""
    if engine._events or engine._deferred is not None:
        raise AcdUsageError("drain the engine's events before taking its state")
    seqs = {id(timer): seq for _, seq, timer in engine._timers if timer.live}

    def timer(t: _Timer) -> list[float | int]:
        return [t.when, seqs.pop(id(t))]

    version, words, gauss = engine._rng.getstate()
    agents = [
        {
            "agent": a.name,
            "state": a.state.value,
            "paused": a.paused,
            "reason": a.reason,
            "since": a.since,
            "idle_since": a.idle_since,
            "call": a.call.call_id if a.call is not None else None,
            "queues": [q.name for q in a.queues],
            "unanswered": a.unanswered,
            "wrapup_timer": timer(a.wrapup_timer) if a.wrapup_timer is not None else None,
        }
        for a in engine._agents.values()
    ]
    queues = [
        {
            "queue": q.name,
            "calls": list(q.calls),
            "ready": list(q.ready),
            "present": q.present,
            "rr_last": q.rr_last,
            "last_call": dict(q.last_call),
            "calls_done": dict(q.calls_done),
            "handle_ewma": q.handle_ewma,
        }
        for q in engine._queues.values()
    ]
    calls = []
    for c in engine._calls.values():
        q = c.queue
        assert q is not None
        offer = c.offer
        calls.append(
            {
                "call": c.call_id,
                "priority": c.priority,
                "caller_number": c.caller_number,
                "caller_name": c.caller_name,
                "queue": q.name,
                "detached_wrapup": None if engine._queues.get(q.name) is q else q.config.wrapup,
                "state": c.state.value,
                "entered": c.entered,
                "seq": c.seq,
                "cap": None if c.cap == NO_LIMIT else c.cap,
                "escalation": c.escalation,
                "barred": dict(c.barred) if c.barred is not None else None,
                "callback": c.callback,
                "offer": None
                if offer is None
                else {
                    "agents": list(offer.agents),
                    "started": offer.started,
                    "timer": timer(offer.timer),
                },
                "agent": c.agent,
                "answered": c.answered,
                "timers": [[_CALL_TIMER_NAMES[t.kind], t.when, seqs.pop(id(t))] for t in c.timers],
            }
        )
    if seqs:  # a live timer that nothing refers to: the image would not be the engine
        raise RuntimeError(f"{len(seqs)} live timer(s) of the engine are not reachable")
    return {
        "now": engine._now if engine._now != -math.inf else None,
        "seq": engine._seq,
        "rng": [version, list(words), gauss],
        "agents": agents,
        "queues": queues,
        "calls": calls,
        "statistics": _statistics_state(engine.statistics),
    }


_QUEUE_FIELDS: Final = tuple(f.name for f in fields(QueueCounters))
_AGENT_FIELDS: Final = tuple(f.name for f in fields(AgentCounters))
_QUEUE_VALUES: Final = attrgetter(*_QUEUE_FIELDS)
_AGENT_VALUES: Final = attrgetter(*_AGENT_FIELDS)


def _statistics_state(stats: Statistics) -> dict[str, Any]:
    """Counters as lists of values in the order of ``queue_fields`` / ``agent_fields``: the
    per-period buckets grow with the hours kept (one per queue and per agent and period), and
    their names would be most of the image. Buckets are listed name by name, each name's in the
    order they were made (the order their floats are added in); ``horizon`` is the index of the
    oldest bucket the statistics' retention keeps (null: none dropped)."""
    qv, av = _QUEUE_VALUES, _AGENT_VALUES
    return {
        "period": stats.period,
        "service_levels": dict(stats.service_levels),
        "queue_fields": list(_QUEUE_FIELDS),
        "agent_fields": list(_AGENT_FIELDS),
        "queue_total": {name: list(qv(c)) for name, c in stats._queue_total.items()},
        "agent_total": {name: list(av(c)) for name, c in stats._agent_total.items()},
        "queue_buckets": [
            [name, index, list(qv(c))]
            for name, mine in stats._queue_buckets.items()
            for index, c in mine.items()
        ],
        "agent_buckets": [
            [name, index, list(av(c))]
            for name, mine in stats._agent_buckets.items()
            for index, c in mine.items()
        ],
        "paused_since": dict(stats._paused_since),
        "login_since": dict(stats._login_since),
        "horizon": stats._horizon,
    }


# -- strict reading ---------------------------------------------------------------------------


def _fail(place: str, message: str) -> NoReturn:
    raise SnapshotError(f"{place}: {message}")


def _type_name(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _object(value: object, place: str, keys: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(value, dict):
        _fail(place, f"expected an object, got {_type_name(value)}")
    for key in keys:
        if key not in value:
            _fail(place, f"missing field {key!r}")
    if len(value) != len(keys):
        unknown = next(k for k in value if k not in keys)
        _fail(place, f"unknown field {unknown!r}")
    return value


def _mapping(value: object, place: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        _fail(place, f"expected an object, got {_type_name(value)}")
    for key in value:
        if not isinstance(key, str):
            _fail(place, "keys must be strings")
    return value


def _list(value: object, place: str, size: int | None = None) -> list[Any]:
    if not isinstance(value, list):
        _fail(place, f"expected a list, got {_type_name(value)}")
    if size is not None and len(value) != size:
        _fail(place, f"expected {size} items, got {len(value)}")
    return value


def _str(value: object, place: str) -> str:
    if not isinstance(value, str):
        _fail(place, f"expected a string, got {_type_name(value)}")
    return value


def _bool(value: object, place: str) -> bool:
    if not isinstance(value, bool):
        _fail(place, f"expected a boolean, got {_type_name(value)}")
    return value


def _int(value: object, place: str, low: int | None = None, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        _fail(place, f"expected an integer, got {_type_name(value)}")
    if (low is not None and value < low) or (high is not None and value > high):
        shown = f"from {low}" if low is not None else ""
        shown += f" to {high}" if high is not None else " or more"
        _fail(place, f"expected an integer {shown.strip()}, got {value}")
    return value


def _float(value: object, place: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        _fail(place, f"expected a number, got {_type_name(value)}")
    if not math.isfinite(value):
        _fail(place, "expected a finite number")
    return float(value)


def _opt_float(value: object, place: str) -> float | None:
    return None if value is None else _float(value, place)


def _unique(names: Iterable[str], place: str, what: str) -> None:
    seen: set[str] = set()
    for index, name in enumerate(names):
        if name in seen:
            _fail(f"{place}[{index}]", f"{what} {name!r} is listed twice")
        seen.add(name)


def _same_names(found: list[str], expected: Iterable[str], place: str, what: str) -> None:
    _unique(found, place, what)
    known = set(expected)
    for index, name in enumerate(found):
        if name not in known:
            _fail(f"{place}[{index}]", f"unknown {what} {name!r}")
    missing = known - set(found)
    if missing:
        _fail(place, f"{what} {sorted(missing)[0]!r} of the configuration is missing")


def _rng(value: object, place: str) -> random.Random:
    version, words, gauss = _list(value, place, 3)
    version = _int(version, f"{place}[0]")
    words = _list(words, f"{place}[1]", _RNG_WORDS)
    for index, word in enumerate(words):
        _int(word, f"{place}[1][{index}]", 0, 0xFFFFFFFF)
    gauss = _opt_float(gauss, f"{place}[2]")
    rng = random.Random()
    try:
        rng.setstate((version, tuple(words), gauss))
    except (ValueError, TypeError, OverflowError) as error:
        _fail(place, f"not a random generator state ({error})")
    return rng


class _Timers:
    """Collects the live timers read, refusing two with one sequence number."""

    def __init__(self, seqs: set[int], top: int) -> None:
        self.heap: list[tuple[float, int, _Timer]] = []
        self.seqs = seqs
        self.top = top

    def seq(self, value: object, place: str) -> int:
        seq = _int(value, place, 1, self.top)
        if seq in self.seqs:
            _fail(place, f"sequence number {seq} is used twice")
        self.seqs.add(seq)
        return seq

    def read(self, value: object, place: str, kind: _TimerKind, target: object) -> _Timer:
        when, seq = _list(value, place, 2)
        timer = _Timer(_float(when, f"{place}[0]"), kind, target)
        self.heap.append((timer.when, self.seq(seq, f"{place}[1]"), timer))
        return timer


def engine_from_state(
    config: AcdConfig,
    data: object,
    place: str = "engine",
    *,
    stats_period: float = 900.0,
    stats_retention: float | None = DEFAULT_RETENTION,
) -> AcdEngine:
    """An engine in the state `data` (from `engine_state`) with the configuration `config`
    (the original engine's `config`); `SnapshotError` naming the field on any problem. Its
    statistics keep the buckets of `stats_retention` seconds (`AcdEngine`)."""
    top = _object(data, place, _ENGINE_KEYS)
    now = _opt_float(top["now"], f"{place}.now")
    top_seq = _int(top["seq"], f"{place}.seq", 0)
    rng = _rng(top["rng"], f"{place}.rng")
    engine = AcdEngine(config, rng=rng, stats_period=stats_period, stats_retention=stats_retention)
    engine._now = now if now is not None else -math.inf
    engine._seq = top_seq
    timers = _Timers(set(), top_seq)

    calls = _read_calls(engine, top["calls"], f"{place}.calls", timers)
    _read_agents(engine, top["agents"], f"{place}.agents", calls, timers)
    _read_queues(engine, top["queues"], f"{place}.queues", calls)
    _check_calls(engine, calls)
    engine._calls = {c.call_id: c for c, _ in calls.values()}
    engine._timers = timers.heap
    engine._timers.sort()  # a sorted list is a heap; (when, seq) are unique
    engine.statistics = _read_statistics(
        top["statistics"], f"{place}.statistics", stats_period, stats_retention
    )
    return engine


def _read_calls(
    engine: AcdEngine, value: object, place: str, timers: _Timers
) -> dict[str, tuple[_Call, str]]:
    """The calls by id, each with its place in the snapshot (offers included)."""
    calls: dict[str, tuple[_Call, str]] = {}
    offers: list[tuple[_Call, str, object]] = []
    for index, item in enumerate(_list(value, place)):
        where = f"{place}[{index}]"
        d = _object(item, where, _CALL_KEYS)
        call_id = _str(d["call"], f"{where}.call")
        if call_id in calls:
            _fail(f"{where}.call", f"call {call_id!r} is listed twice")
        call = _Call(
            call_id,
            _int(d["priority"], f"{where}.priority"),
            _str(d["caller_number"], f"{where}.caller_number"),
            _str(d["caller_name"], f"{where}.caller_name"),
            0.0,
        )
        name = _str(d["queue"], f"{where}.queue")
        wrapup = _opt_float(d["detached_wrapup"], f"{where}.detached_wrapup")
        try:
            call.state = CallerState(d["state"])
        except ValueError:
            _fail(f"{where}.state", f"{d['state']!r} is not waiting, ringing or on-call")
        if call.state is CallerState.GONE:
            _fail(f"{where}.state", "a call that is gone is not kept")
        if wrapup is None:
            queue = engine._queues.get(name)
            if queue is None:
                _fail(f"{where}.queue", f"unknown queue {name!r}")
            call.queue = queue
        elif call.state is not CallerState.ON_CALL:
            _fail(f"{where}.detached_wrapup", "only an answered call may outlive its queue")
        else:
            call.queue = _Queue(QueueConfig(name, wrapup=wrapup))
        call.entered = _float(d["entered"], f"{where}.entered")
        call.seq = timers.seq(d["seq"], f"{where}.seq")
        cap = d["cap"]
        call.cap = NO_LIMIT if cap is None else _int(cap, f"{where}.cap", 0)
        call.escalation = _int(d["escalation"], f"{where}.escalation", 0)
        if d["barred"] is not None:
            barred = _mapping(d["barred"], f"{where}.barred")
            call.barred = {a: _float(t, f"{where}.barred.{a}") for a, t in barred.items()}
        call.callback = _str(d["callback"], f"{where}.callback")
        call.agent = _str(d["agent"], f"{where}.agent")
        call.answered = _float(d["answered"], f"{where}.answered")
        for n, raw in enumerate(_list(d["timers"], f"{where}.timers")):
            at = f"{where}.timers[{n}]"
            kind_name, when, seq = _list(raw, at, 3)
            kind = _CALL_TIMERS.get(kind_name) if isinstance(kind_name, str) else None
            if kind is None:
                _fail(f"{at}[0]", f"{kind_name!r} is not one of {', '.join(_CALL_TIMERS)}")
            call.timers.append(timers.read([when, seq], at, kind, call))
        if d["offer"] is not None:
            offers.append((call, f"{where}.offer", d["offer"]))
        elif call.state is CallerState.RINGING:
            _fail(f"{where}.offer", "a ringing call needs its offer")
        calls[call_id] = (call, where)
    for call, where, raw in offers:
        if call.state is not CallerState.RINGING:
            _fail(where, f"a call {call.state.value} has no offer")
        o = _object(raw, where, _OFFER_KEYS)
        agents = [_str(a, f"{where}.agents[{i}]") for i, a in enumerate(_list(o["agents"], where))]
        if not agents:
            _fail(f"{where}.agents", "an offer rings at least one agent")
        _unique(agents, f"{where}.agents", "agent")
        for i, agent in enumerate(agents):
            if agent not in engine._agents:
                _fail(f"{where}.agents[{i}]", f"unknown agent {agent!r}")
        assert call.queue is not None
        started = _float(o["started"], f"{where}.started")
        timer = timers.read(o["timer"], f"{where}.timer", _TimerKind.RING_TIMEOUT, None)
        timer.target = call.offer = _Offer(call, call.queue, agents, started, timer)
    return calls


def _read_agents(
    engine: AcdEngine,
    value: object,
    place: str,
    calls: dict[str, tuple[_Call, str]],
    timers: _Timers,
) -> None:
    items = [
        _object(item, f"{place}[{i}]", _AGENT_KEYS) for i, item in enumerate(_list(value, place))
    ]
    names = [_str(d["agent"], f"{place}[{i}].agent") for i, d in enumerate(items)]
    _same_names(names, engine._agents, place, "agent")
    ordered: dict[str, _Agent] = {}
    for index, (name, d) in enumerate(zip(names, items, strict=True)):
        where = f"{place}[{index}]"
        a = engine._agents[name]
        try:
            a.state = AgentState(d["state"])
        except ValueError:
            _fail(f"{where}.state", f"{d['state']!r} is not an agent state")
        a.paused = _bool(d["paused"], f"{where}.paused")
        a.reason = _str(d["reason"], f"{where}.reason")
        a.since = _float(d["since"], f"{where}.since")
        a.idle_since = _float(d["idle_since"], f"{where}.idle_since")
        a.unanswered = _int(d["unanswered"], f"{where}.unanswered", 0)
        queue_names = [
            _str(q, f"{where}.queues[{i}]")
            for i, q in enumerate(_list(d["queues"], f"{where}.queues"))
        ]
        member_of = [q for q in engine._queues.values() if name in q.members]
        _same_names(queue_names, (q.name for q in member_of), f"{where}.queues", "queue")
        a.queues = [engine._queues[q] for q in queue_names]
        if d["wrapup_timer"] is not None:
            a.wrapup_timer = timers.read(
                d["wrapup_timer"], f"{where}.wrapup_timer", _TimerKind.WRAPUP_END, a
            )
        if (a.wrapup_timer is not None) != (a.state is AgentState.WRAPUP):
            _fail(f"{where}.wrapup_timer", "an agent in wrap-up, and only one, has its timer")
        if a.paused and a.state is AgentState.LOGGED_OUT:
            _fail(f"{where}.paused", "a logged-out agent is not paused")
        _read_agent_call(a, d["call"], f"{where}.call", calls)
        ordered[name] = a
    engine._agents = ordered


def _read_agent_call(
    a: _Agent, value: object, place: str, calls: dict[str, tuple[_Call, str]]
) -> None:
    state = a.state
    if value is None:
        if state in (AgentState.RINGING, AgentState.ON_CALL):
            _fail(place, f"an agent {state.value} has a call")
        return
    call_id = _str(value, place)
    found = calls.get(call_id)
    if found is None:
        _fail(place, f"unknown call {call_id!r}")
    call = found[0]
    if state is AgentState.RINGING:
        if call.offer is None or a.name not in call.offer.agents:
            _fail(place, f"call {call_id!r} does not ring agent {a.name!r}")
    elif state in (AgentState.ON_CALL, AgentState.LOGGED_OUT):
        if call.state is not CallerState.ON_CALL or call.agent != a.name:
            _fail(place, f"call {call_id!r} is not answered by agent {a.name!r}")
    else:
        _fail(place, f"an agent {state.value} cannot have a call")
    a.call = call


def _read_queues(
    engine: AcdEngine, value: object, place: str, calls: dict[str, tuple[_Call, str]]
) -> None:
    items = [
        _object(item, f"{place}[{i}]", _QUEUE_KEYS) for i, item in enumerate(_list(value, place))
    ]
    names = [_str(d["queue"], f"{place}[{i}].queue") for i, d in enumerate(items)]
    _same_names(names, engine._queues, place, "queue")
    placed: set[str] = set()
    for index, (name, d) in enumerate(zip(names, items, strict=True)):
        where = f"{place}[{index}]"
        q = engine._queues[name]
        waiting = [
            _str(c, f"{where}.calls[{i}]")
            for i, c in enumerate(_list(d["calls"], f"{where}.calls"))
        ]
        by_priority: dict[int, list[_Call]] = {}
        for i, call_id in enumerate(waiting):
            found = calls.get(call_id)
            if found is None:
                _fail(f"{where}.calls[{i}]", f"unknown call {call_id!r}")
            call = found[0]
            if call_id in placed:
                _fail(f"{where}.calls[{i}]", f"call {call_id!r} is listed twice")
            if call.queue is not q or call.state is CallerState.ON_CALL:
                _fail(f"{where}.calls[{i}]", f"call {call_id!r} does not wait in this queue")
            placed.add(call_id)
            q.calls[call_id] = call
            by_priority.setdefault(call.priority, []).append(call)
        for priority, members in by_priority.items():
            rank = q.ranks[priority] = ArrivalRank()
            heap = q.classes[priority] = []
            for call in sorted(members, key=lambda c: c.seq):
                rank.add(call.seq)
                if call.state is CallerState.WAITING:
                    heap.append((call.seq, call.token, call))  # sorted by seq: a heap
        ready = [
            _str(a, f"{where}.ready[{i}]")
            for i, a in enumerate(_list(d["ready"], f"{where}.ready"))
        ]
        _unique(ready, f"{where}.ready", "agent")
        for i, agent in enumerate(ready):
            if agent not in q.members:
                _fail(f"{where}.ready[{i}]", f"unknown agent {agent!r} (not a member)")
            if engine._agents[agent].state is not AgentState.READY:
                _fail(f"{where}.ready[{i}]", f"agent {agent!r} is not ready")
            q.ready[agent] = None
        q.present = _int(d["present"], f"{where}.present", 0)
        q.rr_last = _int(d["rr_last"], f"{where}.rr_last", -1)
        last_call = _mapping(d["last_call"], f"{where}.last_call")
        q.last_call = {a: _float(t, f"{where}.last_call.{a}") for a, t in last_call.items()}
        done = _mapping(d["calls_done"], f"{where}.calls_done")
        q.calls_done = {a: _int(n, f"{where}.calls_done.{a}", 0) for a, n in done.items()}
        q.handle_ewma = _opt_float(d["handle_ewma"], f"{where}.handle_ewma")
    for call_id, (call, where) in calls.items():
        if call.state is not CallerState.ON_CALL and call_id not in placed:
            _fail(where, f"call {call_id!r} is {call.state.value} but in no queue's calls")


def _check_calls(engine: AcdEngine, calls: dict[str, tuple[_Call, str]]) -> None:
    """Cross-references from calls to agents, once both are read."""
    for call_id, (call, where) in calls.items():
        if call.state is CallerState.ON_CALL:
            a = engine._agents.get(call.agent)
            if a is None or a.call is not call:
                _fail(f"{where}.agent", f"agent {call.agent!r} is not on call {call_id!r}")
        if call.offer is not None:
            for i, agent in enumerate(call.offer.agents):
                a = engine._agents[agent]
                if a.state is not AgentState.RINGING or a.call is not call:
                    _fail(f"{where}.offer.agents[{i}]", f"agent {agent!r} is not ringing")


def _read_counters(value: object, place: str, cls: type[QueueCounters | AgentCounters]) -> Any:
    blank = cls()
    names = [f.name for f in fields(cls)]
    values: list[Any] = [
        _int(raw, f"{place}[{name}]", 0)
        if isinstance(getattr(blank, name), int)
        else _float(raw, f"{place}[{name}]")
        for name, raw in zip(names, _list(value, place, len(names)), strict=True)
    ]
    return cls(*values)


def _read_statistics(
    value: object, place: str, period: float, retention: float | None
) -> Statistics:
    """The statistics of `value`, trimmed to `retention` (`Statistics._settle`)."""
    if isinstance(value, dict):
        value = {key: None for key in _STATS_OPTIONAL} | value
    d = _object(value, place, _STATS_KEYS)
    if _float(d["period"], f"{place}.period") != period:
        _fail(f"{place}.period", f"expected {period:g} seconds, got {d['period']}")
    for key, expected in (("queue_fields", _QUEUE_FIELDS), ("agent_fields", _AGENT_FIELDS)):
        if d[key] != list(expected):
            _fail(f"{place}.{key}", f"expected {list(expected)}")
    levels = _mapping(d["service_levels"], f"{place}.service_levels")
    stats = Statistics(
        {q: _float(v, f"{place}.service_levels.{q}") for q, v in levels.items()},
        period=period,
        retention=retention,
    )
    for key, cls, total in (
        ("queue_total", QueueCounters, stats._queue_total),
        ("agent_total", AgentCounters, stats._agent_total),
    ):
        for name, raw in _mapping(d[key], f"{place}.{key}").items():
            total[name] = _read_counters(raw, f"{place}.{key}.{name}", cls)
    for key, cls, buckets in (
        ("queue_buckets", QueueCounters, stats._queue_buckets),
        ("agent_buckets", AgentCounters, stats._agent_buckets),
    ):
        for index, raw in enumerate(_list(d[key], f"{place}.{key}")):
            where = f"{place}.{key}[{index}]"
            name, number, counters = _list(raw, where, 3)
            name = _str(name, f"{where}[0]")
            number = _int(number, f"{where}[1]", -_INDEX_LIMIT, _INDEX_LIMIT)
            mine = buckets.setdefault(name, {})
            if number in mine:
                _fail(where, f"bucket {[name, number]} is listed twice")
            mine[number] = _read_counters(counters, f"{where}[2]", cls)
    for key, since in (
        ("paused_since", stats._paused_since),
        ("login_since", stats._login_since),
    ):
        for name, raw in _mapping(d[key], f"{place}.{key}").items():
            since[name] = _float(raw, f"{place}.{key}.{name}")
    horizon = d["horizon"]
    if horizon is not None:
        horizon = _int(horizon, f"{place}.horizon", -_INDEX_LIMIT, _INDEX_LIMIT)
    stats._settle(horizon)
    return stats
