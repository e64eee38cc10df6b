"""The report routes of the API: agent activity, queues and campaigns by interval, dispositions
and call detail, as JSON or CSV (`omlmedia.reports` computes them).

Each report is rebuilt, at each request, from what the store holds (the queue log, the call
records, the agents' ``agent.state`` events), read on a thread of its own with its own
connection (`ReportReader`) so the event loop never waits for the disk. The span is the site's
day (``?day=YYYY-MM-DD``, and ``days`` more, in ``[site] timezone``), or ``since``/``until``
(Unix seconds), at most `MAX_DAYS` days; without either, the site's day today. The answer is
JSON (``{"report", "since", "until", "timezone", "from", "to", "columns", "rows"}``), or CSV with
``?format=csv`` or ``Accept: text/csv``: a header row of the columns, then the same cells
(`omlmedia.reports.csv_text`). Rows outside the token's scope are left out; a ``queue`` or
``campaign`` parameter out of scope is refused (403).

Routes: ``GET /api/v1/reports/agents``, ``GET /api/v1/reports/queues`` (``interval`` 15, 30, 60
or ``day``; ``by`` ``queue`` or ``campaign``), ``GET /api/v1/reports/dispositions``,
``GET /api/v1/reports/calls``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import AsyncIterator, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any, Final, TypeVar
from urllib.parse import quote
from zoneinfo import ZoneInfo

from aiohttp import web

from omlmedia.admin_api import BOOK_KEY
from omlmedia.admin_objects import DIRECTORY_KEY
from omlmedia.authz import IDENTITY_KEY, SCOPES_KEY, Identity, Permission, Scopes
from omlmedia.config import Config
from omlmedia.directory import Directory
from omlmedia.problems import ApiError, page, query_count, query_time
from omlmedia.recordings import (
    MAX_SEGMENTS,
    PlaybackTickets,
    RecordingQuery,
    gaps,
    media_type,
    min_mos,
    recording_file,
    search,
    segment_agents,
    segments,
    talk_seconds,
)
from omlmedia.reports import (
    INTERVALS,
    Report,
    StateChange,
    agent_activity,
    call_details,
    csv_text,
    day_span,
    dispositions,
    local_time,
    queue_intervals,
)
from omlmedia.storage import CallRecord, QueueLogRow, RecordScope, Store
from webrtc.accounts import security_line
from webrtc.forwarded import request_source

__all__ = [
    "CLOCK_KEY",
    "MAX_DAYS",
    "REPORTS_KEY",
    "TICKETS_KEY",
    "ReportReader",
    "install",
    "left_logged_in",
    "routes",
    "span_of",
]

T = TypeVar("T")

logger = logging.getLogger(__name__)

MAX_DAYS: Final = 92
"""The longest span a report covers, in days."""
OUTCOME_DAYS: Final = 1
"""Days read past a span's end for what became of its last callers (their answers, their
ends)."""
CSV_TYPE: Final = "text/csv"
FIRST_YEAR: Final = 1970
LAST_YEAR: Final = 3000
"""Reports cover days from `FIRST_YEAR` to before `LAST_YEAR` (local times beyond it do not
exist for Python's datetime in every zone)."""
LAST_TIME: Final = 32503680000.0
"""3000-01-01T00:00:00Z."""

CLOCK_KEY: web.AppKey[Callable[[], float]] = web.AppKey("reports_clock")
TICKETS_KEY: web.AppKey[PlaybackTickets[Identity]] = web.AppKey("playback_tickets")
"""The recordings' playback tickets (``POST /api/v1/recordings/{id}/ticket``)."""
"""The clock that says which day is today (time.time unless a test sets it)."""


@dataclass(frozen=True, slots=True)
class Rows:
    """What the store holds for one report's span."""

    log: list[QueueLogRow]
    records: list[CallRecord]
    changes: list[StateChange]


class ReportReader:
    """Reads the queue log, the call records and the agents' state changes from the database
    on a thread of its own (its own connection, opened at the first read)."""

    def __init__(self, path: Path | str) -> None:
        self.path = path
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="omlmedia-reports")
        self._store: Store | None = None

    def _open(self) -> Store:
        if self._store is None:
            self._store = Store(self.path)
        return self._store

    async def run(self, read: Callable[[Store], T]) -> T:
        """Run `read` with the store on the reader's thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: read(self._open()))

    async def rows(
        self, since: float, until: float, *, log: bool = True, changes: bool = True
    ) -> Rows:
        """The queue log from `since` to a day past `until`, the call records started in the
        span or the day before (a call reaches a queue after it starts: its campaign is in its
        record), and the agents' state changes (with each one's last before `since`)."""
        beyond = until + OUTCOME_DAYS * 86400.0

        def read(store: Store) -> Rows:
            return Rows(
                store.queue_log(since, beyond) if log else [],
                store.call_records(since - OUTCOME_DAYS * 86400.0, until),
                state_changes(store, since, beyond) if changes else [],
            )

        return await self.run(read)

    async def records(self, since: float, until: float) -> list[CallRecord]:
        """The call records started in ``[since, until)``."""
        return await self.run(lambda store: store.call_records(since, until))

    async def recorded(
        self, since: float, until: float, *, queue: str | None, scope: RecordScope | None
    ) -> list[CallRecord]:
        """The call records with a recording started in ``[since, until)``, of `queue` and in
        `scope` (`Store.recorded_calls`)."""
        return await self.run(
            lambda store: store.recorded_calls(since, until, queue=queue, scope=scope)
        )

    async def record(self, call_id: str) -> CallRecord | None:
        """One call's record."""
        return await self.run(lambda store: store.call_record(call_id))

    def _close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None

    async def close(self) -> None:
        """Close the connection and the thread."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._close)
        self._executor.shutdown(wait=True)


def _change(time_: float, agent: str, data: str) -> StateChange:
    try:
        values = json.loads(data)
    except ValueError:
        values = {}
    if not isinstance(values, dict):
        values = {}
    return StateChange(
        float(time_), agent, str(values.get("state") or ""), str(values.get("reason") or "")
    )


def last_states(store: Store, before: float) -> list[StateChange]:
    """Each agent's last ``agent.state`` event before `before` (its state then): the latest
    by time, not by id, since nodes sharing a database draw ids in blocks that do not follow
    time across nodes (the id only breaks a tie)."""
    rows = store._db.execute(
        "SELECT time, agent, data FROM ("
        " SELECT time, agent, data, ROW_NUMBER() OVER"
        " (PARTITION BY agent ORDER BY time DESC, id DESC) AS n FROM events"
        " WHERE type = 'agent.state' AND time < ?"
        ") latest WHERE n = 1",
        (before,),
    ).fetchall()
    return sorted((_change(*row) for row in rows), key=lambda c: c.time)


def left_logged_in(store: Store) -> tuple[list[str], float]:
    """The agents the stored states leave logged in (a previous run that stopped or crashed
    with them logged in), and the time of the last stored event (when that run was last heard
    of)."""
    agents = [c.agent for c in last_states(store, 1e18) if c.state != "logged-out"]
    row = store._db.execute("SELECT MAX(time) FROM events").fetchone()
    last = float(row[0]) if row and row[0] is not None else 0.0
    return sorted(agents), last


def state_changes(store: Store, since: float, until: float) -> list[StateChange]:
    """Every ``agent.state`` event in ``[since, until)`` and each agent's last one before
    `since` (its state at `since`), in time order."""
    db = store._db
    during = db.execute(
        "SELECT time, agent, data FROM events WHERE type = 'agent.state' AND time >= ? "
        "AND time < ? ORDER BY time, id",
        (since, until),
    ).fetchall()
    return last_states(store, since) + [_change(*row) for row in during]


REPORTS_KEY: web.AppKey[ReportReader | None] = web.AppKey("reports_reader")
REPORT_CONFIG_KEY: web.AppKey[Config] = web.AppKey("reports_config")

routes = web.RouteTableDef()


# -- parameters -------------------------------------------------------------------------------


def _config(request: web.Request) -> Config:
    return request.app[REPORT_CONFIG_KEY]


def _zone(request: web.Request) -> ZoneInfo:
    return _config(request).site.zone


def span_of(request: web.Request, zone: ZoneInfo, now: float) -> tuple[float, float]:
    """The report's span: ``day`` (and ``days``) of the site, or ``since``/``until``, or the
    site's day of `now`; 400 naming the parameter when it is not one."""
    query = request.query
    if query.get("day"):
        if query.get("since") or query.get("until"):
            why = "give a day or since/until, not both"
            raise ApiError(400, why, [("day", why)])
        try:
            day = date.fromisoformat(query["day"])
        except ValueError:
            why = "must be a date, YYYY-MM-DD"
            raise ApiError(400, f"day {why}", [("day", why)]) from None
        days = query_count(request, "days", 1, 1, MAX_DAYS)
        if not FIRST_YEAR <= day.year < LAST_YEAR:
            why = f"must be in the years {FIRST_YEAR} to {LAST_YEAR - 1}"
            raise ApiError(400, f"day {why}", [("day", why)])
        return day_span(day, zone, days)
    if query.get("days"):
        why = "needs a day"
        raise ApiError(400, f"days {why}", [("days", why)])
    if query.get("since") or query.get("until"):
        since = query_time(request, "since", math.nan)
        until = query_time(request, "until", math.nan)
        for name, value in (("since", since), ("until", until)):
            if math.isnan(value):
                why = "is required with since/until"
                raise ApiError(400, f"{name} {why}", [(name, why)])
        if until <= since:
            raise ApiError(400, "until must be after since", [("until", "is not after since")])
        if until > LAST_TIME:
            why = f"must be before the year {LAST_YEAR}"
            raise ApiError(400, f"until {why}", [("until", why)])
        if until - since > MAX_DAYS * 86400.0:
            why = f"the span is longer than {MAX_DAYS} days"
            raise ApiError(400, why, [("until", why)])
        return since, until
    return day_span(datetime.fromtimestamp(now, zone).date(), zone)


