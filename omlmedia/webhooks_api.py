"""The webhook routes of the API (admin only, see `omlmedia.authz.RULES`).

- ``GET /api/v1/webhooks``: ``{"webhooks": [webhook, ...]}``; ``POST /api/v1/webhooks``
  ``{"url", "types"?, "scope"?, "enabled"?, "verify_tls"?, "description"?}``: 201 and the
  webhook with its signing secret in ``secret`` (``whsec_...``), shown this once;
- ``GET|PATCH|DELETE /api/v1/webhooks/{id}``: one webhook; PATCH takes the same fields as POST;
  DELETE answers 204 and drops its outbox;
- ``GET /api/v1/webhooks/{id}/deliveries?status=pending|dead``: its stored deliveries in event
  order (``"deliveries"``, paged like the call records); a delivery's ``id`` is its event's;
- ``POST /api/v1/webhooks/{id}/deliveries/{delivery_id}/replay``: a dead delivery queued again
  (202); ``POST /api/v1/webhooks/{id}/deliveries/replay``: every dead one (202,
  ``{"replayed": n}``).

A webhook is ``{"id", "url", "types", "scope", "enabled", "verify_tls", "description",
"created", "updated"}``. ``url`` must be ``https://`` (plain ``http://`` only to a loopback
address, and only when the server was built to allow it: tests). ``types`` are event type
prefixes (``call.``, ``queue.abandoned``; empty: every event); ``scope`` campaign and queue
names (null: every one), as a token's. ``verify_tls`` is true unless set false explicitly.
Every change is in the audit log (``webhook.create``, ``webhook.update``, ``webhook.delete``,
``webhook.replay``). Invalid input is a 400 problem document naming each field in ``errors``.
"""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web
from yarl import URL

from omlmedia.accounts import Keep
from omlmedia.admin_api import _Fields, _flag, _scope
from omlmedia.authz import IDENTITY_KEY, SCOPES_KEY
from omlmedia.problems import ApiError, json_body, page
from omlmedia.webhooks import (
    LOOPBACK,
    UnknownDeliveryError,
    UnknownWebhookError,
    Webhook,
    WebhookService,
)

__all__ = ["WEBHOOKS_KEY", "routes"]

WEBHOOKS_KEY: web.AppKey[WebhookService | None] = web.AppKey("webhooks")
MAX_URL = 2048
MAX_TYPES = 32
MAX_DESCRIPTION = 256
TYPE = re.compile(r"[a-z0-9_.]{1,64}")
FIELDS = ("url", "types", "scope", "enabled", "verify_tls", "description")
STATUSES = ("pending", "dead")
_NO_STORE = {"Cache-Control": "no-store"}

routes = web.RouteTableDef()


def _service(request: web.Request) -> WebhookService:
    service = request.app[WEBHOOKS_KEY]
    if service is None:
        raise ApiError(404, "webhooks are not kept by this server (no data directory)")
    return service


def _hook(request: web.Request) -> Webhook:
    try:
        return _service(request).get(request.match_info["id"])
    except UnknownWebhookError:
        raise ApiError(404, f"unknown webhook: {request.match_info['id'][:64]}") from None


def _url(service: WebhookService) -> Any:
    def check(value: Any) -> str | None:
        if not isinstance(value, str) or len(value) > MAX_URL:
            return None
        try:
            url = URL(value)
            host = url.host
        except (ValueError, TypeError):
            return None
        if not host or url.user or url.password or url.fragment:
            return None
        if url.scheme == "https":
            return value
        if url.scheme == "http" and service.allow_http_loopback and host in LOOPBACK:
            return value
        return None

    return check


def _types(value: Any) -> tuple[str, ...] | None:
    if not isinstance(value, list) or len(value) > MAX_TYPES:
        return None
    if not all(isinstance(v, str) and TYPE.fullmatch(v) for v in value):
        return None
    return tuple(value)


def _description(value: Any) -> str | None:
    return value if isinstance(value, str) and len(value) <= MAX_DESCRIPTION else None


