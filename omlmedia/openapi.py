"""The OpenAPI 3.1 document of the HTTPS API, generated from the code
(``GET /api/v1/openapi.json``).

Theory of operation. The paths and methods come from the application's router (every route
under ``/api/`` and every route whose rule names a permission, such as ``/metrics``), so a new
route cannot be missing; each operation's summary and description come from its handler's
docstring; its security, permission, scope and the roles that may call it come from
`omlmedia.authz.RULES`; its parameters, request body and responses come from `OPERATIONS`, the
one declarative table here, keyed like `RULES` by (method, path template). A route without an
entry in `OPERATIONS` is still listed, with ``x-undocumented: true``, and
`tests/omlmedia/test_openapi.py` fails naming it. Refusals are problem documents (RFC 9457,
`omlmedia.problems`): the shared ``Problem`` schema.

The document is public (no token): it describes the API, it holds no data, and the docs page
(``/api/docs``) reads it before anyone has a token.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from omlmedia.authz import ROLE_PERMISSIONS, RULES, Role, Rule, Scope
from omlmedia.problems import MAX_PAGE, PROBLEM_TYPE, ApiError
from webrtc.app import UI_DIR

__all__ = ["OPERATIONS", "Operation", "document", "routes"]

Schema = dict[str, Any]

_OBJECT: Schema = {"type": "object"}
_NAME_PATTERN = "^[a-z0-9_.-]{1,32}$"


def _nullable(schema: Schema) -> Schema:
    return {"anyOf": [schema, {"type": "null"}]}


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


SCHEMAS: dict[str, Schema] = {
    "Problem": {
        "type": "object",
        "description": "A refusal (RFC 9457 problem document).",
        "required": ["type", "title", "status", "detail"],
        "properties": {
            "type": {"type": "string"},
            "title": {"type": "string"},
            "status": {"type": "integer"},
            "detail": {"type": "string"},
            "error": {"type": "string", "description": "The same text as detail."},
            "errors": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["field", "detail"],
                    "properties": {"field": {"type": "string"}, "detail": {"type": "string"}},
                },
            },
            "missing_permission": {"type": "string"},
            "missing_scope": {"type": "string"},
        },
    },
    "Webhook": {
        "type": "object",
        "required": [
            "id",
            "url",
            "types",
            "scope",
            "enabled",
            "verify_tls",
            "description",
            "created",
            "updated",
        ],
        "properties": {
            "id": {"type": "string"},
            "url": {"type": "string"},
            "types": {"type": "array", "items": {"type": "string"}},
            "scope": _nullable({"type": "array", "items": {"type": "string"}}),
            "enabled": {"type": "boolean"},
            "verify_tls": {"type": "boolean"},
            "description": {"type": "string"},
            "created": {"type": "number"},
            "updated": {"type": "number"},
            "secret": {
                "type": "string",
                "description": "whsec_ and base64: in the answer to the POST only.",
            },
        },
    },
    "WebhookDelivery": {
        "type": "object",
        "required": ["id", "webhook", "call_id", "status", "attempts", "last_error", "event"],
        "properties": {
            "id": {"type": "integer", "description": "The event's id."},
            "webhook": {"type": "string"},
            "call_id": {"type": "string"},
            "status": {"type": "string", "enum": ["pending", "dead"]},
            "attempts": {"type": "integer"},
            "last_error": {"type": "string"},
            "updated": {"type": "number"},
            "event": _nullable({"type": "object"}),
        },
    },
    "Scope": _nullable({"type": "array", "items": {"type": "string"}}),
    "Account": {
        "type": "object",
        "required": [
            "name",
            "role",
            "display_name",
            "scope",
            "disabled",
            "origin",
            "created",
            "updated",
        ],
        "properties": {
            "name": {"type": "string"},
            "role": {"type": "string", "enum": [r.value for r in Role]},
            "display_name": {"type": "string"},
            "scope": _ref("Scope"),
            "disabled": {"type": "boolean"},
            "origin": {"type": "string"},
            "created": _nullable({"type": "number"}),
            "updated": _nullable({"type": "number"}),
        },
    },
    "Token": {
        "type": "object",
        "required": [
            "id",
            "account",
            "integration",
            "role",
            "scope",
            "label",
            "created",
            "created_by",
            "expires",
            "revoked",
            "active",
        ],
        "properties": {
            "id": {"type": "string"},
            "account": _nullable({"type": "string"}),
            "integration": _nullable({"type": "string"}),
            "role": _nullable({"type": "string"}),
            "scope": _ref("Scope"),
            "label": {"type": "string"},
            "created": _nullable({"type": "number"}),
            "created_by": {"type": "string"},
            "expires": _nullable({"type": "number"}),
            "revoked": _nullable({"type": "number"}),
            "active": {"type": "boolean"},
            "token": {
                "type": "string",
                "description": "The secret: in the creation's answer only.",
            },
        },
    },
    "Queue": {
        "type": "object",
        "description": "A queue, live and over the current statistics period (or the span).",
        "required": ["queue", "waiting", "ringing", "members", "stats"],
        "properties": {
            "queue": {"type": "string"},
            "strategy": {"type": "string"},
            "waiting": {"type": "integer"},
            "ringing": {"type": "integer"},
            "callbacks": {"type": "integer"},
            "longest_wait": {"type": "number"},
            "members": {"type": "array", "items": _OBJECT},
            "members_by_state": _OBJECT,
            "stats": _OBJECT,
        },
    },
    "Wallboard": {
        "type": "object",
        "description": (
            "The supervisors' wallboard: today's figures (the site's day, from the queue log) "
            "of each queue and agent in scope, the live callers and calls, and the event id "
            "to resume the event stream after (docs/supervisor.md)."
        ),
        "required": ["now", "day", "day_start", "timezone", "last_event_id", "queues", "agents"],
        "properties": {
            "now": {"type": "number"},
            "day": {"type": "string"},
            "day_start": {"type": "number"},
            "timezone": {"type": "string"},
            "last_event_id": {"type": "integer"},
            "mos_threshold": {"type": "number"},
            "quality_interval": {"type": "number"},
            "pause_reasons": {"type": "array", "items": {"type": "string"}},
            "queues": {"type": "array", "items": {"type": "object"}},
            "agents": {"type": "array", "items": {"type": "object"}},
            "calls": {"type": "array", "items": {"type": "object"}},
        },
    },
    "Agent": {
        "type": "object",
        "description": "An agent: state, reason, since, current call, figures.",
        "required": ["agent", "state"],
        "properties": {
            "agent": {"type": "string"},
            "name": {"type": "string"},
            "state": {"type": "string"},
            "reason": {"type": "string"},
            "since": _nullable({"type": "number"}),
            "queues": {"type": "array", "items": {"type": "string"}},
            "connected": {"type": "boolean"},
            "call": _nullable(_OBJECT),
            "stats": _OBJECT,
        },
    },
    "Report": {
        "type": "object",
        "description": "A report: its columns in order and one object per row (the same cells "
        "as its CSV).",
        "required": ["report", "since", "until", "columns", "rows"],
        "properties": {
            "report": {"type": "string"},
            "since": {"type": "number"},
            "until": {"type": "number"},
            "timezone": {"type": "string"},
            "from": {"type": "string", "description": "since, in the site's time."},
            "to": {"type": "string", "description": "until, in the site's time."},
            "interval": {"type": "string"},
            "columns": {"type": "array", "items": {"type": "string"}},
            "rows": {"type": "array", "items": {"type": "object"}},
        },
    },
    "Recording": {
        "type": "object",
        "required": ["call_id", "start", "time", "audio", "media_type", "size"],
        "properties": {
            "call_id": {"type": "string"},
            "start": {"type": "string", "description": "In the site's time."},
            "time": {"type": "number"},
            "caller": {"type": "string"},
            "agent": {"type": "string"},
            "campaign": {"type": "string"},
            "queue": {"type": "string"},
            "disposition": {"type": "string"},
            "duration": {"type": "number", "description": "Talk seconds."},
            "min_mos": _nullable({"type": "number"}),
            "size": {"type": "integer"},
            "media_type": {"type": "string"},
            "audio": {"type": "string", "description": "Its audio route."},
        },
    },
    "AgentDefinition": {
        "type": "object",
        "description": "An agent as the directory keeps it (no password).",
        "required": ["name", "display_name", "disabled", "origin", "queues", "created", "updated"],
        "properties": {
            "name": {"type": "string"},
            "display_name": {"type": "string"},
            "disabled": {"type": "boolean"},
            "origin": {"type": "string", "enum": ["config", "api"]},
            "queues": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["queue", "penalty"],
                    "properties": {"queue": {"type": "string"}, "penalty": {"type": "integer"}},
                },
            },
            "created": {"type": "number"},
            "updated": {"type": "number"},
        },
    },
    "QueueDefinition": {
        "type": "object",
        "description": "A queue's settings: the keys of its [queues.<name>] table.",
        "required": ["name", "strategy", "members", "origin", "created", "updated"],
        "properties": {
            "name": {"type": "string"},
            "strategy": {"type": "string"},
            "members": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["agent", "penalty"],
                    "properties": {"agent": {"type": "string"}, "penalty": {"type": "integer"}},
                },
            },
            "overflow": _OBJECT,
            "escalation": {"type": "array", "items": _OBJECT},
            "origin": {"type": "string", "enum": ["config", "api"]},
            "created": {"type": "number"},
            "updated": {"type": "number"},
        },
    },
    "CampaignDefinition": {
        "type": "object",
        "description": "A campaign's settings: the keys of its [[campaigns]] table.",
        "required": ["name", "queue", "recording", "url", "dispositions", "callback", "origin"],
        "properties": {
            "name": {"type": "string"},
            "queue": {"type": "string"},
            "recording": {"type": "boolean"},
            "url": {"type": "string"},
            "dispositions": {"type": "array", "items": {"type": "string"}},
            "callback": {"type": "boolean"},
            "trunk": {"type": "string"},
            "recording_retention_days": {"type": "integer"},
            "callback_min_digits": {"type": "integer"},
            "callback_max_digits": {"type": "integer"},
            "callback_international": {"type": "boolean"},
            "callback_one_per_number": {"type": "boolean"},
            "callback_expiry": {"type": "number"},
            "origin": {"type": "string", "enum": ["config", "api"]},
            "created": {"type": "number"},
            "updated": {"type": "number"},
        },
    },
    "RouteDefinition": {
        "type": "object",
        "description": "A route created through the API: a [[routes]] table and its name.",
        "required": ["name", "target", "origin"],
        "properties": {
            "name": {"type": "string"},
            "user": {"type": "string"},
            "pattern": {"type": "string"},
            "target": {"type": "string"},
            "strip": {"type": "integer"},
            "prefix": {"type": "string"},
            "origin": {"type": "string", "enum": ["api"]},
            "created": {"type": "number"},
            "updated": {"type": "number"},
        },
    },
    "Originated": {
        "type": "object",
        "description": "A click-to-call placed: the agent's page rings.",
        "required": ["call_id", "agent", "number", "campaign", "trunk", "state"],
        "properties": {
            name: {"type": "string"} for name in "call_id agent number campaign trunk state".split()
        },
    },
    "LiveCall": {
        "type": "object",
        "description": "An agent's call in progress (its recording: on, paused or empty).",
        "required": ["call_id", "agent", "state", "recording", "gaps"],
        "properties": {
            **{
                name: {"type": "string"}
                for name in (
                    "call_id agent direction caller_number caller_name queue campaign"
                ).split()
            },
            "state": {"type": "string", "enum": ["ringing", "active", "held", "ended"]},
            "offered_at": {"type": "number"},
            "answered_at": _nullable({"type": "number"}),
            "recording": {"type": "string", "enum": ["", "on", "paused"]},
            "offset": _nullable({"type": "number"}),
            "gaps": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["start", "end"],
                    "properties": {"start": {"type": "number"}, "end": {"type": "number"}},
                },
            },
        },
    },
    "CallRecord": {
        "type": "object",
        "required": ["call_id", "start", "end", "duration", "billsec", "legs"],
        "properties": {
            **{
                name: {"type": "string"}
                for name in (
                    "call_id direction caller caller_name callee target trunk campaign queue "
                    "agent disposition notes hangup_by cause recording"
                ).split()
            },
            "start": {"type": "number"},
            "end": {"type": "number"},
            "answer": _nullable({"type": "number"}),
            "duration": {"type": "number"},
            "billsec": {"type": "number"},
            "legs": {"type": "array", "items": _OBJECT},
        },
    },
    "QueueLogEntry": {
        "type": "object",
        "required": ["time", "event", "call_id", "queue", "agent", "data"],
        "properties": {
            "time": {"type": "number"},
            "event": {"type": "string"},
            "call_id": {"type": "string"},
            "queue": {"type": "string"},
            "agent": {"type": "string"},
            "data": _OBJECT,
        },
    },
    "AuditEntry": {
        "type": "object",
        "required": ["id", "time", "actor", "role", "action", "target", "before", "after"],
        "properties": {
            "id": {"type": "integer"},
            "time": {"type": "number"},
            "actor": {"type": "string"},
            "role": {"type": "string"},
            "action": {"type": "string"},
            "target": {"type": "string"},
            "before": _nullable(_OBJECT),
            "after": _nullable(_OBJECT),
        },
    },
}
"""The shared schemas (``#/components/schemas``)."""


def _page_of(key: str, item: str) -> Schema:
    return {
        "type": "object",
        "required": [key, "total", "offset", "limit", "next"],
        "properties": {
            key: {"type": "array", "items": _ref(item)},
            "total": {"type": "integer"},
            "offset": {"type": "integer"},
            "limit": {"type": "integer"},
            "next": _nullable({"type": "integer"}),
        },
    }


def _list_of(key: str, item: str) -> Schema:
    return {
        "type": "object",
        "required": [key],
        "properties": {key: {"type": "array", "items": _ref(item)}},
    }


def _query(name: str, schema: Schema, description: str, *, empty: bool = False) -> Schema:
    parameter = {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
    }
    if empty:
        parameter["allowEmptyValue"] = True
        parameter["description"] = description + " Empty: the default."
    return parameter


def _path(name: str, description: str) -> Schema:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "schema": {"type": "string"},
        "description": description,
    }


