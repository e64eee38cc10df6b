"""``GET /api/v1/events``: the event log as a live stream, over WebSocket or Server-Sent Events.

Theory of operation. A client opens the stream (a WebSocket upgrade, or a plain GET with
``Accept: text/event-stream``), optionally filtered (``type``: prefixes such as ``call.`` or
``queue.abandoned``; ``queue``, ``agent``, ``campaign``: exact names; each repeatable or
comma-separated). Every event is one JSON object with its ``id`` (`omlmedia.events.Event.view`);
over SSE it is one message with ``id:``, ``event:`` (the type) and ``data:`` (the JSON).

The handler subscribes before it answers, at the log's last id (or at the client's: a client
that resumes with ``?since_id=N``, or SSE's ``Last-Event-ID: N``, starts after N). Every client
then reads the one shared log at its own pace with its own task (`EventLog.read`): from memory,
or from the store for what memory no longer holds, so a resuming client gets what it missed
before the live events, every event exactly once and in id order. Without a since id the stream
starts with the next event (``since_id=0`` replays the whole log). Live events are sent in
batches: a client woken by an event waits for its next slot (one a period, `linger`), so a
burst costs one write, and many clients write one after another rather than all at once.

In a cluster with one ACD (`omlmedia.events.ClusterFeed`) the stream is the cluster's: every
node's committed events, in the order they committed; ids are unique but not increasing. A
client resumes on any node after the last id it received (the node finds that event's place in
the order; an unknown id is refused with 400), and gets every later event of every node once.

The stream checks its token again every `SCOPE_REFRESH` seconds (as the supervisor's socket
does): a token revoked, expired or whose account was disabled (on any node of a cluster: the
accounts are shared) ends the stream, and so does a change of its role or scope (the client
reconnects and is checked anew); the reason is a WebSocket close with code 1008 ("policy
violation"), or a final SSE ``event: error``. A scope's queues' members and campaigns' queues are
read again as often, so an open stream follows the directory.

A client that has caught up and then reads so slowly that it falls more than `STREAM_QUEUE`
events behind is dropped by the log (it never waits for anyone), and the stream ends with a
reason that says how to resume: a WebSocket close with code 1013 ("try again later"), or a final
SSE ``event: error``. A client that does not even take that within `CLOSE_TIMEOUT` has its
connection aborted.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import random
import time
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web

from omlmedia.authz import (
    AUTHENTICATOR_KEY,
    IDENTITY_KEY,
    SCOPES_KEY,
    Identity,
    Permission,
    Scopes,
    bearer,
)
from omlmedia.events import ClusterFeed, Event, EventFilter, EventLog, Subscription
from omlmedia.problems import problem

__all__ = ["EVENTS_KEY", "STREAM_QUEUE", "install", "routes"]

logger = logging.getLogger(__name__)

EVENTS_KEY: web.AppKey[EventLog | None] = web.AppKey("events")

STREAM_QUEUE = 2000
"""Events a live client may fall behind the log before it is cut off as too slow."""
CLOSE_TIMEOUT = 5.0
"""Seconds a cut-off client has to take its close before its connection is aborted."""
LINGER = 0.02
"""The shortest period of a live stream: a client woken by an event writes at its next slot,
one a period at a phase of its own, with every event published until then: one write (and one
TLS record) for many events when they come fast, at most one write a period per client, and
the clients' writes spread evenly over the period rather than all in the instant after an
event (a burst of writes delays the SIP messages queued behind it)."""
WRITES_PER_SECOND = 1250
"""The stream's write budget: with many clients the period grows (clients / budget seconds,
from `LINGER` up to `MAX_LINGER`), so that events coming fast cost the event loop about this
many writes a second whatever the number of clients. A write (a TLS record and a send on a
socket whose peer the kernel wakes) costs the loop far more than the events in it, and the
loop also carries SIP: with 100 clients the writes, not the events, were the stream's cost."""
MAX_LINGER = 0.08
"""The longest period: an event waits at most this long for its client's slot (the stream's
delivery target is 100 ms at the 99th percentile)."""
KEEPALIVE = 15.0
"""Seconds of silence after which an SSE stream sends a comment (proxies, dead peers)."""

