"""The web application: the agent page at ``/agent/``, the supervisor page at ``/supervisor/``, the
web caller page at ``/call/<target>``, their static files (and the vendored libraries under
``/vendor/``) and the ``/ws`` socket.

No API-token middleware here: the page is public (it holds no data until logged in) and every
socket authenticates with its own session (``login`` or ``auth``, see `webrtc.signaling`). Every
response carries security headers: a CSP allowing only this origin and no inline script,
``X-Frame-Options: DENY``, ``no-store`` on the page and the socket. A WebSocket upgrade whose
``Origin`` is not this host is refused (cross-site WebSocket hijacking).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from aiohttp import WSMsgType, web

from webrtc.forwarded import request_source
from webrtc.signaling import AgentHub

logger = logging.getLogger(__name__)

__all__ = ["HUB_KEY", "UI_DIR", "close_pages", "create_app"]


def _find_ui() -> Path:
    """The pages: ``webrtc/ui/`` when installed from a wheel (setup.py puts them there), else the
    tree's top-level ``ui/`` (run from the work tree, editable install)."""
    package = Path(__file__).resolve().parent
    installed = package / "ui"
    return installed if installed.is_dir() else package.parent / "ui"


UI_DIR = _find_ui()
HUB_KEY = web.AppKey("agent_hub", AgentHub)
_SEND_QUEUE = 256
GOING_AWAY = 1001
"""The close code of every socket when the server stops (RFC 6455 "going away"): the pages
reconnect at once, through the balancer to another node in a cluster."""
CLOSE_HANDSHAKE = 2.0
"""Seconds a socket's close waits for the page's close frame before dropping the connection: a
page gone silent cannot hold up a stop (aiohttp's default is 10 s)."""


class Sockets:
    """The application's open sockets, and whether the server is stopping: then every socket
    closes with `GOING_AWAY` and a socket opening is closed at once (its page tries again,
    through the balancer, elsewhere)."""

    def __init__(self) -> None:
        self.open: set[WebSocketConnection] = set()
        self.stopping = False

    def close_code(self) -> tuple[int, bytes]:
        if self.stopping:
            return GOING_AWAY, b"server stopping"
        return 1000, b""


CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; media-src 'self' blob:; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Permissions-Policy": "camera=(self), geolocation=(), microphone=(self)",
    "Cross-Origin-Opener-Policy": "same-origin",
}


