"""Live call control for integrations: the agents' calls in progress, and hang-up, hold, blind
transfer and recording pause/resume (PCI) on them through the API.

The routes act on the agent desk (`omlmedia.agents.AgentDesk`) the server puts on its root
application under `DESK_KEY` (read through ``request.config_dict``: the API is a sub-application
of the agent pages' one); without a desk every route answers 404. A call is one an agent's
page carries (`AgentDesk.calls`); its scope is its queue and campaign, checked in the handler
(403 out of scope, as recordings are). Each command is the agent page's own (the page sees it
at once), done as the token's identity, and written to the audit log (``call.<action>``, the
call's view before and after); the recording's pauses are also published as
``call.recording`` events and listed in the call's record (a ``recording`` leg with its
``gaps``).

Routes (all JSON):

- ``GET /api/v1/calls``: ``{"calls": [call, ...]}``, the calls in the token's scope;
  ``GET /api/v1/calls/{id}``: one;
- ``POST /api/v1/calls`` ``{"agent", "number", "campaign" | "trunk"}``: click-to-call
  (`omlmedia.originate`): 202 with the call's id and its ``Location`` at once; the agent's page
  rings (the agent must be logged in and Ready: else 409), and when the agent answers the
  number is dialled through the campaign's trunk (its ``trunk``, else the default one) or the
  trunk named. The token must cover the agent and the campaign; naming a trunk directly is for
  an unscoped token only (a scoped integration dials what its campaigns allow). Progress is
  published as ``call.click_to_call`` events;
- ``POST /api/v1/calls/{id}/hangup``, ``.../hold``, ``.../unhold``: the call afterwards (a
  hung-up call: ``state`` ``ended``);
- ``POST /api/v1/calls/{id}/transfer`` ``{"to": target}``: a blind transfer to a number, a
  queue, a campaign or an agent (what the agent's page may transfer to);
- ``POST /api/v1/calls/{id}/recording/pause`` and ``.../resume``: the call afterwards, with
  ``recording`` (``on``, ``paused``), ``offset`` (seconds into the file) and ``gaps``.

404 for an unknown call (or one no agent has answered yet is 409), 409 for a state the
command does not fit (a call not recorded, not answered, that cannot be transferred).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from omlmedia.admin_api import BOOK_KEY
from omlmedia.agents import AgentCall, AgentDesk
from omlmedia.authz import IDENTITY_KEY, SCOPES_KEY, Identity
from omlmedia.config import Config
from omlmedia.desk import DIALABLE
from omlmedia.problems import ApiError
from omlmedia.problems import json_body as _body
from webrtc.exceptions import CommandError

__all__ = ["DESK_KEY", "call_view", "routes"]

DESK_KEY: web.AppKey[AgentDesk] = web.AppKey("desk", AgentDesk)
"""The agent desk, on the root application."""

_TARGET = re.compile(r"[A-Za-z0-9+*#._@:-]{1,64}")
"""A transfer target, as the agent page's ``transfer-blind`` takes it."""

_STATUS = {
    "unknown-call": 404,
    "bad-target": 400,
}
"""The HTTP status of a desk refusal (409 otherwise: the call's state does not allow it)."""

routes = web.RouteTableDef()


def _desk(request: web.Request) -> AgentDesk:
    desk = request.config_dict.get(DESK_KEY)
    if desk is None:
        raise ApiError(404, "this server has no agent desk: there are no live calls")
    return desk


def _where(ac: AgentCall) -> tuple[str, str]:
    """The call's queue and campaign (for scopes)."""
    qc = ac.queued
    if qc is None:  # another node's queue caller has its campaign in the offer (`info`)
        return ac.info.queue, ac.info.campaign
    campaign = qc.campaign.name if qc.campaign is not None else ""
    return qc.queue, campaign


def call_view(desk: AgentDesk, ac: AgentCall) -> dict[str, Any]:
    """A live call as the API shows it."""
    queue, campaign = _where(ac)
    if ac.answered_at is None:
        state = "ringing"
    else:
        state = "held" if ac.held else "active"
    return {
        "call_id": ac.call_id,
        "agent": ac.agent,
        "state": state,
        "direction": ac.info.direction,
        "caller_number": ac.info.caller_number,
        "caller_name": ac.info.caller_name,
        "queue": queue,
        "campaign": campaign,
        "offered_at": ac.offered_at,
        "answered_at": ac.answered_at,
        **desk.recording_view(ac),
    }


