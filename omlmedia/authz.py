"""Who may do what: roles, permissions, scopes, the rule of every route and WebSocket message, and
the one middleware that enforces them.

Theory of operation. A request to the API carries ``Authorization: Bearer <token>``; the
`Authenticator` (`omlmedia.accounts.AccountBook`, or the configured token alone) turns it into an
`Identity`: who acts (`actor`, written in the audit log and the queue log), its `Role`, and its
`scope` (None: everything; else a set of campaign and queue names). `ROLE_PERMISSIONS` says what
each role may do. `RULES` gives every route of the application, by method and path template, one
`Rule`: the `Permission` it needs (None: a public page) and how its scope is checked (`Scope`).

`authorize` is the one middleware that enforces them, on the application's root, so for the
API (every path under ``/api/``, and any route whose rule names a permission, such as
``/metrics``) and the pages alike. On the API, in this order: a token in the query string is
refused (400; tokens never travel in URLs, which end up in logs and browser histories); no valid
token, 401; a route that has no rule, 403 (fail closed: a new route is refused until it gets a
rule, and `tests/omlmedia/test_authz.py` walks every route of the application against this
table); a role without the permission, 403 naming it (``missing_permission``); an identity whose
scope does not cover what the path names, 403 naming it (``missing_scope``). Routes that list
several queues' data (`Scope.FILTER`) refuse a ``queue`` parameter out of scope and give the
handler the identity, which keeps only what the scope covers (`Identity.covers`). A page route
without a public rule is refused too. A route whose rule takes a playback ticket (`Rule.ticket`)
lets a request that carries a ``ticket`` and no token through to its handler, which redeems it.

The agent WebSocket (``/ws``) is a public route: each socket authenticates with its own agent
session, and `WS_RULES` states the rule of each message, which `webrtc.signaling.AgentHub`
enforces (the webrtc layer cannot import this one; the tests prove the hub obeys the table).
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from aiohttp import web
from aiohttp.typedefs import Middleware

from omlmedia.problems import ApiError, problem
from webrtc.accounts import security_line
from webrtc.forwarded import request_source

logger = logging.getLogger(__name__)

__all__ = [
    "AUTHENTICATOR_KEY",
    "IDENTITY_KEY",
    "PAGE_RULES",
    "ROLE_PERMISSIONS",
    "RULES",
    "SCOPES_KEY",
    "TOKEN_PARAMETERS",
    "WS_RULES",
    "Authenticator",
    "Identity",
    "Permission",
    "Role",
    "Rule",
    "Scope",
    "Scopes",
    "WsRule",
    "authorize",
    "bearer",
    "check",
    "rule_for",
]


class Role(enum.StrEnum):
    """What an account (or an integration's token) is."""

    ADMIN = "admin"
    """Everything: accounts, tokens, the audit log, agents and queues (the directory), and all a
    supervisor may do."""
    SUPERVISOR = "supervisor"
    """Reads queues, agents and records, listens to recordings, and commands agents (pause,
    unpause, log out)."""
    AGENT = "agent"
    """Works calls on the agent page; on the API, only the health check."""
    REPORTING = "reporting"
    """Reads what a supervisor reads; changes nothing."""


class Permission(enum.StrEnum):
    """One thing a role may do; each rule names the one it needs."""

    HEALTH = "health"
    STATUS_READ = "status:read"
    QUEUES_READ = "queues:read"
    AGENTS_READ = "agents:read"
    AGENTS_CONTROL = "agents:control"
    CALLS_CONTROL = "calls:control"
    """Hang up, hold, transfer a live call and pause its recording (integrations, supervisors)."""
    RECORDS_READ = "records:read"
    RECORDINGS_READ = "recordings:read"
    """Search, play and download call recordings (supervisors and administrators only)."""
    ACCOUNTS_ADMIN = "accounts:admin"
    TOKENS_ADMIN = "tokens:admin"
    AUDIT_READ = "audit:read"
    EVENTS_READ = "events:read"
    METRICS_READ = "metrics:read"
    WEBHOOKS_ADMIN = "webhooks:admin"
    DIRECTORY_ADMIN = "directory:admin"


_READ = frozenset(
    {
        Permission.HEALTH,
        Permission.STATUS_READ,
        Permission.QUEUES_READ,
        Permission.AGENTS_READ,
        Permission.RECORDS_READ,
        Permission.EVENTS_READ,
        Permission.METRICS_READ,
    }
)

ROLE_PERMISSIONS: Mapping[Role, frozenset[Permission]] = {
    Role.ADMIN: frozenset(Permission),
    Role.SUPERVISOR: _READ
    | {Permission.AGENTS_CONTROL, Permission.CALLS_CONTROL, Permission.RECORDINGS_READ},
    Role.REPORTING: _READ,
    Role.AGENT: frozenset({Permission.HEALTH}),
}
"""What each role may do."""


class Scope(enum.Enum):
    """How a route's scope is checked against the identity's."""

    NONE = "none"
    """The route touches no campaign or queue: any scope will do."""
    GLOBAL = "global"
    """The route shows or changes the whole server: only an identity without a scope."""
    QUEUE = "queue"
    """The path's ``{name}`` is a queue: it must be in scope."""
    AGENT = "agent"
    """The path's ``{name}`` is an agent: a member of a queue in scope."""
    FILTER = "filter"
    """The route lists records of several queues: a ``queue`` parameter must be in scope, and
    the handler keeps only what the scope covers."""


@dataclass(frozen=True, slots=True)
class Rule:
    """What a route needs: a `permission` (None: public, no token) and its `scope` check;
    `ticket`: a request with a ``ticket`` parameter and no bearer token goes to the handler,
    which redeems that playback ticket and checks its identity's permission and scope itself
    (``GET /api/v1/recordings/{id}/audio``: an ``<audio src>`` sends no header)."""

    permission: Permission | None
    scope: Scope = Scope.NONE
    ticket: bool = False


PUBLIC = Rule(None)

RULES: Mapping[tuple[str, str], Rule] = {
    ("GET", "/api/v1/health"): Rule(Permission.HEALTH),
    ("GET", "/api/v1/status"): Rule(Permission.STATUS_READ, Scope.GLOBAL),
    ("GET", "/api/v1/queues"): Rule(Permission.QUEUES_READ, Scope.FILTER),
    ("GET", "/api/v1/queues/{name}"): Rule(Permission.QUEUES_READ, Scope.QUEUE),
    ("GET", "/api/v1/agents"): Rule(Permission.AGENTS_READ, Scope.FILTER),
    ("GET", "/api/v1/agents/{name}"): Rule(Permission.AGENTS_READ, Scope.AGENT),
    ("POST", "/api/v1/agents/{name}/pause"): Rule(Permission.AGENTS_CONTROL, Scope.AGENT),
    ("POST", "/api/v1/agents/{name}/unpause"): Rule(Permission.AGENTS_CONTROL, Scope.AGENT),
    ("POST", "/api/v1/agents/{name}/logout"): Rule(Permission.AGENTS_CONTROL, Scope.AGENT),
    ("GET", "/api/v1/calls/records"): Rule(Permission.RECORDS_READ, Scope.FILTER),
    ("GET", "/api/v1/calls"): Rule(Permission.AGENTS_READ, Scope.FILTER),
    ("POST", "/api/v1/calls"): Rule(Permission.CALLS_CONTROL, Scope.FILTER),
    ("GET", "/api/v1/calls/{id}"): Rule(Permission.AGENTS_READ, Scope.FILTER),
    ("POST", "/api/v1/calls/{id}/hangup"): Rule(Permission.CALLS_CONTROL, Scope.FILTER),
    ("POST", "/api/v1/calls/{id}/hold"): Rule(Permission.CALLS_CONTROL, Scope.FILTER),
    ("POST", "/api/v1/calls/{id}/unhold"): Rule(Permission.CALLS_CONTROL, Scope.FILTER),
    ("POST", "/api/v1/calls/{id}/transfer"): Rule(Permission.CALLS_CONTROL, Scope.FILTER),
    ("POST", "/api/v1/calls/{id}/recording/pause"): Rule(Permission.CALLS_CONTROL, Scope.FILTER),
    ("POST", "/api/v1/calls/{id}/recording/resume"): Rule(Permission.CALLS_CONTROL, Scope.FILTER),
    ("GET", "/api/v1/queue-log"): Rule(Permission.RECORDS_READ, Scope.FILTER),
    ("GET", "/api/v1/reports/agents"): Rule(Permission.RECORDS_READ, Scope.FILTER),
    ("GET", "/api/v1/reports/queues"): Rule(Permission.RECORDS_READ, Scope.FILTER),
    ("GET", "/api/v1/reports/dispositions"): Rule(Permission.RECORDS_READ, Scope.FILTER),
    ("GET", "/api/v1/reports/calls"): Rule(Permission.RECORDS_READ, Scope.FILTER),
    ("GET", "/api/v1/recordings"): Rule(Permission.RECORDINGS_READ, Scope.FILTER),
    ("GET", "/api/v1/recordings/{id}/audio"): Rule(
        Permission.RECORDINGS_READ, Scope.FILTER, ticket=True
    ),
    ("POST", "/api/v1/recordings/{id}/ticket"): Rule(Permission.RECORDINGS_READ, Scope.FILTER),
    ("GET", "/api/v1/accounts"): Rule(Permission.ACCOUNTS_ADMIN, Scope.GLOBAL),
    ("POST", "/api/v1/accounts"): Rule(Permission.ACCOUNTS_ADMIN, Scope.GLOBAL),
    ("GET", "/api/v1/accounts/{name}"): Rule(Permission.ACCOUNTS_ADMIN, Scope.GLOBAL),
    ("PATCH", "/api/v1/accounts/{name}"): Rule(Permission.ACCOUNTS_ADMIN, Scope.GLOBAL),
    ("DELETE", "/api/v1/accounts/{name}"): Rule(Permission.ACCOUNTS_ADMIN, Scope.GLOBAL),
    ("GET", "/api/v1/tokens"): Rule(Permission.TOKENS_ADMIN, Scope.GLOBAL),
    ("POST", "/api/v1/tokens"): Rule(Permission.TOKENS_ADMIN, Scope.GLOBAL),
    ("DELETE", "/api/v1/tokens/{id}"): Rule(Permission.TOKENS_ADMIN, Scope.GLOBAL),
    ("GET", "/api/v1/audit"): Rule(Permission.AUDIT_READ, Scope.GLOBAL),
    ("GET", "/api/v1/webhooks"): Rule(Permission.WEBHOOKS_ADMIN, Scope.GLOBAL),
    ("POST", "/api/v1/webhooks"): Rule(Permission.WEBHOOKS_ADMIN, Scope.GLOBAL),
    ("GET", "/api/v1/webhooks/{id}"): Rule(Permission.WEBHOOKS_ADMIN, Scope.GLOBAL),
    ("PATCH", "/api/v1/webhooks/{id}"): Rule(Permission.WEBHOOKS_ADMIN, Scope.GLOBAL),
    ("DELETE", "/api/v1/webhooks/{id}"): Rule(Permission.WEBHOOKS_ADMIN, Scope.GLOBAL),
    ("GET", "/api/v1/webhooks/{id}/deliveries"): Rule(Permission.WEBHOOKS_ADMIN, Scope.GLOBAL),
    ("POST", "/api/v1/webhooks/{id}/deliveries/replay"): Rule(
        Permission.WEBHOOKS_ADMIN, Scope.GLOBAL
    ),
    ("POST", "/api/v1/webhooks/{id}/deliveries/{delivery_id}/replay"): Rule(
        Permission.WEBHOOKS_ADMIN, Scope.GLOBAL
    ),
    ("POST", "/api/v1/agents"): Rule(Permission.DIRECTORY_ADMIN, Scope.GLOBAL),
    ("PATCH", "/api/v1/agents/{name}"): Rule(Permission.DIRECTORY_ADMIN, Scope.GLOBAL),
    ("DELETE", "/api/v1/agents/{name}"): Rule(Permission.DIRECTORY_ADMIN, Scope.GLOBAL),
    ("POST", "/api/v1/queues"): Rule(Permission.DIRECTORY_ADMIN, Scope.GLOBAL),
    ("PATCH", "/api/v1/queues/{name}"): Rule(Permission.DIRECTORY_ADMIN, Scope.GLOBAL),
    ("DELETE", "/api/v1/queues/{name}"): Rule(Permission.DIRECTORY_ADMIN, Scope.GLOBAL),
    ("PUT", "/api/v1/queues/{name}/members/{agent}"): Rule(
        Permission.DIRECTORY_ADMIN, Scope.GLOBAL
    ),
    ("DELETE", "/api/v1/queues/{name}/members/{agent}"): Rule(
        Permission.DIRECTORY_ADMIN, Scope.GLOBAL
    ),
    ("POST", "/api/v1/campaigns"): Rule(Permission.DIRECTORY_ADMIN, Scope.GLOBAL),
    ("PATCH", "/api/v1/campaigns/{name}"): Rule(Permission.DIRECTORY_ADMIN, Scope.GLOBAL),
    ("DELETE", "/api/v1/campaigns/{name}"): Rule(Permission.DIRECTORY_ADMIN, Scope.GLOBAL),
    ("GET", "/api/v1/routes"): Rule(Permission.DIRECTORY_ADMIN, Scope.GLOBAL),
    ("POST", "/api/v1/routes"): Rule(Permission.DIRECTORY_ADMIN, Scope.GLOBAL),
    ("PATCH", "/api/v1/routes/{name}"): Rule(Permission.DIRECTORY_ADMIN, Scope.GLOBAL),
    ("DELETE", "/api/v1/routes/{name}"): Rule(Permission.DIRECTORY_ADMIN, Scope.GLOBAL),
    ("GET", "/api/v1/disposition-sets"): Rule(Permission.DIRECTORY_ADMIN, Scope.GLOBAL),
    ("POST", "/api/v1/disposition-sets"): Rule(Permission.DIRECTORY_ADMIN, Scope.GLOBAL),
    ("GET", "/api/v1/disposition-sets/{name}"): Rule(Permission.DIRECTORY_ADMIN, Scope.GLOBAL),
    ("PATCH", "/api/v1/disposition-sets/{name}"): Rule(Permission.DIRECTORY_ADMIN, Scope.GLOBAL),
    ("DELETE", "/api/v1/disposition-sets/{name}"): Rule(Permission.DIRECTORY_ADMIN, Scope.GLOBAL),
    ("GET", "/api/v1/pause-reasons"): Rule(Permission.AGENTS_READ, Scope.GLOBAL),
    ("POST", "/api/v1/pause-reasons"): Rule(Permission.DIRECTORY_ADMIN, Scope.GLOBAL),
    ("DELETE", "/api/v1/pause-reasons/{name}"): Rule(Permission.DIRECTORY_ADMIN, Scope.GLOBAL),
    ("POST", "/api/v1/sessions"): PUBLIC,
    ("GET", "/api/v1/openapi.json"): PUBLIC,
    ("GET", "/api/docs"): PUBLIC,
    ("GET", "/api/docs/{file}"): PUBLIC,
    ("GET", "/api/v1/events"): Rule(Permission.EVENTS_READ, Scope.FILTER),
    ("GET", "/api/v1/wallboard"): Rule(Permission.QUEUES_READ, Scope.FILTER),
    ("GET", "/metrics"): Rule(Permission.METRICS_READ, Scope.GLOBAL),
}
"""Every API route (method, path template as aiohttp writes it) and its rule. HEAD follows GET.
A route missing here is refused with 403. The public API routes are the password login, which
gives a token (``POST /api/v1/sessions``), and the OpenAPI document and its docs page
(``/api/docs``), which hold no data."""

PAGE_RULES: Mapping[tuple[str, str], Rule] = {
    ("GET", "/agent"): PUBLIC,
    ("GET", "/agent/"): PUBLIC,
    ("GET", "/supervisor"): PUBLIC,
    ("GET", "/supervisor/"): PUBLIC,
    ("GET", "/vendor"): PUBLIC,
    ("GET", "/call/{target}"): PUBLIC,
    ("GET", "/call-ui"): PUBLIC,
    ("GET", "/ws"): PUBLIC,
}
"""The pages (`webrtc.app`): public, they hold no data until the socket (the agent page) or the
API (the supervisor page, ``POST /api/v1/sessions``) logs in; ``/agent``, ``/supervisor``,
``/vendor`` (vendored libraries) and ``/call-ui`` include their static files; ``/ws``
authenticates each socket (`WS_RULES`)."""

TOKEN_PARAMETERS = ("token", "access_token", "api_key", "apikey")
"""Query parameters refused on every API route: a token never travels in a URL."""


class WsRule(enum.Enum):
    """Who may send a WebSocket message (``/ws``) and what it may act on."""

    OPENS_SESSION = "opens-session"
    """Anyone: a socket that is not logged in opens (``login``, password) or resumes (``auth``,
    its session token) the session of an agent account of ``[[agents]]``."""
    OWN_SESSION = "own-session"
    """An agent, on its own session only (the socket's)."""
    OWN_CALL = "own-call"
    """An agent, on its own session, about one of its own calls (``call_id``)."""
    WEB_CALLER = "web-caller"
    """A web caller: a socket that is not an agent's, to a target of ``web_targets``, about its
    own web call."""
    OPENS_SUPERVISOR = "opens-supervisor"
    """Anyone: a socket that is neither an agent's nor a web caller's authenticates with the API
    session token of a ``supervisor`` or ``admin`` account (``supervisor-auth``,
    `omlmedia.monitor`)."""
    SUPERVISOR = "supervisor"
    """A supervisor or an admin, on the socket it authenticated (the token checked again on
    every message), about calls of agents in its scope: the call's campaign or queue (a call
    outside every queue: an unscoped identity only)."""


WS_RULES: Mapping[str, WsRule] = {
    "login": WsRule.OPENS_SESSION,
    "auth": WsRule.OPENS_SESSION,
    "logout": WsRule.OWN_SESSION,
    "ping": WsRule.OWN_SESSION,
    "state": WsRule.OWN_SESSION,
    "offer": WsRule.OWN_SESSION,
    "ice-restart": WsRule.OWN_SESSION,
    "dial": WsRule.OWN_SESSION,
    "answer": WsRule.OWN_CALL,
    "hangup": WsRule.OWN_CALL,
    "hold": WsRule.OWN_CALL,
    "resume": WsRule.OWN_CALL,
    "mute": WsRule.OWN_CALL,
    "recording": WsRule.OWN_CALL,
    "dtmf": WsRule.OWN_CALL,
    "transfer-blind": WsRule.OWN_CALL,
    "transfer-consult": WsRule.OWN_CALL,
    "transfer-complete": WsRule.OWN_CALL,
    "transfer-cancel": WsRule.OWN_CALL,
    "disposition": WsRule.OWN_CALL,
    "web-call-prepare": WsRule.WEB_CALLER,
    "web-call": WsRule.WEB_CALLER,
    "web-call-hangup": WsRule.WEB_CALLER,
    "web-call-dtmf": WsRule.WEB_CALLER,
    "supervisor-auth": WsRule.OPENS_SUPERVISOR,
    "supervisor-offer": WsRule.SUPERVISOR,
    "monitor": WsRule.SUPERVISOR,
    "monitor-stop": WsRule.SUPERVISOR,
}
"""Every client message of `webrtc.signaling.CLIENT_MESSAGES` and its rule."""


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a request acts as: `actor` (an account's name, ``integration:<name>``, or
    ``bootstrap`` for the configured token), its `role`, its `scope` (None: everything) and the
    `token_id` it came with."""

    actor: str
    role: Role
    scope: frozenset[str] | None = None
    token_id: str = ""
    account: str | None = None

    def allows(self, permission: Permission) -> bool:
        """Whether the role may do `permission`."""
        return permission in ROLE_PERMISSIONS[self.role]

    def queues(self, scopes: Scopes) -> frozenset[str] | None:
        """The queues in scope (a campaign in scope brings its queue); None: every queue."""
        if self.scope is None:
            return None
        return self.scope | {scopes.campaigns[c] for c in self.scope if c in scopes.campaigns}

    def covers(self, scopes: Scopes, *, queue: str = "", campaign: str = "") -> bool:
        """Whether a record of `queue` (or `campaign`) is in scope; one of neither is only in
        an unscoped identity's."""
        if self.scope is None:
            return True
        if campaign and campaign in self.scope:
            return True
        queues = self.queues(scopes)
        return bool(queue) and queues is not None and queue in queues

    def covers_agent(self, scopes: Scopes, agent: str) -> bool:
        """Whether `agent` is a member of a queue in scope."""
        queues = self.queues(scopes)
        return queues is None or bool(queues & scopes.agent_queues(agent))


@dataclass(frozen=True, slots=True)
class Scopes:
    """What scopes are checked against: each campaign's queue, and an agent's queues."""

    campaigns: Mapping[str, str] = field(default_factory=dict)
    """Campaign name -> its queue."""
    members: Mapping[str, frozenset[str]] = field(default_factory=dict)
    """Queue name -> its members (agents)."""

    def agent_queues(self, agent: str) -> frozenset[str]:
        """The queues `agent` is a member of."""
        return frozenset(queue for queue, members in self.members.items() if agent in members)

    def known(self, name: str) -> bool:
        """Whether `name` is a campaign or a queue (what a scope may name)."""
        return name in self.campaigns or name in self.members


class Authenticator(Protocol):
    """Turns a bearer token into an identity."""

    def authenticate(self, token: str) -> Identity | None:
        """The token's identity, or None (unknown, revoked, expired, disabled account)."""


SCOPES_KEY: web.AppKey[Callable[[], Scopes]] = web.AppKey("scopes")
"""What scopes are checked against, for handlers that filter by scope."""
IDENTITY_KEY: web.RequestKey[Identity] = web.RequestKey("identity")
"""The identity `authorize` found, for the handler."""
AUTHENTICATOR_KEY: web.RequestKey[Authenticator] = web.RequestKey("authenticator")
"""What `authorize` checked the token with, for a handler whose answer lasts (the event stream
checks its token again while it streams)."""

_HANDLER = Callable[[web.Request], Awaitable[web.StreamResponse]]
_UNAUTHORIZED = {"WWW-Authenticate": 'Bearer realm="omlmedia"'}
_API_PREFIX = "/api/"


def rule_for(method: str, template: str) -> Rule | None:
    """The rule of a route (HEAD follows GET), or None when it has none."""
    method = "GET" if method == "HEAD" else method
    return RULES.get((method, template)) or PAGE_RULES.get((method, template))


def _template(request: web.Request) -> str | None:
    route = request.match_info.route
    resource = route.resource
    return resource.canonical if resource is not None else None


def bearer(request: web.Request) -> str | None:
    """The bearer token of ``Authorization``, if there is one."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def check(identity: Identity, rule: Rule, request: web.Request, scopes: Scopes) -> None:
    """Raise a 403 `ApiError` naming what `identity` lacks for `rule` on `request`."""
    permission = rule.permission
    if permission is not None and not identity.allows(permission):
        raise ApiError(
            403,
            f"the role {identity.role} lacks the permission {permission}",
            missing_permission=str(permission),
        )
    if identity.scope is None or rule.scope is Scope.NONE:
        return
    name = request.match_info.get("name", "")
    if rule.scope is Scope.GLOBAL:
        raise ApiError(403, "this route needs a token without a scope", missing_scope="*")
    if rule.scope is Scope.QUEUE:
        if not identity.covers(scopes, queue=name):
            raise ApiError(403, f"the queue {name} is out of scope", missing_scope=name)
    elif rule.scope is Scope.AGENT:
        if not identity.covers_agent(scopes, name):
            raise ApiError(403, f"the agent {name} is out of scope", missing_scope=name)
    elif rule.scope is Scope.FILTER:
        queue = request.query.get("queue")
        if queue is not None and not identity.covers(scopes, queue=queue):
            raise ApiError(403, f"the queue {queue} is out of scope", missing_scope=queue)


def _log_bad_token(request: web.Request) -> None:
    """One ``SECURITY reason=api-token-invalid`` line (contrib/fail2ban reads it); the token is
    never logged."""
    source, port = request_source(request)
    logger.warning(security_line("api-token-invalid", source, port, None))


def authorize(authenticator: Authenticator, scopes: Callable[[], Scopes]) -> Middleware:
    """The middleware that enforces `RULES` and `PAGE_RULES` on every request of the
    application it is given to (its sub-applications included), identities from
    `authenticator`, scopes from `scopes` (see the module's docstring)."""

    @web.middleware
    async def authorize(request: web.Request, handler: _HANDLER) -> web.StreamResponse:
        unmatched = request.match_info.http_exception
        template = _template(request) if unmatched is None else None
        rule = rule_for(request.method, template) if template is not None else None
        api = request.path.startswith(_API_PREFIX) or (rule is not None and rule.permission)
        if not api:
            if unmatched is None and rule is None:
                logger.error("refused %s %s: no access rule", request.method, template)
                raise web.HTTPForbidden(text="No access rule for this page.")
            return await handler(request)
        try:
            refused = [name for name in TOKEN_PARAMETERS if name in request.query]
            if refused:
                raise ApiError(
                    400,
                    "tokens are not accepted in the URL: send Authorization: Bearer <token>",
                    [(name, "not accepted in the URL") for name in refused],
                )
            if rule is not None and rule.permission is None:
                return await handler(request)
            token = bearer(request)
            if token is None and rule is not None and rule.ticket and "ticket" in request.query:
                return await handler(request)  # the handler redeems the ticket (Rule.ticket)
            identity = authenticator.authenticate(token) if token else None
            if identity is None:
                if token:  # a guess, a revoked or an expired token: fail2ban counts these
                    _log_bad_token(request)
                return problem(401, "a valid bearer token is required", headers=_UNAUTHORIZED)
            if unmatched is not None:
                raise unmatched
            if rule is None:
                logger.error("refused %s %s: no access rule", request.method, template)
                raise ApiError(403, "this route has no access rule", missing_permission="rule")
            check(identity, rule, request, scopes())
            request[IDENTITY_KEY] = identity
            request[AUTHENTICATOR_KEY] = authenticator
            return await handler(request)
        except ApiError as exc:
            return problem(exc.status, exc.reason, exc.errors, **exc.extra)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            allow = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
            return problem(exc.status, exc.reason, headers=allow)

    return authorize
