"""The supervisors' wallboard: ``GET /api/v1/wallboard``, today's figures of every queue and agent
in the token's scope, exactly from the queue log, with the live state of the ACD; and its
``[wallboard]`` configuration (amber/red thresholds per queue, the pause reasons a supervisor may
choose, the MOS below which a live call is flagged).

Theory of operation. The page (``ui/supervisor/supervisor.js``) starts from this snapshot and keeps
it current from the event stream (`omlmedia.eventstream`), subscribing with ``since_id`` set to the
snapshot's ``last_event_id``: every event after the snapshot changes the page once, and nothing
before it is counted twice. To make that cut exact, the live state (callers, agents) and
``last_event_id`` are read in one go, without yielding to the event loop, at the wall time
``now``; then the store's queued rows are committed (`AsyncStore.flush`) and the queue log is read
over ``[day_start, now]``: a row written later has a later time and a later event.

"Today" is the site's day (``[site] timezone``): from its local midnight. Definitions, the same as
the reports' (`queueing.stats`): ``offered`` callers who entered; ``service_level`` answered
within the queue's ``service_level`` seconds over answered plus abandoned after that threshold;
``abandon_rate`` abandoned over answered plus abandoned; ``asa`` mean wait of answered callers;
``aht`` mean talk time of completed or transferred calls. An agent's ``calls`` are the calls it
answered today; ``occupancy`` its talk time (finished calls, plus the current call's so far) over
its logged-in time today less its paused time. An agent's logged-in and paused spans are rebuilt
from its login, logout, pause and unpause rows; one that started before midnight has no row
today, so the first row of the pair (a logout, an unpause), or without any row the agent's live
state, says it was already running at midnight.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from aiohttp import web

from omlmedia.authz import IDENTITY_KEY, SCOPES_KEY, Identity, Scopes
from omlmedia.problems import ApiError
from omlmedia.storage import QueueLogRow

__all__ = [
    "DEFAULT_PAUSE_REASONS",
    "FIGURES",
    "WALLBOARD_KEY",
    "DayTally",
    "QueueThresholds",
    "Threshold",
    "Wallboard",
    "WallboardConfig",
    "day_span",
    "install",
    "parse_wallboard",
    "today_figures",
]

DEFAULT_PAUSE_REASONS = ("break", "lunch", "training", "back-office")
"""The pause reasons of the agent page, offered to supervisors unless configured otherwise."""

FIGURES: Mapping[str, bool] = {
    "waiting": True,
    "longest_wait": True,
    "service_level": False,
    "abandon_rate": True,
    "asa": True,
    "aht": True,
}
"""The queue figures a threshold may colour, and whether a higher value is worse (else lower)."""

_WALLBOARD_KEYS = ("mos_threshold", "quality_interval", "pause_reasons", "thresholds")


@dataclass(frozen=True, slots=True)
class Threshold:
    """When one figure turns amber, then red (for a figure where lower is worse, `amber` is the
    higher of the two)."""

    amber: float
    red: float

    def view(self) -> dict[str, float]:
        return {"amber": self.amber, "red": self.red}


QueueThresholds = Mapping[str, Threshold]
"""A queue's thresholds by figure (`FIGURES`)."""


