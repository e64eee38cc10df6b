"""Call routing: which target takes each call the SIP core offers, and the dispatch of every
later event of a call to its owner.

Theory of operation. The router is the application above :class:`sip.ua.UserAgent`. For a new
call it matches the Request-URI user against the configured routes (`RouteTable`, first match
wins, with the user part rewritten by the route) and hands the call to the route's target: the
route target that serves the route's action (`omlmedia.targets.RouteTarget`; the server builds
the list: the built-in media targets ``echo``, ``moh``, ``record``, ``dtmf`` in
`omlmedia.media_targets`, trunks in `omlmedia.b2bua`, queues and campaigns in `omlmedia.acd`,
agents in `omlmedia.desk`, conference rooms in `omlmedia.conference`); ``busy`` and ``reject``
are refused here. The target
that takes a call sets ``call.app`` to itself (`omlmedia.targets`), and every later event of the
call (its end, a re-INVITE, a digit by INFO, a response, a transfer's outcome, a REFER) goes to
that owner alone. An INVITE with Replaces goes to the owner of the call it replaces. Before any
target sees a new call, the router checks that its party may reach the route
(`omlmedia.targets.route_permitted`: the trunk's or digest user's ``allowed_targets``, by default
every target but ``trunk:`` ones) and answers 403 when not, and that its digest user and its
source hold fewer live calls than their caps (`omlmedia.callcaps`), answering 486 with
``Retry-After`` when not. It also answers 488 to an offer (a new call's, or a re-INVITE's or
UPDATE's) that names a media address the server must not send to (`media.addresses`: loopback,
its own host, link-local and metadata, internal networks behind a public server) from a peer
that is neither a trunk nor in ``security.trusted_networks``, and to SDES keys a trunk sent over
a non-TLS transport without ``allow_sdes_over_udp`` (`omlmedia.config.sdes_allowed`). The router
itself only counts, logs, and answers what no owner takes (488 to a re-INVITE, 603 to a REFER or
a Replaces, 200 to NOTIFY, 501 to other requests).
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable, Iterable
from functools import partial
from typing import TYPE_CHECKING, Any

from media.addresses import MediaAddressPolicy
from omlmedia.callcaps import CallCaps
from omlmedia.config import Config, Route, RouteAction, sdes_allowed
from omlmedia.logs import event
from omlmedia.targets import (
    PartyHolder,
    Refusal,
    RouterStats,
    RouteTarget,
    TransferTarget,
    owner_of,
    refuse,
    route_permitted,
)
from sip.message import Request
from sip.refer import ReferTo
from sip.sdp import SDPError, SessionDescription
from sip.service import SipService
from sip.transaction import ServerTransaction
from sip.ua import (
    Call,
    CallConfirmed,
    CallEnded,
    CallProgress,
    DtmfReceived,
    IncomingCall,
    InDialogRequest,
    RequestOutcome,
    SessionModified,
    TransferProgress,
    UAEvent,
)

if TYPE_CHECKING:
    from omlmedia.trunks import TrunkManager

__all__ = ["REJECT_STATUS", "CallRouter", "RouteTable", "RouterStats"]

logger = logging.getLogger(__name__)

REJECT_STATUS = {RouteAction.BUSY: 486, RouteAction.REJECT: 603}
CAP_RETRY_AFTER = 30
INTERNAL_TRUNK = "node:"
"""The trunk name prefix of a call another node of the cluster placed (`omlmedia.crossnode`)."""
"""Seconds in the ``Retry-After`` of the 486 to a call beyond its user's or source's cap."""


def _parsed(body: bytes) -> SessionDescription | None:
    """`body` as an SDP, None when it does not parse (its owner answers that in its own words)."""
    try:
        return SessionDescription.parse(body)
    except (SDPError, ValueError):
        return None


class RouteTable:
    """The configured routes, looked up by Request-URI user: those created through the API
    (`omlmedia.directory.Directory.routes_now`) first, then the file's."""

    def __init__(self, config: Config, added: tuple[Route, ...] = ()) -> None:
        self.config = config
        self.added: tuple[Route, ...] = ()
        self._exact: dict[str, int] = {}
        """An exact ``user`` of the API's routes -> the index of the first route with it (a
        DID is found at once, however many there are)."""
        self._patterns: list[tuple[int, Route]] = []
        """The API's ``pattern`` routes, with their index (tried in order, up to the DID's)."""
        self._cache: dict[str, tuple[Route, str] | None] = {}
        self.set_added(added)

    def set_added(self, added: tuple[Route, ...]) -> None:
        """The API's routes now (the next call is matched against them)."""
        exact: dict[str, int] = {}
        patterns: list[tuple[int, Route]] = []
        for index, route in enumerate(added):
            if route.user is not None:
                exact.setdefault(route.user, index)
            else:
                patterns.append((index, route))
        self.added, self._exact, self._patterns = added, exact, patterns
        self._cache = {}

    def _added_route(self, user: str) -> tuple[Route, str] | None:
        """The first of the API's routes matching `user`, in their order."""
        first = self._exact.get(user, len(self.added))
        for index, route in self._patterns:
            if index > first:
                break
            rewritten = route.apply(user)
            if rewritten is not None:
                return route, rewritten
        if first < len(self.added):
            route = self.added[first]
            rewritten = route.apply(user)
            if rewritten is not None:
                return route, rewritten
        return None

    def route_for(self, user: str) -> tuple[Route, str] | None:
        """The first route matching `user`, with the user part rewritten by it (cached: a trunk
        sends the same few numbers all day)."""
        cache = self._cache
        if user in cache:
            return cache[user]
        found = self._added_route(user)
        if found is None:
            found = self.config.route(user)
        if len(cache) >= 4096:
            cache.clear()
        cache[user] = found
        return found


