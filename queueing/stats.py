"""Statistics per queue and per agent, fed only from queue log entries.

`Statistics.feed(entry)` reads one `QueueLogEntry`; the engine feeds every entry it emits, and
`Statistics.from_log(entries)` rebuilds the same figures from a stored queue log. Counters are kept
in buckets of `period` seconds (an entry counts in the bucket of its time; a pause or login
duration in the bucket where it ends), so figures cover any span of whole buckets kept; the all-time
totals are kept apart so they cost nothing to read. Live figures (callers waiting now, the longest
wait now) are the engine's: `AcdEngine.queue_status`.

Retention. With `retention` seconds (the engine passes `DEFAULT_RETENTION` unless told
otherwise), only the bucket of the newest entry and the ``ceil(retention / period)`` buckets
before it are kept (at least the last `retention` seconds): when an entry falls in a later
bucket, the buckets that fell out of the window are dropped, and a later entry older than the
window counts in the all-time totals only. `retained_since` is the start of the oldest bucket
that can still be there: figures over spans that start at or after it are exactly those that
keeping every bucket would give (same counters, same sums, added in the same order); before it
they are gone. The dropping follows the entries alone, not a clock, so replicas fed the same
entries keep the same buckets, and a replica restored from a snapshot that kept more (taken
before the retention, or with a longer one) drops what this one would have dropped. Without
`retention` every bucket is kept (a report rebuilt with `from_log` over a stored log).

Definitions: the service level is the share of answered callers answered within the queue's
`service_level` seconds, over callers answered plus callers who abandoned after that threshold
(an abandon before it does not count against the queue, as in most contact-center reports). The
handle time is the talk time, from answer to completion or transfer.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final, TypeVar

from queueing.events import LogEvent, QueueLogEntry

DEFAULT_RETENTION: Final = 50 * 3600.0
"""The engine's default retention: 50 hours, so that the periods of today and of yesterday, in
any time zone, are still there (yesterday's local midnight is at most 49 hours back, after the
25-hour day of a daylight-saving change); longer spans are the reports', from the stored queue
log."""


@dataclass(slots=True)
class QueueCounters:
    """Raw counters of one queue over some span."""

    entered: int = 0
    answered: int = 0
    answered_within: int = 0
    abandoned: int = 0
    abandoned_within: int = 0
    overflowed: int = 0
    timeouts: int = 0
    left_empty: int = 0
    callbacks: int = 0
    completed: int = 0
    transferred: int = 0
    offers: int = 0
    no_answers: int = 0
    wait_answered: float = 0.0
    wait_abandoned: float = 0.0
    longest_wait_answered: float = 0.0
    talk: float = 0.0

    def add(self, other: QueueCounters) -> None:
        """Add `other` into these counters (the longest wait is the larger of the two). Field by
        field, not through `fields()`: a day's figures add up some 50,000 buckets at 500 agents,
        on the event loop."""
        self.entered += other.entered
        self.answered += other.answered
        self.answered_within += other.answered_within
        self.abandoned += other.abandoned
        self.abandoned_within += other.abandoned_within
        self.overflowed += other.overflowed
        self.timeouts += other.timeouts
        self.left_empty += other.left_empty
        self.callbacks += other.callbacks
        self.completed += other.completed
        self.transferred += other.transferred
        self.offers += other.offers
        self.no_answers += other.no_answers
        self.wait_answered += other.wait_answered
        self.wait_abandoned += other.wait_abandoned
        self.longest_wait_answered = max(self.longest_wait_answered, other.longest_wait_answered)
        self.talk += other.talk

    @property
    def service_level(self) -> float | None:
        """Answered within the threshold / (answered + abandoned after it); None without any."""
        total = self.answered + self.abandoned - self.abandoned_within
        return self.answered_within / total if total else None

    @property
    def abandon_rate(self) -> float | None:
        """Abandoned / (answered + abandoned); None without any."""
        total = self.answered + self.abandoned
        return self.abandoned / total if total else None

    @property
    def average_wait(self) -> float | None:
        """Mean wait of answered callers."""
        return self.wait_answered / self.answered if self.answered else None

    @property
    def average_abandon_wait(self) -> float | None:
        """Mean wait of callers who abandoned."""
        return self.wait_abandoned / self.abandoned if self.abandoned else None

    @property
    def average_handle_time(self) -> float | None:
        """Mean talk time of completed or transferred calls."""
        ended = self.completed + self.transferred
        return self.talk / ended if ended else None


@dataclass(slots=True)
class AgentCounters:
    """Raw counters of one agent over some span."""

    offers: int = 0
    answered: int = 0
    no_answers: int = 0
    completed: int = 0
    transferred: int = 0
    talk: float = 0.0
    paused: float = 0.0
    logged_in: float = 0.0
    pauses: int = 0

    def add(self, other: AgentCounters) -> None:
        """Add `other` into these counters (field by field, as `QueueCounters.add`)."""
        self.offers += other.offers
        self.answered += other.answered
        self.no_answers += other.no_answers
        self.completed += other.completed
        self.transferred += other.transferred
        self.talk += other.talk
        self.paused += other.paused
        self.logged_in += other.logged_in
        self.pauses += other.pauses

    @property
    def average_handle_time(self) -> float | None:
        """Mean talk time of this agent's completed or transferred calls."""
        ended = self.completed + self.transferred
        return self.talk / ended if ended else None

    @property
    def answer_rate(self) -> float | None:
        """Answered / offers whose outcome is known (answered or not)."""
        total = self.answered + self.no_answers
        return self.answered / total if total else None


