"""The HTTPS API: status and live counters, queues and agents for supervisors, call records and
the queue log for reports.

Every route requires ``Authorization: Bearer <token>``; only the token's SHA-256 is kept in the
configuration. Errors are JSON ``{"error": reason}`` with the right 4xx status: 400 for a bad
parameter or body, 404 for an unknown queue or agent (or no queues configured), 409 for a command
the agent's state does not allow.

The API reads what it serves through providers the server passes in: `status` (a callable),
`acd` (a `Supervision`, the ACD runtime) and `database` (the SQLite file of the queue log and call
records, read on its own connection and thread: WAL lets it read while the writer writes).

Routes (all JSON):

- ``GET /api/v1/status``, ``GET /api/v1/health``;
- ``GET /api/v1/queues``: ``{"queues": [queue, ...]}``; ``GET /api/v1/queues/{name}``: one queue,
  live (``waiting``, ``ringing``, ``callbacks``, ``longest_wait``, ``members``,
  ``members_by_state``) and over the current statistics period (``stats``: ``offered``,
  ``answered``, ``abandoned``, ``service_level``, ``average_wait``, ``average_handle_time``...),
  or with ``?since=&until=`` over the whole periods that span touches (``stats.start`` and
  ``stats.end`` say which);
- ``GET /api/v1/agents``: ``{"agents": [agent, ...]}`` (``state``, ``reason``, ``since``,
  ``call``, ``stats``, ``?since=&until=`` as for queues); ``GET /api/v1/agents/{name}``;
- ``POST /api/v1/agents/{name}/pause`` ``{"reason": ..., "supervisor": ...}``, ``.../unpause``
  and ``.../logout`` (``{"supervisor": ...}`` optional): the agent as it is afterwards;
- ``GET /api/v1/calls/records?since=&until=&queue=&agent=&offset=&limit=``: call records by start
  time, ``{"records": [...], "total": n, "offset": o, "limit": l, "next": o2 | null}``;
- ``GET /api/v1/queue-log?since=&until=&queue=&agent=&call_id=&offset=&limit=``: queue log
  entries in time order, paged the same way (``"entries"``);
- ``GET /api/v1/events``: the event stream, WebSocket or Server-Sent Events
  (`omlmedia.eventstream`);
- ``GET /metrics`` (beside ``/api``, same token): Prometheus metrics (`omlmedia.metrics`).

``since`` and ``until`` are Unix times (seconds, ``until`` excluded); ``limit`` is at most
`MAX_PAGE`.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import math
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import Any, Protocol, TypeVar

from aiohttp import web

from omlmedia.config import Config
from omlmedia.events import EventLog
from omlmedia.eventstream import install as install_event_stream
from omlmedia.metrics import Metrics, metrics_handler
from omlmedia.storage import CallRecord, QueueLogRow, Store
from queueing.exceptions import AcdUsageError

StatusProvider = Callable[[], dict[str, Any]]

DEFAULT_PAGE = 100
MAX_PAGE = 1000
MAX_REASON = 64
DEFAULT_SUPERVISOR = "api"

T = TypeVar("T")


class Supervision(Protocol):
    """What the API reads and commands of the ACD (`omlmedia.acd.AcdRuntime`).

    Commands raise a `KeyError` for an unknown agent and an `AcdUsageError` for a state that
    does not allow them (a logged-out agent).
    """

    def queue_report(
        self, span: tuple[float, float] | None = None
    ) -> Mapping[str, Mapping[str, Any]]:
        """Every queue's live figures and those of the current period (or of the periods
        `span` touches), by name."""

    def agent_report(
        self, span: tuple[float, float] | None = None
    ) -> Mapping[str, Mapping[str, Any]]:
        """Every agent's state, call and current-period (or `span`) figures, by name."""

    def force_pause(self, agent: str, reason: str, supervisor: str) -> Mapping[str, Any]:
        """Pause `agent`; returns its report."""

    def force_unpause(self, agent: str, supervisor: str) -> Mapping[str, Any]:
        """End `agent`'s pause; returns its report."""

    def force_logout(self, agent: str, supervisor: str) -> Awaitable[Mapping[str, Any]]:
        """Log `agent` out and end its session; returns its report."""


