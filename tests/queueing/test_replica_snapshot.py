"""Snapshots of the replicated ACD: restoring the image taken after any input and applying the
rest of the stream decides exactly what replaying the whole stream decides; malformed images are
refused with the field named, never with another exception."""

from __future__ import annotations

import copy
import json
import math
import random
from collections import deque
from dataclasses import asdict, is_dataclass
from enum import Enum
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from queueing.config import (
    AcdConfig,
    MemberConfig,
    QueueConfig,
    Strategy,
    build_config,
)
from queueing.engine import AcdEngine
from queueing.events import AgentState, LogEvent, QueueLogEntry
from queueing.exceptions import AcdUsageError
from queueing.replica import (
    INPUT_TYPES,
    SNAPSHOT_VERSION,
    AddQueue,
    AgentLogin,
    AgentLogout,
    AgentPause,
    AgentUnpause,
    CallbackRequest,
    CallCompleted,
    CallerAbandon,
    CallerEnter,
    Decision,
    Input,
    OfferAnswered,
    OfferRejected,
    RemoveQueue,
    ReplicaError,
    ReplicatedAcd,
    Source,
    Tick,
    input_from_dict,
)
from queueing.snapshot import SnapshotError, engine_from_state, engine_state
from tests.queueing.streams import (
    ADMINISTRATION,
    AGENTS,
    CALLS,
    Step,
    Tracker,
    drive,
    plans,
    random_steps,
    wire,
)
from tests.queueing.test_properties import configs

Entry = tuple[str, Input, Source]

ACTIONS = [*CALLS, "enter", "login", *AGENTS, *ADMINISTRATION, "retry", "bogus"]
steps = plans(ACTIONS, 60)


def run(config: AcdConfig, seed: int, plan: list[Step]) -> tuple[list[Entry], ReplicatedAcd]:
    """Drive a live owner through `plan` the way the nodes and the adapter do (every input
    through JSON, a `Tick` when a timer is due unless the step skips it, two senders, retried
    appends) and return the stream and the owner."""
    acd = ReplicatedAcd(config, seed=seed, epoch=1, stats_period=60.0)
    stream: list[Entry] = []
    counts = {"n1": 0, "n2": 0}

    def append(item: Input, sender: str, retry: bool) -> list[Decision]:
        if not retry:
            counts[sender] += 1
        source = (sender, counts[sender])
        entry: Entry = (f"{1001 + len(stream)}-0", input_from_dict(wire(item.to_dict())), source)
        stream.append(entry)
        return acd.apply(*entry)

    drive(acd, plan, append, logged_out=1, senders=("n1", "n2"))
    return stream, acd