def _read(request: web.Request, body: dict[str, Any], *, create: bool) -> dict[str, Any]:
    """The fields of a POST or PATCH body, each checked (a 400 naming every bad one)."""
    service = _service(request)
    fields = _Fields(body, FIELDS)
    url_why = "must be an https:// URL without credentials" + (
        " (or http:// to a loopback address)" if service.allow_http_loopback else ""
    )
    values: dict[str, Any] = {
        "url": fields.get("url", _url(service), url_why, required=create),
        "types": fields.get(
            "types", _types, f"must be a list of at most {MAX_TYPES} event type prefixes"
        ),
        "enabled": fields.get("enabled", _flag, "must be true or false"),
        "verify_tls": fields.get("verify_tls", _flag, "must be true or false"),
        "description": fields.get(
            "description", _description, f"must be at most {MAX_DESCRIPTION} characters"
        ),
    }
    scope = _scope(fields, request.app[SCOPES_KEY]())
    fields.done()
    changes = {key: value for key, value in values.items() if key in body}
    if not isinstance(scope, Keep):
        changes["scope"] = scope
    return changes


@routes.get("/v1/webhooks")
async def get_webhooks(request: web.Request) -> web.Response:
    """Every webhook (without secrets)."""
    hooks = _service(request).hooks.values()
    return web.json_response({"webhooks": [hook.view() for hook in hooks]})


@routes.post("/v1/webhooks")
async def post_webhook(request: web.Request) -> web.Response:
    """Create a webhook; its secret is in the answer, this once."""
    service = _service(request)
    changes = _read(request, await json_body(request), create=True)
    hook = await service.create(request[IDENTITY_KEY], **changes)
    return web.json_response({**hook.view(), "secret": hook.secret}, status=201, headers=_NO_STORE)


@routes.get("/v1/webhooks/{id}")
async def get_webhook(request: web.Request) -> web.Response:
    """One webhook."""
    return web.json_response(_hook(request).view())


@routes.patch("/v1/webhooks/{id}")
async def patch_webhook(request: web.Request) -> web.Response:
    """Change a webhook."""
    hook = _hook(request)
    changes = _read(request, await json_body(request), create=False)
    new = await _service(request).update(request[IDENTITY_KEY], hook.id, **changes)
    return web.json_response(new.view())


@routes.delete("/v1/webhooks/{id}")
async def delete_webhook(request: web.Request) -> web.Response:
    """Remove a webhook and its outbox."""
    hook = _hook(request)
    await _service(request).delete(request[IDENTITY_KEY], hook.id)
    return web.Response(status=204)


@routes.get("/v1/webhooks/{id}/deliveries")
async def get_deliveries(request: web.Request) -> web.Response:
    """The webhook's stored deliveries (``?status=pending|dead``)."""
    hook = _hook(request)
    status = request.query.get("status") or None
    if status is not None and status not in STATUSES:
        why = "must be one of " + ", ".join(STATUSES)
        raise ApiError(400, f"status {why}", [("status", why)])
    rows = await _service(request).deliveries(hook.id, status)
    return page(request, "deliveries", [row.view() for row in rows])


@routes.post("/v1/webhooks/{id}/deliveries/replay")
async def replay_all(request: web.Request) -> web.Response:
    """Queue every dead delivery of the webhook again."""
    hook = _hook(request)
    count = await _service(request).replay(request[IDENTITY_KEY], hook.id)
    return web.json_response({"replayed": count}, status=202)


@routes.post("/v1/webhooks/{id}/deliveries/{delivery_id}/replay")
async def replay_one(request: web.Request) -> web.Response:
    """Queue one dead delivery again."""
    hook = _hook(request)
    text = request.match_info["delivery_id"]
    if not text.isdigit() or len(text) > 18:
        raise ApiError(404, f"unknown delivery: {text[:64]}")
    try:
        count = await _service(request).replay(request[IDENTITY_KEY], hook.id, int(text))
    except UnknownDeliveryError:
        raise ApiError(404, f"no dead delivery {text} for webhook {hook.id}") from None
    return web.json_response({"replayed": count}, status=202)