_TIME = {"type": "number", "minimum": 0}
_SPAN = (
    _query("since", _TIME, "Unix time (seconds), included.", empty=True),
    _query("until", _TIME, "Unix time (seconds), excluded; not before since.", empty=True),
)
_PAGING = (
    _query(
        "offset",
        {"type": "integer", "minimum": 0, "maximum": 2**31},
        "First item (default 0).",
        empty=True,
    ),
    _query(
        "limit",
        {"type": "integer", "minimum": 1, "maximum": MAX_PAGE},
        "Items per page (default 100).",
        empty=True,
    ),
)
_QUEUE_FILTER = _query(
    "queue", {"type": "string"}, "Only this queue (must be in the token's scope)."
)
_AGENT_FILTER = _query("agent", {"type": "string"}, "Only this agent.")
_CAMPAIGN_FILTER = _query(
    "campaign", {"type": "string"}, "Only this campaign (must be in the token's scope)."
)
_REPORT_SPAN = (
    _query(
        "day",
        {"type": "string", "format": "date"},
        "The site's day (YYYY-MM-DD, in [site] timezone); without day nor since/until: today.",
        empty=True,
    ),
    _query(
        "days",
        {"type": "integer", "minimum": 1, "maximum": 92},
        "Days from day (default 1).",
        empty=True,
    ),
    _query("since", _TIME, "Unix time (seconds), included; with until.", empty=True),
    _query(
        "until", _TIME, "Unix time (seconds), excluded; after since, at most 92 days.", empty=True
    ),
)
_FORMAT = _query(
    "format",
    {"type": "string", "enum": ["json", "csv"]},
    "json (default) or csv (the same cells; Accept: text/csv works too).",
    empty=True,
)
_NO_RECORDS = "No queues are configured: there are no records."


