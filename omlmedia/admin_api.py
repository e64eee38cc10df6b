"""The administration routes of the API: accounts, tokens and the audit log (admin only, see
`omlmedia.authz.RULES`).

- ``GET /api/v1/accounts``: ``{"accounts": [account, ...]}``; ``POST /api/v1/accounts``
  ``{"name", "role", "password", "display_name"?, "scope"?}``: 201 and the account;
- ``GET|PATCH|DELETE /api/v1/accounts/{name}``: one account; PATCH takes any of ``role``,
  ``display_name``, ``password``, ``scope`` (a list of campaign and queue names, or null for
  every one) and ``disabled``; DELETE answers 204 and revokes the account's tokens;
- ``GET /api/v1/tokens`` (``?account=``): ``{"tokens": [token, ...]}`` without secrets (the
  configured token is listed as ``bootstrap``); ``POST /api/v1/tokens`` ``{"account"}`` or
  ``{"integration", "role"}``, with ``scope``, ``label``, ``expires`` (a Unix time) or
  ``expires_in`` (seconds) optional: 201 and the token with its secret in ``token``, shown this
  once; ``DELETE /api/v1/tokens/{id}``: the token, revoked;
- ``POST /api/v1/sessions`` ``{"name", "password"}`` (no token: the one public route): an
  account that is not an agent logs in and gets 201 and a token of its own (label ``session``,
  expiring after ``webrtc.session_ttl``), shown this once; 401 for a wrong name or password (the
  answer and its time do not say which), 429 when failures locked the name or the source out,
  503 when too many password checks are running;
- ``GET /api/v1/audit?since=&until=&actor=&action=&target=&offset=&limit=``: audit entries in
  time order, paged like the call records (``"entries"``); ``action=account.`` matches a prefix.

An account is ``{"name", "role", "display_name", "scope", "disabled", "origin", "created",
"updated"}``; ``origin`` ``config`` marks one the configuration file declares, which the API may
only disable or enable (409 otherwise). Invalid input is a 400 problem document naming each
field in ``errors``; a name taken or a change the account does not allow, 409; an unknown name or
id, 404.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from aiohttp import web

from omlmedia.accounts import (
    BOOTSTRAP,
    NAME,
    AccountBook,
    AccountConflictError,
    Keep,
    PasswordLogins,
    UnknownAccountError,
    UnknownTokenError,
)
from omlmedia.authz import IDENTITY_KEY, SCOPES_KEY, Role, Scopes
from omlmedia.problems import ApiError, FieldError, json_body, page_window, paged, query_span
from webrtc.exceptions import LoginError
from webrtc.forwarded import request_source

__all__ = ["BOOK_KEY", "LOGINS_KEY", "routes"]

BOOK_KEY: web.AppKey[AccountBook | None] = web.AppKey("accounts")
LOGINS_KEY: web.AppKey[PasswordLogins | None] = web.AppKey("logins")
MIN_PASSWORD = 8
MAX_PASSWORD = 1024
MAX_LABEL = 64
MAX_SCOPE = 256
_NO_STORE = {"Cache-Control": "no-store"}

routes = web.RouteTableDef()
T = TypeVar("T")


def _book(request: web.Request) -> AccountBook:
    book = request.app[BOOK_KEY]
    if book is None:
        raise ApiError(404, "accounts are not kept by this server (no data directory)")
    return book


class _Fields:
    """Reads a JSON body field by field, collecting every error before refusing."""

    def __init__(self, body: Mapping[str, Any], allowed: tuple[str, ...]) -> None:
        self.body = body
        self.errors: list[FieldError] = [
            (key, "unknown field") for key in body if key not in allowed
        ]

    def error(self, name: str, why: str) -> None:
        self.errors.append((name, why))

    def get(
        self, name: str, check: Callable[[Any], T | None], why: str, *, required: bool = False
    ) -> T | None:
        if name not in self.body:
            if required:
                self.error(name, "is required")
            return None
        value = check(self.body[name])
        if value is None:
            self.error(name, why)
        return value

    def done(self) -> None:
        if self.errors:
            raise ApiError(
                400, "invalid " + ", ".join(sorted({n for n, _ in self.errors})), self.errors
            )


def _name(value: Any) -> str | None:
    return value if isinstance(value, str) and NAME.fullmatch(value) else None


def _role(value: Any) -> Role | None:
    return Role(value) if isinstance(value, str) and value in {r.value for r in Role} else None


def _password(value: Any) -> str | None:
    ok = isinstance(value, str) and MIN_PASSWORD <= len(value) <= MAX_PASSWORD
    return value if ok else None


def _label(value: Any) -> str | None:
    return value if isinstance(value, str) and len(value) <= MAX_LABEL else None


def _flag(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None


def _scope(fields: _Fields, scopes: Scopes) -> frozenset[str] | Keep | None:
    """``scope``: absent (keep), null (every campaign), or a list of known names."""
    if "scope" not in fields.body:
        return Keep.KEEP
    value = fields.body["scope"]
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        fields.error("scope", "must be a list of campaign or queue names, or null")
        return Keep.KEEP
    if len(value) > MAX_SCOPE:
        fields.error("scope", f"must name at most {MAX_SCOPE} campaigns or queues")
        return Keep.KEEP
    for index, name in enumerate(value):
        if not scopes.known(name):
            fields.error(f"scope[{index}]", f"unknown campaign or queue {name[:64]!r}")
    return frozenset(value)


def _role_field(fields: _Fields, *, required: bool) -> Role | None:
    roles = ", ".join(r.value for r in Role if r is not Role.AGENT)
    role = fields.get("role", _role, f"must be one of {roles}", required=required)
    if role is Role.AGENT:
        fields.error("role", "agent accounts are declared in [[agents]] for now")
    return role


async def _conflicts(request: web.Request, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    try:
        return await _book(request).call(fn, *args, **kwargs)
    except AccountConflictError as exc:
        raise ApiError(409, exc.reason, [(exc.field, exc.reason)]) from None
    except UnknownAccountError as exc:
        raise ApiError(404, f"unknown account: {exc.args[0]}") from None
    except UnknownTokenError as exc:
        raise ApiError(404, f"unknown token: {exc.args[0]}") from None


# -- accounts -------------------------------------------------------------------------------


@routes.get("/v1/accounts")
async def get_accounts(request: web.Request) -> web.Response:
    """Every account."""
    return web.json_response({"accounts": [a.view() for a in _book(request).accounts()]})


@routes.post("/v1/accounts")
async def post_account(request: web.Request) -> web.Response:
    """Create an account."""
    book = _book(request)
    fields = _Fields(
        await json_body(request), ("name", "role", "password", "display_name", "scope")
    )
    name = fields.get(
        "name", _name, "must be 1-32 lower-case letters, digits, '_', '.', '-'", required=True
    )
    role = _role_field(fields, required=True)
    password = fields.get(
        "password", _password, f"must be {MIN_PASSWORD} to {MAX_PASSWORD} characters", required=True
    )
    display = fields.get("display_name", _label, f"must be at most {MAX_LABEL} characters")
    scope = _scope(fields, request.app[SCOPES_KEY]())
    fields.done()
    assert name is not None and role is not None and password is not None
    row = await _conflicts(
        request,
        book.create_account,
        request[IDENTITY_KEY],
        name,
        role,
        password,
        display_name=display or "",
        scope=None if isinstance(scope, Keep) else scope,
    )
    return web.json_response(row.view(), status=201)


@routes.get("/v1/accounts/{name}")
async def get_account(request: web.Request) -> web.Response:
    """One account."""
    return web.json_response(
        (await _conflicts(request, _book(request).account, request.match_info["name"])).view()
    )


@routes.patch("/v1/accounts/{name}")
async def patch_account(request: web.Request) -> web.Response:
    """Change an account: role, display name, password, scope, disabled."""
    book = _book(request)
    fields = _Fields(
        await json_body(request), ("role", "display_name", "password", "scope", "disabled")
    )
    role = _role_field(fields, required=False)
    display = fields.get("display_name", _label, f"must be at most {MAX_LABEL} characters")
    password = fields.get(
        "password", _password, f"must be {MIN_PASSWORD} to {MAX_PASSWORD} characters"
    )
    disabled = fields.get("disabled", _flag, "must be true or false")
    scope = _scope(fields, request.app[SCOPES_KEY]())
    fields.done()
    row = await _conflicts(
        request,
        book.update_account,
        request[IDENTITY_KEY],
        request.match_info["name"],
        role=role,
        display_name=display,
        password=password,
        scope=scope,
        disabled=disabled,
    )
    return web.json_response(row.view())


@routes.delete("/v1/accounts/{name}")
async def delete_account(request: web.Request) -> web.Response:
    """Remove an account created through the API; its tokens are revoked."""
    book = _book(request)
    await _conflicts(
        request, book.delete_account, request[IDENTITY_KEY], request.match_info["name"]
    )
    return web.Response(status=204)


# -- tokens ---------------------------------------------------------------------------------


def _bootstrap_view() -> dict[str, Any]:
    return {
        "id": BOOTSTRAP,
        "account": None,
        "integration": BOOTSTRAP,
        "role": Role.ADMIN.value,
        "scope": None,
        "label": "api.token_sha256 of the configuration",
        "created": None,
        "created_by": "config",
        "expires": None,
        "revoked": None,
        "active": True,
    }


@routes.get("/v1/tokens")
async def get_tokens(request: web.Request) -> web.Response:
    """Every token (no secrets), by ``account`` when given."""
    book = _book(request)
    account = request.query.get("account")
    views = [book.token_view(t) for t in book.tokens() if account in (None, t.account)]
    if account is None and book.bootstrap is not None:
        views.insert(0, _bootstrap_view())
    return web.json_response({"tokens": views})


def _number(value: Any) -> float | None:
    """A finite JSON number as a float (None for anything else, huge integers included)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def _expiry(fields: _Fields, now: float) -> float | None:
    if "expires" in fields.body and "expires_in" in fields.body:
        fields.error("expires_in", "give expires or expires_in, not both")
        return None
    if "expires_in" in fields.body:
        seconds = _number(fields.body["expires_in"])
        if seconds is None or not 0 < seconds < 1e10:
            fields.error("expires_in", "must be a number of seconds above 0")
            return None
        return now + seconds
    if fields.body.get("expires") is None:
        return None
    when = _number(fields.body["expires"])
    if when is None:
        fields.error("expires", "must be a Unix time in seconds")
        return None
    if when <= now:
        fields.error("expires", "is in the past")
        return None
    return when