class RecordReader:
    """Reads committed call records and queue log entries from the SQLite file, on one thread
    of its own with its own connection (opened at the first read), so the event loop never
    waits for the disk."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="omlmedia-api-reader")
        self._store: Store | None = None

    def _open(self) -> Store:
        if self._store is None:
            self._store = Store(self.path)
        return self._store

    async def _run(self, read: Callable[[Store], T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: read(self._open()))

    async def call_records(self, since: float, until: float) -> list[CallRecord]:
        """Call records that started in [since, until)."""
        return await self._run(lambda store: store.call_records(since, until))

    async def queue_log(self, since: float, until: float) -> list[QueueLogRow]:
        """Queue log entries in [since, until), in time order."""
        return await self._run(lambda store: store.queue_log(since, until))

    def _close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None

    async def close(self) -> None:
        """Close the connection and the thread."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._close)
        self._executor.shutdown(wait=True)


CONFIG_KEY = web.AppKey("config", Config)
STATUS_KEY: web.AppKey[StatusProvider] = web.AppKey("status")
ACD_KEY: web.AppKey[Supervision | None] = web.AppKey("acd")
READER_KEY: web.AppKey[RecordReader | None] = web.AppKey("reader")

routes = web.RouteTableDef()


class ApiError(Exception):
    """A request the API refuses: answered ``{"error": reason}`` with `status`."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def _error(status: int, reason: str) -> web.Response:
    return web.json_response({"error": reason}, status=status)


def bearer_ok(config: Config, request: web.Request) -> bool:
    """Whether `request` carries the configured bearer token."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    return scheme.lower() == "bearer" and bool(token) and config.api.token_matches(token.strip())