@dataclass(frozen=True, slots=True)
class WallboardConfig:
    """``[wallboard]``."""

    mos_threshold: float = 3.5
    """A live call with a leg whose estimated MOS is below this is flagged."""
    quality_interval: float = 5.0
    """Seconds between two live quality samples of a call in progress (``call.live_quality``)."""
    pause_reasons: tuple[str, ...] = DEFAULT_PAUSE_REASONS
    """The reasons a supervisor chooses from to pause an agent."""
    thresholds: Mapping[str, QueueThresholds] = field(default_factory=dict)
    """Per queue (``"*"``: every queue without its own), per figure."""

    def for_queue(self, queue: str) -> QueueThresholds:
        """The thresholds of `queue` (its own, else those of ``"*"``, else none)."""
        return self.thresholds.get(queue) or self.thresholds.get("*") or {}


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def parse_wallboard(value: object, queues: Iterable[str]) -> tuple[WallboardConfig, list[str]]:
    """``[wallboard]`` from the TOML table `value` (None: absent), checked against the queues
    configured; returns the configuration and the errors found (each naming its key)."""
    errors: list[str] = []
    default = WallboardConfig()
    if value is None:
        return default, errors
    if not isinstance(value, Mapping):
        return default, ["wallboard: must be a table"]
    for key in value:
        if key not in _WALLBOARD_KEYS:
            errors.append(f"wallboard.{key}: unknown key (known: {', '.join(_WALLBOARD_KEYS)})")
    mos = default.mos_threshold
    if "mos_threshold" in value:
        number = _number(value["mos_threshold"])
        if number is None or not 1.0 <= number <= 5.0:
            errors.append("wallboard.mos_threshold: must be a number from 1 to 5")
        else:
            mos = number
    interval = default.quality_interval
    if "quality_interval" in value:
        number = _number(value["quality_interval"])
        if number is None or not 1.0 <= number <= 60.0:
            errors.append("wallboard.quality_interval: must be a number of seconds from 1 to 60")
        else:
            interval = number
    reasons = default.pause_reasons
    if "pause_reasons" in value:
        raw = value["pause_reasons"]
        if (
            not isinstance(raw, list)
            or not raw
            or not all(isinstance(r, str) and 0 < len(r.strip()) <= 64 for r in raw)
        ):
            errors.append(
                "wallboard.pause_reasons: must be a non-empty list of names of 1 to 64 characters"
            )
        elif len(set(raw)) != len(raw):
            errors.append("wallboard.pause_reasons: a reason is listed twice")
        else:
            reasons = tuple(r.strip() for r in raw)
    thresholds: dict[str, QueueThresholds] = {}
    raw_thresholds = value.get("thresholds", {})
    known = set(queues)
    if not isinstance(raw_thresholds, Mapping):
        errors.append("wallboard.thresholds: must be a table of queues")
        raw_thresholds = {}
    for queue, table in raw_thresholds.items():
        place = f"wallboard.thresholds.{queue}"
        if queue != "*" and queue not in known:
            errors.append(f'{place}: unknown queue (use a configured queue, or "*" for all)')
            continue
        if not isinstance(table, Mapping):
            errors.append(f"{place}: must be a table of figures")
            continue
        figures: dict[str, Threshold] = {}
        for figure, pair in table.items():
            where = f"{place}.{figure}"
            if figure not in FIGURES:
                errors.append(f"{where}: unknown figure (known: {', '.join(FIGURES)})")
                continue
            amber, red = [*pair, None, None][:2] if isinstance(pair, list) else (None, None)
            amber, red = _number(amber), _number(red)
            if not isinstance(pair, list) or len(pair) != 2 or amber is None or red is None:
                errors.append(f"{where}: must be [amber, red], two numbers")
                continue
            if amber < 0 or red < 0:
                errors.append(f"{where}: thresholds cannot be negative")
                continue
            worse_higher = FIGURES[figure]
            if figure in ("service_level", "abandon_rate") and (amber > 1 or red > 1):
                errors.append(f"{where}: a rate is a fraction from 0 to 1 (0.8 for 80 %)")
                continue
            if worse_higher and red < amber:
                errors.append(f"{where}: red ({red}) must not be below amber ({amber})")
                continue
            if not worse_higher and red > amber:
                errors.append(
                    f"{where}: red ({red}) must not be above amber ({amber}): lower is worse"
                )
                continue
            figures[figure] = Threshold(amber, red)
        thresholds[queue] = figures
    return WallboardConfig(mos, interval, reasons, thresholds), errors


def day_span(now: float, zone: ZoneInfo) -> tuple[float, str]:
    """The start (Unix time) and the date (ISO) of the site's day that holds `now`."""
    local = dt.datetime.fromtimestamp(now, zone)
    midnight = dt.datetime.combine(local.date(), dt.time(0), tzinfo=zone)
    return midnight.timestamp(), local.date().isoformat()


# -- today's figures ------------------------------------------------------------------------


@dataclass(slots=True)
class _Queue:
    offered: int = 0
    answered: int = 0
    answered_within: int = 0
    abandoned: int = 0
    abandoned_within: int = 0
    ended: int = 0
    wait_answered: float = 0.0
    talk: float = 0.0