routes = web.RouteTableDef()


class _Refused(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def _since(request: web.Request) -> int | None:
    text = request.query.get("since_id") or request.headers.get("Last-Event-ID")
    if text is None or text == "":
        return None
    try:
        value = int(text)
    except ValueError:
        raise _Refused(400, "since_id must be an event id (an integer)") from None
    if value < 0:
        raise _Refused(400, "since_id must be an event id (an integer)")
    return value


SCOPE_REFRESH = 1.0
"""Seconds a live stream's scope check keeps the queues' members and the campaigns' queues it
read before reading them again: an agent added to a queue in scope is seen, and one removed no
longer, within this long (plus the directory's own propagation across nodes)."""


def in_scope(
    identity: Identity,
    scopes: Scopes | Callable[[], Scopes],
    clock: Callable[[], float] = time.monotonic,
) -> Callable[[Event], bool] | None:
    """What a token's scope lets it see (None: everything): events of a queue or campaign it
    covers, and an agent's own events (its states, its pauses) when the agent is a member of
    a queue it covers; events of neither (a call to a media service) only without a scope.
    The same rule as the queue log's (`omlmedia.api`). `scopes`: the members and campaigns to
    check against, or where to read them (again every `SCOPE_REFRESH` seconds of `clock`, for
    a stream that lasts while the directory changes)."""
    if identity.scope is None:
        return None
    read = scopes if callable(scopes) else None
    current = scopes() if callable(scopes) else scopes
    checked = clock()

    def covers(ev: Event) -> bool:
        nonlocal current, checked
        if read is not None:
            now = clock()
            if now - checked >= SCOPE_REFRESH:
                current, checked = read(), now
        if ev.queue or ev.campaign:
            return identity.covers(current, queue=ev.queue, campaign=ev.campaign)
        return bool(ev.agent) and identity.covers_agent(current, ev.agent)

    return covers


def _token_check(request: web.Request) -> Callable[[], str | None] | None:
    """What the stream asks every `SCOPE_REFRESH` seconds of its token (None: nothing to ask,
    no token): why it may no longer read the stream (revoked, expired, its account disabled or
    no longer allowed to), or that its role or scope changed (the client reconnects and is
    checked anew), or None while it may go on."""
    identity = request.get(IDENTITY_KEY)
    authenticator = request.get(AUTHENTICATOR_KEY)
    token = bearer(request)
    if identity is None or authenticator is None or not token:
        return None

    def check() -> str | None:
        now = authenticator.authenticate(token)
        if now is None:
            return "the token is no longer valid (revoked, expired, or its account disabled)"
        if not now.allows(Permission.EVENTS_READ):
            return "the token may no longer read the event stream"
        if (now.role, now.scope) != (identity.role, identity.scope):
            return "the token's role or scope changed: reconnect with since_id set to the last id"
        return None

    return check


def _filter(request: web.Request) -> EventFilter:
    query = request.query
    identity = request.get(IDENTITY_KEY)
    scopes = request.app.get(SCOPES_KEY)
    return EventFilter.parse(
        query.getall("type", []),
        query.getall("queue", []),
        query.getall("agent", []),
        query.getall("campaign", []),
        scope=in_scope(identity, scopes) if identity and scopes else None,
    )


@routes.get("/v1/events")
async def get_events(request: web.Request) -> web.StreamResponse:
    """The event stream (WebSocket, or SSE with ``Accept: text/event-stream``)."""
    log = request.app[EVENTS_KEY]
    if log is None:
        return problem(404, "the event log is not running")
    try:
        since = _since(request)
        match = _filter(request)
    except _Refused as exc:
        return problem(exc.status, exc.reason)
    source = log.stream
    after: int | None = None
    try:
        if not await source.ready():
            return problem(503, "the cluster's events cannot be read yet: try again later")
        if since is not None:
            after = await source.cursor_of(since)
            if after is None:
                return problem(400, f"since_id: no event {since} in the log")
    except ConnectionError as exc:
        return problem(503, f"the event log cannot be read: {exc}")
    # Subscribed before the answer goes out: a client that saw the answer gets every later event.
    # Events are small and go to many clients: no per-client permessage-deflate (RFC 7692).
    websocket = web.WebSocketResponse(heartbeat=30.0, autoping=True, compress=False)
    check = _token_check(request)
    if websocket.can_prepare(request).ok:
        stream = _Stream(source, match, after, since, _WsOut(request, websocket), check=check)
        return await stream.run()
    if "text/event-stream" in request.headers.get("Accept", ""):
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",
            }
        )
        stream = _Stream(source, match, after, since, _SseOut(request, response, log), check=check)
        return await stream.run()
    return problem(406, "open a WebSocket, or ask for Accept: text/event-stream")