@web.middleware
async def require_token(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Reject any request without the configured bearer token (401, no hint of what is valid)."""
    if not bearer_ok(request.app[CONFIG_KEY], request):
        return web.json_response(
            {"error": "a valid bearer token is required"},
            status=401,
            headers={"WWW-Authenticate": 'Bearer realm="omlmedia"'},
        )
    try:
        return await handler(request)
    except ApiError as exc:
        return _error(exc.status, exc.reason)
    except web.HTTPException as exc:
        return _error(exc.status, exc.reason)


# -- parameters -----------------------------------------------------------------------------


def _time(request: web.Request, name: str, default: float) -> float:
    text = request.query.get(name)
    if text is None or text == "":
        return default
    try:
        value = float(text)
    except ValueError:
        raise ApiError(400, f"{name} must be a Unix time in seconds") from None
    if not math.isfinite(value) or value < 0:
        raise ApiError(400, f"{name} must be a Unix time in seconds")
    return value


def _count(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    text = request.query.get(name)
    if text is None or text == "":
        return default
    try:
        value = int(text)
    except ValueError:
        raise ApiError(400, f"{name} must be an integer") from None
    if not low <= value <= high:
        raise ApiError(400, f"{name} must be between {low} and {high}")
    return value


def _span(request: web.Request) -> tuple[float, float]:
    since = _time(request, "since", 0.0)
    until = _time(request, "until", math.inf)
    if until < since:
        raise ApiError(400, "until must not be before since")
    return since, until


def _stats_span(request: web.Request) -> tuple[float, float] | None:
    """``since``/``until`` of a queue or agent report (None: the current period)."""
    if not request.query.get("since") and not request.query.get("until"):
        return None
    return _span(request)


def _page(request: web.Request, key: str, items: Sequence[dict[str, Any]]) -> web.Response:
    offset = _count(request, "offset", 0, 0, 2**31)
    limit = _count(request, "limit", DEFAULT_PAGE, 1, MAX_PAGE)
    page = list(items[offset : offset + limit])
    following = offset + limit
    return web.json_response(
        {
            key: page,
            "total": len(items),
            "offset": offset,
            "limit": limit,
            "next": following if following < len(items) else None,
        }
    )


async def _body(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ApiError(400, "the body must be a JSON object") from None
    if not isinstance(body, dict):
        raise ApiError(400, "the body must be a JSON object")
    return body


def _text(body: Mapping[str, Any], name: str, default: str) -> str:
    value = body.get(name, default)
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_REASON:
        raise ApiError(400, f"{name} must be a non-empty string of at most {MAX_REASON} characters")
    return value.strip()


def _acd(request: web.Request) -> Supervision:
    acd = request.app[ACD_KEY]
    if acd is None:
        raise ApiError(404, "no queues are configured")
    return acd


def _reader(request: web.Request) -> RecordReader:
    reader = request.app[READER_KEY]
    if reader is None:
        raise ApiError(404, "no queues are configured: there are no records")
    return reader


def _found(items: Mapping[str, Mapping[str, Any]], name: str, kind: str) -> dict[str, Any]:
    item = items.get(name)
    if item is None:
        raise ApiError(404, f"unknown {kind}: {name}")
    return dict(item)


# -- routes ---------------------------------------------------------------------------------


@routes.get("/v1/status")
async def get_status(request: web.Request) -> web.Response:
    """Live counters: SIP transactions, dialogs, calls, transports, media."""
    return web.json_response(request.app[STATUS_KEY]())


@routes.get("/v1/health")
async def get_health(request: web.Request) -> web.Response:
    """Liveness for monitoring."""
    return web.json_response({"status": "ok"})


@routes.get("/v1/queues")
async def get_queues(request: web.Request) -> web.Response:
    """Every queue, live and over the current period."""
    return web.json_response(
        {"queues": list(_acd(request).queue_report(_stats_span(request)).values())}
    )


@routes.get("/v1/queues/{name}")
async def get_queue(request: web.Request) -> web.Response:
    """One queue, live and over the current period."""
    name = request.match_info["name"]
    return web.json_response(
        _found(_acd(request).queue_report(_stats_span(request)), name, "queue")
    )


@routes.get("/v1/agents")
async def get_agents(request: web.Request) -> web.Response:
    """Every agent of the queues: state, reason, since, current call, figures."""
    return web.json_response(
        {"agents": list(_acd(request).agent_report(_stats_span(request)).values())}
    )


@routes.get("/v1/agents/{name}")
async def get_agent(request: web.Request) -> web.Response:
    """One agent."""
    name = request.match_info["name"]
    return web.json_response(
        _found(_acd(request).agent_report(_stats_span(request)), name, "agent")
    )


async def _command(
    request: web.Request, act: Callable[[Supervision, str, dict[str, Any]], Any]
) -> web.Response:
    acd = _acd(request)
    name = request.match_info["name"]
    _found(acd.agent_report(), name, "agent")
    body = await _body(request)
    try:
        result = act(acd, name, body)
        if inspect.isawaitable(result):
            result = await result
    except KeyError:
        raise ApiError(404, f"unknown agent: {name}") from None
    except AcdUsageError as exc:
        raise ApiError(409, str(exc) or "the agent's state does not allow this") from None
    return web.json_response(dict(result))


@routes.post("/v1/agents/{name}/pause")
async def post_pause(request: web.Request) -> web.Response:
    """A supervisor pauses the agent with ``reason`` (at once, or after its call)."""
    return await _command(
        request,
        lambda acd, name, body: acd.force_pause(
            name,
            _text(body, "reason", "supervisor"),
            _text(body, "supervisor", DEFAULT_SUPERVISOR),
        ),
    )


@routes.post("/v1/agents/{name}/unpause")
async def post_unpause(request: web.Request) -> web.Response:
    """A supervisor ends the agent's pause."""
    return await _command(
        request,
        lambda acd, name, body: acd.force_unpause(
            name, _text(body, "supervisor", DEFAULT_SUPERVISOR)
        ),
    )


@routes.post("/v1/agents/{name}/logout")
async def post_logout(request: web.Request) -> web.Response:
    """A supervisor logs the agent out; its page is told and closed."""
    return await _command(
        request,
        lambda acd, name, body: acd.force_logout(
            name, _text(body, "supervisor", DEFAULT_SUPERVISOR)
        ),
    )


def record_view(record: CallRecord) -> dict[str, Any]:
    """A call record as the API serves it: its columns, legs, duration and billed seconds."""
    view = asdict(record)
    view["legs"] = [dict(leg) for leg in record.legs]
    view["duration"] = round(record.duration, 3)
    view["billsec"] = round(record.billsec, 3)
    return view


@routes.get("/v1/calls/records")
async def get_call_records(request: web.Request) -> web.Response:
    """Call records by start time, filtered by ``queue`` and ``agent``, paged."""
    since, until = _span(request)
    queue = request.query.get("queue")
    agent = request.query.get("agent")
    records = await _reader(request).call_records(since, until)
    views = [
        record_view(r)
        for r in records
        if (queue is None or r.queue == queue) and (agent is None or r.agent == agent)
    ]
    return _page(request, "records", views)


@routes.get("/v1/queue-log")
async def get_queue_log(request: web.Request) -> web.Response:
    """Queue log entries in time order, filtered by ``queue``, ``agent`` and ``call_id``,
    paged."""
    since, until = _span(request)
    wanted = {k: request.query[k] for k in ("queue", "agent", "call_id") if k in request.query}
    entries = await _reader(request).queue_log(since, until)
    views = [
        {
            "time": e.time,
            "event": e.event,
            "call_id": e.call_id,
            "queue": e.queue,
            "agent": e.agent,
            "data": dict(e.data),
        }
        for e in entries
        if all(getattr(e, k) == v for k, v in wanted.items())
    ]
    return _page(request, "entries", views)


def create_app(
    config: Config,
    status: StatusProvider,
    root: web.Application | None = None,
    *,
    acd: Supervision | None = None,
    database: Path | None = None,
    events: EventLog | None = None,
    metrics: Metrics | None = None,
) -> web.Application:
    """The HTTPS application: the API under ``/api/`` (its own token middleware) mounted on
    `root` (the agent pages' application, which has its own session checks) or on an empty one.
    Without `acd` or `database`, the queue routes answer 404; without `events`, the event
    stream; without `metrics`, ``/metrics``."""
    api = web.Application(middlewares=[require_token], client_max_size=1024 * 1024)
    api[CONFIG_KEY] = config
    api[STATUS_KEY] = status
    api[ACD_KEY] = acd
    api[READER_KEY] = RecordReader(database) if database is not None else None
    api.cleanup_ctx.append(_close_reader)
    api.add_routes(routes)
    install_event_stream(api, events)
    app = root if root is not None else web.Application()
    app.add_subapp("/api", api)
    if metrics is not None:
        app.router.add_get("/metrics", metrics_handler(metrics, partial(bearer_ok, config)))
    return app


async def _close_reader(app: web.Application) -> AsyncIterator[None]:
    yield
    reader = app[READER_KEY]
    if reader is not None:
        await reader.close()


async def start_api(
    config: Config,
    status: StatusProvider,
    host: str,
    ssl_context: ssl.SSLContext,
    root: web.Application | None = None,
    *,
    acd: Supervision | None = None,
    database: Path | None = None,
    events: EventLog | None = None,
    metrics: Metrics | None = None,
) -> web.AppRunner:
    """Serve the API (and `root`'s pages) over HTTPS on the configured port; returns the runner
    to clean up."""
    app = create_app(
        config, status, root, acd=acd, database=database, events=events, metrics=metrics
    )
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, config.server.http_port, ssl_context=ssl_context)
    await site.start()
    return runner
