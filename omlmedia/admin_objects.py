"""The directory's routes: agents and queues created, changed and deleted while the server carries
calls (admin only, see `omlmedia.authz.RULES`; the model is `omlmedia.directory`).

- ``POST /api/v1/agents`` ``{"name", "password", "display_name"?, "queues"?}``: 201 and the
  agent; ``queues`` lists queue names or ``{"queue", "penalty"}``;
- ``PATCH /api/v1/agents/{name}``: any of ``display_name``, ``password`` (a reset),
  ``disabled`` and ``queues`` (the list replaces the agent's memberships); the agent as it is;
- ``DELETE /api/v1/agents/{name}``: 204; 409 while the agent has a call;
- ``POST /api/v1/queues`` ``{"name", ...}`` with the keys of a ``[queues.<name>]`` table
  (``strategy``, ``members``, ``ring_timeout``... every option of the ACD): 201 and the queue;
- ``PATCH /api/v1/queues/{name}``: any of those keys, the others kept; the queue as it is;
- ``DELETE /api/v1/queues/{name}``: 204; 409 while callers wait in it or when the file's
  campaigns or routes (or another queue's overflow) send callers to it;
- ``PUT /api/v1/queues/{name}/members/{agent}`` ``{"penalty"?}`` and ``DELETE`` of the same
  path: the queue as it is;
- ``POST /api/v1/campaigns`` ``{"name", "queue", ...}`` with the keys of a ``[[campaigns]]``
  table: 201 and the campaign; a route to ``campaign:<name>`` reaches it at once;
- ``PATCH /api/v1/campaigns/{name}``: any of ``queue``, ``recording``, ``url`` (the CRM page),
  ``dispositions``, ``callback``, ``trunk``, ``recording_retention_days``; the campaign as it is
  (calls that arrive from now on get it);
- ``DELETE /api/v1/campaigns/{name}``: 204; 409 naming the route (the file's or the API's) that
  sends callers to it;
- ``GET /api/v1/routes``: the routes created through the API, in the order they are matched
  (before the file's); ``POST /api/v1/routes`` ``{"name", "user" | "pattern", "target",
  "strip"?, "prefix"?}`` (a ``[[routes]]`` table and a name): 201 and the route, matched from
  the next call on; ``DELETE /api/v1/routes/{name}``: 204;
- ``GET /api/v1/pause-reasons``: ``{"reasons": [...]}``, the reasons an agent may pause with
  (the agent page's menu, the supervisors' and the API's pause); ``POST`` ``{"name"}`` adds one
  (201), ``DELETE /api/v1/pause-reasons/{name}`` removes one (an agent paused with it stays
  paused; 409 for the last one); both answer the list as it is.

An agent is ``{"name", "display_name", "disabled", "origin", "queues", "created", "updated"}``; a
queue is its name, every key of its TOML table, ``origin``, ``created`` and ``updated``. Invalid
input is a 400 problem document naming each field (for queues, the messages of
``omlmedia check-config``); a name taken or a change the running server cannot make, 409.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from omlmedia.accounts import NAME
from omlmedia.admin_api import MAX_LABEL, MAX_PASSWORD, MIN_PASSWORD, _Fields
from omlmedia.authz import IDENTITY_KEY
from omlmedia.directory import CAMPAIGN_KEYS, ROUTE_KEYS, Directory
from omlmedia.problems import ApiError, json_body
from queueing.config import _QUEUE_KEYS

__all__ = ["DIRECTORY_KEY", "routes"]

DIRECTORY_KEY: web.AppKey[Directory | None] = web.AppKey("directory")
_NAME_RULE = "must be 1-32 lower-case letters, digits, '_', '.', '-'"

routes = web.RouteTableDef()


def _directory(request: web.Request) -> Directory:
    directory = request.app[DIRECTORY_KEY]
    if directory is None:
        raise ApiError(404, "agents and queues are not kept by this server (no data directory)")
    return directory


def _name(value: Any) -> str | None:
    return value if isinstance(value, str) and NAME.fullmatch(value) else None


def _password(value: Any) -> str | None:
    ok = isinstance(value, str) and MIN_PASSWORD <= len(value) <= MAX_PASSWORD
    return value if ok else None


def _label(value: Any) -> str | None:
    return value if isinstance(value, str) and len(value) <= MAX_LABEL else None


def _flag(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None


_PASSWORD_RULE = f"must be {MIN_PASSWORD} to {MAX_PASSWORD} characters"
_LABEL_RULE = f"must be at most {MAX_LABEL} characters"


# -- agents ---------------------------------------------------------------------------------


@routes.post("/v1/agents")
async def post_agent(request: web.Request) -> web.Response:
    """Create an agent, with its password and queue memberships; it can log in at once."""
    directory = _directory(request)
    fields = _Fields(await json_body(request), ("name", "password", "display_name", "queues"))
    name = fields.get("name", _name, _NAME_RULE, required=True)
    password = fields.get("password", _password, _PASSWORD_RULE, required=True)
    display = fields.get("display_name", _label, _LABEL_RULE)
    queues = fields.body.get("queues")
    fields.done()
    assert name is not None and password is not None
    view = await directory.create_agent(
        request[IDENTITY_KEY], name, password, display_name=display or "", queues=queues
    )
    return web.json_response(view, status=201)


@routes.patch("/v1/agents/{name}")
async def patch_agent(request: web.Request) -> web.Response:
    """Change an agent: display name, password, disabled, queue memberships (replaced)."""
    directory = _directory(request)
    fields = _Fields(await json_body(request), ("display_name", "password", "disabled", "queues"))
    display = fields.get("display_name", _label, _LABEL_RULE)
    password = fields.get("password", _password, _PASSWORD_RULE)
    disabled = fields.get("disabled", _flag, "must be true or false")
    queues = fields.body.get("queues")
    fields.done()
    view = await directory.update_agent(
        request[IDENTITY_KEY],
        request.match_info["name"],
        display_name=display,
        password=password,
        disabled=disabled,
        queues=queues,
    )
    return web.json_response(view)


@routes.delete("/v1/agents/{name}")
async def delete_agent(request: web.Request) -> web.Response:
    """Delete an agent and its memberships (refused while it has a call)."""
    directory = _directory(request)
    await directory.delete_agent(request[IDENTITY_KEY], request.match_info["name"])
    return web.Response(status=204)


# -- queues ---------------------------------------------------------------------------------


@routes.post("/v1/queues")
async def post_queue(request: web.Request) -> web.Response:
    """Create a queue with the settings of a ``[queues.<name>]`` table."""
    directory = _directory(request)
    body = await json_body(request)
    fields = _Fields(body, ("name", *_QUEUE_KEYS))
    name = fields.get("name", _name, _NAME_RULE, required=True)
    fields.done()
    assert name is not None
    settings = {key: value for key, value in body.items() if key != "name"}
    view = await directory.create_queue(request[IDENTITY_KEY], name, settings)
    return web.json_response(view, status=201)


@routes.patch("/v1/queues/{name}")
async def patch_queue(request: web.Request) -> web.Response:
    """Change some settings of a queue (strategy, members, any ACD option); waiting callers
    keep their place."""
    directory = _directory(request)
    body = await json_body(request)
    _Fields(body, _QUEUE_KEYS).done()
    view = await directory.update_queue(request[IDENTITY_KEY], request.match_info["name"], body)
    return web.json_response(view)


@routes.delete("/v1/queues/{name}")
async def delete_queue(request: web.Request) -> web.Response:
    """Delete a queue (refused while callers wait in it or the file sends callers to it)."""
    directory = _directory(request)
    await directory.delete_queue(request[IDENTITY_KEY], request.match_info["name"])
    return web.Response(status=204)


@routes.put("/v1/queues/{name}/members/{agent}")
async def put_member(request: web.Request) -> web.Response:
    """Make the agent a member of the queue with ``penalty`` (default 0), or change it."""
    directory = _directory(request)
    fields = _Fields(await json_body(request), ("penalty",))
    penalty = fields.body.get("penalty", 0)
    if isinstance(penalty, bool) or not isinstance(penalty, int) or not 0 <= penalty <= 10**6:
        fields.error("penalty", "must be an integer from 0 to 1000000")
    fields.done()
    view = await directory.set_member(
        request[IDENTITY_KEY], request.match_info["name"], request.match_info["agent"], penalty
    )
    return web.json_response(view)


@routes.post("/v1/campaigns")
async def post_campaign(request: web.Request) -> web.Response:
    """Create a campaign with the settings of a ``[[campaigns]]`` table."""
    directory = _directory(request)
    body = await json_body(request)
    fields = _Fields(body, ("name", *CAMPAIGN_KEYS))
    name = fields.get("name", _name, _NAME_RULE, required=True)
    fields.done()
    assert name is not None
    settings = {key: value for key, value in body.items() if key != "name"}
    view = await directory.create_campaign(request[IDENTITY_KEY], name, settings)
    return web.json_response(view, status=201)


@routes.delete("/v1/campaigns/{name}")
async def delete_campaign(request: web.Request) -> web.Response:
    """Delete a campaign (refused while a route sends callers to it)."""
    directory = _directory(request)
    await directory.delete_campaign(request[IDENTITY_KEY], request.match_info["name"])
    return web.Response(status=204)


@routes.get("/v1/routes")
async def get_routes(request: web.Request) -> web.Response:
    """The routes created through the API, in the order they are matched."""
    directory = _directory(request)
    return web.json_response({"routes": [row.view() for row in directory.route_rows()]})


@routes.post("/v1/routes")
async def post_route(request: web.Request) -> web.Response:
    """Create a route (a DID: ``user``, or a ``pattern``) to a target."""
    directory = _directory(request)
    body = await json_body(request)
    fields = _Fields(body, ("name", *ROUTE_KEYS))
    name = fields.get("name", _name, _NAME_RULE, required=True)
    fields.done()
    assert name is not None
    settings = {key: value for key, value in body.items() if key != "name"}
    view = await directory.create_route(request[IDENTITY_KEY], name, settings)
    return web.json_response(view, status=201)


@routes.delete("/v1/routes/{name}")
async def delete_route(request: web.Request) -> web.Response:
    """Delete a route; calls it already routed go on."""
    directory = _directory(request)
    await directory.delete_route(request[IDENTITY_KEY], request.match_info["name"])
    return web.Response(status=204)


@routes.patch("/v1/campaigns/{name}")
async def patch_campaign(request: web.Request) -> web.Response:
    """Change some settings of a campaign (queue, recording, CRM URL, dispositions...); the
    calls that arrive from now on get them."""
    directory = _directory(request)
    body = await json_body(request)
    view = await directory.update_campaign(request[IDENTITY_KEY], request.match_info["name"], body)
    return web.json_response(view)


@routes.delete("/v1/queues/{name}/members/{agent}")
async def delete_member(request: web.Request) -> web.Response:
    """Take the agent out of the queue."""
    directory = _directory(request)
    view = await directory.remove_member(
        request[IDENTITY_KEY], request.match_info["name"], request.match_info["agent"]
    )
    return web.json_response(view)


# -- pause reasons --------------------------------------------------------------------------

MAX_REASON = 64
_REASON_RULE = f"must be 1 to {MAX_REASON} printable characters"


def _reason(value: Any) -> str | None:
    ok = isinstance(value, str) and 1 <= len(value) <= MAX_REASON and value.isprintable()
    return value if ok and value.strip() == value else None


@routes.get("/v1/pause-reasons")
async def get_pause_reasons(request: web.Request) -> web.Response:
    """The reasons an agent may pause with, in their order."""
    directory = _directory(request)
    return web.json_response({"reasons": directory.pause_reasons()})


@routes.post("/v1/pause-reasons")
async def post_pause_reason(request: web.Request) -> web.Response:
    """Add a pause reason: the agent pages offer it at once."""
    directory = _directory(request)
    fields = _Fields(await json_body(request), ("name",))
    name = fields.get("name", _reason, _REASON_RULE, required=True)
    fields.done()
    assert name is not None
    reasons = await directory.create_pause_reason(request[IDENTITY_KEY], name)
    return web.json_response({"reasons": reasons}, status=201)


@routes.delete("/v1/pause-reasons/{name}")
async def delete_pause_reason(request: web.Request) -> web.Response:
    """Remove a pause reason (agents paused with it stay paused)."""
    directory = _directory(request)
    reasons = await directory.delete_pause_reason(request[IDENTITY_KEY], request.match_info["name"])
    return web.json_response({"reasons": reasons})
