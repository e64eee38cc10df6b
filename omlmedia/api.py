"""The HTTPS API: status and live counters, queues and agents for supervisors, call records and
the queue log for reports.

Every route requires ``Authorization: Bearer <token>`` (an account's or an integration's token,
or the configured one) and the role and scope `omlmedia.authz.RULES` gives it, checked by the one
middleware `omlmedia.authz.authorize`; lists of several queues' data keep only what the token's
scope covers. Errors are problem documents (RFC 9457, `omlmedia.problems`) with the right 4xx
status: 400 for a bad parameter or body, 401 without a valid token, 403 for a permission or scope
the token lacks, 404 for an unknown queue or agent (or no queues configured), 409 for a command
the agent's state does not allow. Accounts, tokens and the audit log: `omlmedia.admin_api`.

The API reads what it serves through providers the server passes in: `status` (a callable),
`acd` (a `Supervision`, the ACD runtime) and `database` (the SQLite file or PostgreSQL DSN of the
queue log and call records, read on its own connection and thread: WAL lets it read while the
writer writes).

Routes (all JSON):

- ``GET /api/v1/status``, ``GET /api/v1/health``;
- ``GET /api/v1/queues``: ``{"queues": [queue, ...]}``; ``GET /api/v1/queues/{name}``: one queue,
  live (``waiting``, ``ringing``, ``callbacks``, ``longest_wait``, ``members``,
  ``members_by_state``) and over the current statistics period (``stats``: ``offered``,
  ``answered``, ``abandoned``, ``service_level``, ``average_wait``, ``average_handle_time``...),
  or with ``?since=&until=`` over the whole periods that span touches (``stats.start`` and
  ``stats.end`` say which: the ACD keeps about two days of periods, ``stats.retained_since``
  on, and a span older than that is cut to what is kept, empty when nothing is; the reports
  cover any span);
- ``GET /api/v1/agents``: ``{"agents": [agent, ...]}`` (``state``, ``reason``, ``since``,
  ``call``, ``stats``, ``?since=&until=`` as for queues); ``GET /api/v1/agents/{name}``;
- ``POST /api/v1/agents/{name}/pause`` ``{"reason": ...}``, ``.../unpause`` and ``.../logout``:
  the agent as it is afterwards; the supervisor is the token's account (a ``supervisor`` field is
  refused), and each command is written to the audit log;
- ``GET /api/v1/calls/records?since=&until=&queue=&agent=&offset=&limit=``: call records by start
  time, ``{"records": [...], "total": n, "offset": o, "limit": l, "next": o2 | null}``;
- ``GET /api/v1/calls`` and ``POST /api/v1/calls/{id}/hangup|hold|unhold|transfer`` and
  ``.../recording/pause|resume``: live call control for integrations (`omlmedia.calls_api`);
- ``GET /api/v1/queue-log?since=&until=&queue=&agent=&call_id=&offset=&limit=``: queue log
  entries in time order, paged the same way (``"entries"``);
- ``GET /api/v1/reports/...`` and ``GET /api/v1/recordings...``: reports rebuilt from the store
  (JSON or CSV) and call recordings (search, play with ranges, download; audited), in
  `omlmedia.reports_api`;
- ``GET /api/v1/events``: the event stream, WebSocket or Server-Sent Events
  (`omlmedia.eventstream`);
- ``GET /api/v1/wallboard``: the supervisors' wallboard, today's figures and the live state
  (`omlmedia.wallboard`);
- ``GET /metrics`` (beside ``/api``, same token): Prometheus metrics (`omlmedia.metrics`).

``since`` and ``until`` are Unix times (seconds, ``until`` excluded); ``limit`` is at most
`MAX_PAGE`.
"""

from __future__ import annotations

import asyncio
import inspect
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import fields
from pathlib import Path
from typing import Any, Final, Protocol, TypeVar

from aiohttp import web

from omlmedia.accounts import AccountBook, ConfiguredToken, PasswordLogins
from omlmedia.admin_api import BOOK_KEY, LOGINS_KEY
from omlmedia.admin_api import routes as admin_routes
from omlmedia.admin_objects import DIRECTORY_KEY
from omlmedia.admin_objects import routes as directory_routes
from omlmedia.authz import IDENTITY_KEY, SCOPES_KEY, Identity, Scopes, authorize
from omlmedia.calls_api import routes as calls_routes
from omlmedia.config import Config
from omlmedia.directory import Directory
from omlmedia.events import EventLog
from omlmedia.eventstream import install as install_event_stream
from omlmedia.metrics import Metrics, metrics_handler
from omlmedia.netlimits import WANTED_NOFILE, ConnectionGate, GatedTlsSite, budget
from omlmedia.openapi import routes as openapi_routes
from omlmedia.problems import ApiError, page_window, paged_json
from omlmedia.problems import json_body as _body
from omlmedia.problems import query_span as _span
from omlmedia.reports_api import install as install_reports
from omlmedia.storage import CallRecord, QueueLogRow, RecordScope, Store
from omlmedia.wallboard import install as install_wallboard
from omlmedia.wallboard import wallboard_for
from omlmedia.webhooks import WebhookService
from omlmedia.webhooks_api import WEBHOOKS_KEY
from omlmedia.webhooks_api import routes as webhook_routes
from queueing.exceptions import AcdUsageError
from webrtc.accounts import SharedLockouts