def _report(*parameters: Schema) -> Operation:
    return Operation(
        parameters=(*_REPORT_SPAN, *parameters, _FORMAT),
        responses={200: _ref("Report")},
        problems={404: _NO_RECORDS},
        alternates=("text/csv",),
    )


@dataclass(frozen=True, slots=True)
class Operation:
    """What `OPERATIONS` says of one route: its `parameters` (OpenAPI parameter objects), its
    JSON `body` schema (None: no body), its successful answers (`responses`: status -> schema,
    None for an empty body) and the refusals it can give besides 400, 401 and 403
    (`problems`: status -> when)."""

    parameters: tuple[Schema, ...] = ()
    body: Schema | None = None
    responses: Mapping[int, Schema | None] = field(default_factory=dict)
    problems: Mapping[int, str] = field(default_factory=dict)
    body_required: bool = False
    """The route refuses a request without a body (400)."""
    content_type: str = "application/json"
    alternates: tuple[str, ...] = ()
    """Other content types of the successful answer (a report's ``text/csv``)."""
    stream: bool = False
    """The answer is a stream (SSE or WebSocket): documented, not fuzzed."""


_NO_QUEUES = "No queues are configured, or an unknown name."
_NO_BOOK = "Accounts are not kept by this server, or an unknown name or id."
_SUPERVISION = Operation(
    parameters=(_path("name", "The agent."),),
    body={"type": "object", "description": "Nothing, or an empty object."},
    responses={200: _ref("Agent")},
    problems={
        404: "Unknown agent, or no queues configured.",
        409: "The agent's state does not allow it.",
    },
)
_CALL_CONTROL = Operation(
    parameters=(_path("id", "The call."),),
    body={"type": "object", "description": "Nothing, or an empty object."},
    responses={200: _ref("LiveCall")},
    problems={
        404: "No such live call, or no agent desk.",
        409: "The call's state does not allow it (not answered, not recorded...).",
    },
)
_SCOPE_BODY: Schema = {
    "anyOf": [{"type": "array", "items": {"type": "string"}, "maxItems": 256}, {"type": "null"}],
    "description": "Campaign and queue names the configuration knows, or null for every one.",
}
_ROLE_BODY: Schema = {"type": "string", "enum": [r.value for r in Role if r is not Role.AGENT]}