@dataclass(slots=True)
class _Agent:
    calls: int = 0
    talk: float = 0.0
    logged_in: float = 0.0
    paused: float = 0.0
    login_since: float | None = None
    pause_since: float | None = None
    seen_login: bool = False
    seen_pause: bool = False


def _data_number(row: QueueLogRow, key: str) -> float:
    value = row.data.get(key, 0.0)
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


def _ratio(part: float, whole: float, digits: int = 4) -> float | None:
    return round(part / whole, digits) if whole else None


@dataclass(frozen=True, slots=True)
class LiveAgent:
    """What the engine says of an agent now: logged in, paused, and its current call's talk so
    far (0 without a call)."""

    logged_in: bool
    paused: bool
    talking: float = 0.0


def today_figures(
    rows: Iterable[QueueLogRow],
    service_levels: Mapping[str, float],
    live: Mapping[str, LiveAgent],
    day_start: float,
    now: float,
) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """Each queue's and each agent's figures over ``[day_start, now]`` from the queue log `rows`
    of that span (in time order) and the agents' `live` state (module docstring)."""
    tally = DayTally(day_start, service_levels)
    tally.fold(rows)
    return tally.views(live, now)


@dataclass
class DayTally:
    """The day's sums so far, folded from the queue log in time order: `fold` adds rows,
    `views` gives the figures at a time without changing the sums, `copy` a tally to fold more
    rows into without touching this one. The wallboard keeps one per day (`Wallboard`) so a
    snapshot folds only the rows since the last one, not the whole day again."""

    day_start: float
    service_levels: Mapping[str, float]
    queues: dict[str, _Queue] = field(default_factory=dict)
    agents: dict[str, _Agent] = field(default_factory=dict)
    until: float = -math.inf
    """The rows before this time are folded (the next read starts there)."""

    def copy(self) -> DayTally:
        return DayTally(
            self.day_start,
            self.service_levels,
            {name: replace(q) for name, q in self.queues.items()},
            {name: replace(a) for name, a in self.agents.items()},
            self.until,
        )

    def fold(self, rows: Iterable[QueueLogRow]) -> None:
        """Add `rows` (in time order, after those folded before)."""
        day_start, service_levels = self.day_start, self.service_levels
        queues, agents = self.queues, self.agents
        for row in rows:
            if row.queue:
                q = queues.setdefault(row.queue, _Queue())
                threshold = service_levels.get(row.queue, 20.0)
                wait = _data_number(row, "wait")
                if row.event == "enter":
                    q.offered += 1
                elif row.event == "answer":
                    q.answered += 1
                    q.wait_answered += wait
                    q.answered_within += wait <= threshold
                elif row.event == "abandon":
                    q.abandoned += 1
                    q.abandoned_within += wait <= threshold
                elif row.event in ("complete", "transfer"):
                    q.ended += 1
                    q.talk += _data_number(row, "talk")
            if row.agent:
                a = agents.setdefault(row.agent, _Agent())
                if row.event == "answer":
                    a.calls += 1
                elif row.event in ("complete", "transfer"):
                    a.talk += _data_number(row, "talk")
                elif row.event == "login":
                    a.seen_login = True
                    if a.login_since is None:
                        a.login_since = row.time
                elif row.event == "logout":
                    if not a.seen_login:
                        a.login_since = day_start  # logged in before midnight
                    a.seen_login = True
                    if a.login_since is not None:
                        a.logged_in += row.time - a.login_since
                        a.login_since = None
                    _end_pause(a, row.time, day_start)
                elif row.event == "pause":
                    a.seen_pause = True
                    if a.pause_since is None:
                        a.pause_since = row.time
                elif row.event == "unpause":
                    _end_pause(a, row.time, day_start)

    def views(
        self, live: Mapping[str, LiveAgent], now: float
    ) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
        """Each queue's and each agent's figures at `now`, with the agents' `live` state."""
        day_start = self.day_start
        queues = {name: self.queues.get(name, _Queue()) for name in self.service_levels}
        queues.update(self.queues)
        agents = {name: self.agents.get(name, _Agent()) for name in live}
        agents.update(self.agents)
        return _views(queues, agents, live, day_start, now)