def _in_scope(request: web.Request, ac: AgentCall) -> bool:
    identity: Identity = request[IDENTITY_KEY]
    queue, campaign = _where(ac)
    return identity.covers(request.app[SCOPES_KEY](), queue=queue, campaign=campaign)


def _call(request: web.Request) -> tuple[AgentDesk, AgentCall]:
    """The path's call: the answered one among its agents' (a ringall offer rings several)."""
    desk = _desk(request)
    call_id = request.match_info["id"]
    found = [ac for (cid, _), ac in desk.calls.items() if cid == call_id and not ac.consult_of]
    if not found:
        raise ApiError(404, f"no live call {call_id}")
    answered = [ac for ac in found if ac.answered_at is not None]
    ac = answered[0] if answered else found[0]
    if not _in_scope(request, ac):
        raise ApiError(403, f"the call {call_id} is out of scope")
    return desk, ac


@routes.get("/v1/calls")
async def get_calls(request: web.Request) -> web.Response:
    """The agents' calls in progress (ringing, active, held) in the token's scope."""
    desk = _desk(request)
    views = [call_view(desk, ac) for ac in desk.calls.values() if _in_scope(request, ac)]
    views.sort(key=lambda v: (v["offered_at"], v["call_id"], v["agent"]))
    return web.json_response({"calls": views})


@routes.get("/v1/calls/{id}")
async def get_call(request: web.Request) -> web.Response:
    """One live call."""
    desk, ac = _call(request)
    return web.json_response(call_view(desk, ac))


def _field(body: dict[str, Any], name: str, pattern: re.Pattern[str], why: str) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise ApiError(400, f"{name} {why}", [(name, why)])
    return value


_NAME = re.compile(r"[A-Za-z0-9_.@-]{1,64}")


@routes.post("/v1/calls")
async def post_call(request: web.Request) -> web.Response:
    """Click-to-call: ring the agent's page, then dial the number when the agent answers."""
    body = await _body(request)
    unknown = sorted(set(body) - {"agent", "number", "campaign", "trunk"})
    if unknown:
        raise ApiError(400, "unknown fields", [(name, "not a field of a call") for name in unknown])
    agent = _field(body, "agent", _NAME, "must be an agent's name")
    number = _field(body, "number", DIALABLE, "must be 1-32 digits, '+', '*' or '#'")
    if ("campaign" in body) == ("trunk" in body):
        why = "give a campaign or a trunk (one of them)"
        raise ApiError(400, why, [("campaign", why), ("trunk", why)])
    desk = _desk(request)
    identity: Identity = request[IDENTITY_KEY]
    scopes = request.app[SCOPES_KEY]()
    if agent not in desk.hub.accounts.accounts:
        raise ApiError(404, f"unknown agent: {agent}", [("agent", "no such agent")])
    if not identity.covers_agent(scopes, agent):
        raise ApiError(403, f"the agent {agent} is out of scope")
    campaign = trunk = ""
    if "campaign" in body:
        campaign = _field(body, "campaign", _NAME, "must be a campaign's name")
        known = desk.acd.campaigns.get(campaign) if desk.acd is not None else None
        if known is None:
            raise ApiError(404, f"unknown campaign: {campaign}", [("campaign", "no such campaign")])
        if not identity.covers(scopes, campaign=campaign, queue=known.queue):
            raise ApiError(403, f"the campaign {campaign} is out of scope")
        trunk = known.trunk
    else:
        trunk = _field(body, "trunk", _NAME, "must be a trunk's name")
        config = request.config_dict.get(_config_key())
        if config is None or all(t.name != trunk for t in config.trunks):
            raise ApiError(404, f"unknown trunk: {trunk}", [("trunk", "no such trunk")])
        if identity.scope is not None:
            raise ApiError(
                403,
                "a scoped token dials through its campaigns, not a trunk",
                [("trunk", "give one of the token's campaigns instead")],
            )
    try:
        call_id = desk.originate(agent, number, trunk=trunk, campaign=campaign)
    except CommandError as exc:
        fields = [("agent", exc.reason)] if exc.code in ("not-ready", "no-page") else []
        raise ApiError(409, exc.reason, fields) from None
    view = {"call_id": call_id, "agent": agent, "number": number, "campaign": campaign}
    view |= {"trunk": trunk, "state": "ringing"}
    book = request.app[BOOK_KEY]
    if book is not None:
        await book.call(book.record, identity, "call.originate", call_id, None, view)
    location = f"/api/v1/calls/{call_id}"
    return web.json_response(view, status=202, headers={"Location": location})


