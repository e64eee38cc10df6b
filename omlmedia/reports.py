"""Reports rebuilt from what is stored: the queue log, the agents' state changes and the call
records. Pure functions: no clock, no database; the time zone and the time span are given.

Theory of operation. Nothing here reads a live counter. The API (`omlmedia.reports_api`) reads the
stored rows of a span (`omlmedia.storage`: ``queue_log``, ``cdr``, and the ``agent.state`` events
of the event log, which are every state an agent's page showed) and hands them to one function
per report, which returns a `Report`: named columns and rows of plain values, served as JSON or,
cell for cell the same, as CSV (`csv_text`).

Definitions (times in seconds):

- **Agent activity** (`agent_activity`), over ``[since, until)``: the time in each state
  (``ready``, ``ringing``, ``talk`` for on-call, ``wrapup``, ``paused`` and paused by reason),
  ``logged_in`` (every state but logged-out), ``calls`` (times the agent went on a call),
  ``aht`` (average handle time: (talk + wrap-up) / calls) and ``occupancy`` ((talk + wrap-up +
  ringing) / (ready + ringing + talk + wrap-up): busy over available, pauses left out). A state
  that began before ``since`` counts from ``since``; one still going at ``until`` up to it.
- **Queue (or campaign) by interval** (`queue_intervals`): a caller counts in the interval in
  which it entered the queue. ``offered``: callers that entered; ``answered``, ``abandoned``;
  ``service_level``: answered within the queue's threshold over answered plus abandoned after it
  (an abandon within the threshold does not count against the queue, as in
  `queueing.stats`); ``asa``: mean wait of the answered; ``aht``: mean handle time (talk, plus
  the agent's wrap-up that followed) of the answered calls that ended; ``longest_wait``: the
  longest any caller of the interval waited (to an answer, an abandon or another exit).
  Intervals are 15, 30 or 60 minutes of the site's clock, or its days (`intervals`): a day is
  midnight to midnight in the site's time zone, 23 or 25 hours long when the clocks change.
- **Dispositions** (`dispositions`): per campaign, the calls an agent answered by the
  disposition the agent gave (``""``: none given), with their share of the campaign's calls.
- **Call detail** (`call_details`): one row per call record with its times, wait and talk, each
  leg's codec and quality (jitter, loss, round trip, MOS), its lowest MOS and whether it was
  recorded.
"""

from __future__ import annotations

import csv
import io
import json
import math
from bisect import bisect_left
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from itertools import pairwise
from typing import Any, Final
from zoneinfo import ZoneInfo

from omlmedia.storage import CallRecord, QueueLogRow

__all__ = [
    "INTERVALS",
    "Report",
    "StateChange",
    "agent_activity",
    "call_details",
    "csv_cell",
    "csv_text",
    "day_span",
    "dispositions",
    "intervals",
    "local_time",
    "queue_intervals",
]

INTERVALS: Final = {"15": 900, "30": 1800, "60": 3600, "day": 0}
"""The intervals a queue report may be cut in: minutes (as text) to seconds; ``day`` (0) is the
site's day."""

DEFAULT_SERVICE_LEVEL: Final = 20.0
"""The threshold of a queue the report is not told about (the queues' own default)."""

_STATES: Final = {
    "ready": "ready",
    "ringing": "ringing",
    "on-call": "talk",
    "wrapup": "wrapup",
    "paused": "paused",
}
_WAIT_EVENTS: Final = frozenset(
    {"answer", "abandon", "callback", "overflow", "exit-timeout", "exit-empty"}
)
_LEG_ROLES: Final = ("caller", "agent")
_LEG_FIELDS: Final = ("codec", "jitter_ms", "loss_percent", "rtt_ms", "mos")
_RISKY_START: Final = ("=", "@", "\t", "\r", "+", "-")


@dataclass(frozen=True, slots=True)
class StateChange:
    """An agent entered `state` (`queueing.events.AgentState` values) at `time`; `reason` is
    the pause reason when paused."""

    time: float
    agent: str
    state: str
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Report:
    """One report: its `name`, `columns` in order, `rows` (each a mapping of every column) and
    what it covers (`meta`: the span, the time zone, the interval...)."""

    name: str
    columns: tuple[str, ...]
    rows: list[dict[str, Any]]
    meta: Mapping[str, Any] = field(default_factory=dict)

    def view(self) -> dict[str, Any]:
        """The report as JSON serves it."""
        return {
            "report": self.name,
            **self.meta,
            "columns": list(self.columns),
            "rows": [{c: row.get(c) for c in self.columns} for row in self.rows],
        }


