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
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from omlmedia.authz import ROLE_PERMISSIONS, RULES, Role, Rule, Scope
from omlmedia.problems import MAX_PAGE, PROBLEM_TYPE, ApiError
from webrtc.app import UI_DIR

__all__ = ["OPERATIONS", "Operation", "document", "routes"]

Schema = dict[str, Any]

_OBJECT: Schema = {"type": "object"}
_STRING: Schema = {"type": "string"}
_NUMBER: Schema = {"type": "number"}
_INTEGER: Schema = {"type": "integer"}
_BOOLEAN: Schema = {"type": "boolean"}
_NAME_PATTERN = "^[a-z0-9_.-]{1,32}$"


def _nullable(schema: Schema) -> Schema:
    return {"anyOf": [schema, {"type": "null"}]}


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _array(items: Schema) -> Schema:
    return {"type": "array", "items": items}


def _strings(names: str) -> dict[str, Schema]:
    """String properties, one per word of `names`."""
    return {name: _STRING for name in names.split()}


def _object(
    properties: Mapping[str, Schema], required: Iterable[str] = (), description: str = ""
) -> Schema:
    """An object schema: its `properties`, those `required` (in that order), a description."""
    schema: Schema = {"type": "object"}
    if description:
        schema["description"] = description
    required = list(required)
    if required:
        schema["required"] = required
    schema["properties"] = dict(properties)
    return schema


def _closed(
    properties: Mapping[str, Schema], required: Iterable[str] = (), description: str = ""
) -> Schema:
    """A request body: an `_object` that refuses any other key."""
    return {**_object(properties, required, description), "additionalProperties": False}


def _all(properties: Mapping[str, Schema], description: str = "") -> Schema:
    """An answer's object, every property required."""
    return _object(properties, properties, description)


_ORIGIN: Schema = {"type": "string", "enum": ["config", "api"]}
_TIMES: dict[str, Schema] = {"created": _NUMBER, "updated": _NUMBER}
_PERIOD_STATS = _object(
    {"start": _NUMBER, "end": _NUMBER, "retained_since": _nullable(_NUMBER)},
    ["start", "end", "retained_since"],
    "Figures over the whole statistics periods [start, end): the current one, or those the "
    "since/until span touches, from retained_since on (the ACD keeps about two days of periods; "
    "a span older than that is cut, empty with start = end when nothing of it is kept; "
    "/api/v1/reports covers any span from the queue log).",
)
_PROBLEM_FIELD = _all({"field": _STRING, "detail": _STRING})