_NO_DIRECTORY = "Agents and queues are not kept by this server, or an unknown name."
_MEMBERSHIPS: Schema = {
    "type": "array",
    "items": {
        "anyOf": [
            {"type": "string"},
            {
                "type": "object",
                "required": ["queue"],
                "additionalProperties": False,
                "properties": {
                    "queue": {"type": "string"},
                    "penalty": {"type": "integer", "minimum": 0, "maximum": 1000000},
                },
            },
        ]
    },
    "description": "Queue names, or {queue, penalty}.",
}
_SECONDS: Schema = {"type": "number", "minimum": 0, "maximum": 604800}
_COUNT: Schema = {"type": "integer", "minimum": 0, "maximum": 1000000}
_PAUSE_REASONS: Schema = {
    "type": "object",
    "description": "The reasons an agent may pause with, in their order.",
    "required": ["reasons"],
    "properties": {"reasons": {"type": "array", "items": {"type": "string"}}},
}
_CAMPAIGN_SETTINGS: dict[str, Schema] = {
    "queue": {"type": "string"},
    "recording": {"type": "boolean"},
    "url": {"type": "string"},
    "dispositions": {"type": "array", "items": {"type": "string"}},
    "callback": {"type": "boolean"},
    "trunk": {"type": "string"},
    "recording_retention_days": {"type": "integer", "minimum": 0, "maximum": 36500},
    "callback_min_digits": {"type": "integer", "minimum": 1, "maximum": 20},
    "callback_max_digits": {"type": "integer", "minimum": 1, "maximum": 20},
    "callback_international": {"type": "boolean"},
    "callback_one_per_number": {"type": "boolean"},
    "callback_expiry": {"type": "number", "exclusiveMinimum": 0, "maximum": 604800},
}
"""A campaign's settings (a ``[[campaigns]]`` table but its name)."""

_QUEUE_SETTINGS: dict[str, Schema] = {
    "strategy": {
        "type": "string",
        "enum": [
            "ringall",
            "leastrecent",
            "fewestcalls",
            "random",
            "rrmemory",
            "rrordered",
            "linear",
            "wrandom",
            "longest-idle",
        ],
    },
    "members": {
        "type": "array",
        "items": {
            "anyOf": [
                {"type": "string"},
                {
                    "type": "object",
                    "required": ["agent"],
                    "additionalProperties": False,
                    "properties": {
                        "agent": {"type": "string"},
                        "penalty": _COUNT,
                    },
                },
            ]
        },
    },
    "ring_timeout": _SECONDS,
    "retry": _SECONDS,
    "wrapup": _SECONDS,
    "autopause": _COUNT,
    "max_callers": _COUNT,
    "max_wait": _SECONDS,
    "join_empty": {"type": "boolean"},
    "leave_when_empty": {"type": "boolean"},
    "overflow": {
        "type": "object",
        "description": "Exactly one of queue, agent, number (with trunk), record, hangup.",
    },
    "music_on_hold": {"type": "string"},
    "announce_frequency": _SECONDS,
    "service_level": _SECONDS,
    "max_penalty": {"type": "integer", "minimum": -1, "maximum": 1000000},
    "escalation": {
        "type": "array",
        "items": {
            "type": "object",
            "required": ["after", "max_penalty"],
            "additionalProperties": False,
            "properties": {"after": _SECONDS, "max_penalty": _COUNT},
        },
    },
}
_QUEUE_PROBLEMS = {
    404: _NO_DIRECTORY,
    409: "The running server cannot make this change now (callers wait, the file uses it).",
}

_NO_HOOKS = "Webhooks are not kept by this server, or an unknown id."
_HOOK_ID = _path("id", "The webhook.")
_WEBHOOK_BODY: Schema = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "url": {"type": "string", "maxLength": 2048, "description": "An https:// URL."},
        "types": {
            "type": "array",
            "items": {"type": "string", "pattern": "^[a-z0-9_.]{1,64}$"},
            "maxItems": 32,
            "description": "Event type prefixes (empty: every event).",
        },
        "scope": _SCOPE_BODY,
        "enabled": {"type": "boolean"},
        "verify_tls": {"type": "boolean"},
        "description": {"type": "string", "maxLength": 256},
    },
}
_REPLAYED: Schema = {
    "type": "object",
    "required": ["replayed"],
    "properties": {"replayed": {"type": "integer"}},
}