StatusProvider = Callable[[], dict[str, Any]]

MAX_REASON = 64
HTTP_STOP_GRACE = 5.0
"""Seconds a stopping server lets a request still running (a recording's download) finish
before cancelling it (aiohttp's default: 60 s). The pages' sockets and the event streams are
closed before (`webrtc.app.close_pages`, `EventLog.close`): nothing else stays open for long."""

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
    """Reads committed call records and queue log entries from the store's database (the SQLite
    file or the PostgreSQL DSN), on one thread of its own with its own connection (opened at the
    first read), so the event loop never waits for the disk."""

    def __init__(self, path: Path | str) -> None:
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

    async def call_records_page(
        self, since: float, until: float, *, offset: int, limit: int, **filters: Any
    ) -> bytes:
        """The JSON of one page of call records (`Store.call_records_page`, `record_view`),
        read, built and encoded on the reader's thread: the event loop only sends it."""

        def read(store: Store) -> bytes:
            records, total = store.call_records_page(
                since, until, offset=offset, limit=limit, **filters
            )
            views = [record_view(r) for r in records]
            return paged_json("records", views, total, offset, limit)

        return await self._run(read)

    async def queue_log_page(
        self, since: float, until: float, *, offset: int, limit: int, **filters: Any
    ) -> bytes:
        """The JSON of one page of queue log entries (`Store.queue_log_page`), read, built and
        encoded on the reader's thread."""

        def read(store: Store) -> bytes:
            entries, total = store.queue_log_page(
                since, until, offset=offset, limit=limit, **filters
            )
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
            ]
            return paged_json("entries", views, total, offset, limit)

        return await self._run(read)

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


# -- parameters -----------------------------------------------------------------------------


def _stats_span(request: web.Request) -> tuple[float, float] | None:
    """``since``/``until`` of a queue or agent report (None: the current period)."""
    if not request.query.get("since") and not request.query.get("until"):
        return None
    return _span(request)


def _text(body: Mapping[str, Any], name: str, default: str) -> str:
    value = body.get(name, default)
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_REASON:
        why = f"must be a non-empty string of at most {MAX_REASON} characters"
        raise ApiError(400, f"{name} {why}", [(name, why)])
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


def _scoped(request: web.Request) -> tuple[Identity, Scopes]:
    """The request's identity and what its scope is checked against."""
    return request[IDENTITY_KEY], request.app[SCOPES_KEY]()