def _choice(request: web.Request, name: str, choices: Iterable[str], default: str) -> str:
    value = request.query.get(name) or default
    allowed = list(choices)
    if value not in allowed:
        why = f"must be one of {', '.join(allowed)}"
        raise ApiError(400, f"{name} {why}", [(name, why)])
    return value


def _wants_csv(request: web.Request) -> bool:
    if request.query.get("format"):
        return _choice(request, "format", ("json", "csv"), "json") == "csv"
    accept = request.headers.get("Accept", "")
    return any(part.split(";")[0].strip().lower() == CSV_TYPE for part in accept.split(","))


def _reader(request: web.Request) -> ReportReader:
    reader = request.app[REPORTS_KEY]
    if reader is None:
        raise ApiError(404, "no queues are configured: there are no records")
    return reader


def _scoped(request: web.Request) -> tuple[Identity, Scopes]:
    return request[IDENTITY_KEY], request.app[SCOPES_KEY]()


def _answer(request: web.Request, report: Report) -> web.Response:
    if _wants_csv(request):
        day = report.meta.get("from", "")[:10] or "report"
        return web.Response(
            text=csv_text(report),
            content_type=CSV_TYPE,
            charset="utf-8",
            headers={
                "Content-Disposition": f'attachment; filename="{report.name}-{day}.csv"',
                "Cache-Control": "no-store",
            },
        )
    return web.json_response(report.view(), headers={"Cache-Control": "no-store"})