def _number(entry: QueueLogEntry, key: str) -> float:
    value = entry.data.get(key, 0.0)
    return float(value) if isinstance(value, int | float) else 0.0


_C = TypeVar("_C", QueueCounters, AgentCounters)
_DIRECT_LIMIT: Final = 1e15  # spans within it are looked up bucket by bucket (exact floats)


class Statistics:
    """Per-queue and per-agent counters, all time and per `period`-second bucket (those of the
    last `retention` seconds when it is given)."""

    def __init__(
        self,
        service_levels: Mapping[str, float],
        *,
        period: float = 900.0,
        retention: float | None = None,
    ) -> None:
        if not period > 0:
            raise ValueError("period must be positive")
        if retention is not None and not 0 <= retention < math.inf:
            raise ValueError("retention must be a finite number of seconds, at least 0")
        self.service_levels = dict(service_levels)
        self.period = period
        self.retention = retention
        self._keep = math.ceil(retention / period) if retention is not None else 0
        """Buckets kept before the newest entry's: those that overlap `retention` seconds."""
        self._queue_total: dict[str, QueueCounters] = {}
        self._agent_total: dict[str, AgentCounters] = {}
        # buckets by name, then by index (time // period), each in the order they were made
        self._queue_buckets: dict[str, dict[int, QueueCounters]] = {}
        self._agent_buckets: dict[str, dict[int, AgentCounters]] = {}
        self._paused_since: dict[str, float] = {}
        self._login_since: dict[str, float] = {}
        self._horizon: int | None = None
        """Index of the oldest bucket kept; older ones were dropped (None: nothing dropped)."""
        self._next_trim = -math.inf if retention is not None else math.inf
        """The entry time from which the window may move on."""
        # names whose buckets were not made in increasing index order (an entry older than a
        # previous one): trimming scans all their buckets instead of stopping at the first kept
        self._unordered: set[tuple[bool, str]] = set()

    @classmethod
    def from_log(
        cls,
        entries: Iterable[QueueLogEntry],
        service_levels: Mapping[str, float],
        *,
        period: float = 900.0,
        retention: float | None = None,
    ) -> Statistics:
        """Rebuild statistics from a queue log."""
        stats = cls(service_levels, period=period, retention=retention)
        for entry in entries:
            stats.feed(entry)
        return stats

    @property
    def retained_since(self) -> float | None:
        """Start of the oldest bucket still kept (figures from it on are complete), or None
        while every bucket is kept."""
        return None if self._horizon is None else self._horizon * self.period

    def bucket_count(self) -> int:
        """How many per-period buckets are kept, of queues and agents."""
        return sum(map(len, self._queue_buckets.values())) + sum(
            map(len, self._agent_buckets.values())
        )

    def _bucket(
        self,
        buckets: dict[str, dict[int, _C]],
        agents: bool,
        name: str,
        time: float,
        make: type[_C],
    ) -> _C | None:
        """The bucket of `name` at `time`, made when missing; None when it is older than the
        window."""
        if time >= self._next_trim:
            self._advance(time)
        index = math.floor(time / self.period)
        if self._horizon is not None and index < self._horizon:
            return None
        mine = buckets.get(name)
        if mine is None:
            mine = buckets[name] = {}
        bucket = mine.get(index)
        if bucket is None:
            if mine and index < next(reversed(mine)):
                self._unordered.add((agents, name))
            bucket = mine[index] = make()
        return bucket

    def _advance(self, time: float) -> None:
        """Move the window on to end at `time`: drop the buckets that fell out of it."""
        assert self.retention is not None
        horizon = math.floor(time / self.period) - self._keep
        self._next_trim = (horizon + self._keep + 1) * self.period
        if self._horizon is None or horizon > self._horizon:
            self._trim(horizon)

    def _trim(self, horizon: int) -> None:
        self._horizon = horizon
        self._trim_buckets(self._queue_buckets, False, horizon)
        self._trim_buckets(self._agent_buckets, True, horizon)

    def _trim_buckets(self, buckets: dict[str, dict[int, _C]], agents: bool, horizon: int) -> None:
        emptied = []
        for name, mine in buckets.items():
            if (agents, name) in self._unordered:
                kept = {i: c for i, c in mine.items() if i >= horizon}
                mine.clear()
                mine.update(kept)
                if list(kept) == sorted(kept):
                    self._unordered.discard((agents, name))
            else:  # made in index order: the stale ones come first
                stale = []
                for index in mine:
                    if index >= horizon:
                        break
                    stale.append(index)
                for index in stale:
                    del mine[index]
            if not mine:
                emptied.append(name)
        for name in emptied:
            del buckets[name]

    def _settle(self, horizon: int | None) -> None:
        """After the buckets were put back from a snapshot: note those made out of order, and
        keep only the window (at least `horizon`, the snapshot's, and the window that ends at its
        newest bucket), so that a snapshot that kept more (an older one, or a longer retention)
        is trimmed as this replica would have trimmed it."""
        for agents, buckets in ((False, self._queue_buckets), (True, self._agent_buckets)):
            for name, mine in buckets.items():
                if list(mine) != sorted(mine):
                    self._unordered.add((agents, name))
        newest = max(
            (max(mine) for b in (self._queue_buckets, self._agent_buckets) for mine in b.values()),
            default=None,
        )
        if self.retention is not None and newest is not None:
            at = newest - self._keep
            horizon = at if horizon is None else max(horizon, at)
        if horizon is not None:
            self._trim(horizon)
            if self.retention is not None:
                self._next_trim = (horizon + self._keep + 1) * self.period

    def _queue(self, name: str, time: float) -> tuple[QueueCounters, ...]:
        total = self._queue_total.get(name)
        if total is None:
            total = self._queue_total[name] = QueueCounters()
        bucket = self._bucket(self._queue_buckets, False, name, time, QueueCounters)
        return (total,) if bucket is None else (total, bucket)

    def _agent(self, name: str, time: float) -> tuple[AgentCounters, ...]:
        total = self._agent_total.get(name)
        if total is None:
            total = self._agent_total[name] = AgentCounters()
        bucket = self._bucket(self._agent_buckets, True, name, time, AgentCounters)
        return (total,) if bucket is None else (total, bucket)

    def feed(self, entry: QueueLogEntry) -> None:
        """Count one queue log entry."""
        event = entry.event
        if entry.queue:
            self._feed_queue(entry)
        if entry.agent:
            self._feed_agent(entry, event)

    def _feed_queue(self, entry: QueueLogEntry) -> None:
        event = entry.event
        for counters in self._queue(entry.queue, entry.time):
            if event is LogEvent.ENTER:
                counters.entered += 1
            elif event is LogEvent.OFFER:
                counters.offers += 1
            elif event is LogEvent.NO_ANSWER:
                counters.no_answers += 1
            elif event is LogEvent.ANSWER:
                wait = _number(entry, "wait")
                counters.answered += 1
                counters.wait_answered += wait
                counters.longest_wait_answered = max(counters.longest_wait_answered, wait)
                if wait <= self.service_levels.get(entry.queue, 20.0):
                    counters.answered_within += 1
            elif event is LogEvent.ABANDON:
                wait = _number(entry, "wait")
                counters.abandoned += 1
                counters.wait_abandoned += wait
                if wait <= self.service_levels.get(entry.queue, 20.0):
                    counters.abandoned_within += 1
            elif event is LogEvent.COMPLETE:
                counters.completed += 1
                counters.talk += _number(entry, "talk")
            elif event is LogEvent.TRANSFER:
                counters.transferred += 1
                counters.talk += _number(entry, "talk")
            elif event is LogEvent.CALLBACK:
                counters.callbacks += 1
            elif event is LogEvent.OVERFLOW:
                counters.overflowed += 1
            elif event is LogEvent.EXIT_TIMEOUT:
                counters.timeouts += 1
            elif event is LogEvent.EXIT_EMPTY:
                counters.left_empty += 1

    def _feed_agent(self, entry: QueueLogEntry, event: LogEvent) -> None:
        name = entry.agent
        now = entry.time
        paused = 0.0
        logged_in = 0.0
        if event is LogEvent.LOGIN:
            self._login_since[name] = now
        elif event is LogEvent.LOGOUT:
            since = self._login_since.pop(name, None)
            logged_in = now - since if since is not None else 0.0
        elif event is LogEvent.PAUSE:
            self._paused_since.setdefault(name, now)
        elif event is LogEvent.UNPAUSE:
            since = self._paused_since.pop(name, None)
            paused = now - since if since is not None else 0.0
        for counters in self._agent(name, now):
            if event is LogEvent.OFFER:
                counters.offers += 1
            elif event is LogEvent.ANSWER:
                counters.answered += 1
            elif event is LogEvent.NO_ANSWER:
                counters.no_answers += 1
            elif event is LogEvent.COMPLETE:
                counters.completed += 1
                counters.talk += _number(entry, "talk")
            elif event is LogEvent.TRANSFER:
                counters.transferred += 1
                counters.talk += _number(entry, "talk")
            elif event is LogEvent.PAUSE:
                counters.pauses += 1
            elif event is LogEvent.UNPAUSE:
                counters.paused += paused
            elif event is LogEvent.LOGOUT:
                counters.logged_in += logged_in

    def queues(self) -> list[str]:
        """Queues seen in the log."""
        return sorted(self._queue_total)

    def agents(self) -> list[str]:
        """Agents seen in the log."""
        return sorted(self._agent_total)

    def queue(
        self, name: str, start: float | None = None, end: float | None = None
    ) -> QueueCounters:
        """Counters of queue `name`: all time, or the buckets kept that start in [start, end)."""
        if start is None and end is None:
            result = QueueCounters()
            total = self._queue_total.get(name)
            if total is not None:
                result.add(total)
            return result
        result = QueueCounters()
        for counters in self._in_span(self._queue_buckets, False, name, start, end):
            result.add(counters)
        return result

    def agent(
        self, name: str, start: float | None = None, end: float | None = None
    ) -> AgentCounters:
        """Counters of agent `name`: all time, or the buckets kept that start in [start, end)."""
        result = AgentCounters()
        if start is None and end is None:
            total = self._agent_total.get(name)
            if total is not None:
                result.add(total)
            return result
        for counters in self._in_span(self._agent_buckets, True, name, start, end):
            result.add(counters)
        return result

    def _in_span(
        self,
        buckets: dict[str, dict[int, _C]],
        agents: bool,
        name: str,
        start: float | None,
        end: float | None,
    ) -> list[_C]:
        """The buckets of `name` that start in [start, end), in the order they were made (the
        order their sums are made in). A span of fewer periods than the buckets kept is looked
        up index by index when they were made in index order (the usual case: the current
        period costs one lookup, not a pass over two days)."""
        mine = buckets.get(name)
        if not mine:
            return []
        period = self.period
        if (
            start is not None
            and end is not None
            and abs(start) < _DIRECT_LIMIT
            and (end == math.inf or abs(end) < _DIRECT_LIMIT)
            and (agents, name) not in self._unordered
        ):
            low = math.ceil(start / period)  # the first index that begins at or after start
            while (low - 1) * period >= start:
                low -= 1
            while low * period < start:
                low += 1
            if end == math.inf:
                high = low + len(mine) + 1  # more than kept: a pass over them instead
            else:
                high = math.ceil(end / period)
                while high * period < end:
                    high += 1
                while (high - 1) * period >= end:
                    high -= 1
            if high - low <= len(mine):
                found = (mine.get(index) for index in range(low, high))
                return [c for c in found if c is not None]
        return [
            c
            for index, c in mine.items()
            if (start is None or index * period >= start) and (end is None or index * period < end)
        ]