def _views(
    queues: Mapping[str, _Queue],
    agents: Mapping[str, _Agent],
    live: Mapping[str, LiveAgent],
    day_start: float,
    now: float,
) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    queue_views: dict[str, dict[str, Any]] = {}
    for name, q in queues.items():
        counted = q.answered + q.abandoned - q.abandoned_within
        queue_views[name] = {
            "offered": q.offered,
            "answered": q.answered,
            "abandoned": q.abandoned,
            "answered_within": q.answered_within,
            "abandoned_within": q.abandoned_within,
            "wait_answered": round(q.wait_answered, 3),
            "ended": q.ended,
            "talk": round(q.talk, 3),
            "service_level": _ratio(q.answered_within, counted),
            "abandon_rate": _ratio(q.abandoned, q.answered + q.abandoned),
            "asa": _ratio(q.wait_answered, q.answered, 1),
            "aht": _ratio(q.talk, q.ended, 1),
        }
    agent_views: dict[str, dict[str, Any]] = {}
    for name, a in agents.items():
        state = live.get(name, LiveAgent(False, False))
        logged_in = a.logged_in
        if a.login_since is not None:
            logged_in += now - a.login_since
        elif not a.seen_login and state.logged_in:
            logged_in += now - day_start  # logged in all day
        paused = a.paused
        if a.pause_since is not None:
            paused += now - a.pause_since
        elif not a.seen_pause and state.paused:
            paused += now - day_start
        talk = a.talk + state.talking
        available = logged_in - paused
        agent_views[name] = {
            "calls": a.calls,
            "talk": round(talk, 3),
            "logged_in": round(logged_in, 3),
            "paused": round(paused, 3),
            "occupancy": round(min(talk / available, 1.0), 4) if available > 0 else None,
        }
    return queue_views, agent_views


def _end_pause(a: _Agent, at: float, day_start: float) -> None:
    if not a.seen_pause:
        a.pause_since = day_start  # paused before midnight
        a.seen_pause = True
    if a.pause_since is not None:
        a.paused += at - a.pause_since
        a.pause_since = None


# -- the snapshot ---------------------------------------------------------------------------


class _Caller(Protocol):
    """What the wallboard reads of a queued caller (`omlmedia.acd.QueuedCaller`)."""

    queue: str
    entered: float
    agent: str
    connected: float | None


class Runtime(Protocol):
    """What the wallboard reads of the ACD runtime (`omlmedia.acd.AcdRuntime`)."""

    def now(self) -> float: ...

    def queue_report(
        self, span: tuple[float, float] | None = None
    ) -> Mapping[str, Mapping[str, Any]]: ...

    def agent_report(
        self, span: tuple[float, float] | None = None
    ) -> Mapping[str, Mapping[str, Any]]: ...


class QueueLogReader(Protocol):
    async def queue_log(self, since: float, until: float) -> list[QueueLogRow]: ...


class _NodeLive(Protocol):
    """What another live node published (`omlmedia.wallboard_cluster.NodeLive`)."""

    @property
    def calls(self) -> Sequence[Mapping[str, Any]]: ...

    @property
    def agents(self) -> frozenset[str]: ...


class ClusterView(Protocol):
    """The other nodes of a cluster with one ACD (`omlmedia.wallboard_cluster.ClusterBoard`):
    this node's name, the other live nodes' calls and connected agents, and the node each agent
    logged in on."""

    node: str

    async def gather(self) -> Mapping[str, _NodeLive]: ...

    def agent_node(self, agent: str) -> str | None: ...