def canonical(acd: ReplicatedAcd) -> Any:
    """Everything in `acd` and its engine, read generically (every attribute and slot, so a
    field the snapshot forgot shows up here), in a comparable form. Only what the snapshot
    derives again is read differently: heaps and rank trees as their live entries, timers
    without the cancelled ones, callers' heap tokens left out, a removed queue that an answered
    call still refers to as its name and wrap-up."""
    engine = acd.engine

    def queue_ref(q: Any) -> Any:
        return q.name if engine._queues.get(q.name) is q else ("detached", q.name, q.config.wrapup)

    def value(v: Any) -> Any:
        kind = type(v).__name__
        if kind == "_Queue":
            return queue_ref(v)
        if kind == "_Agent":
            return ("agent", v.name)
        if kind == "_Call":
            return ("call", v.call_id)
        if kind == "_Timer":
            return ("timer", v.when, v.kind.name, v.live)
        if kind == "_Offer":
            return {slot: value(getattr(v, slot)) for slot in v.__slots__ if slot != "call"}
        if isinstance(v, random.Random):
            return v.getstate()
        if isinstance(v, Enum):
            return v.value
        if isinstance(v, dict):
            return [(value(k), value(x)) for k, x in v.items()]
        if isinstance(v, list | tuple | deque):
            return [value(x) for x in v]
        if is_dataclass(v) and not isinstance(v, type):
            return v if type(v).__dataclass_params__.frozen else asdict(v)  # type: ignore[attr-defined]
        if hasattr(v, "__slots__"):
            return {slot: value(getattr(v, slot)) for slot in v.__slots__}
        return v

    def whole(obj: Any, skip: set[str]) -> dict[str, Any]:
        return {slot: value(getattr(obj, slot)) for slot in obj.__slots__ if slot not in skip}

    queues = {}
    for name, q in engine._queues.items():
        queues[name] = whole(q, {"classes", "ranks"})
        queues[name]["classes"] = {
            p: sorted(
                (seq, c.call_id)
                for seq, t, c in heap
                if c.token == t and c.state.value == "waiting"
            )
            for p, heap in q.classes.items()
        }
        queues[name]["ranks"] = {
            p: [s for s, alive in zip(r._seqs, r._alive, strict=True) if alive]
            for p, r in q.ranks.items()
        }
        for part in ("classes", "ranks"):
            queues[name][part] = sorted((p, x) for p, x in queues[name][part].items() if x)
    state = {
        key: value(v)
        for key, v in vars(engine).items()
        if key not in ("_queues", "_agents", "_calls", "_timers", "statistics")
    }
    state["_queues"] = queues
    state["_agents"] = [(name, whole(a, set())) for name, a in engine._agents.items()]
    state["_calls"] = [(cid, whole(c, {"token"})) for cid, c in engine._calls.items()]
    state["_timers"] = sorted(
        (when, seq, t.kind.name, value(t.target)) for when, seq, t in engine._timers if t.live
    )
    state["statistics"] = {k: value(v) for k, v in vars(engine.statistics).items()}
    state["replica"] = {
        k: value(v) for k, v in vars(acd).items() if k not in ("engine", "epoch", "config")
    }
    return state


def assert_every_cut_resumes_exactly(
    config: AcdConfig, seed: int, stream: list[Entry], cuts: range | None = None
) -> list[str]:
    """For each cut k: the snapshot after k entries, through JSON, restored, is the same
    replica (`canonical`), and applying entries k+1..n then gives the decisions of replaying
    1..n from scratch and the same final snapshot; snapshotting it again gives the same image."""
    live = ReplicatedAcd(config, seed=seed, epoch=1, stats_period=60.0)
    decisions: list[list[dict[str, Any]]] = []
    images: list[str] = [json.dumps(live.snapshot())]
    states = [canonical(live)]
    for entry in stream:
        decisions.append([d.to_dict() for d in live.apply(*entry)])
        images.append(json.dumps(live.snapshot()))
        states.append(canonical(live) if cuts is None or len(states) in cuts else None)
    final = json.loads(images[-1])
    for k in cuts if cuts is not None else range(len(stream) + 1):
        image = json.loads(images[k])
        successor = ReplicatedAcd(config, seed=seed, stats_period=60.0)
        successor.restore(image, epoch=1)
        assert canonical(successor) == states[k], f"cut {k}"
        assert successor.snapshot() == image
        rest = [[d.to_dict() for d in successor.apply(*entry)] for entry in stream[k:]]
        assert rest == decisions[k:], f"cut {k}"
        assert successor.snapshot() == final, f"cut {k}"
    return images


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(config_data=configs(), plan=steps, seed=st.integers(0, 3))
def test_restoring_the_snapshot_after_any_input_then_applying_the_rest_equals_replaying_all(
    config_data: dict[str, Any], plan: list[Step], seed: int
) -> None:
    config = build_config(config_data)
    stream, _ = run(config, seed, plan)
    assert_every_cut_resumes_exactly(config, seed, stream)


