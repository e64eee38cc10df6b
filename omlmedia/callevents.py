"""Call events: the SIP core's calls as ``call.started``, ``call.answered`` and ``call.ended``.

Theory of operation. `CallEvents` sits in front of the router (`CallRouter.on_event`, passed in
as `forward`): it sees every event of the SIP core, hands each on unchanged, and publishes what
an outsider cares about. A call starts when it arrives (an inbound INVITE, before routing) or
when we first hear of it (an outbound call's first response); it is answered when its dialog is
confirmed; it ends after its owner handled the end, so the queue's and the media's last events
(``queue.completed``, ``call.quality``) come before ``call.ended``. Each call event carries the
queue and campaign its route names (for filters and scopes), remembered from start to end for
the calls in progress only.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from omlmedia.config import Campaign, Route, RouteAction
from omlmedia.events import CALL_ANSWERED, CALL_ENDED, CALL_STARTED, EventSink
from sip.ua import Call, CallConfirmed, CallEnded, CallProgress, IncomingCall, UAEvent

__all__ = ["CallEvents"]

MAX_CALLS = 100_000
"""Calls remembered at most (a bound on outside input; every call ends well before)."""


class CallEvents:
    """Publishes the calls' events, then forwards every SIP event to the router."""

    def __init__(
        self,
        events: EventSink,
        route_for: Callable[[str], tuple[Route, str] | None],
        forward: Callable[[UAEvent], None],
        *,
        campaigns: Mapping[str, Campaign] | None = None,
    ) -> None:
        self.events = events
        self.route_for = route_for
        self.forward = forward
        self.campaigns = campaigns or {}
        self._calls: dict[str, tuple[str, str]] = {}
        """Queue and campaign of each call in progress, by call id."""

    def on_event(self, ev: UAEvent) -> None:
        """The SIP core's callback."""
        if isinstance(ev, IncomingCall):
            self._started(ev.call, True)
        elif isinstance(ev, CallProgress) and ev.call.call_id not in self._calls:
            self._started(ev.call, False)
        try:
            self.forward(ev)
        finally:
            if isinstance(ev, CallConfirmed):
                self._publish(CALL_ANSWERED, ev.call, {"direction": ev.call.direction})
            elif isinstance(ev, CallEnded):
                self._publish(
                    CALL_ENDED, ev.call, {"cause": ev.cause, "direction": ev.call.direction}
                )
                self._calls.pop(ev.call.call_id, None)

    def _started(self, call: Call, routed: bool) -> None:
        queue = campaign = target = ""
        if routed:
            found = self.route_for(call.request_user)
            if found is not None:
                route = found[0]
                target = route.target
                if route.action is RouteAction.QUEUE:
                    queue = route.trunk or ""
                elif route.action is RouteAction.CAMPAIGN:
                    campaign = route.trunk or ""
                    known = self.campaigns.get(campaign)
                    queue = known.queue if known is not None else ""
        calls = self._calls
        if len(calls) >= MAX_CALLS:
            calls.pop(next(iter(calls)))
        calls[call.call_id] = (queue, campaign)
        invite = call.invite
        self._publish(
            CALL_STARTED,
            call,
            {
                "direction": call.direction,
                "from": invite.from_.uri.user or "",
                "from_name": invite.from_.display_name or "",
                "to": call.request_user,
                "target": target,
                "trunk": call.trunk or "",
                "source": str(call.source),
            },
        )

    def _publish(self, type_: str, call: Call, data: dict[str, object]) -> None:
        queue, campaign = self._calls.get(call.call_id, ("", ""))
        self.events.publish(type_, call_id=call.call_id, queue=queue, campaign=campaign, data=data)