@routes.post("/v1/tokens")
async def post_token(request: web.Request) -> web.Response:
    """Issue a token for an account or an integration; its secret is in this answer only."""
    book = _book(request)
    fields = _Fields(
        await json_body(request),
        ("account", "integration", "role", "scope", "label", "expires", "expires_in"),
    )
    why = "must be 1-32 lower-case letters, digits, '_', '.', '-'"
    account = fields.get("account", _name, why)
    integration = fields.get("integration", _name, why)
    if ("account" in fields.body) == ("integration" in fields.body):
        fields.error("account", "give either account or integration")
    role = _role_field(fields, required="integration" in fields.body)
    if role is not None and "account" in fields.body:
        fields.error("role", "an account's token carries the account's role")
    scope = _scope(fields, request.app[SCOPES_KEY]())
    label = fields.get("label", _label, f"must be at most {MAX_LABEL} characters")
    expires = _expiry(fields, book.clock())
    fields.done()
    token, row = await _conflicts(
        request,
        book.create_token,
        request[IDENTITY_KEY],
        account=account,
        integration=integration,
        role=role,
        scope=None if isinstance(scope, Keep) else scope,
        label=label or "",
        expires=expires,
    )
    return web.json_response(
        {"token": token, **book.token_view(row)}, status=201, headers=_NO_STORE
    )