def _clock_of(app: web.Application) -> float:
    clock = app.get(CLOCK_KEY)
    return clock() if clock is not None else time.time()


def _now(request: web.Request) -> float:
    clock = request.app.get(CLOCK_KEY)
    return clock() if clock is not None else time.time()


async def _span_rows(
    request: web.Request, *, log: bool = True, changes: bool = True
) -> tuple[float, float, ZoneInfo, Rows]:
    zone = _zone(request)
    _wants_csv(request)
    since, until = span_of(request, zone, _now(request))
    rows = await _reader(request).rows(since, until, log=log, changes=changes)
    return since, until, zone, rows


def _filter(report: Report, keep: Callable[[dict[str, Any]], bool]) -> Report:
    return Report(report.name, report.columns, [r for r in report.rows if keep(r)], report.meta)


def _directory(request: web.Request) -> Directory | None:
    """The directory (agents, queues and campaigns as the API keeps them), if the server has one."""
    return request.app.get(DIRECTORY_KEY)


def _campaign_queues(request: web.Request) -> dict[str, str]:
    """Each campaign's queue: the directory's (campaigns created through the API included), else
    the file's."""
    directory = _directory(request)
    if directory is not None:
        return {name: c.queue for name, c in directory.campaigns_now().items()}
    return {c.name: c.queue for c in _config(request).campaigns}


