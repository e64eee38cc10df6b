"""Call targets: what owns a call once the router has routed it.

Theory of operation. The router matches a new call to a route and hands it to a target (a media
service, the B2BUA, a queue, the agent desk, a conference). A target that takes a call sets
``call.app = self``; from then on the router gives every event of that call to ``call.app`` and
to nothing else, and a target that passes a call on (a queue's caller handed to an agent's
transfer, an agent's caller put in a queue) sets ``call.app`` to the new owner. A call nobody
owns gets the defaults: a re-INVITE is refused (488), a REFER or a Replaces INVITE too (603),
everything else is only counted. A new target (an IVR, a dialer) is one class with these methods;
the router does not change.

`CallTarget` is what every owner implements. `TransferTarget` adds the transfers a target may
accept from the peer (RFC 3515 REFER, RFC 3891 Replaces); the router checks for it at run time.
`RouteTarget` is a target that routes lead to: it names the route actions it serves and takes
each new call of them (or refuses it with a `Refusal`); the server gives the router its list of
route targets, so a new kind of target is one class and one line where the server is built.
`PartyHolder` is a target that holds parties that are not SIP calls (browser agents, mixer
endpoints): at shutdown the router asks it to end them first.

`route_permitted` is the one permission check (like Asterisk's contexts): a call from a trunk may
reach the route targets its trunk's ``allowed_targets`` lists, a call from a digest user those of
the user; without the key, every target but ``trunk:`` ones. The router applies it to new calls
and the B2BUA to the destination of a REFER, so a transfer reaches no more than the referrer could
dial itself.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Protocol, cast, runtime_checkable

from omlmedia.config import Config, Route, RouteAction, may_reach
from omlmedia.logs import event
from sip.message import Request, Response
from sip.service import SipService
from sip.transaction import ServerTransaction
from sip.ua import Call

__all__ = [
    "CallTarget",
    "PartyHolder",
    "Refusal",
    "RouteTarget",
    "RouterStats",
    "TransferTarget",
    "owner_of",
    "refuse",
    "route_permitted",
]

logger = logging.getLogger(__name__)


@dataclass
class RouterStats:
    """Counters of the calls the router and its own targets carried (served by the API)."""

    offered: int = 0
    answered: int = 0
    rejected: int = 0
    not_found: int = 0
    forbidden: int = 0
    """New calls and REFERs refused because the caller may not reach the route (403)."""
    over_limit: int = 0
    """New calls refused with 486 because their digest user or source held its concurrent call
    cap (`security.max_calls_per_user`, `security.max_calls_per_source`)."""
    media_refused: int = 0
    """Offers (new calls, re-INVITEs, UPDATEs) refused with 488 for SDES keys over a non-TLS
    trunk or a media address an untrusted peer may not name (`omlmedia.router`)."""
    ended: int = 0
    dtmf: int = 0
    echo_packets: int = 0
    relayed_packets: int = 0
    service_packets: int = 0
    transfers: int = 0
    media_timeouts: int = 0


@runtime_checkable
class CallTarget(Protocol):
    """The owner of a call: the router's events for that call come here."""

    def on_ended(self, call: Call, cause: str) -> None:
        """The call ended (BYE, CANCEL, a failure): release what it held."""

    def on_dtmf(self, call: Call, digit: str) -> None:
        """A digit by SIP INFO (RFC 4733 digits come with the media, not through here)."""

    def on_session_modified(self, call: Call, txn: ServerTransaction, request: Request) -> None:
        """A re-INVITE or UPDATE (RFC 3264 §8): the target must answer `txn`."""

    def on_response(self, call: Call, response: Response) -> None:
        """A response to an INVITE we sent on `call` (provisional or final)."""

    def on_transfer_outcome(self, call: Call, status: int) -> None:
        """The final status of a REFER we sent on `call` (RFC 3515 §2.4.5 NOTIFY)."""


@runtime_checkable
class TransferTarget(CallTarget, Protocol):
    """A target whose peers may transfer its calls."""

    def on_refer(self, call: Call, request: Request, txn: ServerTransaction) -> None:
        """A REFER on `call` (RFC 3515): the target must answer `txn`."""

    def on_replaces(self, call: Call, replaced: Call) -> None:
        """An INVITE with Replaces (RFC 3891): `call` takes `replaced`'s place; the target must
        answer or reject `call`."""


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a route target did not take a new call: the final status to answer (RFC 3261
    §21.4-§21.6), the reason logged, an optional reason phrase, and the target as logged."""

    status: int
    why: str
    phrase: str | None = None
    target: str = ""


class RouteTarget(Protocol):
    """A target that routes lead to (``target = "..."`` of a route in the configuration)."""

    route_actions: tuple[RouteAction, ...]
    """The route actions whose new calls this target takes."""

    def take_route(self, call: Call, route: Route, user: str) -> Refusal | None:
        """Take a new call of `route` (`user` is the Request-URI user as the route rewrote it):
        answer it, or not yet, and own it (``call.app = self``); or return why not, and the
        router refuses the call."""


@runtime_checkable
class PartyHolder(Protocol):
    """A target holding parties that are not SIP calls of the user agent."""

    def hangup_all(self) -> None:
        """End every party (graceful shutdown), before the router hangs up the SIP calls."""


_TARGET_METHODS = tuple(
    name for name in vars(CallTarget) if name.startswith("on_") and callable(vars(CallTarget)[name])
)
_TARGET_CLASSES: dict[type, bool] = {}
"""Whether each class of owner seen has every method of `CallTarget` itself."""


def owner_of(call: Call) -> CallTarget | None:
    """The target that owns `call`, None when nobody does. A few times per SIP event: an
    owner whose class has the protocol's methods is known by its class after the first time
    (``isinstance`` against a runtime protocol looks every method up again each time)."""
    app = call.app
    if app is None:
        return None
    kind = type(app)
    by_class = _TARGET_CLASSES.get(kind)
    if by_class is None:
        by_class = all(callable(getattr(kind, name, None)) for name in _TARGET_METHODS)
        if len(_TARGET_CLASSES) < 256:
            _TARGET_CLASSES[kind] = by_class
    if by_class:
        return cast(CallTarget, app)
    return app if isinstance(app, CallTarget) else None


def refuse(
    service: SipService,
    call: Call,
    status: int,
    why: str,
    phrase: str | None = None,
    **fields: Any,
) -> None:
    """Answer an offered call with a final failure and log why (one `call-rejected` line)."""
    details: dict[str, Any] = {"call_id": call.call_id, "status": status, "reason": why}
    details.update(fields)
    event(logger, "call-rejected", **details)
    service.act(lambda now: service.ua.reject(call, status, now, phrase))


def route_permitted(config: Config, call: Call, target: str) -> str | None:
    """None when the party of `call` (its trunk, else its digest user) may reach the route target
    `target` (``echo``, ``trunk:pbx``...); else why not, as logged.

    A TCP or TLS trunk's request that came over UDP never reaches a ``trunk:`` target: its source
    address may be forged, while the trunk's own connections cannot be."""
    if call.trunk is not None:
        trunk = config.trunk(call.trunk)
        if trunk is None:
            return "unknown-trunk"
        if not may_reach(trunk.allowed_targets, target):
            return "route-not-permitted"
        if (
            target.startswith("trunk:")
            and call.source.transport == "udp"
            and trunk.transport != "udp"
        ):
            return "udp-from-stream-trunk"
        return None
    user = config.user(call.user) if call.user is not None else None
    allowed = user.allowed_targets if user is not None else None
    return None if may_reach(allowed, target) else "route-not-permitted"