@dataclass
class Wallboard:
    """Builds the snapshot: the ACD `runtime`, the queue log `reader`, `flush` (commits the
    store's queued rows), `last_event_id` (the event log's), `calls` (the calls in the queues
    now, for the page: call_id, queue, campaign, caller, entered, agent, answered), the site's
    `zone`, each queue's service level threshold (read at each snapshot: queues change), each
    campaign's queue and the configuration.
    Live call quality is not in the snapshot: the page gets it from the next
    ``call.live_quality`` event, every `WallboardConfig.quality_interval` seconds."""

    runtime: Runtime
    reader: QueueLogReader
    flush: Callable[[], Any]
    last_event_id: Callable[[], int]
    calls: Callable[[], list[dict[str, Any]]]
    zone: ZoneInfo
    service_levels: Callable[[], Mapping[str, float]]
    campaigns: Mapping[str, str]
    config: WallboardConfig = field(default_factory=WallboardConfig)
    pause_reasons: Callable[[], Sequence[str]] | None = None
    """The pause reasons now (the directory's, which the API administers); None: the
    configuration's."""
    cluster: ClusterView | None = None
    """The cluster's other nodes (``[cluster] acd = "shared"``): their calls are listed too, and
    every call and agent row names its ``node``; None on a node of its own."""
    _tally: DayTally | None = field(default=None, init=False, repr=False)
    _folding: asyncio.Lock | None = field(default=None, init=False, repr=False)

    SETTLE = 60.0
    """Rows older than this (seconds before a snapshot) are folded into the day's kept tally;
    newer ones are read again at each snapshot (a row another node commits late still counts)."""

    async def _figures(
        self,
        day_start: float,
        now: float,
        service_levels: Mapping[str, float],
        live: Mapping[str, LiveAgent],
    ) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
        """Today's figures at `now`: the kept tally (a new one for a new day or changed service
        levels) plus the rows since it, read from the store; the rows settled by then are
        folded into the kept tally, so each snapshot reads a minute or so of the queue log,
        not the whole day."""
        if self._folding is None:
            self._folding = asyncio.Lock()
        async with self._folding:  # two snapshots never fold the same rows twice
            tally = self._tally
            if (
                tally is None
                or tally.day_start != day_start
                or dict(tally.service_levels) != dict(service_levels)
            ):
                tally = self._tally = DayTally(day_start, dict(service_levels), until=day_start)
            since = tally.until
            rows = [r for r in await self.reader.queue_log(since, math.inf) if r.time <= now]
            settled = max(since, now - self.SETTLE)
            split = next((i for i, r in enumerate(rows) if r.time >= settled), len(rows))
            tally.fold(rows[:split])
            tally.until = settled
            current = tally.copy()
        current.fold(rows[split:])
        return current.views(live, now)

    async def snapshot(self, wanted: Callable[[str, str], bool]) -> dict[str, Any]:
        """The wallboard for the queues (and their campaigns) `wanted(queue, campaign)` keeps."""
        cluster = self.cluster
        others = await cluster.gather() if cluster is not None else {}
        # One synchronous moment: live state, the last event id and the wall time.
        now = self.runtime.now()
        last_id = self.last_event_id()
        queue_report = self.runtime.queue_report()
        agent_report = self.runtime.agent_report()
        calls = self.calls()
        if cluster is not None:
            calls = _merge_calls(cluster.node, calls, others)
        service_levels = self.service_levels()
        day_start, day = day_span(now, self.zone)
        flushed = self.flush()
        if flushed is not None and hasattr(flushed, "__await__"):
            await flushed
        live = {}
        answers = {c["call_id"]: c.get("answered") for c in calls}  # not a scan per agent
        for name, agent in agent_report.items():
            call = agent.get("call") or {}
            answered = answers.get(call.get("call_id"))
            live[name] = LiveAgent(
                logged_in=agent.get("state") != "logged-out",
                paused=agent.get("state") == "paused",
                talking=max(0.0, now - answered) if answered else 0.0,
            )
        queue_figures, agent_figures = await self._figures(day_start, now, service_levels, live)
        by_queue: dict[str, list[str]] = {}
        for campaign, queue in self.campaigns.items():
            by_queue.setdefault(queue, []).append(campaign)
        queues = []
        kept: set[str] = set()
        for name, report in queue_report.items():
            if not any(wanted(name, c) for c in ["", *by_queue.get(name, [])]):
                continue
            kept.add(name)
            queues.append(
                {
                    "queue": name,
                    "campaigns": sorted(by_queue.get(name, [])),
                    "service_level_seconds": service_levels.get(name, 20.0),
                    "waiting": report.get("waiting", 0),
                    "longest_wait": report.get("longest_wait", 0.0),
                    "members": [m["agent"] for m in report.get("members", [])],
                    "members_by_state": dict(report.get("members_by_state", {})),
                    "thresholds": {k: v.view() for k, v in self.config.for_queue(name).items()},
                    "today": queue_figures.get(name, {}),
                }
            )
        members = {m for q in queues for m in q["members"]}
        agents = []
        for name, report in agent_report.items():
            if name not in members:
                continue
            row = {
                "agent": name,
                "name": report.get("name", ""),
                "state": report.get("state"),
                "reason": report.get("reason"),
                "since": report.get("since"),
                "queues": list(report.get("queues", [])),
                "connected": report.get("connected", False),
                "call_id": (report.get("call") or {}).get("call_id"),
                "today": agent_figures.get(name, {}),
            }
            if cluster is not None:
                # Where the agent logged in, and whether its page is connected there (a node
                # whose key lapsed is dead: its agents are not).
                node = cluster.agent_node(name) if row["state"] != "logged-out" else None
                row["node"] = node
                if node is not None and node != cluster.node:
                    there = others.get(node)
                    row["connected"] = there is not None and name in there.agents
            agents.append(row)
        live_calls = []
        for call in calls:
            if call["queue"] not in kept and not wanted(call["queue"], call.get("campaign", "")):
                continue
            live_calls.append(call)
        body: dict[str, Any] = {} if cluster is None else {"node": cluster.node}
        return {
            **body,
            "now": now,
            "day": day,
            "day_start": day_start,
            "timezone": self.zone.key,
            "last_event_id": last_id,
            "mos_threshold": self.config.mos_threshold,
            "quality_interval": self.config.quality_interval,
            "pause_reasons": list(
                self.pause_reasons() if self.pause_reasons else self.config.pause_reasons
            ),
            "queues": queues,
            "agents": agents,
            "calls": live_calls,
        }