SCHEMAS: dict[str, Schema] = {
    "Problem": _object(
        {
            "type": _STRING,
            "title": _STRING,
            "status": _INTEGER,
            "detail": _STRING,
            "error": {"type": "string", "description": "The same text as detail."},
            "errors": _array(_PROBLEM_FIELD),
            "missing_permission": _STRING,
            "missing_scope": _STRING,
        },
        ["type", "title", "status", "detail"],
        "A refusal (RFC 9457 problem document).",
    ),
    "Webhook": _object(
        {
            "id": _STRING,
            "url": _STRING,
            "types": _array(_STRING),
            "scope": _nullable(_array(_STRING)),
            "enabled": _BOOLEAN,
            "verify_tls": _BOOLEAN,
            "description": _STRING,
            **_TIMES,
            "secret": {
                "type": "string",
                "description": "whsec_ and base64: in the answer to the POST only.",
            },
        },
        "id url types scope enabled verify_tls description created updated".split(),
    ),
    "WebhookDelivery": _object(
        {
            "id": {"type": "integer", "description": "The event's id."},
            **_strings("webhook call_id"),
            "status": {"type": "string", "enum": ["pending", "dead"]},
            "attempts": _INTEGER,
            "last_error": _STRING,
            "updated": _NUMBER,
            "event": _nullable(_OBJECT),
        },
        "id webhook call_id status attempts last_error event".split(),
    ),
    "Scope": _nullable(_array(_STRING)),
    "Account": _object(
        {
            "name": _STRING,
            "role": {"type": "string", "enum": [r.value for r in Role]},
            "display_name": _STRING,
            "scope": _ref("Scope"),
            "disabled": _BOOLEAN,
            "origin": _STRING,
            "created": _nullable(_NUMBER),
            "updated": _nullable(_NUMBER),
        },
        "name role display_name scope disabled origin created updated".split(),
    ),
    "Token": _object(
        {
            "id": _STRING,
            "account": _nullable(_STRING),
            "integration": _nullable(_STRING),
            "role": _nullable(_STRING),
            "scope": _ref("Scope"),
            "label": _STRING,
            "created": _nullable(_NUMBER),
            "created_by": _STRING,
            "expires": _nullable(_NUMBER),
            "revoked": _nullable(_NUMBER),
            "active": _BOOLEAN,
            "token": {
                "type": "string",
                "description": "The secret: in the creation's answer only.",
            },
        },
        "id account integration role scope label created created_by expires revoked active".split(),
    ),
    "Queue": _object(
        {
            **_strings("queue strategy"),
            "waiting": _INTEGER,
            "ringing": _INTEGER,
            "callbacks": _INTEGER,
            "longest_wait": _NUMBER,
            "members": _array(_OBJECT),
            "members_by_state": _OBJECT,
            "stats": _PERIOD_STATS,
        },
        ["queue", "waiting", "ringing", "members", "stats"],
        "A queue, live and over the current statistics period (or the span).",
    ),
    "Wallboard": _object(
        {
            "node": {
                "type": "string",
                "description": "The node that served it, on a cluster with one ACD only; then "
                "every call and agent names its node too (docs/cluster.md).",
            },
            "now": _NUMBER,
            "day": _STRING,
            "day_start": _NUMBER,
            "timezone": _STRING,
            "last_event_id": _INTEGER,
            "mos_threshold": _NUMBER,
            "quality_interval": _NUMBER,
            "pause_reasons": _array(_STRING),
            "queues": _array(_OBJECT),
            "agents": _array(_OBJECT),
            "calls": _array(_OBJECT),
        },
        ["now", "day", "day_start", "timezone", "last_event_id", "queues", "agents"],
        "The supervisors' wallboard: today's figures (the site's day, from the queue log) "
        "of each queue and agent in scope, the live callers and calls, and the event id "
        "to resume the event stream after (docs/supervisor.md).",
    ),
    "Agent": _object(
        {
            **_strings("agent name state reason"),
            "since": _nullable(_NUMBER),
            "queues": _array(_STRING),
            "connected": _BOOLEAN,
            "call": _nullable(_OBJECT),
            "stats": _PERIOD_STATS,
        },
        ["agent", "state"],
        "An agent: state, reason, since, current call, figures.",
    ),
    "Report": _object(
        {
            "report": _STRING,
            "since": _NUMBER,
            "until": _NUMBER,
            "timezone": _STRING,
            "from": {"type": "string", "description": "since, in the site's time."},
            "to": {"type": "string", "description": "until, in the site's time."},
            "interval": _STRING,
            "columns": _array(_STRING),
            "rows": _array(_OBJECT),
        },
        ["report", "since", "until", "columns", "rows"],
        "A report: its columns in order and one object per row (the same cells as its CSV).",
    ),
    "Recording": _object(
        {
            "call_id": _STRING,
            "start": {"type": "string", "description": "In the site's time."},
            "time": _NUMBER,
            **_strings("caller agent campaign queue disposition"),
            "duration": {"type": "number", "description": "Talk seconds."},
            "min_mos": _nullable(_NUMBER),
            "size": _INTEGER,
            "media_type": _STRING,
            "audio": {"type": "string", "description": "Its audio route."},
            "gaps": {
                **_array(_all({"start": _NUMBER, "end": _NUMBER})),
                "description": "The recording's pauses (PCI): seconds into the file, silent.",
            },
            "segments": {
                **_array(
                    _all(
                        {
                            "segment": _INTEGER,
                            "agent": _STRING,
                            "size": _INTEGER,
                            "media_type": _STRING,
                            "audio": _STRING,
                            "gaps": _array(_all({"start": _NUMBER, "end": _NUMBER})),
                        }
                    )
                ),
                "description": "Each answered segment's recording still there, in order (a call"
                " requeued mid-call has one per agent who answered it; the first is the"
                " call's `audio`): `segment` is the audio and ticket routes' `segment`.",
            },
        },
        ["call_id", "start", "time", "audio", "media_type", "size", "gaps", "segments"],
    ),
    "AgentDefinition": _all(
        {
            "name": _STRING,
            "display_name": _STRING,
            "disabled": _BOOLEAN,
            "origin": _ORIGIN,
            "queues": _array(_all({"queue": _STRING, "penalty": _INTEGER})),
            **_TIMES,
        },
        "An agent as the directory keeps it (no password).",
    ),
    "QueueDefinition": _object(
        {
            **_strings("name strategy"),
            "members": _array(_all({"agent": _STRING, "penalty": _INTEGER})),
            "overflow": _OBJECT,
            "escalation": _array(_OBJECT),
            "origin": _ORIGIN,
            **_TIMES,
        },
        ["name", "strategy", "members", "origin", "created", "updated"],
        "A queue's settings: the keys of its [queues.<name>] table.",
    ),
    "CampaignDefinition": _object(
        {
            **_strings("name queue"),
            "recording": _BOOLEAN,
            "url": _STRING,
            "dispositions": _array(_STRING),
            "callback": _BOOLEAN,
            "trunk": _STRING,
            "recording_retention_days": _INTEGER,
            "callback_min_digits": _INTEGER,
            "callback_max_digits": _INTEGER,
            "callback_international": _BOOLEAN,
            "callback_one_per_number": _BOOLEAN,
            "callback_expiry": _NUMBER,
            "disposition_set": {
                "type": "string",
                "description": "The named set its dispositions come from (they win over its own).",
            },
            "origin": _ORIGIN,
            **_TIMES,
        },
        ["name", "queue", "recording", "url", "dispositions", "callback", "origin"],
        "A campaign's settings: the keys of its [[campaigns]] table.",
    ),
    "RouteDefinition": _object(
        {
            **_strings("name user pattern target"),
            "strip": _INTEGER,
            "prefix": _STRING,
            "origin": {"type": "string", "enum": ["api"]},
            **_TIMES,
        },
        ["name", "target", "origin"],
        "A route created through the API: a [[routes]] table and its name.",
    ),
    "DispositionSetDefinition": _all(
        {
            "name": _STRING,
            "dispositions": _array(_STRING),
            "campaigns": {**_array(_STRING), "description": "The campaigns that name it."},
            "origin": _ORIGIN,
            **_TIMES,
        },
        "A named set of dispositions: a [disposition_sets.<name>] table.",
    ),
    "Originated": _all(
        _strings("call_id agent number campaign trunk state"),
        "A click-to-call placed: the agent's page rings.",
    ),
    "LiveCall": _object(
        {
            **_strings("call_id agent direction caller_number caller_name queue campaign"),
            "state": {"type": "string", "enum": ["ringing", "active", "held", "ended"]},
            "offered_at": _NUMBER,
            "answered_at": _nullable(_NUMBER),
            "recording": {"type": "string", "enum": ["", "on", "paused"]},
            "offset": _nullable(_NUMBER),
            "gaps": _array(_all({"start": _NUMBER, "end": _NUMBER})),
        },
        ["call_id", "agent", "state", "recording", "gaps"],
        "An agent's call in progress (its recording: on, paused or empty).",
    ),
    "CallRecord": _object(
        {
            **_strings(
                "call_id direction caller caller_name callee target trunk campaign queue "
                "agent disposition notes hangup_by cause recording"
            ),
            "start": _NUMBER,
            "end": _NUMBER,
            "answer": _nullable(_NUMBER),
            "duration": _NUMBER,
            "billsec": _NUMBER,
            "legs": _array(_OBJECT),
        },
        ["call_id", "start", "end", "duration", "billsec", "legs"],
    ),
    "QueueLogEntry": _all(
        {"time": _NUMBER, **_strings("event call_id queue agent"), "data": _OBJECT}
    ),
    "AuditEntry": _all(
        {
            "id": _INTEGER,
            "time": _NUMBER,
            **_strings("actor role action target"),
            "before": _nullable(_OBJECT),
            "after": _nullable(_OBJECT),
        }
    ),
}
"""The shared schemas (``#/components/schemas``)."""