def test_many_seeded_streams_of_every_input_kind_resume_exactly_from_every_cut() -> None:
    kinds: set[str] = set()
    events: set[LogEvent] = set()
    skipped = 0
    for seed in range(25):
        rng = random.Random(seed)
        config = build_config(seeded_config(rng))
        stream, owner = run(config, seed % 4, random_steps(rng, 70, ACTIONS))
        kinds.update(item.kind for _, item, _ in stream)
        assert_every_cut_resumes_exactly(config, seed % 4, stream)
        skipped += owner.skipped
        replay = ReplicatedAcd(config, seed=seed % 4, stats_period=60.0).rebuild(stream, None)
        events.update(d.output.event for d in replay if isinstance(d.output, QueueLogEntry))
    assert kinds == set(INPUT_TYPES)  # every input kind, retried appends too
    assert events == set(LogEvent)
    assert skipped > 0


def seeded_config(rng: random.Random) -> dict[str, Any]:
    """Like `test_properties.configs`, drawn from a seeded generator."""
    agents = [f"a{i}" for i in range(rng.randint(2, 5))]
    names = ["q0", "q1", "q2"][: rng.randint(1, 3)]
    queues: dict[str, Any] = {}
    for index, name in enumerate(names):
        members = rng.sample(agents, rng.randint(0, len(agents)))
        queue: dict[str, Any] = {
            "strategy": rng.choice([s.value for s in Strategy]),
            "members": [{"agent": a, "penalty": rng.randint(0, 2)} for a in members],
            "ring_timeout": rng.choice([5, 10]),
            "retry": rng.choice([0, 3]),
            "wrapup": rng.choice([0, 4]),
            "autopause": rng.choice([0, 2]),
            "max_callers": rng.choice([0, 3]),
            "max_wait": rng.choice([0, 40]),
            "join_empty": rng.random() < 0.7,
            "leave_when_empty": rng.random() < 0.3,
            "announce_frequency": rng.choice([0, 7]),
            "max_penalty": rng.choice([-1, 0, 1]),
        }
        if rng.random() < 0.5:
            queue["escalation"] = [{"after": 10, "max_penalty": 2}]
        later = names[index + 1 :]
        if later and rng.random() < 0.5:
            queue["overflow"] = {"queue": rng.choice(later)}
        queues[name] = queue
    return {"agents": {a: {} for a in agents}, "queues": queues}


def busy_stream(seed: int = 7) -> tuple[AcdConfig, list[Entry]]:
    """A long stream with many callers waiting in several priorities (positions announced),
    random strategies, escalations, wrap-ups, rejections, callbacks, pauses, and answered calls
    whose queue is removed (and added again) while they go on."""
    agents = [f"a{i}" for i in range(12)]
    config = build_config(
        {
            "agents": {a: {"wrapup": 2} if i % 3 == 0 else {} for i, a in enumerate(agents)},
            "queues": {
                "random": {"strategy": "random", "members": agents[:6], "announce_frequency": 15},
                "wrandom": {
                    "strategy": "wrandom",
                    "members": [{"agent": a, "penalty": i % 3} for i, a in enumerate(agents)],
                    "escalation": [{"after": 20, "max_penalty": 2}],
                    "max_penalty": 0,
                },
                "rr": {"strategy": "rrmemory", "members": agents[6:10], "max_wait": 200},
                "spare": {"strategy": "leastrecent", "members": agents[10:]},
            },
        }
    )
    rng = random.Random(seed)
    owner = ReplicatedAcd(config, seed=seed, epoch=1, stats_period=60.0)
    stream: list[Entry] = []
    tracker = Tracker()
    now, calls = 0.0, 0

    def feed(item: Input) -> None:
        entry: Entry = (f"{len(stream) + 1}-0", item, ("n", len(stream) + 1))
        stream.append(entry)
        for decision in owner.apply(*entry):
            tracker.feed(decision)

    for agent in agents:
        feed(AgentLogin(agent, 0.0))
    while len(stream) < 900:
        now += rng.choice([0.1, 0.3, 1.0])
        while (due := owner.due()) is not None and due <= now:
            feed(Tick(due))
        roll = rng.random()
        ringing, talking = sorted(tracker.ringing), sorted(tracker.talking)
        if roll < 0.4:
            calls += 1
            queue = rng.choices(["random", "wrandom", "rr", "spare"], [3, 3, 3, 1])[0]
            feed(CallerEnter(f"c{calls}", queue, now, priority=rng.choice([0, 0, 1, 2])))
        elif roll < 0.52 and ringing:
            feed(OfferAnswered(*rng.choice(ringing), now))
        elif roll < 0.57 and ringing:
            feed(OfferRejected(*rng.choice(ringing), now))
        elif roll < 0.7 and talking:
            feed(CallCompleted(*rng.choice(talking), now))
        elif roll < 0.8 and tracker.waiting:
            feed(CallerAbandon(rng.choice(sorted(tracker.waiting)), now))
        elif roll < 0.84 and tracker.waiting:
            feed(CallbackRequest(rng.choice(sorted(tracker.waiting)), "+1", now))
        elif roll < 0.88:
            feed(AgentPause(rng.choice(agents), "break", now))
        elif roll < 0.93:
            feed(AgentUnpause(rng.choice(agents), now))
        elif any(owner.engine.call_queue(call) == "spare" for call, _ in talking):
            for call in sorted(tracker.waiting):
                if owner.engine.call_queue(call) == "spare":
                    feed(CallerAbandon(call, now))
            feed(RemoveQueue("spare", now))  # its answered calls go on, detached
            feed(AddQueue(QueueConfig("spare", members=(MemberConfig("a11"),)), now))
    return config, stream