@web.middleware
async def security_headers(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Add the security headers to every response (errors included)."""
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        response = exc
    if not response.prepared:
        response.headers.update(SECURITY_HEADERS)
    if isinstance(response, web.HTTPException):
        raise response
    return response


class WebSocketConnection:
    """A `signaling.Connection` over an aiohttp WebSocket: `send` queues, one writer task
    writes; a page that cannot keep up (queue full) is disconnected."""

    def __init__(
        self, ws: web.WebSocketResponse, source: str, port: int, sockets: Sockets | None = None
    ) -> None:
        self.ws = ws
        self._source = source
        self._port = port
        self.sockets = sockets if sockets is not None else Sockets()
        self.ended: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        """Done when the socket's handler is over (`close_pages` waits for it)."""
        self.queue: asyncio.Queue[str | None] = asyncio.Queue(_SEND_QUEUE)
        self.writer = asyncio.ensure_future(self._write())
        self._closing: asyncio.Future[None] | None = None
        self.closed = False
        """Whether `close` was called."""

    @property
    def source(self) -> str:
        return self._source

    @property
    def port(self) -> int:
        return self._port

    def send(self, message: Mapping[str, Any]) -> None:
        try:
            self.queue.put_nowait(json.dumps(message, separators=(",", ":")))
        except asyncio.QueueFull:
            self.close()

    def close(self) -> None:
        self.closed = True
        try:
            self.queue.put_nowait(None)
        except asyncio.QueueFull:
            self.writer.cancel()
            self._closing = asyncio.ensure_future(self._close())

    async def _close(self) -> None:
        code, reason = self.sockets.close_code()
        await self.ws.close(code=code, message=reason)

    async def _write(self) -> None:
        try:
            while (text := await self.queue.get()) is not None:
                await self.ws.send_str(text)
            await self._close()
        except (asyncio.CancelledError, ConnectionError):
            pass
        except Exception:
            logger.debug("agent socket write failed", exc_info=True)

    async def stop(self) -> None:
        """The socket's handler is over: end the writer. One closing the socket (`close`) may
        finish first, else the page would see the connection drop (1006) instead of the close
        frame's code."""
        if self.closed and not self.writer.done():
            await asyncio.wait([self.writer], timeout=CLOSE_HANDSHAKE)
        self.writer.cancel()
        try:
            await self.writer
        except (asyncio.CancelledError, Exception):
            pass


routes = web.RouteTableDef()


def _same_origin(request: web.Request) -> bool:
    origin = request.headers.get("Origin")
    if origin is None:
        return True
    parts = urlsplit(origin)
    return parts.scheme in ("https", "http") and parts.netloc == request.host


@routes.get("/ws")
async def websocket(request: web.Request) -> web.StreamResponse:
    """The signalling socket (JSON text frames, docs/webrtc-signaling.md)."""
    if not _same_origin(request):
        raise web.HTTPForbidden(reason="cross-origin WebSocket refused")
    hub = request.app[HUB_KEY]
    sockets = request.app[SOCKETS_KEY]
    ws = web.WebSocketResponse(heartbeat=10.0, max_msg_size=128 * 1024, timeout=CLOSE_HANDSHAKE)
    ws.headers["Cache-Control"] = "no-store"
    await ws.prepare(request)
    if sockets.stopping:
        await ws.close(code=GOING_AWAY, message=b"server stopping")
        return ws
    source, port = request_source(request)
    conn = WebSocketConnection(ws, source, port, sockets)
    sockets.open.add(conn)
    hub.connection_opened(conn)
    try:
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                await hub.handle_text(conn, msg.data)
            elif msg.type == WSMsgType.BINARY:
                await hub.handle_text(conn, msg.data)
            else:
                break
    finally:
        try:
            hub.connection_closed(conn)
            await conn.stop()
            if not ws.closed:
                code, reason = sockets.close_code()
                await ws.close(code=code, message=reason)
        finally:
            sockets.open.discard(conn)
            if not conn.ended.done():
                conn.ended.set_result(None)
    return ws


async def close_pages(app: web.Application) -> int:
    """The server stops: close every socket with `GOING_AWAY` ("going away": the agent pages,
    the supervisors', the web callers', those not logged in yet) after the hub's last messages
    (`AgentHub.close`: ``session-ended`` on a single node; in a cluster none, the pages take
    their session to another node), close the agents' media channels, and refuse sockets that
    open from now on. Returns once every socket's handler ended (each close waits at most
    `CLOSE_HANDSHAKE` seconds for its page), so stopping the HTTP server then waits for none;
    the number of sockets closed."""
    sockets = app[SOCKETS_KEY]
    sockets.stopping = True
    count = len(sockets.open)
    await app[HUB_KEY].close()
    left = list(sockets.open)
    for conn in left:
        conn.close()
    if left:
        await asyncio.wait([conn.ended for conn in left], timeout=CLOSE_HANDSHAKE + 1.0)
    return count


@routes.get("/agent")
async def agent_redirect(request: web.Request) -> web.StreamResponse:
    """``/agent`` -> ``/agent/``."""
    raise web.HTTPFound("/agent/")


@routes.get("/supervisor")
async def supervisor_redirect(request: web.Request) -> web.StreamResponse:
    """``/supervisor`` -> ``/supervisor/``."""
    raise web.HTTPFound("/supervisor/")


def _html(path: Path) -> web.FileResponse:
    response = web.FileResponse(path)
    response.headers["Cache-Control"] = "no-store"
    response.headers["Content-Type"] = "text/html; charset=utf-8"
    return response


async def _page(request: web.Request) -> web.StreamResponse:
    return _html(request.app[_UI_KEY] / "agent" / "index.html")


async def _supervisor_page(request: web.Request) -> web.StreamResponse:
    """The supervisor page: public like the agent page, it holds no data until it logs in
    through the API (``POST /api/v1/sessions``) and keeps its token in memory."""
    return _html(request.app[_UI_KEY] / "supervisor" / "index.html")


_UI_KEY = web.AppKey("ui_dir", Path)
SOCKETS_KEY = web.AppKey("sockets", Sockets)


async def _call_page(request: web.Request) -> web.StreamResponse:
    """``/call/<target>``: the web caller page, for targets of the allow-list only."""
    hub = request.app[HUB_KEY]
    target = request.match_info["target"]
    if hub.web is None or not hub.web.allows(target):
        raise web.HTTPNotFound(text="No such page.")
    return _html(request.app[_UI_KEY] / "call" / "index.html")


async def _expiry(app: web.Application) -> AsyncIterator[None]:
    hub = app[HUB_KEY]

    async def run() -> None:
        while True:
            await asyncio.sleep(1.0)
            try:
                await hub.expire()
            except Exception:
                logger.exception("agent session expiry failed")

    task = asyncio.ensure_future(run())
    yield
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
    await hub.close()


def create_app(hub: AgentHub, *, ui_dir: Path = UI_DIR) -> web.Application:
    """The agent application: ``/agent/`` (page), ``/agent/*`` (its files), ``/supervisor/`` and
    ``/supervisor/*`` (the supervisor page), ``/vendor/*`` (vendored libraries, when `ui_dir`
    has them), ``/ws`` (socket), ``/call/<target>`` (the web caller page, when `hub.web` allows
    the target) and ``/call-ui/*`` (its files).

    Mount it as it is or with ``add_subapp``; it has no API-token middleware."""
    app = web.Application(middlewares=[security_headers], client_max_size=64 * 1024)
    app[HUB_KEY] = hub
    app[_UI_KEY] = ui_dir
    app[SOCKETS_KEY] = Sockets()
    app.add_routes(routes)
    app.router.add_get("/agent/", _page)
    app.router.add_static("/agent/", ui_dir / "agent", show_index=False, follow_symlinks=False)
    app.router.add_get("/supervisor/", _supervisor_page)
    app.router.add_static(
        "/supervisor/", ui_dir / "supervisor", show_index=False, follow_symlinks=False
    )
    if (ui_dir / "vendor").is_dir():
        app.router.add_static(
            "/vendor/", ui_dir / "vendor", show_index=False, follow_symlinks=False
        )
    app.router.add_get("/call/{target}", _call_page)
    app.router.add_static("/call-ui/", ui_dir / "call", show_index=False, follow_symlinks=False)
    app.cleanup_ctx.append(_expiry)
    return app