class _Out:
    """One transport of the stream."""

    request: web.Request
    response: web.StreamResponse

    async def send(self, events: list[Event]) -> None:
        raise NotImplementedError

    async def idle(self) -> None:
        """Nothing to send for `KEEPALIVE` seconds."""

    def closed_by_peer(self) -> Awaitable[None] | None:
        """What ends when the peer leaves (None: a write fails instead)."""
        return None

    async def finish(self, code: int, reason: str, last_id: int) -> None:
        raise NotImplementedError

    def abort(self) -> None:
        raise NotImplementedError


class _WsOut(_Out):
    def __init__(self, request: web.Request, ws: web.WebSocketResponse) -> None:
        self.request = request
        self.response = self.ws = ws

    async def send(self, events: list[Event]) -> None:
        for ev in events:
            await self.ws.send_str(ev.to_json())

    async def closed_by_peer(self) -> None:
        async for msg in self.ws:
            if msg.type in (WSMsgType.ERROR, WSMsgType.CLOSE):
                break

    async def finish(self, code: int, reason: str, last_id: int) -> None:
        await self.ws.close(code=code, message=reason.encode()[:120])

    def abort(self) -> None:
        transport = self.request.transport
        if transport is not None:
            transport.abort()


SSE_KEEP = 8192
"""Encoded SSE messages kept per log (the newest): about what the live clients still read."""

_sse_messages: weakref.WeakKeyDictionary[EventLog, dict[int, bytes]] = weakref.WeakKeyDictionary()


def _sse_cache(log: EventLog) -> dict[int, bytes]:
    cache = _sse_messages.get(log)
    if cache is None:
        cache = _sse_messages[log] = {}
    return cache