OPERATIONS: dict[tuple[str, str], Operation] = {
    ("GET", "/api/v1/health"): Operation(
        responses={
            200: {
                "type": "object",
                "required": ["status"],
                "properties": {"status": {"const": "ok"}},
            }
        }
    ),
    ("GET", "/api/v1/status"): Operation(
        responses={200: {"type": "object", "description": "Live counters."}}
    ),
    ("GET", "/api/v1/queues"): Operation(
        parameters=_SPAN, responses={200: _list_of("queues", "Queue")}, problems={404: _NO_QUEUES}
    ),
    ("GET", "/api/v1/queues/{name}"): Operation(
        parameters=(_path("name", "The queue."), *_SPAN),
        responses={200: _ref("Queue")},
        problems={404: _NO_QUEUES},
    ),
    ("GET", "/api/v1/wallboard"): Operation(
        parameters=(
            _query(
                "queue",
                {"type": "string"},
                "Only these queues (repeatable or comma-separated; each known and in scope).",
            ),
            _query(
                "campaign",
                {"type": "string"},
                "Only the queues of these campaigns (repeatable or comma-separated).",
            ),
        ),
        responses={200: _ref("Wallboard")},
        problems={404: "No queues are configured."},
    ),
    ("GET", "/api/v1/agents"): Operation(
        parameters=_SPAN, responses={200: _list_of("agents", "Agent")}, problems={404: _NO_QUEUES}
    ),
    ("GET", "/api/v1/agents/{name}"): Operation(
        parameters=(_path("name", "The agent."), *_SPAN),
        responses={200: _ref("Agent")},
        problems={404: _NO_QUEUES},
    ),
    ("POST", "/api/v1/agents/{name}/pause"): Operation(
        parameters=_SUPERVISION.parameters,
        body={
            "type": "object",
            "properties": {
                "reason": {"type": "string", "minLength": 1, "maxLength": 64, "pattern": "\\S"}
            },
        },
        responses=_SUPERVISION.responses,
        problems=_SUPERVISION.problems,
    ),
    ("POST", "/api/v1/agents/{name}/unpause"): _SUPERVISION,
    ("POST", "/api/v1/agents/{name}/logout"): _SUPERVISION,
    ("GET", "/api/v1/calls/records"): Operation(
        parameters=(*_SPAN, _QUEUE_FILTER, _AGENT_FILTER, *_PAGING),
        responses={200: _page_of("records", "CallRecord")},
        problems={404: "No queues are configured: there are no records."},
    ),
    ("GET", "/api/v1/calls"): Operation(
        responses={200: _list_of("calls", "LiveCall")},
        problems={404: "This server has no agent desk."},
    ),
    ("POST", "/api/v1/calls"): Operation(
        body_required=True,
        body={
            "type": "object",
            "required": ["agent", "number"],
            "additionalProperties": False,
            "description": "One of campaign and trunk.",
            "properties": {
                "agent": {"type": "string", "pattern": "^[A-Za-z0-9_.@-]{1,64}$"},
                "number": {"type": "string", "pattern": "^[0-9+*#]{1,32}$"},
                "campaign": {"type": "string", "pattern": "^[A-Za-z0-9_.@-]{1,64}$"},
                "trunk": {"type": "string", "pattern": "^[A-Za-z0-9_.@-]{1,64}$"},
            },
        },
        responses={202: _ref("Originated")},
        problems={
            404: "Unknown agent, campaign or trunk, or no agent desk.",
            409: "The agent is not logged in and Ready.",
        },
    ),
    ("GET", "/api/v1/calls/{id}"): Operation(
        parameters=(_path("id", "The call."),),
        responses={200: _ref("LiveCall")},
        problems={404: "No such live call, or no agent desk."},
    ),
    ("POST", "/api/v1/calls/{id}/hangup"): _CALL_CONTROL,
    ("POST", "/api/v1/calls/{id}/hold"): _CALL_CONTROL,
    ("POST", "/api/v1/calls/{id}/unhold"): _CALL_CONTROL,
    ("POST", "/api/v1/calls/{id}/transfer"): Operation(
        parameters=_CALL_CONTROL.parameters,
        body_required=True,
        body={
            "type": "object",
            "required": ["to"],
            "properties": {
                "to": {"type": "string", "pattern": "^[A-Za-z0-9+*#._@:-]{1,64}$"},
            },
        },
        responses=_CALL_CONTROL.responses,
        problems=_CALL_CONTROL.problems,
    ),
    ("POST", "/api/v1/calls/{id}/recording/pause"): _CALL_CONTROL,
    ("POST", "/api/v1/calls/{id}/recording/resume"): _CALL_CONTROL,
    ("GET", "/api/v1/queue-log"): Operation(
        parameters=(
            *_SPAN,
            _QUEUE_FILTER,
            _AGENT_FILTER,
            _query("call_id", {"type": "string"}, "Only this call."),
            *_PAGING,
        ),
        responses={200: _page_of("entries", "QueueLogEntry")},
        problems={404: "No queues are configured: there are no records."},
    ),
    ("GET", "/api/v1/reports/agents"): _report(_QUEUE_FILTER, _AGENT_FILTER),
    ("GET", "/api/v1/reports/queues"): _report(
        _query(
            "interval",
            {"type": "string", "enum": ["15", "30", "60", "day"]},
            "Minutes of the site's clock, or its day (default 60).",
            empty=True,
        ),
        _query(
            "by",
            {"type": "string", "enum": ["queue", "campaign"]},
            "A row per queue (default) or per campaign.",
            empty=True,
        ),
        _QUEUE_FILTER,
        _CAMPAIGN_FILTER,
    ),
    ("GET", "/api/v1/reports/dispositions"): _report(_QUEUE_FILTER, _CAMPAIGN_FILTER),
    ("GET", "/api/v1/reports/calls"): _report(_QUEUE_FILTER, _CAMPAIGN_FILTER, _AGENT_FILTER),
    ("GET", "/api/v1/recordings"): Operation(
        parameters=(
            *_REPORT_SPAN,
            _QUEUE_FILTER,
            _CAMPAIGN_FILTER,
            _AGENT_FILTER,
            _query("caller", {"type": "string"}, "A part of the caller's number."),
            _query("disposition", {"type": "string"}, "Only this disposition."),
            _query(
                "min_duration",
                {"type": "number", "minimum": 0, "maximum": 1e9},
                "At least these talk seconds.",
                empty=True,
            ),
            _query(
                "max_duration",
                {"type": "number", "minimum": 0, "maximum": 1e9},
                "At most these talk seconds.",
                empty=True,
            ),
            _query(
                "min_mos",
                {"type": "number", "minimum": 1, "maximum": 5},
                "Every scored leg at least this MOS.",
                empty=True,
            ),
            *_PAGING,
        ),
        responses={200: _page_of("recordings", "Recording")},
        problems={404: _NO_RECORDS},
    ),
    ("GET", "/api/v1/recordings/{id}/audio"): Operation(
        parameters=(
            _path("id", "The call."),
            _query(
                "download",
                {"type": "string", "enum": ["0", "1", "true", "false"]},
                "1: as a file to save (Content-Disposition: attachment).",
                empty=True,
            ),
        ),
        responses={200: None, 206: None},
        problems={
            404: "No such call, no recording of it, or its file is gone.",
            416: "A range beyond the file.",
        },
        content_type="audio/ogg",
    ),
    ("GET", "/api/v1/accounts"): Operation(
        responses={200: _list_of("accounts", "Account")}, problems={404: _NO_BOOK}
    ),
    ("POST", "/api/v1/accounts"): Operation(
        body_required=True,
        body={
            "type": "object",
            "required": ["name", "role", "password"],
            "additionalProperties": False,
            "properties": {
                "name": {"type": "string", "pattern": _NAME_PATTERN},
                "role": _ROLE_BODY,
                "password": {"type": "string", "minLength": 8, "maxLength": 1024},
                "display_name": {"type": "string", "maxLength": 64},
                "scope": _SCOPE_BODY,
            },
        },
        responses={201: _ref("Account")},
        problems={404: _NO_BOOK, 409: "The name is taken."},
    ),
    ("GET", "/api/v1/accounts/{name}"): Operation(
        parameters=(_path("name", "The account."),),
        responses={200: _ref("Account")},
        problems={404: _NO_BOOK},
    ),
    ("PATCH", "/api/v1/accounts/{name}"): Operation(
        parameters=(_path("name", "The account."),),
        body={
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "role": _ROLE_BODY,
                "display_name": {"type": "string", "maxLength": 64},
                "password": {"type": "string", "minLength": 8, "maxLength": 1024},
                "scope": _SCOPE_BODY,
                "disabled": {"type": "boolean"},
            },
        },
        responses={200: _ref("Account")},
        problems={
            404: _NO_BOOK,
            409: "The account does not allow this change (one of the configuration).",
        },
    ),
    ("DELETE", "/api/v1/accounts/{name}"): Operation(
        parameters=(_path("name", "The account."),),
        responses={204: None},
        problems={404: _NO_BOOK, 409: "The account is one of the configuration."},
    ),
    ("GET", "/api/v1/tokens"): Operation(
        parameters=(_query("account", {"type": "string"}, "Only this account's tokens."),),
        responses={200: _list_of("tokens", "Token")},
        problems={404: _NO_BOOK},
    ),
    ("POST", "/api/v1/tokens"): Operation(
        body_required=True,
        body={
            "type": "object",
            "description": "Either account, or integration with role.",
            "additionalProperties": False,
            "properties": {
                "account": {"type": "string", "pattern": _NAME_PATTERN},
                "integration": {"type": "string", "pattern": _NAME_PATTERN},
                "role": _ROLE_BODY,
                "scope": _SCOPE_BODY,
                "label": {"type": "string", "maxLength": 64},
                "expires": _nullable(
                    {"type": "number", "description": "Unix time, in the future."}
                ),
                "expires_in": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1e10},
            },
        },
        responses={201: _ref("Token")},
        problems={404: _NO_BOOK, 409: "The account cannot be given a token."},
    ),
    ("DELETE", "/api/v1/tokens/{id}"): Operation(
        parameters=(_path("id", "The token's id."),),
        responses={200: _ref("Token")},
        problems={404: _NO_BOOK, 409: "The configured token is changed in the configuration."},
    ),
    ("POST", "/api/v1/agents"): Operation(
        body_required=True,
        body={
            "type": "object",
            "required": ["name", "password"],
            "additionalProperties": False,
            "properties": {
                "name": {"type": "string", "pattern": _NAME_PATTERN},
                "password": {"type": "string", "minLength": 8, "maxLength": 1024},
                "display_name": {"type": "string", "maxLength": 64},
                "queues": _MEMBERSHIPS,
            },
        },
        responses={201: _ref("AgentDefinition")},
        problems={404: _NO_DIRECTORY, 409: "The name is taken."},
    ),
    ("PATCH", "/api/v1/agents/{name}"): Operation(
        parameters=(_path("name", "The agent."),),
        body={
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "display_name": {"type": "string", "maxLength": 64},
                "password": {"type": "string", "minLength": 8, "maxLength": 1024},
                "disabled": {"type": "boolean"},
                "queues": _MEMBERSHIPS,
            },
        },
        responses={200: _ref("AgentDefinition")},
        problems={404: _NO_DIRECTORY, 409: "The running server cannot make this change now."},
    ),
    ("DELETE", "/api/v1/agents/{name}"): Operation(
        parameters=(_path("name", "The agent."),),
        responses={204: None},
        problems={404: _NO_DIRECTORY, 409: "The agent is on a call."},
    ),
    ("POST", "/api/v1/queues"): Operation(
        body_required=True,
        body={
            "type": "object",
            "required": ["name"],
            "additionalProperties": False,
            "properties": {"name": {"type": "string", "pattern": _NAME_PATTERN}, **_QUEUE_SETTINGS},
        },
        responses={201: _ref("QueueDefinition")},
        problems={404: _NO_DIRECTORY, 409: "The name is taken."},
    ),
    ("PATCH", "/api/v1/queues/{name}"): Operation(
        parameters=(_path("name", "The queue."),),
        body={"type": "object", "additionalProperties": False, "properties": _QUEUE_SETTINGS},
        responses={200: _ref("QueueDefinition")},
        problems=_QUEUE_PROBLEMS,
    ),
    ("DELETE", "/api/v1/queues/{name}"): Operation(
        parameters=(_path("name", "The queue."),),
        responses={204: None},
        problems=_QUEUE_PROBLEMS,
    ),
    ("PUT", "/api/v1/queues/{name}/members/{agent}"): Operation(
        parameters=(_path("name", "The queue."), _path("agent", "The agent.")),
        body={
            "type": "object",
            "additionalProperties": False,
            "properties": {"penalty": _COUNT},
        },
        responses={200: _ref("QueueDefinition")},
        problems=_QUEUE_PROBLEMS,
    ),
    ("POST", "/api/v1/campaigns"): Operation(
        body_required=True,
        body={
            "type": "object",
            "required": ["name", "queue"],
            "additionalProperties": False,
            "properties": {
                "name": {"type": "string", "pattern": _NAME_PATTERN},
                **_CAMPAIGN_SETTINGS,
            },
        },
        responses={201: _ref("CampaignDefinition")},
        problems={404: _NO_DIRECTORY, 409: "The name is taken."},
    ),
    ("PATCH", "/api/v1/campaigns/{name}"): Operation(
        parameters=(_path("name", "The campaign."),),
        body={"type": "object", "additionalProperties": False, "properties": _CAMPAIGN_SETTINGS},
        responses={200: _ref("CampaignDefinition")},
        problems={404: "Unknown campaign, or the directory is not kept by this server."},
    ),
    ("DELETE", "/api/v1/campaigns/{name}"): Operation(
        parameters=(_path("name", "The campaign."),),
        responses={204: None},
        problems={
            404: "Unknown campaign, or the directory is not kept by this server.",
            409: "A route (the file's or the API's) sends callers to the campaign.",
        },
    ),
    ("GET", "/api/v1/routes"): Operation(
        responses={200: _list_of("routes", "RouteDefinition")}, problems={404: _NO_DIRECTORY}
    ),
    ("POST", "/api/v1/routes"): Operation(
        body_required=True,
        body={
            "type": "object",
            "required": ["name", "target"],
            "additionalProperties": False,
            "properties": {
                "name": {"type": "string", "pattern": _NAME_PATTERN},
                "user": {"type": "string"},
                "pattern": {"type": "string"},
                "target": {"type": "string"},
                "strip": {"type": "integer", "minimum": 0, "maximum": 64},
                "prefix": {"type": "string"},
            },
        },
        responses={201: _ref("RouteDefinition")},
        problems={404: _NO_DIRECTORY, 409: "The name is taken."},
    ),
    ("GET", "/api/v1/pause-reasons"): Operation(
        responses={200: _PAUSE_REASONS}, problems={404: _NO_DIRECTORY}
    ),
    ("POST", "/api/v1/pause-reasons"): Operation(
        body_required=True,
        body={
            "type": "object",
            "required": ["name"],
            "additionalProperties": False,
            "properties": {"name": {"type": "string", "minLength": 1, "maxLength": 64}},
        },
        responses={201: _PAUSE_REASONS},
        problems={404: _NO_DIRECTORY, 409: "The reason exists already."},
    ),
    ("DELETE", "/api/v1/pause-reasons/{name}"): Operation(
        parameters=(_path("name", "The pause reason."),),
        responses={200: _PAUSE_REASONS},
        problems={
            404: "Unknown pause reason, or the directory is not kept by this server.",
            409: "The last pause reason (agents could not pause).",
        },
    ),
    ("DELETE", "/api/v1/routes/{name}"): Operation(
        parameters=(_path("name", "The route."),),
        responses={204: None},
        problems={404: "Unknown route, or the directory is not kept by this server."},
    ),
    ("DELETE", "/api/v1/queues/{name}/members/{agent}"): Operation(
        parameters=(_path("name", "The queue."), _path("agent", "The agent.")),
        responses={200: _ref("QueueDefinition")},
        problems={404: "Unknown queue or agent, or the agent is not a member."},
    ),
    ("GET", "/api/v1/webhooks"): Operation(
        responses={200: _list_of("webhooks", "Webhook")}, problems={404: _NO_HOOKS}
    ),
    ("POST", "/api/v1/webhooks"): Operation(
        body_required=True,
        body={**_WEBHOOK_BODY, "required": ["url"]},
        responses={201: _ref("Webhook")},
        problems={404: _NO_HOOKS},
    ),
    ("GET", "/api/v1/webhooks/{id}"): Operation(
        parameters=(_HOOK_ID,), responses={200: _ref("Webhook")}, problems={404: _NO_HOOKS}
    ),
    ("PATCH", "/api/v1/webhooks/{id}"): Operation(
        parameters=(_HOOK_ID,),
        body=_WEBHOOK_BODY,
        responses={200: _ref("Webhook")},
        problems={404: _NO_HOOKS},
    ),
    ("DELETE", "/api/v1/webhooks/{id}"): Operation(
        parameters=(_HOOK_ID,), responses={204: None}, problems={404: _NO_HOOKS}
    ),
    ("GET", "/api/v1/webhooks/{id}/deliveries"): Operation(
        parameters=(
            _HOOK_ID,
            _query(
                "status",
                {"type": "string", "enum": ["pending", "dead"]},
                "Only deliveries in this state.",
                empty=True,
            ),
            *_PAGING,
        ),
        responses={200: _page_of("deliveries", "WebhookDelivery")},
        problems={404: _NO_HOOKS},
    ),
    ("POST", "/api/v1/webhooks/{id}/deliveries/replay"): Operation(
        parameters=(_HOOK_ID,),
        responses={202: _REPLAYED},
        problems={404: _NO_HOOKS},
    ),
    ("POST", "/api/v1/webhooks/{id}/deliveries/{delivery_id}/replay"): Operation(
        parameters=(_HOOK_ID, _path("delivery_id", "The delivery (its event's id).")),
        responses={202: _REPLAYED},
        problems={404: _NO_HOOKS + " Or no dead delivery with that id."},
    ),
    ("POST", "/api/v1/sessions"): Operation(
        body_required=True,
        body={
            "type": "object",
            "required": ["name", "password"],
            "additionalProperties": False,
            "properties": {
                "name": {"type": "string", "minLength": 1, "maxLength": 1024},
                "password": {"type": "string", "minLength": 1, "maxLength": 1024},
            },
        },
        responses={201: _ref("Token")},
        problems={
            401: "Wrong name or password.",
            404: "Password logins are not enabled.",
            409: "The account cannot log in here (an agent).",
            429: "Too many failures: the name or the source is locked out for a while.",
            503: "Too many password checks are running.",
        },
    ),
    ("GET", "/api/v1/audit"): Operation(
        parameters=(
            *_SPAN,
            _query("actor", {"type": "string"}, "Only this actor."),
            _query("action", {"type": "string"}, "Actions starting with this text."),
            _query("target", {"type": "string"}, "Only this target."),
            *_PAGING,
        ),
        responses={200: _page_of("entries", "AuditEntry")},
        problems={404: _NO_BOOK},
    ),
    ("GET", "/api/v1/events"): Operation(
        parameters=(
            _query(
                "since_id",
                {"type": "integer", "minimum": 0},
                "Resume after this event id (or Last-Event-ID).",
                empty=True,
            ),
            {
                "name": "Last-Event-ID",
                "in": "header",
                "required": False,
                "schema": {"type": "string"},
                "description": "What EventSource sends when it reconnects: as since_id.",
            },
            _query(
                "type",
                {"type": "string"},
                "Only these event types, by prefix (repeatable or comma-separated).",
            ),
            _query("queue", {"type": "string"}, "Only these queues (repeatable)."),
            _query("agent", {"type": "string"}, "Only these agents (repeatable): a screen-pop."),
            _query("campaign", {"type": "string"}, "Only these campaigns (repeatable)."),
        ),
        responses={101: None, 200: None},
        problems={
            404: "The event log is not running.",
            406: "Neither a WebSocket upgrade nor Accept: text/event-stream.",
        },
        content_type="text/event-stream",
        stream=True,
    ),
    ("GET", "/metrics"): Operation(responses={200: None}, content_type="text/plain"),
    ("GET", "/api/docs"): Operation(responses={200: None}, content_type="text/html"),
    ("GET", "/api/docs/{file}"): Operation(
        parameters=(_path("file", "apidocs.js or apidocs.css."),),
        responses={200: None},
        problems={404: "No such file."},
        content_type="text/javascript",
    ),
    ("GET", "/api/v1/openapi.json"): Operation(
        responses={200: {"type": "object", "required": ["openapi", "paths"]}}
    ),
}
"""Every documented API route (method, path template as aiohttp writes it)."""


