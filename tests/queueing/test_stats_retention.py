"""The statistics keep a bounded window of period buckets: a week of traffic keeps as many buckets
as two days do, every figure inside the window is exactly the one keeping everything gives, the
all-time totals stay, and replicas (live, restored from a snapshot, or from a fuller snapshot) that
apply the same inputs keep the same buckets."""

from __future__ import annotations

import dataclasses
import json
import math
import random
from collections.abc import Iterator

import pytest

from queueing.config import build_config
from queueing.events import LogEvent, QueueLogEntry
from queueing.replica import (
    Decision,
    Input,
    ReplicatedAcd,
    input_from_dict,
)
from queueing.snapshot import _statistics_state
from queueing.stats import DEFAULT_RETENTION, AgentCounters, QueueCounters, Statistics
from tests.queueing.streams import drive, random_steps, wire

DAY = 86400.0
PERIOD = 900.0
QUEUES = ["sales", "support", "billing"]
AGENTS = [f"a{i}" for i in range(24)]
LEVELS = {q: 20.0 for q in QUEUES}


def traffic(days: int, seed: int = 5) -> Iterator[QueueLogEntry]:
    """Queue log entries in time order: agents log in each morning and out each evening with
    pauses, callers enter every half-minute or so on working hours, are answered after a wait
    (float seconds, so the sums are inexact) or abandon, and talk for a few minutes."""
    rng = random.Random(seed)
    pending: list[QueueLogEntry] = []
    calls = 0
    for day in range(days):
        start = day * DAY + 8 * 3600 + rng.random()
        end = day * DAY + 18 * 3600
        for agent in AGENTS:
            login = start + rng.uniform(0, 1800)
            pending.append(QueueLogEntry(login, "", "", agent, LogEvent.LOGIN, {}))
            pause = login + rng.uniform(3600, 14400)
            pending.append(QueueLogEntry(pause, "", "", agent, LogEvent.PAUSE, {"reason": "lunch"}))
            pending.append(
                QueueLogEntry(pause + rng.uniform(600, 3600), "", "", agent, LogEvent.UNPAUSE, {})
            )
            pending.append(QueueLogEntry(end + rng.random(), "", "", agent, LogEvent.LOGOUT, {}))
        now = start
        while now < end:
            now += rng.expovariate(1 / 30)
            calls += 1
            call, queue, agent = f"c{calls}", rng.choice(QUEUES), rng.choice(AGENTS)
            wait = rng.expovariate(1 / 25)
            pending.append(QueueLogEntry(now, queue, call, "", LogEvent.ENTER, {}))
            if rng.random() < 0.1:
                pending.append(
                    QueueLogEntry(now + wait, queue, call, "", LogEvent.ABANDON, {"wait": wait})
                )
                continue
            pending.append(QueueLogEntry(now + wait, queue, call, agent, LogEvent.OFFER, {}))
            pending.append(
                QueueLogEntry(now + wait, queue, call, agent, LogEvent.ANSWER, {"wait": wait})
            )
            talk = rng.expovariate(1 / 240)
            pending.append(
                QueueLogEntry(
                    now + wait + talk, queue, call, agent, LogEvent.COMPLETE, {"talk": talk}
                )
            )
        pending.sort(key=lambda e: e.time)
        yield from pending
        pending.clear()


def figures_match(bounded: Statistics, full: Statistics, start: float, end: float) -> None:
    """Every queue's and agent's figures over [start, end) are those of `full`, to the bit."""
    for queue in QUEUES:
        assert bounded.queue(queue, start, end) == full.queue(queue, start, end), (queue, start)
    for agent in AGENTS:
        assert bounded.agent(agent, start, end) == full.agent(agent, start, end), (agent, start)