def _service_levels(request: web.Request) -> dict[str, float]:
    """Each queue's service level threshold: the directory's queues, else the file's."""
    directory = _directory(request)
    if directory is not None:
        return {q.name: float(q.settings["service_level"]) for q in directory.queues()}
    config = _config(request)
    return {n: q.service_level for n, q in config.acd.queues.items()} if config.acd else {}


def _agent_names(request: web.Request) -> set[str]:
    """The agents: the directory's, else the file's."""
    directory = _directory(request)
    if directory is not None:
        return {a.name for a in directory.agents()}
    return {a.name for a in _config(request).webrtc.agents}


def _campaign_filter(request: web.Request, identity: Identity, scopes: Scopes) -> str | None:
    campaign = request.query.get("campaign")
    if campaign is not None:
        queue = scopes.campaigns.get(campaign, "")
        if not identity.covers(scopes, queue=queue, campaign=campaign):
            raise ApiError(403, f"the campaign {campaign} is out of scope", missing_scope=campaign)
    return campaign


# -- routes -----------------------------------------------------------------------------------


@routes.get("/v1/reports/agents")
async def get_agent_report(request: web.Request) -> web.Response:
    """Agent activity over the span: logged-in time, ready, ringing, talk, wrap-up, paused
    (and by reason), occupancy, calls and average handle time, per agent in scope.

    Rebuilt from the agents' stored state changes. ``agent`` and ``queue`` keep one agent or the
    members of one queue."""
    identity, scopes = _scoped(request)
    since, until, zone, rows = await _span_rows(request, log=False)
    queue = request.query.get("queue")
    agent = request.query.get("agent")
    until_now = min(until, max(since, _now(request)))
    known = _agent_names(request)
    report = agent_activity(rows.changes, since, until_now, agents=known, zone=zone)
    report = Report(report.name, report.columns, report.rows, {**report.meta, "until": until})

    def keep(row: dict[str, Any]) -> bool:
        name = str(row["agent"])
        if agent is not None and name != agent:
            return False
        if queue is not None and name not in scopes.members.get(queue, frozenset()):
            return False
        return identity.covers_agent(scopes, name)

    return _answer(request, _filter(report, keep))


@routes.get("/v1/reports/queues")
async def get_queue_report(request: web.Request) -> web.Response:
    """Offered, answered, abandoned, service level, ASA, AHT and longest wait by interval
    (``interval``: 15, 30 or 60 minutes, or ``day``), per queue or per campaign (``by``).

    Rebuilt from the stored queue log; a caller counts in the interval it entered the queue."""
    identity, scopes = _scoped(request)
    interval = _choice(request, "interval", INTERVALS, "60")
    by = _choice(request, "by", ("queue", "campaign"), "queue")
    campaign = _campaign_filter(request, identity, scopes)
    queue = request.query.get("queue")
    since, until, zone, rows = await _span_rows(request)
    levels = _service_levels(request)
    campaign_queues = _campaign_queues(request)
    if by == "campaign":
        campaign_of = {r.call_id: r.campaign for r in rows.records if r.campaign}
        names: Iterable[str] = campaign_queues
    else:
        campaign_of = None
        names = levels
    report = queue_intervals(
        rows.log,
        since,
        until,
        interval,
        zone,
        service_levels=levels,
        changes=rows.changes,
        campaign_of=campaign_of,
        campaign_queues=campaign_queues,
        names=names,
    )

    def keep(row: dict[str, Any]) -> bool:
        if by == "campaign":
            name = str(row["campaign"])
            home = campaign_queues.get(name, "")
            if campaign is not None and name != campaign:
                return False
            if queue is not None and home != queue:
                return False
            return identity.covers(scopes, queue=home, campaign=name)
        name = str(row["queue"])
        if queue is not None and name != queue:
            return False
        if campaign is not None and campaign_queues.get(campaign) != name:
            return False
        return identity.covers(scopes, queue=name)

    return _answer(request, _filter(report, keep))