def _page_of(key: str, item: str) -> Schema:
    return _all(
        {
            key: _array(_ref(item)),
            "total": _INTEGER,
            "offset": _INTEGER,
            "limit": _INTEGER,
            "next": _nullable(_INTEGER),
        }
    )


def _list_of(key: str, item: str) -> Schema:
    return _all({key: _array(_ref(item))})


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
        "schema": _STRING,
        "description": description,
    }


def _between(kind: str, low: float, high: float | None = None) -> Schema:
    """A number (`kind` ``number`` or ``integer``) from `low` to `high` (no upper bound: None)."""
    schema: Schema = {"type": kind, "minimum": low}
    if high is not None:
        schema["maximum"] = high
    return schema


def _optional(name: str, schema: Schema, description: str) -> Schema:
    """A query parameter that may be sent empty (its default then)."""
    return _query(name, schema, description, empty=True)


_TIME = _between("number", 0)
_SEGMENT = _query(
    "segment",
    _between("integer", 1, 1000),
    "Which answered segment's recording (default 1, the first): a call requeued mid-call has"
    " one per agent who answered it (the search's `segments`); a ticket opens its segment only.",
)
_SPAN = (
    _optional("since", _TIME, "Unix time (seconds), included."),
    _optional("until", _TIME, "Unix time (seconds), excluded; not before since."),
)
_PAGING = (
    _optional("offset", _between("integer", 0, 2**31), "First item (default 0)."),
    _optional("limit", _between("integer", 1, MAX_PAGE), "Items per page (default 100)."),
)
_QUEUE_FILTER = _query("queue", _STRING, "Only this queue (must be in the token's scope).")
_AGENT_FILTER = _query("agent", _STRING, "Only this agent.")
_CAMPAIGN_FILTER = _query("campaign", _STRING, "Only this campaign (must be in the token's scope).")
_REPORT_SPAN = (
    _optional(
        "day",
        {"type": "string", "format": "date"},
        "The site's day (YYYY-MM-DD, in [site] timezone); without day nor since/until: today.",
    ),
    _optional("days", _between("integer", 1, 92), "Days from day (default 1)."),
    _optional("since", _TIME, "Unix time (seconds), included; with until."),
    _optional("until", _TIME, "Unix time (seconds), excluded; after since, at most 92 days."),
)
_FORMAT = _optional(
    "format",
    {"type": "string", "enum": ["json", "csv"]},
    "json (default) or csv (the same cells; Accept: text/csv works too).",
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
    "anyOf": [{"type": "array", "items": _STRING, "maxItems": 256}, {"type": "null"}],
    "description": "Campaign and queue names the configuration knows, or null for every one.",
}
_ROLE_BODY: Schema = {"type": "string", "enum": [r.value for r in Role if r is not Role.AGENT]}
_NAME_BODY: Schema = {"type": "string", "pattern": _NAME_PATTERN}
_WORD: Schema = {"type": "string", "pattern": "^[A-Za-z0-9_.@-]{1,64}$"}
_PASSWORD_BODY: Schema = {"type": "string", "minLength": 8, "maxLength": 1024}
_LABEL_BODY: Schema = {"type": "string", "maxLength": 64}