def test_a_long_busy_stream_resumes_exactly_from_cuts_all_along_it() -> None:
    config, stream = busy_stream()
    images = [
        json.loads(i)
        for i in assert_every_cut_resumes_exactly(config, 7, stream, range(0, len(stream) + 1, 30))
    ]
    calls = [c for image in images for c in image["engine"]["calls"]]
    agents = [a for image in images for a in image["engine"]["agents"]]
    assert max(len(image["engine"]["calls"]) for image in images) > 20
    assert {t[0] for c in calls for t in c["timers"]} == {
        "announce",
        "escalate",
        "max-wait",
        "retry",
    }
    assert {c["state"] for c in calls} == {"waiting", "ringing", "on-call"}
    assert any(c["detached_wrapup"] is not None for c in calls)
    assert any(c["callback"] for c in calls) and any(c["barred"] for c in calls)
    assert any(c["cap"] is not None for c in calls) and any(c["priority"] == 2 for c in calls)
    assert {a["state"] for a in agents} == {s.value for s in AgentState}
    assert any(a["wrapup_timer"] for a in agents)
    stats = images[-1]["engine"]["statistics"]
    assert len(stats["queue_buckets"]) > 4 and stats["paused_since"]


def test_the_random_generator_and_the_next_timer_survive_a_restore() -> None:
    config, stream = busy_stream()
    owner = ReplicatedAcd(config, seed=7, stats_period=60.0)
    owner.rebuild(stream, None)
    restored = ReplicatedAcd(config, seed=7, stats_period=60.0)
    restored.restore(wire(owner.snapshot()))
    assert restored.engine._rng.getstate() == owner.engine._rng.getstate()
    assert restored.due() == owner.due() is not None
    assert [owner.engine._rng.random() for _ in range(3)] == [
        restored.engine._rng.random() for _ in range(3)
    ]