@routes.get("/v1/reports/dispositions")
async def get_disposition_report(request: web.Request) -> web.Response:
    """Per campaign in scope, the calls agents answered by disposition, with their share.

    Rebuilt from the stored call records."""
    identity, scopes = _scoped(request)
    campaign = _campaign_filter(request, identity, scopes)
    queue = request.query.get("queue")
    since, until, zone, rows = await _span_rows(request, log=False, changes=False)
    campaign_queues = _campaign_queues(request)
    report = dispositions(rows.records, since, until, zone=zone)

    def keep(row: dict[str, Any]) -> bool:
        name = str(row["campaign"])
        home = campaign_queues.get(name, "")
        if campaign is not None and name != campaign:
            return False
        if queue is not None and home != queue:
            return False
        return identity.covers(scopes, queue=home, campaign=name)

    return _answer(request, _filter(report, keep))


@routes.get("/v1/reports/calls")
async def get_call_report(request: web.Request) -> web.Response:
    """Call detail: every call record in scope started in the span, with its wait, talk, both
    legs' quality (codec, jitter, loss, round trip, MOS) and whether it has a recording.

    ``queue``, ``campaign`` and ``agent`` keep only those calls."""
    identity, scopes = _scoped(request)
    campaign = _campaign_filter(request, identity, scopes)
    queue = request.query.get("queue")
    agent = request.query.get("agent")
    since, until, zone, rows = await _span_rows(request, changes=False)
    waits: dict[str, float] = {}
    for entry in rows.log:
        if entry.event in ("answer", "abandon") and entry.call_id not in waits:
            wait = entry.data.get("wait")
            if isinstance(wait, int | float) and not isinstance(wait, bool):
                waits[entry.call_id] = float(wait)
    records = [
        r
        for r in rows.records
        if identity.covers(scopes, queue=r.queue, campaign=r.campaign)
        and (queue is None or r.queue == queue)
        and (campaign is None or r.campaign == campaign)
        and (agent is None or r.agent == agent)
    ]
    recordings = _config(request).server.data_dir / "recordings"
    recorded = {r.call_id: recording_file(r, recordings) is not None for r in records}
    report = call_details(records, since, until, zone=zone, waits=waits, recorded=recorded)
    return _answer(request, report)


# -- recordings -------------------------------------------------------------------------------


def _number(request: web.Request, name: str, low: float, high: float) -> float | None:
    text = request.query.get(name)
    if text is None or text == "":
        return None
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or not low <= value <= high:
        why = f"must be a number from {low:g} to {high:g}"
        raise ApiError(400, f"{name} {why}", [(name, why)])
    return value


def _recordings_dir(request: web.Request) -> Path:
    return _config(request).server.data_dir / "recordings"


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _segment_views(record: CallRecord, root: Path) -> list[dict[str, Any]]:
    """Each answered segment's recording still there (a requeued call has several), in order:
    its number (the routes' ``segment``), agent, size, ``audio`` route and pauses."""
    audio = f"/api/v1/recordings/{quote(record.call_id, safe='@')}/audio"
    views = []
    for index, agent in enumerate(segment_agents(record), start=1):
        path = recording_file(record, root, index)
        if path is not None:
            views.append(
                {
                    "segment": index,
                    "agent": agent,
                    "size": _size(path),
                    "media_type": media_type(path),
                    "audio": audio if index == 1 else f"{audio}?segment={index}",
                    "gaps": gaps(record, index),
                }
            )
    return views


def _recording_view(record: CallRecord, path: Path, zone: ZoneInfo, root: Path) -> dict[str, Any]:
    size = _size(path)
    return {
        "call_id": record.call_id,
        "start": local_time(record.start, zone),
        "time": record.start,
        "caller": record.caller,
        "agent": record.agent,
        "campaign": record.campaign,
        "queue": record.queue,
        "disposition": record.disposition,
        "duration": round(talk_seconds(record), 3),
        "min_mos": min_mos(record),
        "size": size,
        "media_type": media_type(path),
        "audio": f"/api/v1/recordings/{quote(record.call_id, safe='@')}/audio",
        "gaps": gaps(record),
        "segments": _segment_views(record, root),
    }