_NO_DIRECTORY = "Agents and queues are not kept by this server, or an unknown name."
_SECONDS: Schema = _between("number", 0, 604800)
_COUNT: Schema = _between("integer", 0, 1000000)


def _names_or(table: Schema) -> Schema:
    """A list of names, or of `table` objects."""
    return _array({"anyOf": [_STRING, table]})


_MEMBERSHIPS: Schema = {
    **_names_or(_closed({"queue": _STRING, "penalty": _COUNT}, ["queue"])),
    "description": "Queue names, or {queue, penalty}.",
}
_PAUSE_REASONS = _all(
    {"reasons": _array(_STRING)}, "The reasons an agent may pause with, in their order."
)
_CAMPAIGN_SETTINGS: dict[str, Schema] = {
    "queue": _STRING,
    "recording": _BOOLEAN,
    "url": _STRING,
    "dispositions": _array(_STRING),
    "callback": _BOOLEAN,
    "trunk": _STRING,
    "recording_retention_days": _between("integer", 0, 36500),
    "callback_min_digits": _between("integer", 1, 20),
    "callback_max_digits": _between("integer", 1, 20),
    "callback_international": _BOOLEAN,
    "callback_one_per_number": _BOOLEAN,
    "callback_expiry": {"type": "number", "exclusiveMinimum": 0, "maximum": 604800},
    "disposition_set": {"type": "string", "description": "A disposition set's name, or empty."},
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
    "members": _names_or(_closed({"agent": _STRING, "penalty": _COUNT}, ["agent"])),
    "ring_timeout": _SECONDS,
    "retry": _SECONDS,
    "wrapup": _SECONDS,
    "autopause": _COUNT,
    "max_callers": _COUNT,
    "max_wait": _SECONDS,
    "join_empty": _BOOLEAN,
    "leave_when_empty": _BOOLEAN,
    "overflow": {
        "type": "object",
        "description": "Exactly one of queue, agent, number (with trunk), record, hangup.",
    },
    "music_on_hold": _STRING,
    "announce_frequency": _SECONDS,
    "service_level": _SECONDS,
    "max_penalty": _between("integer", -1, 1000000),
    "escalation": _array(
        _closed({"after": _SECONDS, "max_penalty": _COUNT}, ["after", "max_penalty"])
    ),
}
_ROUTE_SETTINGS: dict[str, Schema] = {
    **_strings("user pattern target"),
    "strip": _between("integer", 0, 64),
    "prefix": _STRING,
}
"""A route's settings (a ``[[routes]]`` table)."""
_DISPOSITIONS: Schema = {
    **_array({"type": "string", "minLength": 1, "maxLength": 64}),
    "minItems": 1,
    "description": "At least one; none twice.",
}
_QUEUE_CONFLICT = "The running server cannot make this change now (callers wait, the file uses it)."
_QUEUE_PROBLEMS = {404: _NO_DIRECTORY, 409: _QUEUE_CONFLICT}
_MEMBER = (_path("name", "The queue."), _path("agent", "The agent."))