# -- time -------------------------------------------------------------------------------------


def local_time(t: float, zone: ZoneInfo) -> str:
    """Unix time `t` as the site's ISO 8601 local time with its offset (to the second)."""
    return datetime.fromtimestamp(t, zone).isoformat(timespec="seconds")


def day_span(day: date, zone: ZoneInfo, days: int = 1) -> tuple[float, float]:
    """The Unix times of the site's midnight starting `day` and of the midnight `days` later."""
    start = datetime(day.year, day.month, day.day, tzinfo=zone)
    end_day = day + timedelta(days=days)
    end = datetime(end_day.year, end_day.month, end_day.day, tzinfo=zone)
    return start.timestamp(), end.timestamp()


def _midnights(since: float, until: float, zone: ZoneInfo) -> list[float]:
    """The site's midnights from the one at or before `since` to the first at or after
    `until`."""
    day = datetime.fromtimestamp(since, zone).date()
    result = [day_span(day, zone)[0]]
    while result[-1] < until:
        day += timedelta(days=1)
        result.append(day_span(day, zone)[0])
    return result


def intervals(
    since: float, until: float, seconds: int, zone: ZoneInfo
) -> list[tuple[float, float]]:
    """``[start, end)`` spans that cover ``[since, until)``, cut at the site's midnights and,
    when `seconds` is not 0, every `seconds` after each midnight (so 60-minute intervals start at
    the site's full hours, even in a zone half an hour off UTC). The first and the last are
    clipped to `since` and `until`."""
    if until <= since:
        return []
    bounds: list[float] = []
    midnights = _midnights(since, until, zone)
    for start, end in pairwise(midnights):
        bounds.append(start)
        if seconds:
            t = start + seconds
            while t < end:
                bounds.append(t)
                t += seconds
    bounds.append(midnights[-1])
    spans = []
    for start, end in pairwise(bounds):
        lo, hi = max(start, since), min(end, until)
        if lo < hi:
            spans.append((lo, hi))
    return spans


def _index(spans: Sequence[tuple[float, float]], t: float) -> int | None:
    lo, hi = 0, len(spans)
    while lo < hi:
        mid = (lo + hi) // 2
        if spans[mid][1] <= t:
            lo = mid + 1
        else:
            hi = mid
    if lo < len(spans) and spans[lo][0] <= t < spans[lo][1]:
        return lo
    return None