def _config_key() -> web.AppKey[Config]:
    from omlmedia.api import CONFIG_KEY  # the API module imports this one

    return CONFIG_KEY


async def _control(
    request: web.Request,
    action: str,
    act: Callable[[AgentDesk, AgentCall, dict[str, Any], Identity], Awaitable[None]],
    *,
    answered: bool = True,
) -> web.Response:
    """Run `act` on the path's call as the token's identity, audit it, answer the call's view
    afterwards."""
    body = await _body(request)
    desk, ac = _call(request)
    if answered and ac.answered_at is None:
        raise ApiError(409, f"the call {ac.call_id} is not answered yet")
    identity: Identity = request[IDENTITY_KEY]
    before = call_view(desk, ac)
    try:
        await act(desk, ac, body, identity)
    except CommandError as exc:
        status = _STATUS.get(exc.code, 409)
        fields = [("to", exc.reason)] if exc.code == "bad-target" else []
        raise ApiError(status, exc.reason, fields) from None
    live = desk.calls.get((ac.call_id, ac.agent))
    after = call_view(desk, live) if live is not None else {**before, "state": "ended"}
    book = request.app[BOOK_KEY]
    if book is not None:
        await book.call(book.record, identity, f"call.{action}", ac.call_id, before, after)
    return web.json_response(after)


async def _hangup(desk: AgentDesk, ac: AgentCall, body: dict[str, Any], by: Identity) -> None:
    await desk.hangup(ac.agent, ac.call_id)


async def _hold(desk: AgentDesk, ac: AgentCall, body: dict[str, Any], by: Identity) -> None:
    await desk.hold(ac.agent, ac.call_id)


async def _unhold(desk: AgentDesk, ac: AgentCall, body: dict[str, Any], by: Identity) -> None:
    await desk.resume(ac.agent, ac.call_id)


async def _transfer(desk: AgentDesk, ac: AgentCall, body: dict[str, Any], by: Identity) -> None:
    to = body.get("to")
    if not isinstance(to, str) or not _TARGET.fullmatch(to):
        why = "must be a number, a queue, a campaign or an agent (1-64 characters)"
        raise ApiError(400, f"to {why}", [("to", why)])
    await desk.transfer_blind(ac.agent, ac.call_id, to)


def _recording(paused: bool) -> Callable[..., Awaitable[None]]:
    async def act(desk: AgentDesk, ac: AgentCall, body: dict[str, Any], by: Identity) -> None:
        await desk.pause_recording(ac, paused, by, audit=False)

    return act


@routes.post("/v1/calls/{id}/hangup")
async def post_hangup(request: web.Request) -> web.Response:
    """Hang up the call (the agent goes to wrap-up as if it had)."""
    return await _control(request, "hangup", _hangup)


@routes.post("/v1/calls/{id}/hold")
async def post_hold(request: web.Request) -> web.Response:
    """Put the call on hold (music on hold to the caller)."""
    return await _control(request, "hold", _hold)


@routes.post("/v1/calls/{id}/unhold")
async def post_unhold(request: web.Request) -> web.Response:
    """Take the call off hold."""
    return await _control(request, "unhold", _unhold)


@routes.post("/v1/calls/{id}/transfer")
async def post_transfer(request: web.Request) -> web.Response:
    """Blind transfer of the call to ``to``."""
    return await _control(request, "transfer", _transfer)


@routes.post("/v1/calls/{id}/recording/pause")
async def post_recording_pause(request: web.Request) -> web.Response:
    """Pause the call's recording (silence from now on, the gap marked in its record)."""
    return await _control(request, "recording-pause", _recording(True))


@routes.post("/v1/calls/{id}/recording/resume")
async def post_recording_resume(request: web.Request) -> web.Response:
    """Resume the call's recording."""
    return await _control(request, "recording-resume", _recording(False))