def _encode(cache: dict[int, bytes], ev: Event) -> bytes:
    message = f"id: {ev.id}\nevent: {ev.type}\ndata: {ev.to_json()}\n\n".encode()
    cache[ev.id] = message
    if len(cache) > SSE_KEEP:
        # Ids are published in order: the first keys are the oldest.
        for old in list(itertools.islice(cache, len(cache) - SSE_KEEP // 2)):
            del cache[old]
    return message


def sse_message(log: EventLog, ev: Event) -> bytes:
    """`ev` of `log` as one SSE message, encoded once for every client of the stream (the
    clients of one event share its bytes; formatting it per client was a third of the
    stream's CPU with 100 clients)."""
    cache = _sse_cache(log)
    return cache.get(ev.id) or _encode(cache, ev)


class _SseOut(_Out):
    def __init__(self, request: web.Request, response: web.StreamResponse, log: EventLog) -> None:
        self.request = request
        self.response = response
        self.cache = _sse_cache(log)

    async def send(self, events: list[Event]) -> None:
        cache = self.cache
        try:
            # The common case, one dictionary look-up per event: another client encoded it.
            data = b"".join([cache[ev.id] for ev in events])
        except KeyError:
            data = b"".join([cache.get(ev.id) or _encode(cache, ev) for ev in events])
        await self.response.write(data)

    async def idle(self) -> None:
        await self.response.write(b": keepalive\n\n")

    async def finish(self, code: int, reason: str, last_id: int) -> None:
        body = json.dumps({"error": reason, "code": code, "last_id": last_id})
        await self.response.write(f"event: error\ndata: {body}\n\n".encode())
        await self.response.write_eof()

    def abort(self) -> None:
        transport = self.request.transport
        if transport is not None:
            transport.abort()


def linger(clients: int) -> float:
    """The period of each of `clients` live streams (`WRITES_PER_SECOND`)."""
    return min(MAX_LINGER, max(LINGER, clients / WRITES_PER_SECOND))


class _Stream:
    """One client's stream: replay, then live events, until it leaves or falls behind."""

    def __init__(
        self,
        log: EventLog | ClusterFeed,
        match: EventFilter,
        after: int | None,
        since: int | None,
        out: _Out,
        limit: int = STREAM_QUEUE,
        check: Callable[[], str | None] | None = None,
    ) -> None:
        self.log = log
        self.out = out
        self.check = check
        """Asked every `SCOPE_REFRESH` seconds whether the token may still read (`_token_check`)."""
        head = log.head_id
        self.sub: Subscription = log.subscribe(match, limit, after)
        # The id of the last event sent: at first the client's, or the log's last.
        if isinstance(log, EventLog):
            self.last_sent = self.sub.cursor  # ids are the log's cursors
        else:
            self.last_sent = since if since is not None else head
        self.phase = random.random()
        """Where in each period this client's slot is (a fraction of it)."""

    async def run(self) -> web.StreamResponse:
        out, sub = self.out, self.sub
        try:
            await out.response.prepare(out.request)
        except BaseException:
            self.log.unsubscribe(sub)
            raise
        tasks: list[asyncio.Task[Any]] = [asyncio.ensure_future(self._pump())]
        cut = asyncio.ensure_future(sub.cut.wait())
        tasks.append(cut)
        peer = out.closed_by_peer()
        if peer is not None:
            tasks.append(asyncio.ensure_future(peer))
        watch = asyncio.ensure_future(self._watch())
        tasks.append(watch)
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, ConnectionError, RuntimeError):
                    await task
            pump = tasks[0]
            if pump in done and not pump.cancelled() and pump.exception() is not None:
                exc = pump.exception()
                if not isinstance(exc, ConnectionError | RuntimeError):
                    logger.error("event stream failed", exc_info=exc)
            if sub.overflowed:
                await self._finish(
                    WSCloseCode.TRY_AGAIN_LATER,
                    f"too slow: more than {sub.limit} events behind; "
                    "reconnect with since_id set to the last id received",
                )
            elif cut in done:
                await self._finish(WSCloseCode.GOING_AWAY, "the server is stopping")
            elif watch in done and not watch.cancelled() and watch.exception() is None:
                await self._finish(WSCloseCode.POLICY_VIOLATION, watch.result())
        finally:
            self.log.unsubscribe(sub)
        return out.response

    async def _watch(self) -> str:
        """Return why the token may no longer read, once it may not (never without a check)."""
        if self.check is None:
            await asyncio.Future()  # until the stream ends otherwise
        assert self.check is not None
        while True:
            await asyncio.sleep(SCOPE_REFRESH)
            reason = self.check()
            if reason is not None:
                return reason

    async def _finish(self, code: int, reason: str) -> None:
        try:
            await asyncio.wait_for(self.out.finish(code, reason, self.last_sent), CLOSE_TIMEOUT)
        except (TimeoutError, ConnectionError, RuntimeError):
            self.out.abort()

    async def _pump(self) -> None:
        log, out, sub = self.log, self.out, self.sub
        while True:
            if sub.cursor >= log.last_id:
                try:
                    async with asyncio.timeout(KEEPALIVE):
                        await log.wait(sub.cursor)
                except TimeoutError:
                    await out.idle()
                    continue
                if LINGER > 0:
                    # This client's next slot: clients woken by the same event write one after
                    # another over the period, each at most once in it.
                    period = linger(len(log.subscribers))
                    now = asyncio.get_running_loop().time()
                    await asyncio.sleep((self.phase * period - now) % period)
            batch = await log.read(sub)
            if batch:
                await out.send(batch)
                self.last_sent = batch[-1].id


def install(api: web.Application, log: EventLog | None) -> None:
    """Serve the stream of `log` on the API application `api`."""
    api[EVENTS_KEY] = log
    api.add_routes(routes)
    api.on_shutdown.append(_stop_streams)


async def _stop_streams(app: web.Application) -> None:
    log = app[EVENTS_KEY]
    if log is not None:
        for sub in list(log.stream.subscribers):
            sub.close()