def test_rebuild_from_a_snapshot_skips_the_entries_it_holds_and_publishes_only_the_rest() -> None:
    config, stream = busy_stream()
    whole = ReplicatedAcd(config, seed=7, epoch=1, stats_period=60.0)
    everything = whole.rebuild(stream, None)
    owner = ReplicatedAcd(config, seed=7, epoch=1, stats_period=60.0)
    for entry in stream[:400]:
        owner.apply(*entry)
    image = wire(owner.snapshot())
    published = stream[450][0]  # the owner published up to here before it died
    successor = ReplicatedAcd(config, seed=7, stats_period=60.0)
    trimmed = stream[399:]  # XTRIM MINID <the snapshot's entry> keeps that entry
    pending = successor.rebuild(trimmed, published, epoch=2, snapshot=image)
    expected = [d for d in everything if int(d.entry_id.split("-")[0]) > 451]
    assert [(d.entry_id, d.seq, d.output) for d in pending] == [
        (d.entry_id, d.seq, d.output) for d in expected
    ]
    assert {d.epoch for d in pending} == {2}
    assert successor.snapshot() == whole.snapshot()
    with pytest.raises(ReplicaError, match="not after"):
        successor.apply(stream[-1][0], Tick(1e6))


# -- malformed snapshots ----------------------------------------------------------------------


def rich_image() -> tuple[AcdConfig, dict[str, Any], list[Entry]]:
    """A snapshot with something of everything: waiting, ringing, on-call and callback callers,
    bars, every timer kind, paused and wrap-up agents, statistics."""
    config, stream = busy_stream()
    owner = ReplicatedAcd(config, seed=7, stats_period=60.0)
    owner.rebuild(stream[:600], None)
    return config, wire(owner.snapshot()), stream[600:]


def at(data: Any, path: list[Any]) -> Any:
    for key in path:
        data = data[key]
    return data


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda s: s.update(version=2), r"snapshot\.version: 2 is not a known version"),
        (lambda s: s.update(version="1"), r"snapshot\.version"),
        (lambda s: s.pop("engine"), "snapshot: missing field 'engine'"),
        (lambda s: s.update(spare=1), "snapshot: unknown field 'spare'"),
        (lambda s: s.update(seed=8), "snapshot.seed: taken with seed 8"),
        (lambda s: s.update(stats_period=900), "snapshot.stats_period"),
        (lambda s: s.update(last_entry="soon"), "snapshot.last_entry"),
        (lambda s: s["sources"].update(n="1"), r"snapshot\.sources\.n: expected an integer"),
        (lambda s: s["engine"].pop("calls"), r"snapshot\.engine: missing field 'calls'"),
        (lambda s: s["engine"].update(now="x"), r"snapshot\.engine\.now: expected a number"),
        (
            lambda s: s["engine"]["queues"][0]["ready"].append("ghost"),
            r"snapshot\.engine\.queues\[0\]\.ready\[\d+\]: unknown agent 'ghost'",
        ),
        (
            lambda s: s["engine"]["queues"][0]["calls"].append("nobody"),
            r"snapshot\.engine\.queues\[0\]\.calls\[\d+\]: unknown call 'nobody'",
        ),
        (
            lambda s: s["engine"]["agents"][0].update(agent="ghost"),
            r"snapshot\.engine\.agents\[0\]: unknown agent 'ghost'",
        ),
        (
            lambda s: s["engine"]["agents"].pop(),
            r"snapshot\.engine\.agents: agent '\w+' of the configuration is missing",
        ),
        (
            lambda s: s["engine"]["agents"][0]["queues"].append("nowhere"),
            r"snapshot\.engine\.agents\[0\]\.queues\[\d+\]: unknown queue 'nowhere'",
        ),
        (
            lambda s: s["engine"]["calls"][0].update(state="gone"),
            r"snapshot\.engine\.calls\[0\]\.state",
        ),
        (
            lambda s: s["engine"]["calls"][1].update(seq=s["engine"]["calls"][0]["seq"]),
            r"snapshot\.engine\.calls\[1\]\.seq: sequence number \d+ is used twice",
        ),
        (
            lambda s: s["engine"]["rng"][1].pop(),
            r"snapshot\.engine\.rng\[1\]: expected 625 items",
        ),
        (
            lambda s: s["engine"]["rng"][1].__setitem__(624, 9999),
            r"snapshot\.engine\.rng: not a random generator state",
        ),
        (
            lambda s: s["engine"]["statistics"]["queue_total"]["random"].pop(),
            r"snapshot\.engine\.statistics\.queue_total\.random: expected 17 items",
        ),
        (
            lambda s: s["engine"]["statistics"]["queue_total"]["random"].__setitem__(1, -1),
            r"snapshot\.engine\.statistics\.queue_total\.random\[answered\]: expected an int",
        ),
        (
            lambda s: s["engine"]["statistics"]["agent_fields"].reverse(),
            r"snapshot\.engine\.statistics\.agent_fields: expected \['offers'",
        ),
        (
            lambda s: s["engine_config"]["queues"]["random"].update(strategy="best"),
            r"snapshot\.engine_config: config\.queues\.random\.strategy",
        ),
    ],
)
def test_malformed_snapshots_are_refused_with_the_field_named(mutate: Any, message: str) -> None:
    config, image, _ = rich_image()
    target = ReplicatedAcd(config, seed=7, stats_period=60.0)
    before = target.snapshot()
    mutate(image)
    with pytest.raises(ReplicaError, match=message):
        target.restore(image, epoch=5)
    assert target.snapshot() == before and target.epoch == 0  # nothing changed


