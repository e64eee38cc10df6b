"""Trunk qualify: OPTIONS keep-alive probes that tell whether a peer is up (RFC 3261 §11), sans-IO.

Theory of operation. :class:`Qualify` sends one OPTIONS every ``interval`` seconds and waits
``timeout`` seconds for an answer (much less than the 32 s of transaction timer F, so a dead peer
is noticed quickly). Any final response, whatever its status (a 404 or 405 included), proves the
peer alive: the trunk is UP and the round-trip time is recorded. ``down_after`` unanswered probes
in a row mark it DOWN. State changes are queued as :class:`StateChanged` events
(:meth:`Qualify.next_event`).

The caller sends each returned request through the transaction layer, passes every response to
:meth:`Qualify.receive_response` and transaction timeouts / transport failures to
:meth:`Qualify.timeout`, and wakes it at :meth:`Qualify.next_deadline`. A response to an older
probe (another CSeq) is ignored, so a slow answer never yields a wrong RTT. The top Via comes from
the ``via`` callback, which must return a fresh branch each time (as for
:class:`sip.registration.Registration`).
"""

from __future__ import annotations

import secrets
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import Enum

from sip.message import URI, Address, Headers, Request, Response, Via, new_tag

__all__ = ["Qualify", "QualifyError", "StateChanged", "TrunkState", "build_options"]


class QualifyError(ValueError):
    """A bad qualify setting (interval, timeout or down_after not positive)."""


class TrunkState(Enum):
    """Reachability of a peer as qualify sees it."""

    UNKNOWN = "unknown"
    UP = "up"
    DOWN = "down"


@dataclass(frozen=True, slots=True)
class StateChanged:
    """The trunk went from ``previous`` to ``state`` at ``at``; ``rtt`` of the last answer."""

    previous: TrunkState
    state: TrunkState
    at: float
    rtt: float | None


def build_options(
    target: URI,
    from_: Address,
    *,
    via: Via,
    call_id: str,
    cseq: int,
    to: Address | None = None,
    route: Iterable[Address] = (),
    user_agent: str | None = None,
    max_forwards: int = 70,
) -> Request:
    """An out-of-dialog OPTIONS to ``target`` (RFC 3261 §11.1, §8.1.1).

    ``from_`` gets a fresh tag when it has none; To is ``target`` unless given; Accept is
    ``application/sdp`` as §11.1 suggests.
    """
    headers = Headers()
    headers.add("Via", str(via))
    headers.add("Max-Forwards", str(max_forwards))
    for hop in route:
        headers.add("Route", str(hop))
    headers.add("From", str(from_ if from_.tag is not None else from_.with_tag(new_tag())))
    headers.add("To", str(to if to is not None else Address(None, target)))
    headers.add("Call-ID", call_id)
    headers.add("CSeq", f"{cseq} OPTIONS")
    headers.add("Accept", "application/sdp")
    if user_agent is not None:
        headers.add("User-Agent", user_agent)
    return Request("OPTIONS", target, headers)


class Qualify:
    """OPTIONS pings to one trunk peer, UP/DOWN and RTT (RFC 3261 §11; Asterisk/Kamailio qualify).

    ``interval``: seconds between probes; ``timeout``: seconds to wait for an answer;
    ``down_after``: consecutive unanswered probes before DOWN.
    """

    def __init__(
        self,
        target: URI,
        from_: Address,
        *,
        via: Callable[[], Via],
        interval: float = 30.0,
        timeout: float = 5.0,
        down_after: int = 3,
        route: Iterable[Address] = (),
        user_agent: str | None = None,
    ) -> None:
        if interval <= 0 or timeout <= 0 or down_after < 1:
            raise QualifyError("Qualify settings must be positive")
        self.target = target
        self.interval = interval
        self.probe_timeout = timeout
        self.down_after = down_after
        self.state = TrunkState.UNKNOWN
        self.rtt: float | None = None
        """Round-trip time of the last answered probe, seconds."""
        self.srtt: float | None = None
        """Smoothed RTT (weight 1/8 per sample, as TCP's RFC 6298)."""
        self.consecutive_failures = 0
        self.call_id = secrets.token_hex(16)
        self._from = from_ if from_.tag is not None else from_.with_tag(new_tag())
        self._to = Address(None, target)
        self._via = via
        self._route = tuple(route)
        self._user_agent = user_agent
        self._cseq = 0
        self._sent_at: float | None = None
        self._next_probe: float | None = None
        self._events: deque[StateChanged] = deque()

    def _probe(self, now: float) -> Request:
        self._cseq += 1
        self._sent_at = now
        self._next_probe = now + self.interval
        return build_options(
            self.target,
            self._from,
            via=self._via(),
            call_id=self.call_id,
            cseq=self._cseq,
            to=self._to,
            route=self._route,
            user_agent=self._user_agent,
        )

    def _set_state(self, state: TrunkState, now: float) -> None:
        if state is not self.state:
            self._events.append(StateChanged(self.state, state, now, self.rtt))
            self.state = state

    def start(self, now: float) -> Request:
        """Begin qualifying: the first OPTIONS, to send now."""
        return self._probe(now)

    def stop(self) -> None:
        """Stop probing; :meth:`next_deadline` is None from now on."""
        self._sent_at = None
        self._next_probe = None

    def next_deadline(self) -> float | None:
        """When :meth:`handle_timer` has work: the probe timeout or the next probe."""
        if self._sent_at is not None:
            return self._sent_at + self.probe_timeout
        return self._next_probe

    def handle_timer(self, now: float) -> Request | None:
        """Count an unanswered probe whose time is up; return the next OPTIONS when it is due."""
        if self._sent_at is not None and now >= self._sent_at + self.probe_timeout:
            self._failed(now)
        if self._sent_at is None and self._next_probe is not None and now >= self._next_probe:
            return self._probe(now)
        return None

    def _failed(self, now: float) -> None:
        self._sent_at = None
        self.consecutive_failures += 1
        if self.consecutive_failures >= self.down_after:
            self._set_state(TrunkState.DOWN, now)

    def receive_response(self, response: Response, now: float) -> None:
        """A response to one of our OPTIONS; a final one to the current probe marks the peer UP."""
        if self._sent_at is None or response.status < 200:
            return
        try:
            if response.call_id != self.call_id or response.cseq.seq != self._cseq:
                return
        except ValueError:
            return
        rtt = max(0.0, now - self._sent_at)
        self._sent_at = None
        self.rtt = rtt
        self.srtt = rtt if self.srtt is None else self.srtt + (rtt - self.srtt) / 8
        self.consecutive_failures = 0
        self._set_state(TrunkState.UP, now)

    def timeout(self, now: float, cseq: int | None = None) -> None:
        """The probe's transaction timed out or its transport failed (RFC 3261 §17.1.2.2).

        ``cseq`` (the failed request's CSeq number) guards against a late report for an older
        probe; None means the current one.
        """
        if self._sent_at is None or (cseq is not None and cseq != self._cseq):
            return
        self._failed(now)

    def next_event(self) -> StateChanged | None:
        """The oldest state change not yet read, or None."""
        return self._events.popleft() if self._events else None