def _unknown(noun: str) -> str:
    return f"Unknown {noun}, or the directory is not kept by this server."


def _directory_objects(
    path: str,
    noun: str,
    settings: Mapping[str, Schema],
    *,
    required: Iterable[str] = (),
    changes: Mapping[str, Schema] | None = None,
    missing: str = _NO_DIRECTORY,
    change_conflict: str = "",
    delete_conflict: str = "",
    listed: str = "",
    read: bool = False,
    schema: str = "",
) -> dict[tuple[str, str], Operation]:
    """The operations of one kind of the directory's objects (`omlmedia.admin_objects`): ``POST
    path`` with its name and `settings` (201 and its ``<Noun>Definition``), ``PATCH`` of
    ``path/{name}`` with `changes` (None: no PATCH), ``DELETE`` of it (204), and ``GET path``
    (the list under the key `listed`) when `listed` is set. `missing` is the 404 of a name,
    the conflicts the 409 of a change and of a deletion (none when empty); ``GET path/{name}``
    when `read`. `schema`: the definition's name (default ``<Noun>Definition``)."""
    item = f"{path}/{{name}}"
    name = (_path("name", f"The {noun}."),)
    kind = schema or f"{noun.capitalize()}Definition"
    definition = _ref(kind)

    def problems(conflict: str) -> dict[int, str]:
        return {404: missing, 409: conflict} if conflict else {404: missing}

    operations = {
        ("POST", path): Operation(
            body_required=True,
            body=_closed({"name": _NAME_BODY, **settings}, ["name", *required]),
            responses={201: definition},
            problems={404: _NO_DIRECTORY, 409: "The name is taken."},
        ),
        ("DELETE", item): Operation(
            parameters=name, responses={204: None}, problems=problems(delete_conflict)
        ),
    }
    if changes is not None:
        operations["PATCH", item] = Operation(
            parameters=name,
            body=_closed(changes),
            responses={200: definition},
            problems=problems(change_conflict),
        )
    if read:
        operations["GET", item] = Operation(
            parameters=name, responses={200: definition}, problems={404: missing}
        )
    if listed:
        operations["GET", path] = Operation(
            responses={200: _list_of(listed, kind)}, problems={404: _NO_DIRECTORY}
        )
    return operations


_NO_HOOKS = "Webhooks are not kept by this server, or an unknown id."
_HOOK_ID = _path("id", "The webhook.")
_WEBHOOK_BODY = _closed(
    {
        "url": {"type": "string", "maxLength": 2048, "description": "An https:// URL."},
        "types": {
            **_array({"type": "string", "pattern": "^[a-z0-9_.]{1,64}$"}),
            "maxItems": 32,
            "description": "Event type prefixes (empty: every event).",
        },
        "scope": _SCOPE_BODY,
        "enabled": _BOOLEAN,
        "verify_tls": _BOOLEAN,
        "description": {"type": "string", "maxLength": 256},
    }
)
_REPLAYED = _all({"replayed": _INTEGER})


def _live(noun: str, schema: str) -> dict[tuple[str, str], Operation]:
    """The live figures of the queues or agents: every one (``/api/v1/<noun>s``) and one."""
    path = f"/api/v1/{noun}s"
    return {
        ("GET", path): Operation(
            parameters=_SPAN,
            responses={200: _list_of(f"{noun}s", schema)},
            problems={404: _NO_QUEUES},
        ),
        ("GET", f"{path}/{{name}}"): Operation(
            parameters=(_path("name", f"The {noun}."), *_SPAN),
            responses={200: _ref(schema)},
            problems={404: _NO_QUEUES},
        ),
    }


def _described(schema: Schema, description: str) -> Schema:
    return {**schema, "description": description}