def _record_scope(request: web.Request) -> RecordScope | None:
    """The rows the request's identity may read, for the database's filter (None: every row),
    as `Identity.covers` and `Identity.covers_agent` decide them."""
    identity, scopes = _scoped(request)
    return RecordScope.of(identity.scope, identity.queues(scopes), scopes.members)


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
    """Every queue in the token's scope, live and over the current period."""
    identity, scopes = _scoped(request)
    report = _acd(request).queue_report(_stats_span(request))
    return web.json_response(
        {"queues": [q for name, q in report.items() if identity.covers(scopes, queue=name)]}
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
    """Every agent of the queues in the token's scope: state, reason, since, current call,
    figures."""
    identity, scopes = _scoped(request)
    report = _acd(request).agent_report(_stats_span(request))
    return web.json_response(
        {"agents": [a for name, a in report.items() if identity.covers_agent(scopes, name)]}
    )


@routes.get("/v1/agents/{name}")
async def get_agent(request: web.Request) -> web.Response:
    """One agent."""
    name = request.match_info["name"]
    return web.json_response(
        _found(_acd(request).agent_report(_stats_span(request)), name, "agent")
    )


def _agent_view(report: Mapping[str, Any]) -> dict[str, Any]:
    return {key: report.get(key) for key in ("state", "reason")}


async def _command(
    request: web.Request,
    action: str,
    act: Callable[[Supervision, str, dict[str, Any], str], Any],
) -> web.Response:
    """Run a supervisor's command on the agent of the path, as the token's identity, and write
    it to the audit log (``agent.<action>``, the agent's state and reason before and after)."""
    acd = _acd(request)
    name = request.match_info["name"]
    before = _found(acd.agent_report(), name, "agent")
    body = await _body(request)
    if "supervisor" in body:
        raise ApiError(
            400,
            "the supervisor is the token's account: leave the supervisor field out",
            [("supervisor", "not accepted: the token says who acts")],
        )
    identity = request[IDENTITY_KEY]
    try:
        result = act(acd, name, body, identity.actor)
        if inspect.isawaitable(result):
            result = await result
    except KeyError:
        raise ApiError(404, f"unknown agent: {name}") from None
    except AcdUsageError as exc:
        raise ApiError(409, str(exc) or "the agent's state does not allow this") from None
    after = dict(result)
    book = request.app[BOOK_KEY]
    if book is not None:
        await book.call(
            book.record, identity, f"agent.{action}", name, _agent_view(before), _agent_view(after)
        )
    return web.json_response(after)


@routes.post("/v1/agents/{name}/pause")
async def post_pause(request: web.Request) -> web.Response:
    """A supervisor pauses the agent with ``reason`` (at once, or after its call): one of the
    pause reasons (``GET /api/v1/pause-reasons``); without one, ``supervisor``."""
    directory = request.app[DIRECTORY_KEY]

    def reason(body: Mapping[str, Any]) -> str:
        text = _text(body, "reason", "supervisor")
        if "reason" in body and directory is not None:
            known = directory.pause_reasons()
            if text not in known:
                why = f"must be one of the pause reasons: {', '.join(known)}"
                raise ApiError(400, f"reason {why}", [("reason", why)])
        return text

    return await _command(
        request,
        "pause",
        lambda acd, name, body, by: acd.force_pause(name, reason(body), by),
    )


@routes.post("/v1/agents/{name}/unpause")
async def post_unpause(request: web.Request) -> web.Response:
    """A supervisor ends the agent's pause."""
    return await _command(
        request, "unpause", lambda acd, name, body, by: acd.force_unpause(name, by)
    )


@routes.post("/v1/agents/{name}/logout")
async def post_logout(request: web.Request) -> web.Response:
    """A supervisor logs the agent out; its page is told and closed."""
    return await _command(request, "logout", lambda acd, name, body, by: acd.force_logout(name, by))


_RECORD_FIELDS: Final = tuple(f.name for f in fields(CallRecord))


def record_view(record: CallRecord) -> dict[str, Any]:
    """A call record as the API serves it: its columns, legs, duration and billed seconds."""
    view = {name: getattr(record, name) for name in _RECORD_FIELDS}
    view["legs"] = [dict(leg) for leg in record.legs]
    view["duration"] = round(record.duration, 3)
    view["billsec"] = round(record.billsec, 3)
    return view


@routes.get("/v1/calls/records")
async def get_call_records(request: web.Request) -> web.Response:
    """Call records by start time in the token's scope, filtered by ``queue`` and ``agent``,
    paged in the database (only the page's rows are read, off the event loop)."""
    since, until = _span(request)
    offset, limit = page_window(request)
    body = await _reader(request).call_records_page(
        since,
        until,
        queue=request.query.get("queue"),
        agent=request.query.get("agent"),
        scope=_record_scope(request),
        offset=offset,
        limit=limit,
    )
    return web.Response(body=body, content_type="application/json")


@routes.get("/v1/queue-log")
async def get_queue_log(request: web.Request) -> web.Response:
    """Queue log entries in time order in the token's scope (an agent's own entries, such as
    its pauses, go with its queues), filtered by ``queue``, ``agent`` and ``call_id``, paged in
    the database (only the page's rows are read, off the event loop)."""
    since, until = _span(request)
    offset, limit = page_window(request)
    wanted = {k: request.query[k] for k in ("queue", "agent", "call_id") if k in request.query}
    body = await _reader(request).queue_log_page(
        since, until, **wanted, scope=_record_scope(request), offset=offset, limit=limit
    )
    return web.Response(body=body, content_type="application/json")


def create_app(
    config: Config,
    status: StatusProvider,
    root: web.Application | None = None,
    *,
    acd: Supervision | None = None,
    database: Path | str | None = None,
    events: EventLog | None = None,
    metrics: Metrics | None = None,
    accounts: AccountBook | None = None,
    webhooks: WebhookService | None = None,
    directory: Directory | None = None,
    lockouts: SharedLockouts | None = None,
) -> web.Application:
    """The HTTPS application: the API under ``/api/`` mounted on `root` (the agent pages'
    application) or on an empty one, every route of both guarded by `omlmedia.authz.authorize`
    (tokens from `accounts`, or the configured token alone without it).
    Without `acd` or `database`, the queue routes answer 404; without `events`, the event
    stream; without `metrics`, ``/metrics``; without `accounts`, the accounts, tokens and audit
    routes; without `webhooks`, the webhook routes; without `directory` (`omlmedia.directory`),
    the routes that create agents and queues, and scopes follow the file alone. `lockouts`:
    the cluster's shared failed-login counts, which the password logins also keep."""
    static = _scopes(config)
    scopes: Callable[[], Scopes] = directory.scopes if directory is not None else lambda: static
    api = web.Application(client_max_size=1024 * 1024)
    api[BOOK_KEY] = accounts
    api[LOGINS_KEY] = (
        PasswordLogins(accounts, ttl=config.webrtc.session_ttl, lockouts=lockouts)
        if accounts is not None
        else None
    )
    api[SCOPES_KEY] = scopes
    api[DIRECTORY_KEY] = directory
    api[CONFIG_KEY] = config
    api[STATUS_KEY] = status
    api[ACD_KEY] = acd
    api[READER_KEY] = RecordReader(database) if database is not None else None
    api.cleanup_ctx.append(_close_reader)
    api.add_routes(routes)
    api.add_routes(calls_routes)
    api.add_routes(admin_routes)
    api.add_routes(directory_routes)
    api[WEBHOOKS_KEY] = webhooks
    api.add_routes(webhook_routes)
    api.add_routes(openapi_routes)
    install_reports(api, config, database)
    install_event_stream(api, events)
    reasons = directory.pause_reasons if directory is not None else None
    install_wallboard(api, wallboard_for(config, acd, api[READER_KEY], events, reasons))
    app = root if root is not None else web.Application()
    authenticator = accounts if accounts is not None else ConfiguredToken(config.api.token_matches)
    app.middlewares.append(authorize(authenticator, scopes))
    app.add_subapp("/api", api)
    if metrics is not None:
        app.router.add_get("/metrics", metrics_handler(metrics, _authorized))
    return app


def _authorized(request: web.Request) -> bool:
    """Whether `authorize` let `request` through (with a token allowed to read metrics)."""
    return IDENTITY_KEY in request


def _scopes(config: Config) -> Scopes:
    """The campaigns' queues and the queues' members, for the scope checks."""
    queues = config.acd.queues if config.acd is not None else {}
    return Scopes(
        {c.name: c.queue for c in config.campaigns},
        {name: frozenset(m.agent for m in queue.members) for name, queue in queues.items()},
    )


async def _close_reader(app: web.Application) -> AsyncIterator[None]:
    yield
    reader = app[READER_KEY]
    if reader is not None:
        await reader.close()


HSTS: Final = "max-age=31536000"
"""Strict-Transport-Security (RFC 6797): browsers that reached the server once use HTTPS only,
for a year (no includeSubDomains: the host's other names are not ours to bind)."""


async def _transport_headers(request: web.Request, response: web.StreamResponse) -> None:
    """Every HTTPS response: HSTS, and a Server header without versions (aiohttp's default
    names Python's and its own, a gift to scanners)."""
    response.headers["Server"] = "omlmedia"
    response.headers.setdefault("Strict-Transport-Security", HSTS)


async def start_api(
    config: Config,
    status: StatusProvider,
    host: str,
    ssl_context: ssl.SSLContext,
    root: web.Application | None = None,
    *,
    acd: Supervision | None = None,
    database: Path | str | None = None,
    events: EventLog | None = None,
    metrics: Metrics | None = None,
    accounts: AccountBook | None = None,
    webhooks: WebhookService | None = None,
    directory: Directory | None = None,
    gate: ConnectionGate | None = None,
    lockouts: SharedLockouts | None = None,
) -> web.AppRunner:
    """Serve the API (and `root`'s pages) over HTTPS on the configured port; returns the runner
    to clean up. Connections pass `gate` (`omlmedia.netlimits`: caps per source and in total)
    before their TLS handshake, which must end within `HANDSHAKE_TIMEOUT` seconds."""
    app = create_app(
        config,
        status,
        root,
        acd=acd,
        database=database,
        events=events,
        metrics=metrics,
        accounts=accounts,
        webhooks=webhooks,
        directory=directory,
        lockouts=lockouts,
    )
    app.on_response_prepare.append(_transport_headers)
    runner = web.AppRunner(
        app, access_log=None, handle_signals=False, shutdown_timeout=HTTP_STOP_GRACE
    )
    await runner.setup()
    if gate is None:
        caps = budget(WANTED_NOFILE, 0)
        gate = ConnectionGate(caps.http, caps.http_per_source)
    site = GatedTlsSite(runner, host, config.server.http_port, tls=ssl_context, gate=gate)
    await site.start()
    return runner