def _r(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


# -- agent activity ---------------------------------------------------------------------------


def agent_activity(
    changes: Iterable[StateChange],
    since: float,
    until: float,
    *,
    agents: Iterable[str] = (),
    zone: ZoneInfo | None = None,
) -> Report:
    """Each agent's time by state over ``[since, until)``, from its state changes in time order
    (the last change before `since` included, so the state at `since` is known). `agents` are
    listed even without a change."""
    by_agent: dict[str, list[StateChange]] = {name: [] for name in agents}
    for change in changes:
        if change.time < until:
            by_agent.setdefault(change.agent, []).append(change)
    reasons: set[str] = set()
    rows = []
    for agent in sorted(by_agent):
        totals = dict.fromkeys(("ready", "ringing", "talk", "wrapup", "paused"), 0.0)
        logged_in = 0.0
        paused_by: dict[str, float] = {}
        calls = 0
        history = sorted(by_agent[agent], key=lambda c: c.time)
        previous = ""
        for i, change in enumerate(history):
            end = history[i + 1].time if i + 1 < len(history) else until
            lo, hi = max(change.time, since), min(end, until)
            if change.state == "on-call" and previous != "on-call" and since <= change.time:
                calls += 1
            previous = change.state
            if hi <= lo or change.state == "logged-out":
                continue
            seconds = hi - lo
            logged_in += seconds
            key = _STATES.get(change.state)
            if key is not None:
                totals[key] += seconds
            if change.state == "paused":
                paused_by[change.reason] = paused_by.get(change.reason, 0.0) + seconds
                reasons.add(change.reason)
        handled = totals["talk"] + totals["wrapup"]
        available = totals["ready"] + totals["ringing"] + handled
        rows.append(
            {
                "agent": agent,
                "logged_in": _r(logged_in),
                **{key: _r(value) for key, value in totals.items()},
                **{f"paused:{reason}": _r(value) for reason, value in paused_by.items()},
                "occupancy": _r((handled + totals["ringing"]) / available, 4)
                if available
                else None,
                "calls": calls,
                "aht": _r(handled / calls) if calls else None,
            }
        )
    reason_columns = tuple(f"paused:{reason}" for reason in sorted(reasons))
    for row in rows:
        for column in reason_columns:
            row.setdefault(column, 0.0)
    columns = (
        "agent",
        "logged_in",
        "ready",
        "ringing",
        "talk",
        "wrapup",
        "paused",
        *reason_columns,
        "occupancy",
        "calls",
        "aht",
    )
    return Report("agents", columns, rows, _meta(since, until, zone))


def _meta(since: float, until: float, zone: ZoneInfo | None, **more: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"since": since, "until": until}
    if zone is not None:
        meta["timezone"] = zone.key
        meta["from"] = local_time(since, zone)
        meta["to"] = local_time(until, zone)
    meta.update(more)
    return meta


# -- queues and campaigns by interval ---------------------------------------------------------


@dataclass(slots=True)
class _Caller:
    queue: str
    entered: float
    wait: float | None = None
    answered: bool = False
    abandoned: bool = False
    agent: str = ""
    talk: float | None = None
    ended: float = 0.0


def _wrapups(changes: Iterable[StateChange]) -> dict[str, list[tuple[float, float]]]:
    """Each agent's wrap-ups: (start, seconds), in time order."""
    by_agent: dict[str, list[StateChange]] = {}
    for change in changes:
        by_agent.setdefault(change.agent, []).append(change)
    result: dict[str, list[tuple[float, float]]] = {}
    for agent, history in by_agent.items():
        history.sort(key=lambda c: c.time)
        spans = []
        for i, change in enumerate(history):
            if change.state == "wrapup" and i + 1 < len(history):
                spans.append((change.time, history[i + 1].time - change.time))
        result[agent] = spans
    return result


_WRAPUP_SLACK: Final = 1.0
"""Seconds between a call's completion in the queue log and its agent's wrap-up state change
that still tie them together (the two are written by different parts of the server)."""


def _wrapup_after(spans: Sequence[tuple[float, float]], t: float) -> float:
    """The wrap-up of `spans` (in time order) that began when the call ended at `t`."""
    index = bisect_left(spans, (t - 1e-6,))
    if index < len(spans) and spans[index][0] <= t + _WRAPUP_SLACK:
        return spans[index][1]
    return 0.0


def queue_intervals(
    log: Iterable[QueueLogRow],
    since: float,
    until: float,
    interval: str,
    zone: ZoneInfo,
    *,
    service_levels: Mapping[str, float] | None = None,
    changes: Iterable[StateChange] = (),
    campaign_of: Mapping[str, str] | None = None,
    campaign_queues: Mapping[str, str] | None = None,
    names: Iterable[str] = (),
) -> Report:
    """Offered, answered, abandoned, service level, ASA, AHT and longest wait per queue (or per
    campaign, when `campaign_of` maps call ids to campaigns) and `interval` (a key of
    `INTERVALS`) over ``[since, until)``. `log` must hold the entries of the callers that entered
    in the span, and what happened to them after it (read past `until`); `changes`, the agents'
    wrap-ups. `names` are listed even in an interval without a caller."""
    levels = service_levels or {}
    spans = intervals(since, until, INTERVALS[interval], zone)
    callers: dict[tuple[str, str], _Caller] = {}
    for entry in log:
        key = (entry.queue, entry.call_id)
        if entry.event == "enter":
            if since <= entry.time < until:
                callers[key] = _Caller(entry.queue, entry.time)
            continue
        caller = callers.get(key)
        if caller is None:
            continue
        if entry.event in _WAIT_EVENTS and caller.wait is None:
            caller.wait = _seconds(entry.data.get("wait"), entry.time - caller.entered)
        if entry.event == "answer":
            caller.answered = True
            caller.agent = entry.agent
        elif entry.event == "abandon":
            caller.abandoned = True
        elif entry.event in ("complete", "transfer") and caller.answered:
            caller.talk = _seconds(entry.data.get("talk"), 0.0)
            caller.ended = entry.time
    wrapups = _wrapups(changes)
    groups: dict[tuple[str, int], list[_Caller]] = {}
    for (_, call_id), caller in callers.items():
        name = caller.queue if campaign_of is None else campaign_of.get(call_id, "")
        if campaign_of is not None and not name:
            continue
        index = _index(spans, caller.entered)
        if index is not None:
            groups.setdefault((name, index), []).append(caller)
    group_names = sorted({name for name, _ in groups} | set(names))
    rows = []
    for index, (start, end) in enumerate(spans):
        for name in group_names:
            members = groups.get((name, index), [])
            queue = name if campaign_of is None else (campaign_queues or {}).get(name, "")
            threshold = levels.get(queue, DEFAULT_SERVICE_LEVEL)
            rows.append(
                {
                    "start": local_time(start, zone),
                    "end": local_time(end, zone),
                    ("queue" if campaign_of is None else "campaign"): name,
                    **_figures(members, threshold, wrapups),
                }
            )
    group = "queue" if campaign_of is None else "campaign"
    columns = (
        "start",
        "end",
        group,
        "offered",
        "answered",
        "abandoned",
        "service_level",
        "asa",
        "aht",
        "longest_wait",
    )
    return Report(
        "queues" if campaign_of is None else "campaigns",
        columns,
        rows,
        _meta(since, until, zone, interval=interval),
    )


def _seconds(value: object, default: float) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return default


def _figures(
    members: Sequence[_Caller],
    threshold: float,
    wrapups: Mapping[str, Sequence[tuple[float, float]]],
) -> dict[str, Any]:
    answered = [c for c in members if c.answered]
    abandoned = [c for c in members if c.abandoned]
    within = sum(1 for c in answered if (c.wait or 0.0) <= threshold)
    late_abandons = sum(1 for c in abandoned if (c.wait or 0.0) > threshold)
    judged = len(answered) + late_abandons
    handled = [
        c.talk + _wrapup_after(wrapups.get(c.agent, ()), c.ended)
        for c in answered
        if c.talk is not None
    ]
    waits = [c.wait for c in members if c.wait is not None]
    return {
        "offered": len(members),
        "answered": len(answered),
        "abandoned": len(abandoned),
        "service_level": _r(within / judged, 4) if judged else None,
        "asa": _r(sum(c.wait or 0.0 for c in answered) / len(answered)) if answered else None,
        "aht": _r(sum(handled) / len(handled)) if handled else None,
        "longest_wait": _r(max(waits)) if waits else None,
    }


# -- dispositions -----------------------------------------------------------------------------


def dispositions(
    records: Iterable[CallRecord],
    since: float,
    until: float,
    *,
    zone: ZoneInfo | None = None,
) -> Report:
    """Per campaign, its calls that an agent answered (started in ``[since, until)``) by
    disposition, with their share of the campaign's answered calls."""
    counts: dict[str, dict[str, int]] = {}
    for record in records:
        if not since <= record.start < until or not record.campaign:
            continue
        if not record.agent or record.answer is None:
            continue
        per = counts.setdefault(record.campaign, {})
        per[record.disposition] = per.get(record.disposition, 0) + 1
    rows = []
    for campaign in sorted(counts):
        total = sum(counts[campaign].values())
        for disposition, calls in sorted(counts[campaign].items(), key=lambda kv: (-kv[1], kv[0])):
            rows.append(
                {
                    "campaign": campaign,
                    "disposition": disposition,
                    "calls": calls,
                    "share": round(calls / total, 4),
                }
            )
    columns = ("campaign", "disposition", "calls", "share")
    return Report("dispositions", columns, rows, _meta(since, until, zone))


# -- call detail ------------------------------------------------------------------------------


def _leg(record: CallRecord, role: str) -> Mapping[str, Any] | None:
    for leg in record.legs:
        if leg.get("role") == role:
            return leg
    return None


def _loss(leg: Mapping[str, Any]) -> float | None:
    packets = _seconds(leg.get("packets"), 0.0)
    lost = _seconds(leg.get("lost"), 0.0)
    expected = packets + max(lost, 0.0)
    return round(100.0 * max(lost, 0.0) / expected, 2) if expected else None


def _number(value: object) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def call_details(
    records: Iterable[CallRecord],
    since: float,
    until: float,
    *,
    zone: ZoneInfo,
    waits: Mapping[str, float] | None = None,
    recorded: Mapping[str, bool] | None = None,
) -> Report:
    """One row per call record started in ``[since, until)``: times (site's), who, the wait in
    the queue (`waits`, from the queue log), talk, cause, each leg's quality and the lowest MOS,
    and whether its recording is there (`recorded`; else whether one was made)."""
    rows = []
    for record in sorted(records, key=lambda r: (r.start, r.call_id)):
        if not since <= record.start < until:
            continue
        row: dict[str, Any] = {
            "call_id": record.call_id,
            "start": local_time(record.start, zone),
            "end": local_time(record.end, zone),
            "direction": record.direction,
            "caller": record.caller,
            "callee": record.callee,
            "campaign": record.campaign,
            "queue": record.queue,
            "agent": record.agent,
            "disposition": record.disposition,
            "wait": _r((waits or {}).get(record.call_id)),
            "talk": _r(record.billsec) if record.agent and record.answer is not None else None,
            "duration": _r(record.duration),
            "hangup_by": record.hangup_by,
            "cause": record.cause,
        }
        scores = []
        for role in _LEG_ROLES:
            leg = _leg(record, role)
            values: dict[str, Any] = dict.fromkeys(_LEG_FIELDS)
            if leg is not None:
                values["codec"] = str(leg.get("codec") or "") or None
                values["jitter_ms"] = _number(leg.get("jitter_ms"))
                values["loss_percent"] = _loss(leg)
                values["rtt_ms"] = _number(leg.get("rtt_ms"))
                values["mos"] = _number(leg.get("mos"))
                if values["mos"] is not None:
                    scores.append(values["mos"])
            for name, value in values.items():
                row[f"{role}_{name}"] = value
        row["min_mos"] = min(scores) if scores else None
        row["recording"] = (
            (recorded or {}).get(record.call_id, False)
            if recorded is not None
            else bool(record.recording)
        )
        row["recording_gaps"] = _gaps(record)
        rows.append(row)
    columns = (
        "call_id",
        "start",
        "end",
        "direction",
        "caller",
        "callee",
        "campaign",
        "queue",
        "agent",
        "disposition",
        "wait",
        "talk",
        "duration",
        "hangup_by",
        "cause",
        *(f"{role}_{name}" for role in _LEG_ROLES for name in _LEG_FIELDS),
        "min_mos",
        "recording",
        "recording_gaps",
    )
    return Report("calls", columns, rows, _meta(since, until, zone))


def _gaps(record: CallRecord) -> str | None:
    """The recording's pauses (PCI), as ``start-end`` seconds into the file joined by ``; ``
    (the ``recording`` leg's ``gaps``); None when it had none."""
    leg = _leg(record, "recording")
    gaps = leg.get("gaps") if leg is not None else None
    if not isinstance(gaps, list):
        return None
    spans = []
    for gap in gaps:
        start = _number(gap.get("start")) if isinstance(gap, dict) else None
        end = _number(gap.get("end")) if isinstance(gap, dict) else None
        if start is not None and end is not None:
            spans.append(f"{start:.1f}-{end:.1f}")
    return "; ".join(spans) or None


# -- CSV --------------------------------------------------------------------------------------


def csv_cell(value: Any) -> str:
    """A JSON value as one CSV cell: text as it is, numbers and booleans as JSON writes them,
    null as empty. Text a spreadsheet would run as a formula (``=``, ``@``, a tab, a carriage
    return, or ``+``/``-`` not starting a number such as a phone number) gets a leading ``'``."""
    if value is None:
        return ""
    if isinstance(value, str):
        if value.startswith(_RISKY_START) and not _numeric(value):
            return "'" + value
        return value
    return json.dumps(value)


def _numeric(text: str) -> bool:
    body = text[1:] if text[:1] in "+-" else ""
    return bool(body) and body.replace(" ", "").replace(".", "").isdigit()


def csv_text(report: Report) -> str:
    """The report as CSV (RFC 4180: a header row, CRLF line ends), the same cells as its JSON."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(report.columns)
    for row in report.rows:
        writer.writerow([csv_cell(row.get(column)) for column in report.columns])
    return out.getvalue()