_SHARED_ACD_FIGURES: dict[str, tuple[Schema, str]] = {
    "owner": (_BOOLEAN, "This node holds the ACD's lease (it writes the timer ticks)."),
    "epoch": (_INTEGER, "The epoch (fencing token) of this node's lease; 0 once it stepped down."),
    "followed": (_STRING, "The last entry of the input stream this node applied."),
    "pending": (_INTEGER, "This node's inputs waiting to be appended to the stream."),
    "remote_offers": (_INTEGER, "Offers of this node's callers to agents on other nodes now."),
    "skipped": (_INTEGER, "Inputs skipped as retried duplicates of one already applied."),
    "submitted": (_INTEGER, "Inputs this node submitted."),
    "appended": (_INTEGER, "Inputs this node appended to the stream."),
    "dropped": (_INTEGER, "Inputs lost: the local queue was full while Redis was unreachable."),
    "redis_errors": (_INTEGER, "Failed Redis operations."),
    "acquisitions": (_INTEGER, "Times this node took the lease."),
    "step_downs": (_INTEGER, "Times this node stopped owning the ACD."),
    "applied": (_INTEGER, "Inputs this node's follower applied (duplicates skipped included)."),
    "published": (_INTEGER, "Decisions published (an owner without followers only)."),
    "refused_publish": (_INTEGER, "Publications refused: the lease was no longer this node's."),
    "malformed": (_INTEGER, "Stream entries unreadable, or failing the engine, skipped."),
    "accepted": (_INTEGER, "Published decisions accepted by the fence."),
    "fenced": (_INTEGER, "Published decisions refused by the fence (older epoch, duplicate)."),
    "nodes_lost": (_INTEGER, "Nodes this node, as owner, found lost (heartbeat lapsed)."),
    "rebuild_seconds": (_NUMBER, "How long the last rebuild from the stream took."),
    "rebuild_entries": (_INTEGER, "Entries the last rebuild replayed."),
    "snapshots": (_INTEGER, "Snapshots this node stored as owner."),
    "snapshot_seconds": (_NUMBER, "How long this node's last snapshot took."),
    "trimmed": (_INTEGER, "Stream entries trimmed after this node's snapshots."),
    "restored_from": (_STRING, "The snapshot's entry this node's follower started from, or \"\"."),
}
"""The status's ``cluster.acd`` (`omlmedia.server.Server._shared_acd_status`): the one ACD of
the cluster seen from this node, counters since its start."""

_STATUS: Schema = _object(
    {
        "cluster": _object(
            {
                "acd": {
                    "description": 'The shared ACD ([cluster] acd = "shared") seen from this '
                    "node; an empty object when this node's ACD is its own.",
                    "anyOf": [
                        {"type": "object", "maxProperties": 0},
                        _all(
                            {
                                name: _described(schema, text)
                                for name, (schema, text) in _SHARED_ACD_FIGURES.items()
                            }
                        ),
                    ],
                }
            },
            ["acd"],
        )
    },
    ["cluster"],
    "Live counters.",
)