def test_a_week_of_traffic_keeps_two_days_of_buckets_with_the_same_figures_inside_them() -> None:
    bounded = Statistics(LEVELS, period=PERIOD, retention=DEFAULT_RETENTION)
    full = Statistics(LEVELS, period=PERIOD)
    keep = math.ceil(DEFAULT_RETENTION / PERIOD)
    counts: list[int] = []
    sizes: list[int] = []
    entries = traffic(7)
    day_end = DAY
    bounded_newest = 0.0
    for entry in [*entries, None]:
        if entry is None or entry.time >= day_end:
            # the end of a day: the window holds, and inside it nothing differs from keeping all
            counts.append(bounded.bucket_count())
            sizes.append(len(json.dumps(_statistics_state(bounded))))
            since = bounded.retained_since
            assert since is not None
            newest = bounded_newest
            assert since <= newest - DEFAULT_RETENTION
            assert bounded.bucket_count() <= (len(QUEUES) + len(AGENTS)) * (keep + 1)
            figures_match(bounded, full, since, math.inf)
            figures_match(bounded, full, since, since + 6 * PERIOD)
            for zone in (-12, 0, 14):  # today and yesterday of any time zone are all there
                today = math.floor((newest + zone * 3600) / DAY) * DAY - zone * 3600
                figures_match(bounded, full, today - DAY, today)
                figures_match(bounded, full, today, today + DAY)
            for queue in QUEUES:
                assert bounded.queue(queue) == full.queue(queue)  # all time, untouched
                buckets = range(math.floor(since / PERIOD), math.floor(newest / PERIOD) + 1)
                for index in buckets:
                    one = (index * PERIOD, (index + 1) * PERIOD)
                    assert bounded.queue(queue, *one) == full.queue(queue, *one)
            for agent in AGENTS:
                assert bounded.agent(agent) == full.agent(agent)
            day_end += DAY
        if entry is not None:
            bounded.feed(entry)
            full.feed(entry)
            bounded_newest = entry.time
    assert len(counts) == 7
    # from the third day on the window is full: the count and the image stop growing
    assert max(counts[2:]) <= counts[2] * 1.05, counts
    assert max(sizes[2:]) <= sizes[2] * 1.05, sizes
    assert full.bucket_count() > 3 * bounded.bucket_count()
    # what fell out of the window is gone, and says so
    first_day = full.queue("sales", 0.0, DAY)
    assert first_day.entered > 0 and bounded.queue("sales", 0.0, DAY).entered == 0
    assert bounded.retained_since is not None and bounded.retained_since > 4 * DAY


def scanned(stats: Statistics, queue: str, start: float, end: float) -> QueueCounters:
    """The counters of `queue` over [start, end) by a pass over all its buckets in order."""
    result = QueueCounters()
    for index, counters in stats._queue_buckets.get(queue, {}).items():
        if start <= index * stats.period < end:
            result.add(counters)
    return result


def test_spans_read_bucket_by_bucket_equal_a_pass_over_every_bucket() -> None:
    stats = Statistics(LEVELS, period=PERIOD, retention=DEFAULT_RETENTION)
    for entry in traffic(3, seed=9):
        stats.feed(entry)
    rng = random.Random(2)
    since = stats.retained_since
    assert since is not None
    for _ in range(300):
        start = rng.uniform(since - DAY, 3 * DAY)
        end = start + rng.choice([0.0, 1.0, PERIOD, 4 * PERIOD - 0.5, DAY, math.inf])
        for queue in QUEUES:
            assert stats.queue(queue, start, end) == scanned(stats, queue, start, end)


def test_an_entry_older_than_the_window_counts_only_in_the_totals_late_ones_are_dropped() -> None:
    stats = Statistics(LEVELS, period=60.0, retention=120.0)
    full = Statistics(LEVELS, period=60.0)

    def feed(time: float, queue: str = "sales") -> None:
        for s in (stats, full):
            s.feed(QueueLogEntry(time, queue, f"c{time}", "", LogEvent.ENTER, {}))

    feed(10.0)
    feed(400.0)  # bucket 6: keeps buckets 4..6
    assert stats.retained_since == 240.0
    assert stats.queue("sales", 0.0, 240.0).entered == 0
    feed(100.0)  # older than the window: in the total only, no bucket made again
    assert stats.queue("sales").entered == 3 == full.queue("sales").entered
    assert stats.bucket_count() == 1
    feed(390.0, "billing")  # billing's buckets made out of order: 6, then 4 and 5
    feed(250.0, "billing")
    feed(330.0, "billing")
    assert stats.bucket_count() == 4
    figures_match(stats, full, 240.0, math.inf)
    feed(480.0)  # bucket 8: keeps 6..8, billing's 4 and 5 go, its 6 stays
    assert stats.retained_since == 360.0
    figures_match(stats, full, 360.0, math.inf)
    assert stats.queue("billing", 0.0, math.inf).entered == 1
    assert stats.queue("billing").entered == 3
    assert stats.bucket_count() == 3


