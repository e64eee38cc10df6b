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
  the next call on; ``PATCH /api/v1/routes/{name}`` with any of those keys (null removes one)
  changes it where it is in the order, checked as a new one; ``DELETE /api/v1/routes/{name}``:
  204;
- ``GET /api/v1/disposition-sets``: ``{"disposition_sets": [...]}``, the named lists of
  dispositions campaigns refer to (``disposition_set``); ``POST`` ``{"name", "dispositions"}``
  (201), ``GET``, ``PATCH`` ``{"dispositions"}`` and ``DELETE`` of
  ``/api/v1/disposition-sets/{name}`` (409 while a campaign names it); a set is ``{"name",
  "dispositions", "campaigns", "origin", "created", "updated"}``; a change reaches the
  campaigns that name it at once (and the agent pages' calls of theirs);
- ``GET /api/v1/pause-reasons``: ``{"reasons": [...]}``, the reasons an agent may pause with
  (the agent page's menu, the supervisors' and the API's pause); ``POST`` ``{"name"}`` adds one
  (201), ``DELETE /api/v1/pause-reasons/{name}`` removes one (an agent paused with it stays
  paused; 409 for the last one); both answer the list as it is.

An agent is ``{"name", "display_name", "disabled", "origin", "queues", "created", "updated"}``; a
queue is its name, every key of its TOML table, ``origin``, ``created`` and ``updated``. Invalid
input is a 400 problem document naming each field (for queues, the messages of
``omlmedia check-config``); a name taken or a change the running server cannot make, 409.

The create, change and delete routes of every kind are one handler each (`_Kind`, `KINDS`): a
kind says which keys its body may hold, how they become the directory method's arguments, and
which `Directory` methods create, change and delete it (they validate the whole, audit and
publish the ``admin.*`` event).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from omlmedia.admin_api import (
    MAX_LABEL,
    MAX_PASSWORD,
    MIN_PASSWORD,
    _Fields,
    _flag,
    _label,
    _name,
    _password,
)
from omlmedia.authz import IDENTITY_KEY
from omlmedia.directory import CAMPAIGN_KEYS, ROUTE_KEYS, Directory
from omlmedia.problems import ApiError, json_body
from queueing.config import _QUEUE_KEYS

__all__ = ["DIRECTORY_KEY", "KINDS", "routes"]

DIRECTORY_KEY: web.AppKey[Directory | None] = web.AppKey("directory")
_NAME_RULE = "must be 1-32 lower-case letters, digits, '_', '.', '-'"
_PASSWORD_RULE = f"must be {MIN_PASSWORD} to {MAX_PASSWORD} characters"
_LABEL_RULE = f"must be at most {MAX_LABEL} characters"

routes = web.RouteTableDef()


def _directory(request: web.Request) -> Directory:
    directory = request.app[DIRECTORY_KEY]
    if directory is None:
        raise ApiError(404, "agents and queues are not kept by this server (no data directory)")
    return directory


# -- the kinds of object and their create, change and delete routes -------------------------

Args = Callable[[_Fields], dict[str, Any]]
"""Reads a body (its errors left in the `_Fields`) into the directory method's arguments."""
Method = Callable[..., Awaitable[Any]]


def _settings(fields: _Fields) -> dict[str, Any]:
    """A created object's settings: the body but its name (the directory checks them)."""
    return {"settings": {key: value for key, value in fields.body.items() if key != "name"}}


def _changes(fields: _Fields) -> dict[str, Any]:
    """The settings a change sets (the directory keeps the others)."""
    return {"changes": dict(fields.body)}


def _new_agent(fields: _Fields) -> dict[str, Any]:
    password = fields.get("password", _password, _PASSWORD_RULE, required=True)
    display = fields.get("display_name", _label, _LABEL_RULE)
    return {
        "password": password,
        "display_name": display or "",
        "queues": fields.body.get("queues"),
    }


def _agent_changes(fields: _Fields) -> dict[str, Any]:
    return {
        "display_name": fields.get("display_name", _label, _LABEL_RULE),
        "password": fields.get("password", _password, _PASSWORD_RULE),
        "disabled": fields.get("disabled", _flag, "must be true or false"),
        "queues": fields.body.get("queues"),
    }


@dataclass(frozen=True, slots=True)
class _Kind:
    """One kind of the directory's objects: ``POST /v1/<path>`` creates one (201 and its view),
    ``PATCH /v1/<path>/{name}`` changes it (200 and its view), ``DELETE`` removes it (204)."""

    path: str
    keys: tuple[str, ...]
    """What a creating body may hold besides ``name``."""
    create: Method
    """``(directory, actor, name, **create_args(fields))``."""
    update: Method | None
    """``(directory, actor, name, **update_args(fields))``; None: no PATCH."""
    delete: Method
    docs: tuple[str, str, str]
    """The docstrings (the OpenAPI summaries) of the create, change and delete routes."""
    patch_keys: tuple[str, ...] | None = None
    """What a changing body may hold; None: the directory checks the keys."""
    create_args: Args = _settings
    update_args: Args = _changes
    listed: tuple[str, Callable[[Directory], list[dict[str, Any]]], str] | None = None
    """``GET /v1/<path>``: the key of the list in the answer, the list, its docstring."""
    read: tuple[Callable[[Directory, str], dict[str, Any]], str] | None = None
    """``GET /v1/<path>/{name}``: one (404 when unknown), its docstring."""


KINDS = (
    _Kind(
        "agents",
        ("password", "display_name", "queues"),
        Directory.create_agent,
        Directory.update_agent,
        Directory.delete_agent,
        (
            "Create an agent, with its password and queue memberships; it can log in at once.",
            "Change an agent: display name, password, disabled, queue memberships (replaced).",
            "Delete an agent and its memberships (refused while it has a call).",
        ),
        patch_keys=("display_name", "password", "disabled", "queues"),
        create_args=_new_agent,
        update_args=_agent_changes,
    ),
    _Kind(
        "queues",
        _QUEUE_KEYS,
        Directory.create_queue,
        Directory.update_queue,
        Directory.delete_queue,
        (
            "Create a queue with the settings of a ``[queues.<name>]`` table.",
            "Change some settings of a queue (strategy, members, any ACD option); waiting "
            "callers keep their place.",
            "Delete a queue (refused while callers wait in it or the file sends callers to it).",
        ),
        patch_keys=_QUEUE_KEYS,
    ),
    _Kind(
        "campaigns",
        CAMPAIGN_KEYS,
        Directory.create_campaign,
        Directory.update_campaign,
        Directory.delete_campaign,
        (
            "Create a campaign with the settings of a ``[[campaigns]]`` table.",
            "Change some settings of a campaign (queue, recording, CRM URL, dispositions...); "
            "the calls that arrive from now on get them.",
            "Delete a campaign (refused while a route sends callers to it).",
        ),
    ),
    _Kind(
        "routes",
        ROUTE_KEYS,
        Directory.create_route,
        Directory.update_route,
        Directory.delete_route,
        (
            "Create a route (a DID: ``user``, or a ``pattern``) to a target.",
            "Change a route (its target, strip, prefix, what it matches; null removes a key), "
            "checked as a new one; it keeps its place in the order.",
            "Delete a route; calls it already routed go on.",
        ),
        patch_keys=ROUTE_KEYS,
        listed=(
            "routes",
            lambda directory: [row.view() for row in directory.route_rows()],
            "The routes created through the API, in the order they are matched.",
        ),
    ),
    _Kind(
        "disposition-sets",
        ("dispositions",),
        Directory.create_disposition_set,
        Directory.update_disposition_set,
        Directory.delete_disposition_set,
        (
            "Create a named set of dispositions, which campaigns may name (disposition_set).",
            "Change a set's dispositions: the campaigns that name it take them at once.",
            "Delete a disposition set (refused while a campaign names it).",
        ),
        patch_keys=("dispositions",),
        listed=(
            "disposition_sets",
            Directory.disposition_sets,
            "The named sets of dispositions, oldest first, with the campaigns that use each.",
        ),
        read=(Directory.disposition_set_view, "A disposition set and the campaigns that use it."),
    ),
)
"""Every kind the directory's routes create, change and delete."""


def _add_routes(kind: _Kind) -> None:
    async def create(request: web.Request) -> web.Response:
        directory = _directory(request)
        fields = _Fields(await json_body(request), ("name", *kind.keys))
        name = fields.get("name", _name, _NAME_RULE, required=True)
        args = kind.create_args(fields)
        fields.done()
        view = await kind.create(directory, request[IDENTITY_KEY], name, **args)
        return web.json_response(view, status=201)

    async def update(request: web.Request) -> web.Response:
        directory = _directory(request)
        body = await json_body(request)
        fields = _Fields(body, tuple(body) if kind.patch_keys is None else kind.patch_keys)
        args = kind.update_args(fields)
        fields.done()
        assert kind.update is not None
        name = request.match_info["name"]
        view = await kind.update(directory, request[IDENTITY_KEY], name, **args)
        return web.json_response(view)

    async def delete(request: web.Request) -> web.Response:
        directory = _directory(request)
        await kind.delete(directory, request[IDENTITY_KEY], request.match_info["name"])
        return web.Response(status=204)

    async def listed(request: web.Request) -> web.Response:
        assert kind.listed is not None
        key, views, _ = kind.listed
        return web.json_response({key: views(_directory(request))})

    async def read(request: web.Request) -> web.Response:
        assert kind.read is not None
        return web.json_response(kind.read[0](_directory(request), request.match_info["name"]))

    if kind.listed is not None:
        listed.__doc__ = kind.listed[2]
        routes.get(f"/v1/{kind.path}")(listed)
    if kind.read is not None:
        read.__doc__ = kind.read[1]
        routes.get(f"/v1/{kind.path}/{{name}}")(read)
    for verb, handler, doc in zip(
        ("post", "patch", "delete"), (create, update, delete), kind.docs, strict=True
    ):
        if verb == "patch" and kind.update is None:
            continue
        handler.__doc__ = doc
        handler.__name__ = handler.__qualname__ = f"{verb}_{kind.path.replace('-', '_')}"
        path = f"/v1/{kind.path}" if verb == "post" else f"/v1/{kind.path}/{{name}}"
        routes.route(verb.upper(), path)(handler)


for _kind in KINDS:
    _add_routes(_kind)


# -- queue members --------------------------------------------------------------------------


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