WALLBOARD_KEY: web.AppKey[Wallboard | None] = web.AppKey("wallboard")

routes = web.RouteTableDef()


def _names(request: web.Request, key: str) -> list[str]:
    names: list[str] = []
    for value in request.query.getall(key, []):
        names.extend(n.strip() for n in value.split(",") if n.strip())
    return names


@routes.get("/v1/wallboard")
async def get_wallboard(request: web.Request) -> web.Response:
    """Today's figures of every queue and agent in the token's scope, the live callers and
    calls, and what the page needs to keep them current (``last_event_id``, thresholds)."""
    board = request.app[WALLBOARD_KEY]
    if board is None:
        raise ApiError(404, "no queues are configured: there is no wallboard")
    identity: Identity = request[IDENTITY_KEY]
    scopes: Scopes = request.app[SCOPES_KEY]()
    queues = _names(request, "queue")
    campaigns = _names(request, "campaign")
    errors = []
    known = board.service_levels()
    for queue in queues:
        if queue not in known:
            errors.append(("queue", f"unknown queue {queue!r}"))
        elif not identity.covers(scopes, queue=queue):
            raise ApiError(403, f"the queue {queue} is out of scope", missing_scope=queue)
    for campaign in campaigns:
        if campaign not in board.campaigns:
            errors.append(("campaign", f"unknown campaign {campaign!r}"))
        elif not identity.covers(scopes, campaign=campaign):
            raise ApiError(403, f"the campaign {campaign} is out of scope", missing_scope=campaign)
    if errors:
        raise ApiError(400, "; ".join(why for _, why in errors), errors)
    selected = set(queues) | {board.campaigns[c] for c in campaigns}

    def wanted(queue: str, campaign: str) -> bool:
        if selected and queue not in selected:
            return False
        return identity.covers(scopes, queue=queue, campaign=campaign)

    body = await board.snapshot(wanted)
    return web.json_response(body, headers={"Cache-Control": "no-store"})


def install(api: web.Application, board: Wallboard | None) -> None:
    """Serve the wallboard of `board` (None: 404) on the API application `api`."""
    api[WALLBOARD_KEY] = board
    api.add_routes(routes)
    lifetime = getattr(board.cluster if board is not None else None, "lifetime", None)
    if lifetime is not None:
        api.cleanup_ctx.append(lifetime)  # the node publishes its calls while the API serves