def _roles(rule: Rule) -> list[str]:
    if rule.permission is None:
        return []
    return [role.value for role in Role if rule.permission in ROLE_PERMISSIONS[role]]


_SCOPE_WORDS = {
    Scope.NONE: "",
    Scope.GLOBAL: " Tokens with a scope are refused (403).",
    Scope.QUEUE: " The queue must be in the token's scope.",
    Scope.AGENT: " The agent must be a member of a queue in the token's scope.",
    Scope.FILTER: (
        " Lists only what the token's scope covers; a queue parameter out of scope is a 403."
    ),
}


def _problem(description: str) -> Schema:
    return {"description": description, "content": {PROBLEM_TYPE: {"schema": _ref("Problem")}}}


def _operation(method: str, path: str, handler: Any) -> Schema:
    doc = inspect.cleandoc(inspect.getdoc(handler) or "")
    summary, _, rest = doc.partition("\n\n")
    summary = " ".join(summary.split())
    rule = RULES.get((method, path))
    spec = OPERATIONS.get((method, path))
    out: Schema = {
        "operationId": f"{method.lower()}{path}".replace("/", "_")
        .replace("{", "")
        .replace("}", "")
        .replace("-", "_")
        .replace(".", "_"),
        "summary": summary or f"{method} {path}",
    }
    description = " ".join(rest.split())
    responses: Schema = {"400": _problem("A bad parameter or body, or a token in the URL.")}
    if rule is not None and rule.permission is not None:
        roles = _roles(rule)
        description += (
            f" Needs the permission {rule.permission} (roles: {', '.join(roles)})."
            + _SCOPE_WORDS[rule.scope]
        )
        out["security"] = [{"bearer": []}]
        out["x-permission"] = str(rule.permission)
        out["x-roles"] = roles
        out["x-scope"] = rule.scope.value
        responses["401"] = _problem("No valid bearer token.")
        responses["403"] = _problem("The token's role lacks the permission, or its scope the data.")
    elif rule is not None:
        description += " Public: no token."
        out["security"] = []
    else:
        responses["403"] = _problem("This route has no access rule.")
    out["description"] = description.strip()
    if spec is None:
        out["x-undocumented"] = True
        out["responses"] = responses
        return out
    if spec.parameters:
        out["parameters"] = list(spec.parameters)
    if spec.body is not None:
        out["requestBody"] = {
            "required": spec.body_required,
            "content": {"application/json": {"schema": spec.body}},
        }
        responses["413"] = _problem("The body is larger than the API accepts (1 MiB).")
    for status, schema in spec.responses.items():
        answer: Schema = {"description": "The WebSocket." if status == 101 else "Success."}
        if schema is not None or status == 200:
            answer["content"] = (
                {spec.content_type: {"schema": schema}}
                if schema is not None
                else {spec.content_type: {}}
            )
            for alternate in spec.alternates:
                answer["content"][alternate] = {"schema": {"type": "string"}}
        responses[str(status)] = answer
    for status, why in spec.problems.items():
        responses[str(status)] = _problem(why)
    if spec.stream:
        out["x-stream"] = True
    out["responses"] = responses
    return out