def paths(data: Any, prefix: list[Any]) -> list[list[Any]]:
    found = [prefix]
    if isinstance(data, dict):
        for key, value in data.items():
            found += paths(value, [*prefix, key])
    elif isinstance(data, list):
        for index, value in enumerate(data):
            found += paths(value, [*prefix, index])
    return found


JUNK: list[Any] = [
    None,
    True,
    0,
    -1,
    2**70,
    1.5,
    math.nan,
    math.inf,
    "",
    "ghost",
    [],
    {},
    [1],
    {"a": 1},
]


def mutations(image: dict[str, Any], rng: random.Random, count: int) -> list[dict[str, Any]]:
    """`count` damaged copies of `image`: a key dropped or added, a value replaced by junk or by
    another value of the image (a name that exists elsewhere, a number of another field), a list
    item dropped or doubled."""
    everywhere = paths(image, [])[1:]
    rng_words = [p for p in everywhere if p[:3] == ["engine", "rng", 1]]
    everywhere = [p for p in everywhere if p[:3] != ["engine", "rng", 1]] + rng_words[:3]
    values = [at(image, p) for p in everywhere if not isinstance(at(image, p), dict | list)]
    out = []
    for _ in range(count):
        damaged = copy.deepcopy(image)
        path = rng.choice(everywhere)
        parent = at(damaged, path[:-1])
        key = path[-1]
        how = rng.randrange(5)
        if how == 0 and isinstance(parent, dict):
            del parent[key]
        elif how == 0:
            parent.pop(key)
        elif how == 1 and isinstance(parent, dict):
            parent["unexpected"] = rng.choice(JUNK)
        elif how == 1:
            parent.append(copy.deepcopy(parent[key]))
        elif how == 2:
            parent[key] = rng.choice(values)
        else:
            parent[key] = copy.deepcopy(rng.choice(JUNK))
        out.append(damaged)
    return out


def test_hundreds_of_damaged_snapshots_raise_only_replica_errors() -> None:
    config, image, rest = rich_image()
    rng = random.Random(13)
    refused = accepted = 0
    for damaged in mutations(image, rng, 600):
        target = ReplicatedAcd(config, seed=7, stats_period=60.0)
        try:
            target.restore(damaged)
        except ReplicaError:
            refused += 1
            continue
        accepted += 1  # a harmless change (a time, a name, a count): the engine goes on
        for entry in rest[:60]:
            target.apply(*entry)
    assert refused > 400 and accepted > 20