def calls_of(callers: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The calls of the ACD's queued callers (`omlmedia.acd.AcdRuntime.callers`) as the
    wallboard shows them."""
    result = []
    for call_id, qc in callers.items():
        if getattr(qc, "ended", False):
            continue
        invite = getattr(getattr(qc, "call", None), "invite", None)
        caller = ""
        if invite is not None:
            caller = invite.from_.uri.user or ""
        campaign = getattr(qc, "campaign", None)
        result.append(
            {
                "call_id": call_id,
                "queue": qc.queue,
                "campaign": campaign.name if campaign is not None else "",
                "caller": caller,
                "entered": qc.entered,
                "agent": qc.agent or None,
                "answered": qc.connected,
            }
        )
    return result


def _merge_calls(
    node: str, own: list[dict[str, Any]], others: Mapping[str, _NodeLive]
) -> list[dict[str, Any]]:
    """This node's calls and the other live nodes', each with its ``node``, oldest first (a
    call listed by two nodes, for a moment while it moves, once: this node's)."""
    merged = [{**c, "node": node} for c in own]
    seen = {c["call_id"] for c in merged}
    for name in sorted(others):
        for call in others[name].calls:
            if call.get("call_id") not in seen:
                seen.add(call["call_id"])
                merged.append({**call, "node": name})
    merged.sort(key=lambda c: c.get("entered") or 0.0)
    return merged


def _service_levels(acd: Any, config: Any) -> dict[str, float]:
    """Each queue's service level threshold: the engine's queues as they are now (the
    administration API changes them), else the configured ones."""
    engine = getattr(acd, "engine", None)
    queues = getattr(getattr(engine, "config", None), "queues", None)
    if queues is None:
        queues = config.acd.queues if config.acd is not None else {}
    return {name: q.service_level for name, q in queues.items()}


class _Stream(Protocol):
    @property
    def head_id(self) -> int: ...


class _Events(Protocol):
    @property
    def stream(self) -> _Stream:
        """What the event stream reads (`omlmedia.events.EventLog.stream`): its last id is
        where a page resumes after a snapshot."""


class _CampaignQueues(Mapping[str, str]):
    """Campaign name -> its queue, read from the runtime's live campaigns (the directory keeps
    them: a campaign created, changed or deleted through the API is seen at once)."""

    def __init__(self, campaigns: Mapping[str, Any]) -> None:
        self._campaigns = campaigns

    def __getitem__(self, name: str) -> str:
        return str(self._campaigns[name].queue)

    def __iter__(self) -> Any:
        return iter(list(self._campaigns))

    def __len__(self) -> int:
        return len(self._campaigns)


def wallboard_for(
    config: Any,
    acd: Any,
    reader: QueueLogReader | None,
    events: _Events | None,
    pause_reasons: Callable[[], Sequence[str]] | None = None,
) -> Wallboard | None:
    """The wallboard of the server's ACD runtime `acd` (`omlmedia.acd.AcdRuntime`), its stored
    queue log `reader` and event log `events`, configured by `config` (`omlmedia.config.Config`);
    None without an ACD or a store (queues may all come from the API: the file need declare
    none)."""
    if acd is None or reader is None:
        return None
    store = getattr(acd, "store", None)

    def flush() -> Any:
        return store.flush() if store is not None else None

    from omlmedia.wallboard_cluster import board_for  # it reads this module's calls_of

    return Wallboard(
        cluster=board_for(config, acd),
        runtime=acd,
        reader=reader,
        flush=flush,
        last_event_id=(lambda: events.stream.head_id) if events is not None else (lambda: 0),
        calls=lambda: calls_of(acd.callers),
        zone=config.site.zone,
        service_levels=lambda: _service_levels(acd, config),
        campaigns=_CampaignQueues(acd.campaigns)
        if isinstance(getattr(acd, "campaigns", None), Mapping)
        else {c.name: c.queue for c in config.campaigns},
        config=getattr(config, "wallboard", None) or WallboardConfig(),
        pause_reasons=pause_reasons,
    )