def api_routes(app: web.Application) -> list[tuple[str, str, Any]]:
    """Every (method, path template, handler) of the API in `app` (HEAD left out): the routes
    under ``/api/`` and those whose rule names a permission."""
    found = []
    for route in app.router.routes():
        resource = route.resource
        if resource is None or route.method == "HEAD":
            continue
        path = resource.canonical
        rule = RULES.get((route.method, path))
        if path.startswith("/api/") or (rule is not None and rule.permission is not None):
            found.append((route.method, path, route.handler))
    return sorted(found, key=lambda r: (r[1], r[0]))


def document(app: web.Application) -> Schema:
    """The OpenAPI 3.1 document of `app` (the root application)."""
    paths: dict[str, Schema] = {}
    for method, path, handler in api_routes(app):
        paths.setdefault(path, {})[method.lower()] = _operation(method, path, handler)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "omlmedia API",
            "version": "1",
            "description": (
                "The contact-center media server's HTTPS API. Send Authorization: Bearer <token>."
            ),
        },
        "paths": paths,
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
    }


routes = web.RouteTableDef()


@routes.get("/v1/openapi.json")
async def get_openapi(request: web.Request) -> web.Response:
    """This API's OpenAPI 3.1 document, generated from the code.

    Public: it describes the API and holds no data."""
    return web.json_response(document(request.match_info.apps[0]))


DOCS_FILES = {"apidocs.js": "text/javascript", "apidocs.css": "text/css"}
"""The docs page's own files (``/api/docs/<file>``)."""
DOCS_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


@routes.get("/docs")
async def get_docs(request: web.Request) -> web.StreamResponse:
    """The API's docs page: every operation of this document, rendered in the browser.

    Public, like the document it reads; no external file, no inline script."""
    response = web.FileResponse(UI_DIR / "apidocs" / "index.html", headers=DOCS_HEADERS)
    response.content_type = "text/html"
    return response


@routes.get("/docs/{file}")
async def get_docs_file(request: web.Request) -> web.StreamResponse:
    """A file of the docs page (its script or its style sheet)."""
    name = request.match_info["file"]
    if name not in DOCS_FILES:
        raise ApiError(404, f"no such file: {name[:64]}")
    response = web.FileResponse(UI_DIR / "apidocs" / name, headers=DOCS_HEADERS)
    response.content_type = DOCS_FILES[name]
    return response