def test_a_restored_engine_decides_like_the_original_at_the_engine_level() -> None:
    config, stream = busy_stream()
    owner = ReplicatedAcd(config, seed=7, stats_period=60.0)
    owner.rebuild(stream[:500], None)
    state = json.loads(json.dumps(engine_state(owner.engine)))
    engine = engine_from_state(owner.engine.config, state, stats_period=60.0)
    for agent in owner.engine.config.agents:
        assert engine.agent_status(agent) == owner.engine.agent_status(agent)
    for queue in owner.engine.config.queues:
        assert engine.queue_status(queue, 300.0) == owner.engine.queue_status(queue, 300.0)
    for call in state["calls"]:
        assert engine.position(call["call"]) == owner.engine.position(call["call"])
        assert engine.call_state(call["call"]) == owner.engine.call_state(call["call"])
    for engine_ in (engine, owner.engine):
        engine_.handle_timer(10_000.0)
    assert [repr(e) for e in engine.events()] == [repr(e) for e in owner.engine.events()]
    with pytest.raises(SnapshotError, match=r"engine\.seq: expected an integer"):
        engine_from_state(owner.engine.config, {**state, "seq": 1.5}, stats_period=60.0)


def test_an_engine_with_events_not_drained_has_no_state_to_take() -> None:
    engine = AcdEngine(build_config({"agents": {"a": {}}, "queues": {"q": {"members": ["a"]}}}))
    engine.agent_login("a", 0.0)
    with pytest.raises(AcdUsageError, match="drain"):
        engine_state(engine)
    engine.events()
    assert engine_state(engine)["agents"][0]["state"] == "ready"


def test_the_snapshot_format_has_a_version() -> None:
    acd = ReplicatedAcd(AcdConfig(), seed=0)
    image = acd.snapshot()
    assert image["version"] == SNAPSHOT_VERSION == 1
    assert json.loads(json.dumps(image, allow_nan=False)) == image
    other = ReplicatedAcd(AcdConfig(), seed=0)
    other.restore(image)
    assert other.snapshot() == image


def test_agents_paused_on_a_call_or_in_wrap_up_or_logged_out_mid_call_resume_exactly() -> None:
    config = build_config(
        {
            "agents": {"a1": {"wrapup": 10}, "a2": {}, "a3": {}},
            "queues": {
                "all": {"strategy": "ringall", "members": ["a1", "a2", "a3"]},
                "line": {"strategy": "linear", "members": ["a1"]},
            },
        }
    )
    items: list[Input] = [
        AgentLogin("a1", 0.0),
        AgentLogin("a2", 0.0),
        AgentLogin("a3", 0.0),
        CallerEnter("c1", "all", 1.0),  # rings all three
        OfferAnswered("c1", "a1", 2.0),
        AgentPause("a1", "break", 3.0),  # paused on a call
        CallerEnter("c2", "all", 3.5),  # rings a2 and a3
        OfferAnswered("c2", "a2", 4.0),
        AgentLogout("a2", 5.0),  # logged out, its call goes on
        CallCompleted("c1", "a1", 6.0),  # paused in wrap-up
        CallerEnter("c3", "line", 7.0),
        CallbackRequest("c3", "+1", 8.0),
        AgentLogin("a2", 9.0),  # back on its call
        CallCompleted("c2", "a2", 10.0),
        Tick(16.0),  # a1's wrap-up ends: paused
        AgentUnpause("a1", 20.0),  # c3 is called back
    ]
    stream: list[Entry] = [(f"{n + 1}-0", item, ("n", n + 1)) for n, item in enumerate(items)]
    images = [json.loads(i) for i in assert_every_cut_resumes_exactly(config, 1, stream)]
    seen = {
        (a["state"], a["paused"], a["call"] is not None)
        for image in images
        for a in image["engine"]["agents"]
    }
    assert {("on-call", True, True), ("wrapup", True, False), ("logged-out", False, True)} <= seen
    offers = [c["offer"] for image in images for c in image["engine"]["calls"] if c["offer"]]
    assert max(len(offer["agents"]) for offer in offers) == 3
    assert images[-1]["engine"]["calls"][0]["callback"] == "+1"
