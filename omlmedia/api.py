"""The HTTPS API: status and live counters now; calls, queues and agents in later stages.

Every route requires ``Authorization: Bearer <token>``; only the token's SHA-256 is kept in the
configuration. Errors are JSON ``{"error": reason}`` with the right 4xx status.
"""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from omlmedia.config import Config

StatusProvider = Callable[[], dict[str, Any]]

CONFIG_KEY = web.AppKey("config", Config)
STATUS_KEY: web.AppKey[StatusProvider] = web.AppKey("status")

routes = web.RouteTableDef()


def _error(status: int, reason: str) -> web.Response:
    return web.json_response({"error": reason}, status=status)


@web.middleware
async def require_token(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Reject any request without the configured bearer token (401, no hint of what is valid)."""
    config = request.app[CONFIG_KEY]
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token or not config.api.token_matches(token.strip()):
        return web.json_response(
            {"error": "a valid bearer token is required"},
            status=401,
            headers={"WWW-Authenticate": 'Bearer realm="omlmedia"'},
        )
    try:
        return await handler(request)
    except web.HTTPException as exc:
        return _error(exc.status, exc.reason)


@routes.get("/v1/status")
async def get_status(request: web.Request) -> web.Response:
    """Live counters: SIP transactions, dialogs, calls, transports, media."""
    return web.json_response(request.app[STATUS_KEY]())


@routes.get("/v1/health")
async def get_health(request: web.Request) -> web.Response:
    """Liveness for monitoring."""
    return web.json_response({"status": "ok"})


def create_app(
    config: Config, status: StatusProvider, root: web.Application | None = None
) -> web.Application:
    """The HTTPS application: the API under ``/api/`` (its own token middleware) mounted on
    `root` (the agent pages' application, which has its own session checks) or on an empty one."""
    api = web.Application(middlewares=[require_token], client_max_size=1024 * 1024)
    api[CONFIG_KEY] = config
    api[STATUS_KEY] = status
    api.add_routes(routes)
    app = root if root is not None else web.Application()
    app.add_subapp("/api", api)
    return app


async def start_api(
    config: Config,
    status: StatusProvider,
    host: str,
    ssl_context: ssl.SSLContext,
    root: web.Application | None = None,
) -> web.AppRunner:
    """Serve the API (and `root`'s pages) over HTTPS on the configured port; returns the runner
    to clean up."""
    runner = web.AppRunner(create_app(config, status, root), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, config.server.http_port, ssl_context=ssl_context)
    await site.start()
    return runner