@routes.delete("/v1/tokens/{id}")
async def delete_token(request: web.Request) -> web.Response:
    """Revoke a token."""
    book = _book(request)
    ident = request.match_info["id"]
    if ident == BOOTSTRAP:
        raise ApiError(
            409, "the configured token is changed in the configuration (api.token_sha256)"
        )
    row = await _conflicts(request, book.revoke_token, request[IDENTITY_KEY], ident)
    return web.json_response(book.token_view(row))


# -- password logins -----------------------------------------------------------------------


def _short(value: Any) -> str | None:
    return value if isinstance(value, str) and 0 < len(value) <= MAX_PASSWORD else None


@routes.post("/v1/sessions")
async def post_session(request: web.Request) -> web.Response:
    """An account logs in with its password and gets a session token."""
    book = _book(request)
    logins = request.app[LOGINS_KEY]
    if logins is None:
        raise ApiError(404, "password logins are not enabled")
    fields = _Fields(await json_body(request), ("name", "password"))
    name = fields.get("name", _short, "must be a non-empty string", required=True)
    password = fields.get("password", _short, "must be a non-empty string", required=True)
    fields.done()
    assert name is not None and password is not None
    source, port = request_source(request)
    try:
        token, row = await logins.login(name, password, source, port)
    except LoginError as exc:
        status = {"busy": 503, "locked-out": 429}.get(exc.code, 401)
        raise ApiError(status, exc.reason if status != 401 else "wrong name or password") from None
    return web.json_response(
        {"token": token, **book.token_view(row)}, status=201, headers=_NO_STORE
    )


# -- audit ----------------------------------------------------------------------------------


@routes.get("/v1/audit")
async def get_audit(request: web.Request) -> web.Response:
    """The audit log, filtered by ``actor``, ``action`` and ``target``, paged in the database
    (only the page's rows are read, on the book's thread)."""
    book = _book(request)
    since, until = query_span(request)
    offset, limit = page_window(request)
    entries, total = await book.call(
        book.audit_page,
        since,
        until,
        actor=request.query.get("actor") or None,
        action=request.query.get("action") or None,
        target=request.query.get("target") or None,
        offset=offset,
        limit=limit,
    )
    return paged("entries", [e.view() for e in entries], total, offset, limit)