def test_a_retention_must_be_finite_and_not_negative() -> None:
    for bad in (-1.0, math.inf, math.nan):
        with pytest.raises(ValueError, match="retention"):
            Statistics(LEVELS, retention=bad)


CONFIG = build_config(
    {
        "agents": {a: {"wrapup": 5} for a in ("a1", "a2", "a3")},
        "queues": {
            "sales": {"strategy": "rrmemory", "members": ["a1", "a2"], "ring_timeout": 15},
            "all": {"strategy": "ringall", "members": ["a1", "a2", "a3"]},
        },
    }
)
ACTIONS = ["enter", "enter", "answer", "answer", "complete", "abandon", "pause", "unpause"]


def replica(retention: float | None = 300.0) -> ReplicatedAcd:
    """A replica with buckets of a minute, kept for five minutes (or all)."""
    return ReplicatedAcd(CONFIG, seed=3, epoch=1, stats_period=60.0, stats_retention=retention)


def hours_of_calls(seed: int = 3) -> list[tuple[str, Input]]:
    """Some hours of callers (a step every 40 s on average), answered, completed, abandoned,
    agents pausing, timers fired by ticks, as a throwaway owner saw them (offers really rang)."""
    owner = replica()
    stream: list[tuple[str, Input]] = []

    def append(item: Input, sender: str, retry: bool) -> list[Decision]:
        stream.append((f"{len(stream) + 1}-0", input_from_dict(wire(item.to_dict()))))
        return owner.apply(*stream[-1])

    drive(owner, random_steps(random.Random(seed), 600, ACTIONS, scale=15.0), append)
    return stream


def test_replicas_fed_the_same_inputs_drop_the_same_buckets_and_restores_trim_alike() -> None:
    stream = hours_of_calls()
    one, two, full = replica(), replica(), replica(None)
    cuts = {len(stream) // 3, len(stream) // 2, 2 * len(stream) // 3}
    images: dict[int, str] = {}
    for index, (entry, item) in enumerate(stream):
        for acd in (one, two, full):
            acd.apply(entry, item)
        if index in cuts:
            assert one.snapshot() == two.snapshot()
            images[index] = json.dumps(one.snapshot())
            images[-index] = json.dumps(full.snapshot())
    stats, whole = one.engine.statistics, full.engine.statistics
    assert stats.retained_since is not None and stats.retained_since > 2 * 3600
    assert stats.bucket_count() <= 5 * (5 + 1) < whole.bucket_count()
    assert one.snapshot() == two.snapshot()
    for queue in ("sales", "all"):
        assert stats.queue(queue) == whole.queue(queue)
        assert stats.queue(queue, stats.retained_since, math.inf) == whole.queue(
            queue, stats.retained_since, math.inf
        )
    for agent in ("a1", "a2", "a3"):
        assert stats.agent(agent, stats.retained_since, math.inf) == whole.agent(
            agent, stats.retained_since, math.inf
        )
    final = one.snapshot()
    for cut in sorted(cuts):
        # restored from its own image, or from the fuller image of an unbounded replica (or one
        # of before the retention: no horizon), then fed the rest: the same replica as `one`
        for image in (images[cut], images[-cut]):
            data = json.loads(image)
            if image is images[-cut]:
                del data["engine"]["statistics"]["horizon"]
            successor = replica()
            successor.restore(data, epoch=1)
            for entry, item in stream[cut + 1 :]:
                successor.apply(entry, item)
            assert successor.snapshot() == final


@pytest.mark.parametrize("kind", [QueueCounters, AgentCounters])
def test_adding_counters_adds_every_field_and_keeps_the_longest_wait(
    kind: type[QueueCounters] | type[AgentCounters],
) -> None:
    names = [f.name for f in dataclasses.fields(kind)]
    first = kind(**{name: index + 1 for index, name in enumerate(names)})
    second = kind(**{name: 10 * (index + 1) for index, name in enumerate(names)})
    total = kind()
    total.add(first)
    total.add(second)
    for index, name in enumerate(names):
        expected = 10 * (index + 1) if name == "longest_wait_answered" else 11 * (index + 1)
        assert getattr(total, name) == expected, name