@routes.get("/v1/recordings")
async def get_recordings(request: web.Request) -> web.Response:
    """Recorded calls in scope started in the span, by start time, filtered by ``agent``,
    ``campaign``, ``caller`` (a part of the number), ``disposition``, ``min_duration`` and
    ``max_duration`` (talk seconds) and ``min_mos``; paged.

    Each item names its ``audio`` route; only recordings whose file is still there are listed."""
    identity, scopes = _scoped(request)
    campaign = _campaign_filter(request, identity, scopes)
    queue = request.query.get("queue")
    query = RecordingQuery(
        agent=request.query.get("agent") or None,
        campaign=campaign or None,
        caller=request.query.get("caller") or None,
        disposition=request.query.get("disposition"),
        min_duration=_number(request, "min_duration", 0, 1e9),
        max_duration=_number(request, "max_duration", 0, 1e9),
        min_mos=_number(request, "min_mos", 1, 5),
    )
    zone = _zone(request)
    since, until = span_of(request, zone, _now(request))
    scope = RecordScope.of(identity.scope, identity.queues(scopes), scopes.members)
    scoped = await _reader(request).recorded(since, until, queue=queue, scope=scope)
    root = _recordings_dir(request)
    loop = asyncio.get_running_loop()
    found = await loop.run_in_executor(None, search, scoped, query, root)
    views = [_recording_view(record, path, zone, root) for record, path in found]
    return page(request, "recordings", views)


def _starts_a_listen(request: web.Request) -> bool:
    """Whether the request begins a listen (no range, or one from the first byte) rather
    than a seek of one in progress."""
    ranges = request.headers.get("Range", "").strip().lower()
    if not ranges:
        return True
    return ranges.replace(" ", "").startswith("bytes=0-")


def _segment(request: web.Request) -> int:
    """The query's ``segment`` (from 1, default 1): which answered segment's recording."""
    text = request.query.get("segment", "1")
    if (
        not (text.isascii() and text.isdigit() and len(text) <= 4)
        or not 1 <= int(text) <= MAX_SEGMENTS
    ):
        why = f"must be a whole number from 1 to {MAX_SEGMENTS}"
        raise ApiError(400, f"segment {why}", [("segment", why)])
    return int(text)


async def _recording_of(request: web.Request, identity: Identity, scopes: Scopes) -> Path:
    """The file of the path's call (its query's ``segment``), when the call has one in
    `identity`'s scope."""
    call_id = request.match_info["id"]
    segment = _segment(request)
    record = await _reader(request).record(call_id)
    if record is None or not record.recording:
        raise ApiError(404, f"no recording of the call {call_id}")
    if not identity.covers(scopes, queue=record.queue, campaign=record.campaign):
        raise ApiError(
            403,
            f"the recording of {call_id} is out of scope",
            missing_scope=record.campaign or record.queue or "*",
        )
    if segment > len(segments(record)):
        raise ApiError(404, f"the call {call_id} has no recorded segment {segment}")
    path = recording_file(record, _recordings_dir(request), segment)
    if path is None:
        raise ApiError(404, f"the recording of the call {call_id} is no longer there")
    request[_RECORD_KEY] = record
    return path


async def _audit_listen(request: web.Request, identity: Identity, path: Path, action: str) -> None:
    book = request.app[BOOK_KEY]
    if book is not None:
        record = request[_RECORD_KEY]
        detail = {"campaign": record.campaign, "queue": record.queue, "file": path.name}
        if len(segments(record)) > 1:
            detail["segment"] = str(_segment(request))
        await book.call(book.record, identity, action, record.call_id, None, detail)


_RECORD_KEY: web.RequestKey[CallRecord] = web.RequestKey("recording_record")


def _ticket_key(call_id: str, segment: int) -> str:
    """What a playback ticket opens: one segment's recording of one call (a line break never
    is in a Call-ID)."""
    return call_id if segment == 1 else f"{call_id}\n{segment}"


