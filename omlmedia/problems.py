"""Errors and parameters of the HTTPS API: RFC 9457 problem documents, query numbers, JSON bodies,
pages.

Every refusal of the API is one problem document (``application/problem+json``): ``type``
(``about:blank``: the status says it all), ``title`` (the status phrase), ``status``, ``detail``
(what was wrong, in words), ``errors`` (one ``{"field", "detail"}`` per invalid field of a body or
a query, when there are such) and ``error`` (the same text as ``detail``: what this API answered
before problem documents, kept for the clients that read it).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any

from aiohttp import web

__all__ = [
    "DEFAULT_PAGE",
    "MAX_PAGE",
    "ApiError",
    "FieldError",
    "json_body",
    "page",
    "page_window",
    "paged",
    "paged_json",
    "problem",
    "query_count",
    "query_span",
    "query_time",
]

DEFAULT_PAGE = 100
MAX_PAGE = 1000
PROBLEM_TYPE = "application/problem+json"

FieldError = tuple[str, str]
"""One invalid field: its name (a dotted path into the body, or a query parameter) and why."""


class ApiError(Exception):
    """A request the API refuses: answered as a problem document with `status`, `reason` as its
    ``detail``, and `errors` naming each invalid field."""

    def __init__(
        self, status: int, reason: str, errors: Sequence[FieldError] = (), **extra: Any
    ) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.errors = tuple(errors)
        self.extra = extra


def problem(
    status: int,
    detail: str,
    errors: Sequence[FieldError] = (),
    *,
    headers: Mapping[str, str] | None = None,
    **extra: Any,
) -> web.Response:
    """The problem document (RFC 9457 §3) for `status` and `detail`."""
    try:
        title = HTTPStatus(status).phrase
    except ValueError:
        title = "Error"
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": title,
        "status": status,
        "detail": detail,
        "error": detail,
        **extra,
    }
    if errors:
        body["errors"] = [{"field": name, "detail": why} for name, why in errors]
    return web.Response(
        text=json.dumps(body, separators=(",", ":")),
        status=status,
        content_type=PROBLEM_TYPE,
        headers=headers,
    )


def query_time(request: web.Request, name: str, default: float) -> float:
    """A Unix time (seconds) from the query; 400 when it is not one."""
    text = request.query.get(name)
    if text is None or text == "":
        return default
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        message = f"{name} must be a Unix time in seconds"
        raise ApiError(400, message, [(name, "must be a Unix time in seconds")])
    return value


def query_count(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    """An integer from the query in [low, high]; 400 otherwise."""
    text = request.query.get(name)
    if text is None or text == "":
        return default
    try:
        value = int(text)
    except ValueError:
        raise ApiError(400, f"{name} must be an integer", [(name, "must be an integer")]) from None
    if not low <= value <= high:
        why = f"must be between {low} and {high}"
        raise ApiError(400, f"{name} {why}", [(name, why)])
    return value


def query_span(request: web.Request) -> tuple[float, float]:
    """``since`` and ``until`` (``until`` excluded; defaults: everything)."""
    since = query_time(request, "since", 0.0)
    until = query_time(request, "until", math.inf)
    if until < since:
        raise ApiError(400, "until must not be before since", [("until", "is before since")])
    return since, until


def page_window(request: web.Request) -> tuple[int, int]:
    """``offset`` (default 0) and ``limit`` (default `DEFAULT_PAGE`, at most `MAX_PAGE`) of a
    paged request; 400 naming the parameter otherwise."""
    offset = query_count(request, "offset", 0, 0, 2**31)
    limit = query_count(request, "limit", DEFAULT_PAGE, 1, MAX_PAGE)
    return offset, limit


def paged_json(
    key: str, items: Sequence[Mapping[str, Any]], total: int, offset: int, limit: int
) -> bytes:
    """A page already cut (by the database) as the JSON of ``{key: [...], "total", "offset",
    "limit", "next"}``: plain CPU work, which a reader thread can do off the event loop."""
    following = offset + limit
    tail = {
        "total": total,
        "offset": offset,
        "limit": limit,
        "next": following if following < total else None,
    }
    # One dumps per item: the C encoder holds the GIL for a whole call, so one call for a
    # thousand records would stop the event loop's thread for that long.
    encoded = ",".join(json.dumps(dict(item)) for item in items)
    return f"{{{json.dumps(key)}: [{encoded}], {json.dumps(tail)[1:]}".encode()


def paged(
    key: str, items: Sequence[Mapping[str, Any]], total: int, offset: int, limit: int
) -> web.Response:
    """A page already cut as a JSON response (`paged_json`)."""
    return web.Response(
        body=paged_json(key, items, total, offset, limit), content_type="application/json"
    )


def page(request: web.Request, key: str, items: Sequence[Mapping[str, Any]]) -> web.Response:
    """``items[offset:offset + limit]`` as ``{key: [...], "total", "offset", "limit", "next"}``."""
    offset, limit = page_window(request)
    return paged(key, items[offset : offset + limit], len(items), offset, limit)


async def json_body(request: web.Request) -> dict[str, Any]:
    """The request's JSON object (``{}`` without a body); 400 for anything else."""
    if not request.can_read_body:
        return {}
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ApiError(400, "the body must be a JSON object") from None
    if not isinstance(body, dict):
        raise ApiError(400, "the body must be a JSON object")
    return body