OPERATIONS: dict[tuple[str, str], Operation] = {
    ("GET", "/api/v1/health"): Operation(responses={200: _all({"status": {"const": "ok"}})}),
    ("GET", "/api/v1/status"): Operation(responses={200: _STATUS}),
    **_live("queue", "Queue"),
    ("GET", "/api/v1/wallboard"): Operation(
        parameters=(
            _query(
                "queue",
                _STRING,
                "Only these queues (repeatable or comma-separated; each known and in scope).",
            ),
            _query(
                "campaign",
                _STRING,
                "Only the queues of these campaigns (repeatable or comma-separated).",
            ),
        ),
        responses={200: _ref("Wallboard")},
        problems={404: "No queues are configured."},
    ),
    **_live("agent", "Agent"),
    ("POST", "/api/v1/agents/{name}/pause"): Operation(
        parameters=_SUPERVISION.parameters,
        body=_object(
            {"reason": {"type": "string", "minLength": 1, "maxLength": 64, "pattern": "\\S"}}
        ),
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
        body=_closed(
            {
                "agent": _WORD,
                "number": {"type": "string", "pattern": "^[0-9+*#]{1,32}$"},
                "campaign": _WORD,
                "trunk": _WORD,
            },
            ["agent", "number"],
            "One of campaign and trunk.",
        ),
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
        body=_object({"to": {"type": "string", "pattern": "^[A-Za-z0-9+*#._@:-]{1,64}$"}}, ["to"]),
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
            _query("call_id", _STRING, "Only this call."),
            *_PAGING,
        ),
        responses={200: _page_of("entries", "QueueLogEntry")},
        problems={404: "No queues are configured: there are no records."},
    ),
    ("GET", "/api/v1/reports/agents"): _report(_QUEUE_FILTER, _AGENT_FILTER),
    ("GET", "/api/v1/reports/queues"): _report(
        _optional(
            "interval",
            {"type": "string", "enum": ["15", "30", "60", "day"]},
            "Minutes of the site's clock, or its day (default 60).",
        ),
        _optional(
            "by",
            {"type": "string", "enum": ["queue", "campaign"]},
            "A row per queue (default) or per campaign.",
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
            _query("caller", _STRING, "A part of the caller's number."),
            _query("disposition", _STRING, "Only this disposition."),
            _optional("min_duration", _between("number", 0, 1e9), "At least these talk seconds."),
            _optional("max_duration", _between("number", 0, 1e9), "At most these talk seconds."),
            _optional("min_mos", _between("number", 1, 5), "Every scored leg at least this MOS."),
            *_PAGING,
        ),
        responses={200: _page_of("recordings", "Recording")},
        problems={404: _NO_RECORDS},
    ),
    ("GET", "/api/v1/recordings/{id}/audio"): Operation(
        parameters=(
            _path("id", "The call."),
            _optional(
                "download",
                {"type": "string", "enum": ["0", "1", "true", "false"]},
                "1: as a file to save (Content-Disposition: attachment); not with a ticket.",
            ),
            _query(
                "ticket",
                {"type": "string", "maxLength": 64},
                "A playback ticket (POST .../ticket) instead of the bearer token, for a"
                " player that cannot send the header (an <audio src>); 401 when it is"
                " unknown, expired, or for another recording or account.",
            ),
            _SEGMENT,
        ),
        responses={200: None, 206: None},
        problems={
            404: "No such call, no recording of it (or of that segment), or its file is gone.",
            416: "A range beyond the file.",
        },
        content_type="audio/ogg",
    ),
    ("POST", "/api/v1/recordings/{id}/ticket"): Operation(
        parameters=(_path("id", "The call."), _SEGMENT),
        responses={
            201: _all(
                {
                    "ticket": {"type": "string"},
                    "expires_in": {"type": "number"},
                    "audio": {"type": "string"},
                    "media_type": {"type": "string"},
                },
                "A playback ticket: `audio` (the audio route with the ticket) opens this one"
                " recording, for this account, with ranges and without the bearer token, for"
                " `expires_in` seconds after its issue or its last use (4 hours at most)."
                " Issuing it is the listen (audited as recording.listen).",
            )
        },
        problems={
            404: "No such call, no recording of it (or of that segment), or its file is gone."
        },
    ),
    ("GET", "/api/v1/accounts"): Operation(
        responses={200: _list_of("accounts", "Account")}, problems={404: _NO_BOOK}
    ),
    ("POST", "/api/v1/accounts"): Operation(
        body_required=True,
        body=_closed(
            {
                "name": _NAME_BODY,
                "role": _ROLE_BODY,
                "password": _PASSWORD_BODY,
                "display_name": _LABEL_BODY,
                "scope": _SCOPE_BODY,
            },
            ["name", "role", "password"],
        ),
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
        body=_closed(
            {
                "role": _ROLE_BODY,
                "display_name": _LABEL_BODY,
                "password": _PASSWORD_BODY,
                "scope": _SCOPE_BODY,
                "disabled": _BOOLEAN,
            }
        ),
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
        parameters=(_query("account", _STRING, "Only this account's tokens."),),
        responses={200: _list_of("tokens", "Token")},
        problems={404: _NO_BOOK},
    ),
    ("POST", "/api/v1/tokens"): Operation(
        body_required=True,
        body=_closed(
            {
                "account": _NAME_BODY,
                "integration": _NAME_BODY,
                "role": _ROLE_BODY,
                "scope": _SCOPE_BODY,
                "label": _LABEL_BODY,
                "expires": _nullable(
                    {"type": "number", "description": "Unix time, in the future."}
                ),
                "expires_in": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1e10},
            },
            description="Either account, or integration with role.",
        ),
        responses={201: _ref("Token")},
        problems={404: _NO_BOOK, 409: "The account cannot be given a token."},
    ),
    ("DELETE", "/api/v1/tokens/{id}"): Operation(
        parameters=(_path("id", "The token's id."),),
        responses={200: _ref("Token")},
        problems={404: _NO_BOOK, 409: "The configured token is changed in the configuration."},
    ),
    **_directory_objects(
        "/api/v1/agents",
        "agent",
        {"password": _PASSWORD_BODY, "display_name": _LABEL_BODY, "queues": _MEMBERSHIPS},
        required=["password"],
        changes={
            "display_name": _LABEL_BODY,
            "password": _PASSWORD_BODY,
            "disabled": _BOOLEAN,
            "queues": _MEMBERSHIPS,
        },
        change_conflict="The running server cannot make this change now.",
        delete_conflict="The agent is on a call.",
    ),
    **_directory_objects(
        "/api/v1/queues",
        "queue",
        _QUEUE_SETTINGS,
        changes=_QUEUE_SETTINGS,
        change_conflict=_QUEUE_CONFLICT,
        delete_conflict=_QUEUE_CONFLICT,
    ),
    ("PUT", "/api/v1/queues/{name}/members/{agent}"): Operation(
        parameters=_MEMBER,
        body=_closed({"penalty": _COUNT}),
        responses={200: _ref("QueueDefinition")},
        problems=_QUEUE_PROBLEMS,
    ),
    ("DELETE", "/api/v1/queues/{name}/members/{agent}"): Operation(
        parameters=_MEMBER,
        responses={200: _ref("QueueDefinition")},
        problems={404: "Unknown queue or agent, or the agent is not a member."},
    ),
    **_directory_objects(
        "/api/v1/campaigns",
        "campaign",
        _CAMPAIGN_SETTINGS,
        required=["queue"],
        changes=_CAMPAIGN_SETTINGS,
        missing=_unknown("campaign"),
        delete_conflict="A route (the file's or the API's) sends callers to the campaign.",
    ),
    **_directory_objects(
        "/api/v1/routes",
        "route",
        _ROUTE_SETTINGS,
        required=["target"],
        changes={
            key: schema if key == "target" else _nullable(schema)
            for key, schema in _ROUTE_SETTINGS.items()
        },
        missing=_unknown("route"),
        listed="routes",
    ),
    **_directory_objects(
        "/api/v1/disposition-sets",
        "disposition set",
        {"dispositions": _DISPOSITIONS},
        required=["dispositions"],
        changes={"dispositions": _DISPOSITIONS},
        missing=_unknown("disposition set"),
        delete_conflict="A campaign names the set.",
        listed="disposition_sets",
        read=True,
        schema="DispositionSetDefinition",
    ),
    ("GET", "/api/v1/pause-reasons"): Operation(
        responses={200: _PAUSE_REASONS}, problems={404: _NO_DIRECTORY}
    ),
    ("POST", "/api/v1/pause-reasons"): Operation(
        body_required=True,
        body=_closed({"name": {"type": "string", "minLength": 1, "maxLength": 64}}, ["name"]),
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
            _optional(
                "status",
                {"type": "string", "enum": ["pending", "dead"]},
                "Only deliveries in this state.",
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
        body=_closed(
            {
                "name": {"type": "string", "minLength": 1, "maxLength": 1024},
                "password": {"type": "string", "minLength": 1, "maxLength": 1024},
            },
            ["name", "password"],
        ),
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
            _query("actor", _STRING, "Only this actor."),
            _query("action", _STRING, "Actions starting with this text."),
            _query("target", _STRING, "Only this target."),
            *_PAGING,
        ),
        responses={200: _page_of("entries", "AuditEntry")},
        problems={404: _NO_BOOK},
    ),
    ("GET", "/api/v1/events"): Operation(
        parameters=(
            _optional(
                "since_id",
                _between("integer", 0),
                "Resume after this event id (or Last-Event-ID); on a cluster with one ACD, on any"
                " node: the stream is every node's events in commit order (ids do not grow), and"
                " an id no committed event has is refused (400).",
            ),
            {
                "name": "Last-Event-ID",
                "in": "header",
                "required": False,
                "schema": _STRING,
                "description": "What EventSource sends when it reconnects: as since_id.",
            },
            _query(
                "type",
                _STRING,
                "Only these event types, by prefix (repeatable or comma-separated).",
            ),
            _query("queue", _STRING, "Only these queues (repeatable)."),
            _query("agent", _STRING, "Only these agents (repeatable): a screen-pop."),
            _query("campaign", _STRING, "Only these campaigns (repeatable)."),
        ),
        responses={101: None, 200: None},
        problems={
            404: "The event log is not running.",
            406: "Neither a WebSocket upgrade nor Accept: text/event-stream.",
            503: "On a cluster with one ACD: the cluster's events cannot be read (the database).",
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
                answer["content"][alternate] = {"schema": _STRING}
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