def _bad_ticket(request: web.Request) -> ApiError:
    """A ticket that opens nothing: one ``SECURITY reason=api-token-invalid`` line, as a bad
    token (the ticket itself is never logged)."""
    source, port = request_source(request)
    logger.warning(security_line("api-token-invalid", source, port, None))
    return ApiError(
        401,
        "the playback ticket is unknown, expired, or for another recording or account",
        [("ticket", "unknown, expired, or for another recording or account")],
    )


@routes.post("/v1/recordings/{id}/ticket")
async def post_recording_ticket(request: web.Request) -> web.Response:
    """A playback ticket for the call's recording (`omlmedia.recordings.PlaybackTickets`): the
    ``audio`` URL with it opens that one recording, for this account, with ranges, without the
    bearer token, for ``expires_in`` seconds after its issue or its last use. It is the listen:
    audited as ``recording.listen`` (the ticket's requests are not audited again)."""
    identity, scopes = _scoped(request)
    path = await _recording_of(request, identity, scopes)
    await _audit_listen(request, identity, path, "recording.listen")
    call_id = request.match_info["id"]
    segment = _segment(request)
    ticket = request.app[TICKETS_KEY].issue(_ticket_key(call_id, segment), identity)
    audio = f"/api/v1/recordings/{quote(call_id, safe='@')}/audio?ticket={ticket}"
    if segment > 1:
        audio += f"&segment={segment}"
    return web.json_response(
        {
            "ticket": ticket,
            "expires_in": PlaybackTickets.TTL,
            "audio": audio,
            "media_type": media_type(path),
        },
        status=201,
        headers={"Cache-Control": "no-store"},
    )


@routes.get("/v1/recordings/{id}/audio")
async def get_recording_audio(request: web.Request) -> web.StreamResponse:
    """The call's recording (Ogg/Opus, caller left, agent right), with HTTP ranges (206 and
    Content-Range) so a player can seek; ``download=1`` asks to save it as a file.

    With the bearer token, every listen and every download is written to the audit log
    (``recording.listen``, ``recording.download``); the seeks of a listen (ranges not from the
    first byte) are not. With a playback ``ticket`` instead (an ``<audio src>``: no header),
    the ticket's identity is checked again and nothing more is audited (its issue was the
    listen); a ticket does not download. A recording out of scope is refused (403)."""
    ticket = request.query.get("ticket")
    identity = request.get(IDENTITY_KEY)
    call_id = request.match_info["id"]
    if ticket is not None:
        tickets = request.app[TICKETS_KEY]
        holder = tickets.redeem(ticket, _ticket_key(call_id, _segment(request)), identity)
        if holder is None:
            raise _bad_ticket(request)
        identity = holder
        if not identity.allows(Permission.RECORDINGS_READ):
            raise ApiError(403, "the role lacks the permission recordings:read")
    if identity is None:  # no ticket reaches here without a bearer token (authz)
        raise ApiError(401, "a valid bearer token is required")
    scopes = request.app[SCOPES_KEY]()
    download = _choice(request, "download", ("0", "1", "true", "false"), "0") in ("1", "true")
    if download and ticket is not None:
        raise ApiError(
            400,
            "a playback ticket does not download: send the bearer token",
            [("download", "not with a ticket")],
        )
    path = await _recording_of(request, identity, scopes)
    if ticket is None and (download or _starts_a_listen(request)):
        action = "recording.download" if download else "recording.listen"
        await _audit_listen(request, identity, path, action)
    headers = {"Content-Type": media_type(path), "Cache-Control": "private, no-store"}
    if download:
        headers["Content-Disposition"] = f'attachment; filename="{path.name}"'
    return web.FileResponse(path, headers=headers)


# -- installation -----------------------------------------------------------------------------


def install(api: web.Application, config: Config, database: Path | str | None) -> None:
    """Add the report routes to `api` (the API's application), reading `database` (None: the
    routes answer 404)."""
    api[REPORT_CONFIG_KEY] = config
    api[REPORTS_KEY] = ReportReader(database) if database is not None else None
    api[TICKETS_KEY] = PlaybackTickets(lambda: _clock_of(api), lambda who: who.actor)
    api.cleanup_ctx.append(_close_reader)
    api.add_routes(routes)


async def _close_reader(app: web.Application) -> AsyncIterator[None]:
    yield
    reader = app[REPORTS_KEY]
    if reader is not None:
        await reader.close()