class CallRouter:
    """Routes inbound calls to their targets and dispatches each call's events to its owner."""

    def __init__(
        self,
        config: Config,
        service: SipService,
        routes: RouteTable,
        stats: RouterStats,
        targets: Iterable[RouteTarget],
        *,
        trunks: TrunkManager | None = None,
    ) -> None:
        self.config = config
        self.service = service
        self.routes = routes
        self.stats = stats
        self.targets = tuple(targets)
        """The route targets, in the order the server built them."""
        self._by_action: dict[RouteAction, RouteTarget] = {}
        for target in self.targets:
            for action in target.route_actions:
                if action in self._by_action:
                    raise ValueError(f"two route targets serve {action.value!r} routes")
                self._by_action[action] = target
        self.trunks = trunks
        """Trunk upkeep: the outcome of its OPTIONS and REGISTER requests goes back to it."""
        security = config.security
        self.caps = CallCaps(
            security.max_calls_per_user, security.max_calls_per_source, security.trusted_networks
        )
        """Live calls per digest user and per source, and their caps."""
        self.media_policy = MediaAddressPolicy(config.server.listen, config.server.advertise)
        """The media addresses untrusted peers may not name (`media.addresses`)."""
        self.internal: Callable[[Call], None] | None = None
        """Takes the calls another node of the cluster placed here (`omlmedia.crossnode`):
        admitted by their signature, they reach no route."""

    def route_for(self, user: str) -> tuple[Route, str] | None:
        """The first route matching `user` (see `RouteTable.route_for`)."""
        return self.routes.route_for(user)

    def on_event(self, ev: UAEvent) -> None:
        """Entry point for the SIP core's events."""
        if isinstance(ev, IncomingCall):
            self._on_incoming(ev.call)
        elif isinstance(ev, CallEnded):
            self.stats.ended += 1
            call = ev.call
            self.caps.release(call)
            event(
                logger, "call-ended", call_id=call.call_id, cause=ev.cause, direction=call.direction
            )
            owner = owner_of(call)
            if owner is not None:
                owner.on_ended(call, ev.cause)
        elif isinstance(ev, CallProgress):
            owner = owner_of(ev.call)
            if owner is not None:
                owner.on_response(ev.call, ev.response)
        elif isinstance(ev, CallConfirmed):
            event(logger, "call-confirmed", level=logging.DEBUG, call_id=ev.call.call_id)
        elif isinstance(ev, SessionModified):
            self._on_session_modified(ev.call, ev.transaction, ev.request)
        elif isinstance(ev, DtmfReceived):
            self.stats.dtmf += 1
            owner = owner_of(ev.call)
            if owner is not None:
                owner.on_dtmf(ev.call, ev.digit)
            event(
                logger,
                "dtmf",
                call_id=ev.call.call_id,
                digit=ev.digit,
                via="info",
                duration_ms=ev.duration_ms,
            )
        elif isinstance(ev, TransferProgress):
            owner = owner_of(ev.call)
            if owner is not None and ev.final:
                owner.on_transfer_outcome(ev.call, ev.status)
            event(
                logger,
                "transfer-progress",
                call_id=ev.call.call_id,
                status=ev.status,
                final=ev.final,
            )
        elif isinstance(ev, RequestOutcome):
            if self.trunks is not None:
                self.trunks.on_outcome(ev)
        elif isinstance(ev, InDialogRequest):
            service, call, txn = self.service, ev.call, ev.transaction
            if ev.request.method == "REFER":
                self._on_refer(call, ev.request, txn)
            elif ev.request.method == "NOTIFY":
                service.act(lambda now: service.ua.respond(call, txn, 200, now))
            else:
                service.act(lambda now: service.ua.respond(call, txn, 501, now))

    def hangup_all(self) -> None:
        """End every call (graceful shutdown): BYE for answered ones, 480/CANCEL for the others."""
        ua = self.service.ua
        for target in self.targets:
            if isinstance(target, PartyHolder):
                target.hangup_all()
        for call in list(ua.calls.values()):
            self.service.act(partial(ua.hangup, call))

    # -- new calls -----------------------------------------------------------------------------

    def _on_incoming(self, call: Call) -> None:
        service = self.service
        self.stats.offered += 1
        if call.replaces is not None:
            replaced = call.replaces
            owner = owner_of(replaced)
            if isinstance(owner, TransferTarget):
                owner.on_replaces(call, replaced)
            else:
                service.act(lambda now: service.ua.reject(call, 603, now))
            return
        if not self._admit(call):
            return
        refused = self._offer_refusal(call, call.remote_sdp)
        if refused is not None:
            self.stats.media_refused += 1
            why, fields = refused
            self._refuse(call, 488, why, **fields)
            return
        if self.internal is not None and (call.trunk or "").startswith(INTERNAL_TRUNK):
            # Another node's offer, admitted by its signature: it reaches no route.
            self.internal(call)
            return
        found = self.route_for(call.request_user)
        if found is None:
            self.stats.not_found += 1
            self._refuse(call, 404, "no-route", user=call.request_user)
            return
        route, user = found
        event(
            logger,
            "call-offered",
            call_id=call.call_id,
            user=call.request_user,
            target=route.target,
            trunk=call.trunk,
            auth_user=call.user,
            source=str(call.source),
        )
        denied = route_permitted(self.config, call, route.target)
        if denied is not None:
            self.stats.forbidden += 1
            event(
                logger,
                "call-forbidden",
                level=logging.WARNING,
                call_id=call.call_id,
                status=403,
                reason=denied,
                user=call.request_user,
                target=route.target,
                trunk=call.trunk,
                auth_user=call.user,
                source=str(call.source),
            )
            service.act(lambda now: service.ua.reject(call, 403, now))
            return
        action = route.action
        status = REJECT_STATUS.get(action)
        if status is not None:
            self.stats.rejected += 1
            service.act(lambda now: service.ua.reject(call, status, now))
            return
        target = self._by_action.get(action)
        refusal = (
            target.take_route(call, route, user)
            if target is not None
            else Refusal(503, "target-unavailable", "Target Not Available")
        )
        if refusal is not None:
            self.stats.rejected += 1
            self._refuse(
                call,
                refusal.status,
                refusal.why,
                refusal.phrase,
                target=refusal.target or route.target,
            )

    def _admit(self, call: Call) -> bool:
        """Take the call's slots under its user's and source's caps, or answer 486 and say no."""
        over = self.caps.admit(call, user=call.user, host=call.source.host, trunk=call.trunk)
        if over is None:
            return True
        self.stats.over_limit += 1
        if over.first_of_burst:
            event(
                logger,
                "call-limit",
                level=logging.WARNING,
                call_id=call.call_id,
                status=486,
                cap=over.cap,
                key=over.key,
                limit=over.limit,
                user=call.request_user,
                auth_user=call.user,
                source=str(call.source),
            )
        service = self.service
        retry = (("Retry-After", str(CAP_RETRY_AFTER)),)
        service.act(lambda now: service.ua.reject(call, 486, now, headers=retry))
        return False

    def _refuse(
        self, call: Call, status: int, why: str, phrase: str | None = None, **fields: Any
    ) -> None:
        refuse(self.service, call, status, why, phrase, **fields)

    # -- what no owner takes -------------------------------------------------------------------

    def _offer_refusal(self, call: Call, body: bytes) -> tuple[str, dict[str, str]] | None:
        """Why an offer in `body` from `call`'s peer gets 488, with the fields to log, or None:
        SDES keys from a trunk over a non-TLS transport that does not allow them
        (``sdes-without-tls``), a media address an untrusted peer may not name
        (``media-address-<why>``). An SDP that does not parse is left to the call's owner."""
        if not body:
            return None
        transport = call.source.transport
        source = str(call.source)
        if call.trunk is not None:
            # Believed for its media addresses; only SDES keys over a plain transport matter,
            # and only an SDP with a crypto attribute is worth parsing (most calls have none).
            trunk = self.config.trunk(call.trunk)
            if trunk is None or sdes_allowed(trunk, transport) or b"a=crypto" not in body:
                return None
            sdp = _parsed(body)
            if sdp is None or not any(media.crypto for media in sdp.media):
                return None
            return "sdes-without-tls", {"trunk": trunk.name, "source": source}
        if self._trusted_network(call.source.host):
            return None
        sdp = _parsed(body)
        if sdp is None:
            return None
        found = self.media_policy.check(sdp)
        if found is None:
            return None
        address, why = found
        fields = {"address": address, "auth_user": call.user or "", "source": source}
        return f"media-address-{why}", fields

    def _trusted_network(self, host: str) -> bool:
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(ip in network for network in self.config.security.trusted_networks)

    def _on_session_modified(self, call: Call, txn: ServerTransaction, request: Request) -> None:
        refused = self._offer_refusal(call, request.body)
        if refused is not None:
            self.stats.media_refused += 1
            why, fields = refused
            event(
                logger,
                "offer-refused",
                level=logging.WARNING,
                call_id=call.call_id,
                status=488,
                reason=why,
                method=request.method,
                **fields,
            )
            service = self.service
            service.act(lambda now: service.ua.respond(call, txn, 488, now))
            return
        owner = owner_of(call)
        if owner is not None:
            owner.on_session_modified(call, txn, request)
            return
        service = self.service
        service.act(lambda now: service.ua.respond(call, txn, 488, now))

    def _on_refer(self, call: Call, request: Request, txn: ServerTransaction) -> None:
        owner = owner_of(call)
        if isinstance(owner, TransferTarget):
            owner.on_refer(call, request, txn)
            return
        service = self.service
        try:
            ReferTo.parse(request.headers.get("Refer-To") or "")
        except ValueError:
            service.act(lambda now: service.ua.respond(call, txn, 400, now))
            return
        service.act(lambda now: service.ua.respond(call, txn, 603, now))
