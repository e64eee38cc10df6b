"""The user-agent core (RFC 3261 §8, §12-§15): the transaction user above the transaction layer.

Theory of operation. The asyncio adapter hands every datagram or framed stream message to
:meth:`UserAgent.receive` with the source endpoint and the time. The core parses it, answers what it
can on its own (parse errors, request inspection, OPTIONS, authentication challenges, out-of-dialog
requests for unknown dialogs, rate-limited sources) and turns the rest into :class:`UAEvent` values
for the application (``next_event``). The application acts on calls through methods that take
``now`` (``answer``, ``reject``, ``hangup``, ``send_invite``...). What must go on the wire is
collected in ``datagrams_to_send``; when to wake up again is ``get_timer``. Nothing here reads a
clock or a socket.

Security baseline: a request from a source that is neither trusted by address (a trunk) nor
authenticated by digest gets 401 (when there are users who could authenticate) and then 403, with
the same answer whatever the user name; every rejection produces one line from
:func:`sip.security.security_event` on the ``sip.security`` logger; per-source rate limiting drops a
flooding source silently for a while. Digest failures are counted per source too (IPv4 address or
IPv6 /64, by a second :class:`~sip.security.RateLimiter` that counts failures instead of requests):
a source that keeps guessing passwords is banned, and every message from it is dropped unanswered
until the ban ends (``auth-failure-ban`` starts it in the log, as ``rate-limit-ban`` does a flood
ban).

Strangers cost no state. A new request (one that no server transaction matches) first passes
:meth:`UserAgent._admit`, before the transaction layer sees it: more than ``max_vias`` Via values
get 400; an in-dialog request for no dialog gets 481; an INVITE past ``max_calls`` live calls gets
503 with Retry-After; an out-of-dialog request that is neither trusted nor authenticated gets its
401 or 403. Each of these answers is stateless (RFC 3261 §8.2.7, Kamailio's ``sl_send_reply``):
it is sent once, never retransmitted by Timer G, and no transaction is kept; a retransmitted
request simply gets a fresh one. Only admitted requests create server transactions, and the
transaction layer caps those too (503 beyond ``max_transactions``).
"""

from __future__ import annotations

import functools
import ipaddress
import logging
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from enum import Enum

from sip.dialog import Dialog, DialogState, DialogTable
from sip.digest import DigestClient, DigestServer
from sip.endpoint import Endpoint
from sip.info import parse_dtmf_info
from sip.message import (
    URI,
    Address,
    ParseError,
    Request,
    Response,
    Via,
    make_response,
    new_branch,
    new_tag,
    parse_message,
)
from sip.refer import Replaces, ReplacesRejected, build_refer, match_replaces, parse_sipfrag
from sip.security import RateLimiter, Verdict, security_event
from sip.transaction import (
    AckReceived,
    AckTimeout,
    ClientTransaction,
    InviteCancelled,
    RequestReceived,
    ResponseReceived,
    ServerTransaction,
    StrayResponse,
    Timers,
    TransactionError,
    TransactionLayer,
    TransactionTimeout,
    TransportFailed,
)
from sip.validation import check_request

logger = logging.getLogger(__name__)
security_logger = logging.getLogger("sip.security")

ALLOWED_METHODS = frozenset(
    {"INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "INFO", "UPDATE", "REFER", "NOTIFY"}
)
SUPPORTED_EXTENSIONS = frozenset({"replaces", "norefersub"})
ALLOW_HEADER = ", ".join(sorted(ALLOWED_METHODS))
SUPPORTED_HEADER = ", ".join(sorted(SUPPORTED_EXTENSIONS))
MAX_AUTH_FAILURES = 10
"""Digest failures a source may make in a burst; the next one bans it (see ``auth_limiter``)."""
AUTH_FAILURE_WINDOW = 600.0
"""Seconds in which ``MAX_AUTH_FAILURES`` failures are forgiven again (the bucket's refill)."""
AUTH_BAN_TIME = 3600.0
"""Seconds a source that failed too often is ignored (fail2ban's usual ``bantime``)."""
MAX_VIAS = 70
"""Via values a request may carry: one per hop, and a UAC starts Max-Forwards at 70 (RFC 3261
§8.1.1.6), so a request with more crossed more hops than any proxy lets it, or is forged. Lower
caps break well-formed requests: RFC 4475 §3.1.1.7 (``longreq``) carries 34 Vias and must be
processed. Every answer copies all Vias, so the cap bounds the work and size of each answer."""


class CallState(Enum):
    """Where an INVITE dialog stands, from the application's point of view."""

    OFFERED = "offered"  # inbound INVITE received, not answered yet
    CALLING = "calling"  # outbound INVITE sent, no final response yet
    ANSWERED = "answered"  # 2xx sent or received, waiting for / sending ACK
    CONFIRMED = "confirmed"  # ACK exchanged: media flows
    ENDED = "ended"


@dataclass(eq=False)
class Call:
    """One INVITE-initiated session (inbound or outbound) and what the application hangs on it."""

    call_id: str
    direction: str  # "inbound" or "outbound"
    source: Endpoint
    invite: Request
    state: CallState
    local_tag: str
    trunk: str | None = None
    user: str | None = None
    dialog: Dialog | None = None
    server_transaction: ServerTransaction | None = None
    client_transaction: ClientTransaction | None = None
    final_response: Response | None = None
    end_cause: str | None = None
    app: object = None
    """The application's owner of the call (the target that took it); the core never reads it."""
    pending_requests: dict[int, ServerTransaction] = field(default_factory=dict)
    credentials: tuple[str, str] | None = None
    auth_attempts: int = 0
    replaces: Call | None = None
    ack: Request | None = None
    bye_reason: str = ""
    """The ``Reason`` header (RFC 3326) of the BYE that ended the call, if it had one."""

    @property
    def remote_sdp(self) -> bytes:
        """The body of the INVITE (the offer), empty when the caller sent none."""
        return self.invite.body

    @property
    def request_user(self) -> str:
        """The Request-URI user part: what the caller dialled."""
        return self.invite.uri.user or ""


class UAEvent:
    """Base class of what the core tells the application."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class IncomingCall(UAEvent):
    """A new, accepted INVITE: answer, reject or ring it."""

    call: Call


@dataclass(frozen=True, slots=True)
class CallConfirmed(UAEvent):
    """The ACK for our 2xx arrived (inbound) or we sent the ACK (outbound)."""

    call: Call


@dataclass(frozen=True, slots=True)
class CallEnded(UAEvent):
    """The call is over: `cause` is ``bye``, ``cancel``, ``ack-timeout``, ``timeout``,
    ``rejected``..."""

    call: Call
    cause: str


@dataclass(frozen=True, slots=True)
class CallProgress(UAEvent):
    """A response to an INVITE we sent (provisional or final)."""

    call: Call
    response: Response


@dataclass(frozen=True, slots=True)
class SessionModified(UAEvent):
    """A re-INVITE or UPDATE inside the call: the application answers it with :meth:`respond`."""

    call: Call
    request: Request
    transaction: ServerTransaction


@dataclass(frozen=True, slots=True)
class DtmfReceived(UAEvent):
    """An INFO carrying a DTMF digit (application/dtmf-relay or application/dtmf)."""

    call: Call
    digit: str
    duration_ms: int


@dataclass(frozen=True, slots=True)
class TransferProgress(UAEvent):
    """How a transfer we asked for with :meth:`UserAgent.refer` goes (RFC 3515 §2.4.4-§2.4.5).

    `status` is the REFER's own final response (202 accepted, or a failure) or the status line of a
    NOTIFY sipfrag (100, 180, 200...); `final` once nothing more will come.
    """

    call: Call
    status: int
    final: bool


@dataclass(frozen=True, slots=True)
class InDialogRequest(UAEvent):
    """REFER, NOTIFY and other in-dialog requests the core does not handle itself."""

    call: Call
    request: Request
    transaction: ServerTransaction


@dataclass(frozen=True, slots=True)
class RequestOutcome(UAEvent):
    """The end of an out-of-dialog request the application sent (OPTIONS, REGISTER...).

    `response` is the final response, or None when the transaction timed out or the transport
    failed (`cause` says which).
    """

    transaction: ClientTransaction
    response: Response | None
    cause: str | None


@dataclass
class UAStats:
    """Counters for the debug endpoint and the tests."""

    received: int = 0
    parse_errors: int = 0
    rejected: int = 0
    rate_limited: int = 0
    overloaded: int = 0
    auth_challenges: int = 0
    auth_failures: int = 0
    auth_bans: int = 0
    forbidden: int = 0
    calls_total: int = 0


class UserAgent:
    """The sans-IO UA core: one per server process, serving every transport.

    ``max_vias``, ``max_transactions`` (live server transactions) and ``max_calls`` (live calls,
    each with at most one dialog) bound what the network can make it hold; the defaults leave
    room for a few hundred agents with their callers. Past a cap the answer is a stateless 503
    with ``Retry-After: retry_after`` seconds (RFC 3261 §21.5.4).

    ``auth_limiter`` counts digest failures (wrong password or response, unknown user, forged or
    malformed credentials: every 403 ``auth-failed``) per source and bans a source that runs it dry;
    a banned source is ignored entirely, as a flooding one is. By default it allows
    ``MAX_AUTH_FAILURES`` per ``AUTH_FAILURE_WINDOW`` and bans for ``AUTH_BAN_TIME``, trusting what
    ``rate_limiter``'s policy trusts; sources trusted as trunks never reach digest at all.
    """

    def __init__(
        self,
        *,
        local_endpoints: dict[str, Endpoint],
        trusted_source: Callable[[str], str | None],
        internal_source: Callable[[Request, Endpoint], str | None] | None = None,
        digest: DigestServer | None = None,
        lookup_ha1: Callable[[str, str, str], str | None] | None = None,
        rate_limiter: RateLimiter | None = None,
        auth_limiter: RateLimiter | None = None,
        timers: Timers | None = None,
        user_agent: str = "omlmedia",
        max_vias: int = MAX_VIAS,
        max_transactions: int = 8192,
        max_calls: int = 4096,
        retry_after: int = 5,
    ) -> None:
        self._local = local_endpoints
        self._contacts: dict[tuple[str, Endpoint], tuple[Address, str]] = {}
        """Our Contact and its text by transport and local address (`_contact`)."""
        self.local_for: Callable[[Endpoint], Endpoint | None] | None = None
        """The address written in Via and Contact for a peer that is not reached at the
        transport's listener (a cluster node over the internal TLS link); None: the transport's."""
        self._trusted_source = trusted_source
        self._internal_source = internal_source
        self._digest = digest
        self._lookup_ha1 = lookup_ha1
        self._rate_limiter = rate_limiter
        if auth_limiter is None:
            auth_limiter = RateLimiter(
                MAX_AUTH_FAILURES,
                AUTH_FAILURE_WINDOW,
                AUTH_BAN_TIME,
                policy=rate_limiter.policy if rate_limiter is not None else None,
            )
        self.auth_limiter = auth_limiter
        self._user_agent = user_agent
        self._max_vias = max_vias
        self._max_calls = max_calls
        self._retry_after = retry_after
        self._admitted: tuple[Request, str | None, str | None] | None = None
        self.transactions = TransactionLayer(
            timers or Timers(), max_server_transactions=max_transactions, retry_after=retry_after
        )
        self.dialogs = DialogTable()
        self.calls: dict[tuple[str, str], Call] = {}
        self._calls_by_invite_txn: dict[int, Call] = {}
        self._calls_by_client_txn: dict[int, Call] = {}
        self._events: deque[UAEvent] = deque()
        self._requests: dict[int, ClientTransaction] = {}
        self._refers: dict[int, Call] = {}
        self._direct: list[tuple[bytes, Endpoint]] = []
        self.stats = UAStats()

    # -- the adapter's side -------------------------------------------------------------------

    def receive(self, data: bytes, source: Endpoint, now: float) -> None:
        """Take one complete SIP message from the network."""
        self.stats.received += 1
        if self.auth_limiter.is_banned(source.host, now) and (
            self._trusted_source(source.host) is None
        ):
            self.stats.rate_limited += 1
            return
        limiter = self._rate_limiter
        if limiter is not None and self._trusted_source(source.host) is None:
            verdict = limiter.check(source.host, now)
            if verdict is not Verdict.ALLOW:
                self.stats.rate_limited += 1
                if verdict is Verdict.BAN:
                    security_logger.warning(
                        security_event("rate-limit-ban", source.host, source.port, None, None, None)
                    )
                return
        try:
            message = parse_message(data)
        except ParseError as exc:
            self.stats.parse_errors += 1
            if exc.request is not None and exc.request.method != "ACK":
                self._send_direct(
                    make_response(exc.request, exc.status, exc.reason), exc.request, source
                )
            logger.debug("parse error from %s: %s", source, exc.reason)
            return
        try:
            if isinstance(message, Request) and message.cseq.method != message.method:
                # The transaction layer keys on the CSeq method: refuse first (RFC 4475 3.1.2.17).
                self.stats.parse_errors += 1
                if message.method != "ACK":
                    self._send_direct(
                        make_response(message, 400, "CSeq Method Mismatch", to_tag=new_tag()),
                        message,
                        source,
                    )
                return
            if (
                isinstance(message, Request)
                and message.method != "ACK"
                and not self._admit(message, source, now)
            ):
                return
            self.transactions.receive(message, source, now)
        except ValueError as exc:  # a header needed for matching is malformed
            self.stats.parse_errors += 1
            if isinstance(message, Request) and message.method != "ACK":
                try:
                    self._send_direct(make_response(message, 400, "Bad Request"), message, source)
                except ValueError:
                    pass
            logger.debug("unmatchable message from %s: %s", source, exc)
            self._admitted = None
            return
        self._drain_layer(now)
        self._admitted = None

    def handle_timer(self, now: float) -> None:
        """Run whatever timers are due."""
        self.transactions.handle_timer(now)
        self._drain_layer(now)

    def get_timer(self) -> float | None:
        """The next deadline, or None."""
        return self.transactions.get_timer()

    def datagrams_to_send(self) -> list[tuple[bytes, Endpoint]]:
        """What must go on the wire now."""
        out = self.transactions.datagrams_to_send()
        if self._direct:
            out.extend(self._direct)
            self._direct = []
        return out

    def next_event(self) -> UAEvent | None:
        """The next event for the application."""
        return self._events.popleft() if self._events else None

    @property
    def call_count(self) -> int:
        """Calls that are not over yet."""
        return len(self.calls)

    # -- the application's side ---------------------------------------------------------------

    def ring(self, call: Call, now: float, body: bytes = b"", status: int = 180) -> None:
        """Send 180 Ringing (or 183 Session Progress with early media when `body` is given)."""
        if call.state is not CallState.OFFERED or call.server_transaction is None:
            return
        response = self._response_for(call, status, body)
        self._ensure_uas_dialog(call, response)
        self._respond(response, now)
        self._drain_layer(now)

    def answer(
        self,
        call: Call,
        body: bytes,
        now: float,
        content_type: str = "application/sdp",
        headers: Sequence[tuple[str, str]] = (),
    ) -> None:
        """Send 200 OK with our answer (and extra `headers`); the layer retransmits it until
        the ACK arrives."""
        if call.state is not CallState.OFFERED or call.server_transaction is None:
            return
        response = self._response_for(call, 200, body, content_type)
        for name, value in headers:
            response.headers.add(name, value)
        self._ensure_uas_dialog(call, response)
        assert call.dialog is not None
        call.dialog.send_response(call.invite, response)
        call.state = CallState.ANSWERED
        call.final_response = response
        self._respond(response, now)
        self._drain_layer(now)

    def reject(
        self,
        call: Call,
        status: int,
        now: float,
        reason: str | None = None,
        headers: Sequence[tuple[str, str]] = (),
    ) -> None:
        """Refuse an offered call with a final non-2xx response (with extra `headers`, such as
        ``Retry-After``)."""
        if call.state is not CallState.OFFERED or call.server_transaction is None:
            return
        response = make_response(call.invite, status, reason, to_tag=call.local_tag)
        if status == 405:
            response.headers.add("Allow", ALLOW_HEADER)
        for name, value in headers:
            response.headers.add(name, value)
        call.final_response = response
        self._respond(response, now)
        self._end(call, "rejected")
        self._drain_layer(now)

    def respond(
        self,
        call: Call,
        transaction: ServerTransaction,
        status: int,
        now: float,
        body: bytes = b"",
        content_type: str | None = None,
    ) -> None:
        """Answer an in-dialog request that was handed to the application."""
        request = transaction.request
        response = make_response(
            request,
            status,
            to_tag=call.local_tag,
            body=body,
            content_type=content_type if body else None,
        )
        if status < 300 and request.method in ("INVITE", "UPDATE"):
            response.headers.add("Contact", self._contact_text(call.source.transport, call.source))
        self._respond(response, now)
        call.pending_requests.pop(request.cseq.seq, None)
        self._drain_layer(now)

    def hangup(self, call: Call, now: float, reason: str = "") -> None:
        """End the call whatever its state: BYE, CANCEL, or a final response for an offer.
        `reason`: a ``Reason`` header value (RFC 3326) for the BYE."""
        if call.state is CallState.ENDED:
            return
        if call.state is CallState.OFFERED:
            self.reject(call, 480, now)
            return
        if call.state is CallState.CALLING:
            if call.client_transaction is not None:
                self.transactions.cancel(call.client_transaction, now)
            self._end(call, "cancel")
            self._drain_layer(now)
            return
        dialog = call.dialog
        if dialog is not None and dialog.state is not DialogState.TERMINATED:
            bye = dialog.create_request("BYE", via=self._via(call.source))
            self._add_common(bye)
            if reason:
                bye.headers.add("Reason", reason)
            self.transactions.send_request(bye, self._next_hop(dialog, call.source), now)
        self._end(call, "hangup")
        self._drain_layer(now)

    def send_invite(
        self,
        *,
        destination: Endpoint,
        request_uri: URI,
        from_address: Address,
        to_address: Address,
        body: bytes,
        now: float,
        credentials: tuple[str, str] | None = None,
        trunk: str | None = None,
        headers: Iterable[tuple[str, str]] = (),
    ) -> Call:
        """Place an outbound call (RFC 3261 §13.2.1); progress arrives as CallProgress events."""
        local_tag = new_tag()
        request = Request("INVITE", request_uri)
        add = request.headers.add
        add("Via", str(self._via(destination)))
        add("Max-Forwards", "70")
        add("From", str(from_address.with_tag(local_tag)))
        add("To", str(to_address))
        add("Call-ID", new_tag() + new_tag())
        add("CSeq", "1 INVITE")
        add("Contact", self._contact_text(destination.transport, destination))
        add("Allow", ALLOW_HEADER)
        add("Supported", SUPPORTED_HEADER)
        for name, value in headers:
            add(name, value)
        self._add_common(request)
        if body:
            add("Content-Type", "application/sdp")
            request.body = body
        call = Call(
            call_id=request.call_id,
            direction="outbound",
            source=destination,
            invite=request,
            state=CallState.CALLING,
            local_tag=local_tag,
            trunk=trunk,
            credentials=credentials,
        )
        self.calls[(call.call_id, local_tag)] = call
        self.stats.calls_total += 1
        self._send_invite_request(call, request, now)
        return call

    def send_request(
        self, request: Request, destination: Endpoint, now: float
    ) -> ClientTransaction:
        """Send an out-of-dialog request the application built (OPTIONS, REGISTER); without a Via
        we add ours (see :meth:`via_for`). The outcome arrives as a RequestOutcome event."""
        if "Via" not in request.headers:
            request.headers.insert_first("Via", str(self._via(destination)))
        if "User-Agent" not in request.headers:
            self._add_common(request)
        txn = self.transactions.send_request(request, destination, now)
        self._requests[id(txn)] = txn
        self._drain_layer(now)
        return txn

    def send_in_dialog(
        self,
        call: Call,
        method: str,
        now: float,
        body: bytes = b"",
        content_type: str | None = None,
        headers: Iterable[tuple[str, str]] = (),
    ) -> ClientTransaction | None:
        """Send re-INVITE, UPDATE, INFO, REFER, NOTIFY... inside an established call."""
        dialog = call.dialog
        if dialog is None or dialog.state is DialogState.TERMINATED:
            return None
        request = dialog.create_request(
            method,
            via=self._via(call.source),
            body=body,
            content_type=content_type,
            headers=headers,
        )
        self._add_common(request)
        txn = self.transactions.send_request(request, self._next_hop(dialog, call.source), now)
        self._calls_by_client_txn[id(txn)] = call
        self._drain_layer(now)
        return txn

    def refer(
        self, call: Call, target: Address, now: float, replaces: Replaces | None = None
    ) -> ClientTransaction | None:
        """Ask the other party of `call` to call `target` (blind transfer, RFC 3515), or to
        replace a dialog with it (attended transfer, RFC 3891 `replaces`). Progress arrives as
        TransferProgress events, from the REFER's response and the NOTIFYs that follow."""
        dialog = call.dialog
        if dialog is None or dialog.state is not DialogState.CONFIRMED:
            return None
        request = build_refer(dialog, target, self._via(call.source), replaces)
        self._add_common(request)
        txn = self.transactions.send_request(request, self._next_hop(dialog, call.source), now)
        self._calls_by_client_txn[id(txn)] = call
        self._refers[id(txn)] = call
        self._drain_layer(now)
        return txn

    def via_for(self, destination: Endpoint) -> Via:
        """Our Via for a new request to `destination`: a fresh branch, rport asked (RFC 3581)."""
        return self._via(destination)

    def contact_for(self, transport: str) -> Address:
        """Our Contact for requests and responses over `transport`."""
        return self._contact(transport)

    def local_endpoint(self, transport: str) -> Endpoint:
        """The address we listen on for `transport` (the first one when it is not served)."""
        return self._local.get(transport) or next(iter(self._local.values()))

    # -- internals ----------------------------------------------------------------------------

    def _drain_layer(self, now: float) -> None:
        layer = self.transactions
        while (event := layer.next_event()) is not None:
            try:
                if isinstance(event, RequestReceived):
                    self._on_request(event.request, event.source, event.transaction, now)
                elif isinstance(event, ResponseReceived):
                    self._on_response(event.response, event.transaction, now)
                elif isinstance(event, AckReceived):
                    self._on_ack(event.request)
                elif isinstance(event, InviteCancelled):
                    call = self._calls_by_invite_txn.get(id(event.transaction))
                    if call is not None:
                        self._end(call, "cancel")
                elif isinstance(event, AckTimeout):
                    call = self._calls_by_invite_txn.get(id(event.transaction))
                    if call is not None and call.state is not CallState.ENDED:
                        call.end_cause = "ack-timeout"
                        self.hangup(call, now)
                elif isinstance(event, TransactionTimeout | TransportFailed):
                    self._on_transaction_failure(event.transaction, event, now)
                elif isinstance(event, StrayResponse):
                    pass
            except Exception:  # one bad message must never stop the core
                logger.exception("error handling %s", type(event).__name__)

    def _on_request(
        self,
        request: Request,
        source: Endpoint,
        txn: ServerTransaction | None,
        now: float,
    ) -> None:
        if txn is None:
            return
        error = check_request(
            request, allowed_methods=ALLOWED_METHODS, supported_extensions=SUPPORTED_EXTENSIONS
        )
        if error is not None:
            self.stats.rejected += 1
            self._respond(error, now)
            return
        if request.to_tag is not None:
            self._on_in_dialog_request(request, source, txn, now)
            return
        admitted, self._admitted = self._admitted, None
        if admitted is None or admitted[0] is not request:  # never admitted: fail closed
            self._respond(make_response(request, 403, to_tag=new_tag()), now)
            return
        _, trunk, user = admitted
        method = request.method
        if method == "OPTIONS":
            response = make_response(request, 200, to_tag=new_tag())
            response.headers.add("Allow", ALLOW_HEADER)
            response.headers.add("Accept", "application/sdp")
            response.headers.add("Supported", SUPPORTED_HEADER)
            self._add_common(response)
            self._respond(response, now)
            return
        if method != "INVITE":
            status = 481 if method in ("BYE", "INFO", "UPDATE", "NOTIFY", "PRACK") else 405
            response = make_response(request, status, to_tag=new_tag())
            if status == 405:
                response.headers.add("Allow", ALLOW_HEADER)
            self._respond(response, now)
            return
        max_forwards = request.max_forwards
        if max_forwards is not None and max_forwards <= 0:
            self._respond(make_response(request, 483, to_tag=new_tag()), now)
            return
        try:  # what answering will need (Contact, To, From, Record-Route), checked before offering
            Dialog.create_uas(request, "offer", self._contact(source.transport, source))
        except ValueError:
            self.stats.rejected += 1
            self._respond(make_response(request, 400, to_tag=new_tag()), now)
            return
        replaced: Call | None = None
        if "Replaces" in request.headers:
            try:
                dialog = match_replaces(request, self.dialogs)
            except ReplacesRejected as exc:
                self._respond(make_response(request, exc.status, exc.reason, to_tag=new_tag()), now)
                return
            if dialog is not None:
                replaced = self.calls.get((dialog.id.call_id, dialog.id.local_tag))
            if replaced is None:
                self._respond(make_response(request, 481, to_tag=new_tag()), now)
                return
        call = Call(
            call_id=request.call_id,
            direction="inbound",
            source=source,
            invite=request,
            state=CallState.OFFERED,
            local_tag=new_tag(),
            trunk=trunk,
            user=user,
            server_transaction=txn,
            replaces=replaced,
        )
        self.calls[(call.call_id, call.local_tag)] = call
        self._calls_by_invite_txn[id(txn)] = call
        self.stats.calls_total += 1
        self._events.append(IncomingCall(call))

    def _admit(self, request: Request, source: Endpoint, now: float) -> bool:
        """Decide on a request before it may create a transaction; False once it was answered.

        A retransmission (a server transaction matches) goes on to the layer, which absorbs it.
        Otherwise every refusal here is stateless (RFC 3261 §8.2.7), in the order of §8.2 where
        it applies (authentication first): Via count (400), unknown dialog (481), call cap (503),
        then trusted source or digest (401, 403). An admitted out-of-dialog request leaves its
        (request, trunk, user) for :meth:`_on_request`, which the layer calls before
        :meth:`receive` returns.
        """
        if len(request.headers.getlist("Via")) > self._max_vias:
            self.stats.rejected += 1
            self._reply_statelessly(request, source, 400, "Too Many Via Headers")
            return False
        if self.transactions.server_transaction_for(request) is not None:
            return True
        if request.method == "CANCEL":
            return True  # the layer matches it to its INVITE, or answers 481 statelessly
        if request.to_tag is not None:
            if self.dialogs.match_request(request) is None:
                self._reply_statelessly(request, source, 481)
                return False
            return True
        if request.method == "INVITE" and len(self.calls) >= self._max_calls:
            self.stats.overloaded += 1
            retry_after = (("Retry-After", str(self._retry_after)),)
            self._reply_statelessly(request, source, 503, headers=retry_after)
            return False
        trunk, user = self._authorize(request, source, now)
        if trunk is None and user is None:
            return False
        self._admitted = (request, trunk, user)
        return True

    def _authorize(
        self, request: Request, source: Endpoint, now: float
    ) -> tuple[str | None, str | None]:
        """Return (trunk, user) for an accepted request; (None, None) once it was answered
        statelessly with 401 or 403 (RFC 3261 §22.1, §8.2.7).

        The nonce of each challenge is bound to the Request-URI it answers (RFC 3261 §22.4,
        RFC 7616 §3.4.6; Kamailio's ``auth_checks``), so credentials captured for one number
        authorize no other: such a request is challenged afresh (``stale=true``, which also serves
        a UAC re-using its last nonce, §22.3). The binding lives in the nonce rather than in a
        comparison with the digest ``uri`` parameter, which UACs fill in differently (sipp sends
        ``sip:host:port``).

        First of all, `internal_source` (when given) may admit a request from another node of a
        cluster by its exact source endpoint and a signature it carries (`omlmedia.crossnode`):
        its answer is the request's trunk name."""
        if self._internal_source is not None:
            internal = self._internal_source(request, source)
            if internal is not None:
                return internal, None
        trunk = self._trusted_source(source.host)
        if trunk is not None:
            return trunk, None
        digest = self._digest
        if digest is None or self._lookup_ha1 is None:
            self._forbid(request, source, "untrusted-source")
            return None, None
        request_uri = str(request.uri)
        authorization = request.headers.get("Authorization")
        if authorization is None:
            self.stats.auth_challenges += 1
            challenges = [
                ("WWW-Authenticate", value) for value in digest.challenge(now, bound_to=request_uri)
            ]
            self._reply_statelessly(request, source, 401, headers=challenges)
            return None, None
        result = digest.verify(
            request.method, authorization, self._lookup_ha1, now, bound_to=request_uri
        )
        if result.ok:
            return None, result.username
        if result.stale:
            challenges = [
                ("WWW-Authenticate", v)
                for v in digest.challenge(now, stale=True, bound_to=request_uri)
            ]
            self._reply_statelessly(request, source, 401, headers=challenges)
            return None, None
        self.stats.auth_failures += 1
        self._forbid(request, source, "auth-failed", user=result.username)
        if self.auth_limiter.check(source.host, now) is Verdict.BAN:
            self.stats.auth_bans += 1
            security_logger.warning(
                security_event(
                    "auth-failure-ban",
                    source.host,
                    source.port,
                    request.method,
                    request.call_id,
                    result.username,
                )
            )
        return None, None

    def _forbid(
        self, request: Request, source: Endpoint, reason: str, user: str | None = None
    ) -> None:
        self.stats.forbidden += 1
        security_logger.warning(
            security_event(reason, source.host, source.port, request.method, request.call_id, user)
        )
        self._reply_statelessly(request, source, 403)

    def _reply_statelessly(
        self,
        request: Request,
        source: Endpoint,
        status: int,
        reason: str | None = None,
        headers: Iterable[tuple[str, str]] = (),
    ) -> None:
        """Answer once, keeping no transaction (RFC 3261 §8.2.7; Kamailio's ``sl_send_reply``).

        The top Via gets ``received``/``rport`` first, so the answer goes where the transaction
        layer would send it (§18.2.2, RFC 3581): back to the source address and port.
        """
        destination = self.transactions.stamp_via(request, source)
        response = make_response(request, status, reason, to_tag=new_tag(), headers=headers)
        self._direct.append((bytes(response), destination))

    def _on_in_dialog_request(
        self, request: Request, source: Endpoint, txn: ServerTransaction, now: float
    ) -> None:
        dialog = self.dialogs.match_request(request)
        if dialog is None:
            self._respond(make_response(request, 481), now)
            return
        call = self.calls.get((dialog.id.call_id, dialog.id.local_tag))
        error = dialog.receive_request(request)
        if error is not None:
            self._respond(error, now)
            return
        method = request.method
        if call is None:
            self._respond(make_response(request, 481), now)
            return
        if method == "BYE":
            self._respond(make_response(request, 200), now)
            call.bye_reason = request.headers.get("Reason") or ""
            self._end(call, "bye")
            return
        if method in ("INVITE", "UPDATE"):
            call.pending_requests[request.cseq.seq] = txn
            self._events.append(SessionModified(call, request, txn))
            return
        if method == "INFO":
            try:
                digit = parse_dtmf_info(request.content_type, request.body)
            except ValueError:
                digit = None
            self._respond(make_response(request, 200), now)
            if digit is not None:
                self._events.append(DtmfReceived(call, digit[0], digit[1]))
            return
        if method == "OPTIONS":
            response = make_response(request, 200)
            response.headers.add("Allow", ALLOW_HEADER)
            self._respond(response, now)
            return
        if method == "NOTIFY" and (request.headers.get("Event") or "").lower().startswith("refer"):
            try:
                status, _reason = parse_sipfrag(request.body)
            except ValueError:
                self._respond(make_response(request, 400, "Bad Sipfrag"), now)
                return
            self._respond(make_response(request, 200), now)
            state = (request.headers.get("Subscription-State") or "").lower()
            final = state.startswith("terminated") or status >= 200
            self._events.append(TransferProgress(call, status, final))
            return
        self._events.append(InDialogRequest(call, request, txn))

    def _on_ack(self, request: Request) -> None:
        dialog = self.dialogs.match_request(request)
        if dialog is None:
            return
        call = self.calls.get((dialog.id.call_id, dialog.id.local_tag))
        if call is not None and call.state is CallState.ANSWERED:
            call.state = CallState.CONFIRMED
            self._events.append(CallConfirmed(call))

    def _on_response(self, response: Response, txn: ClientTransaction, now: float) -> None:
        if id(txn) in self._requests:
            if response.status >= 200:
                del self._requests[id(txn)]
                self._events.append(RequestOutcome(txn, response, None))
            return
        call = self._calls_by_client_txn.get(id(txn))
        if call is None:
            return
        if (
            txn.request.method == "INVITE"
            and call.direction == "outbound"
            and txn.request is call.invite
        ):
            self._on_invite_response(call, response, txn, now)
            return
        if response.status >= 200:
            self._calls_by_client_txn.pop(id(txn), None)
            if self._refers.pop(id(txn), None) is not None:
                status = response.status
                self._events.append(TransferProgress(call, status, final=status >= 300))
            if call.dialog is not None:
                call.dialog.receive_response(txn.request, response)
                if (
                    call.dialog.state is DialogState.TERMINATED
                    and call.state is not CallState.ENDED
                ):
                    self._end(call, f"in-dialog-{response.status}")

    def _on_invite_response(
        self, call: Call, response: Response, txn: ClientTransaction, now: float
    ) -> None:
        status = response.status
        if status < 200:
            if (
                status > 100
                and response.to_tag
                and call.dialog is None
                and call.state is CallState.CALLING
            ):
                try:
                    call.dialog = Dialog.create_uac(call.invite, response)
                except ValueError:
                    call.dialog = None
                else:
                    self.dialogs.add(call.dialog)
            if status > 100 and call.state is CallState.CALLING:
                self._events.append(CallProgress(call, response))
            return
        if status < 300:
            self._on_invite_2xx(call, response, now)
            return
        self._calls_by_client_txn.pop(id(txn), None)
        if status in (401, 407) and call.credentials is not None and call.auth_attempts < 2:
            if call.state is CallState.CALLING and self._retry_with_credentials(
                call, response, now
            ):
                return
        if call.dialog is not None:
            self.dialogs.remove(call.dialog.id)
            call.dialog = None
        if call.state is CallState.CALLING:
            self._events.append(CallProgress(call, response))
        self._end(call, f"status-{status}")

    def _on_invite_2xx(self, call: Call, response: Response, now: float) -> None:
        if call.state is CallState.CONFIRMED and call.ack is not None:
            if call.dialog is not None and response.to_tag == call.dialog.id.remote_tag:
                self.transactions.send_request(
                    call.ack, self._next_hop(call.dialog, call.source), now
                )
            return
        try:
            dialog = Dialog.create_uac(call.invite, response)
        except ValueError:
            logger.warning("2xx without a usable Contact or To tag for %s", call.call_id)
            return
        if call.dialog is not None and call.dialog.id != dialog.id:
            self.dialogs.remove(call.dialog.id)
            call.dialog = None
        if call.dialog is None:
            call.dialog = dialog
            self.dialogs.add(dialog)
        else:
            call.dialog.receive_response(call.invite, response)
        ack = call.dialog.create_ack(call.invite, self._via(call.source))
        self._add_common(ack)
        call.ack = ack
        destination = self._next_hop(call.dialog, call.source)
        self.transactions.send_request(ack, destination, now)
        if call.state is CallState.ENDED:  # we gave up (CANCEL) but the callee answered
            bye = call.dialog.create_request("BYE", via=self._via(call.source))
            self._add_common(bye)
            self.transactions.send_request(bye, destination, now)
            self._calls_by_client_txn.pop(id(call.client_transaction), None)
            self.dialogs.remove(call.dialog.id)
            return
        call.state = CallState.CONFIRMED
        call.final_response = response
        self._events.append(CallProgress(call, response))
        self._events.append(CallConfirmed(call))

    def _retry_with_credentials(self, call: Call, response: Response, now: float) -> bool:
        """Answer a 401/407 with a new INVITE carrying credentials (RFC 3261 §22.2)."""
        assert call.credentials is not None
        name = "WWW-Authenticate" if response.status == 401 else "Proxy-Authenticate"
        challenges = response.headers.getlist(name)
        if not challenges:
            return False
        username, password = call.credentials
        try:
            value = DigestClient(username, password).authorize(
                challenges, "INVITE", str(call.invite.uri), call.invite.body
            )
        except ValueError:
            return False
        call.auth_attempts += 1
        old = call.invite
        request = Request("INVITE", old.uri, old.headers.copy(), old.body)
        request.headers.remove("Via")
        request.headers.insert_first("Via", str(self._via(call.source)))
        request.headers.set("CSeq", f"{old.cseq.seq + 1} INVITE")
        request.headers.remove("Authorization")
        request.headers.remove("Proxy-Authorization")
        request.headers.add(
            "Authorization" if response.status == 401 else "Proxy-Authorization", value
        )
        call.invite = request
        self._send_invite_request(call, request, now)
        return True

    def _send_invite_request(self, call: Call, request: Request, now: float) -> None:
        txn = self.transactions.send_request(request, call.source, now)
        call.client_transaction = txn
        self._calls_by_client_txn[id(txn)] = call
        self._drain_layer(now)

    def _on_transaction_failure(self, txn: object, event: object, now: float) -> None:
        cause = "timeout" if isinstance(event, TransactionTimeout) else "transport-error"
        request_txn = self._requests.pop(id(txn), None)
        if request_txn is not None:
            self._events.append(RequestOutcome(request_txn, None, cause))
            return
        refer_call = self._refers.pop(id(txn), None)
        if refer_call is not None:
            self._calls_by_client_txn.pop(id(txn), None)
            self._events.append(TransferProgress(refer_call, 408, final=True))
            return
        call = self._calls_by_invite_txn.pop(id(txn), None)
        if call is None:
            call = self._calls_by_client_txn.pop(id(txn), None)
        if call is None:
            return
        if call.state is not CallState.ENDED:
            self._end(call, cause)

    def _end(self, call: Call, cause: str) -> None:
        if call.state is CallState.ENDED:
            return
        if call.state is CallState.CONFIRMED and call.client_transaction is not None:
            # Our INVITE was answered: its 2xx retransmissions no longer need an ACK from us.
            self._calls_by_client_txn.pop(id(call.client_transaction), None)
        call.state = CallState.ENDED
        call.end_cause = call.end_cause or cause
        self.calls.pop((call.call_id, call.local_tag), None)
        if call.server_transaction is not None:
            self._calls_by_invite_txn.pop(id(call.server_transaction), None)
        if call.dialog is not None:
            self.dialogs.remove(call.dialog.id)
        self._events.append(CallEnded(call, call.end_cause))

    def _response_for(
        self, call: Call, status: int, body: bytes, content_type: str = "application/sdp"
    ) -> Response:
        response = make_response(
            call.invite,
            status,
            to_tag=call.local_tag,
            body=body,
            content_type=content_type if body else None,
        )
        response.headers.add("Contact", self._contact_text(call.source.transport, call.source))
        response.headers.add("Allow", ALLOW_HEADER)
        self._add_common(response)
        return response

    def _ensure_uas_dialog(self, call: Call, response: Response) -> None:
        if call.dialog is None:
            call.dialog = Dialog.create_uas(
                call.invite, call.local_tag, self._contact(call.source.transport, call.source)
            )
            self.dialogs.add(call.dialog)

    def _local_for(self, transport: str, peer: Endpoint | None) -> Endpoint:
        if peer is not None and self.local_for is not None:
            local = self.local_for(peer)
            if local is not None:
                return local
        return self._local.get(transport) or next(iter(self._local.values()))

    def _contact(self, transport: str = "udp", peer: Endpoint | None = None) -> Address:
        """Our Contact for `transport` towards `peer`: the same few values every call, made
        once for each local address (and its text, `_contact_text`)."""
        local = self._local_for(transport, peer)
        key = (transport, local)
        known = self._contacts.get(key)
        if known is None:
            if len(self._contacts) >= 64:  # local addresses: a few per transport
                self._contacts.clear()
            address = self._new_contact(transport, local)
            known = self._contacts[key] = (address, str(address))
        return known[0]

    def _contact_text(self, transport: str, peer: Endpoint | None) -> str:
        """``str(self._contact(transport, peer))``, without formatting it each message."""
        local = self._local_for(transport, peer)
        known = self._contacts.get((transport, local))
        if known is None:
            self._contact(transport, peer)
            known = self._contacts[(transport, local)]
        return known[1]

    @staticmethod
    def _new_contact(transport: str, local: Endpoint) -> Address:
        params: tuple[tuple[str, str | None], ...] = ()
        if transport != "udp":
            params = (("transport", transport),)
        return Address(
            display_name=None,
            uri=URI(
                scheme="sip",
                user="omlmedia",
                password=None,
                host=local.host,
                port=local.port,
                params=params,
                headers=(),
            ),
            params=(),
        )

    def _via(self, destination: Endpoint) -> Via:
        local = self._local_for(destination.transport, destination)
        return Via(
            transport=destination.transport.upper(),
            host=local.host,
            port=local.port,
            params=(("branch", new_branch()), ("rport", None)),
        )

    def _next_hop(self, dialog: Dialog, fallback: Endpoint) -> Endpoint:
        """Where in-dialog requests go: the first route or the remote target (RFC 3261 §12.2.1.1),
        when it names an IP address; otherwise where the dialog's INVITE came from or went to
        (RFC 3263 name resolution is left to a later stage).

        The peer writes that address: one more internal than the peer itself (loopback,
        link-local, private, from a peer that is not) or one nobody can be (unspecified,
        multicast, reserved) is not followed, so a caller cannot make us send requests into our
        own host or network; the dialog's peer address is used instead (as for a NAT)."""
        uri = dialog.next_hop()
        host = uri.host.strip("[]")
        scope = _literal_scope(host)
        if scope is None:
            return fallback
        if scope == 0 or scope < _host_scope(fallback.host):
            return fallback
        transport = (uri.param("transport") or fallback.transport).lower()
        if transport not in self._local:
            transport = fallback.transport
        port = uri.port or (5061 if transport == "tls" else 5060)
        return Endpoint(transport, host, port)

    def _add_common(self, message: Request | Response) -> None:
        if isinstance(message, Request):
            message.headers.add("User-Agent", self._user_agent)
        else:
            message.headers.add("Server", self._user_agent)

    def _respond(self, response: Response, now: float) -> None:
        try:
            self.transactions.send_response(response, now)
        except TransactionError as exc:  # the transaction ended meanwhile (CANCEL, timeout)
            logger.debug("response %d not sent: %s", response.status, exc)

    def _send_direct(self, response: Response, request: Request, source: Endpoint) -> None:
        """Answer a request that never reached the transaction layer (it did not parse)."""
        self._direct.append((bytes(response), source))


_SHARED_NAT = ipaddress.ip_network("100.64.0.0/10")


def _address_scope(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> int:
    """How far an address reaches: 0 nowhere (unspecified, multicast, reserved), 1 this host
    (loopback), 2 this link, 3 a private network (RFC 1918, RFC 6598, IPv6 ULA), 4 everywhere."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_loopback:
        return 1
    if ip.is_unspecified or ip.is_multicast or ip.is_reserved:
        return 0
    if ip.is_link_local:
        return 2
    if ip.is_private or ip in _SHARED_NAT:
        return 3
    return 4


@functools.lru_cache(maxsize=4096)
def _literal_scope(host: str) -> int | None:
    """The scope of an IP address literal, None for anything else. Cached: every in-dialog
    request asks it of the same few addresses, and ``is_private`` walks a list of networks."""
    try:
        return _address_scope(ipaddress.ip_address(host))
    except ValueError:
        return None


def _host_scope(host: str) -> int:
    """The scope of a peer's address; a name counts as a private network's (its requests may go
    to private targets, not to loopback or link-local ones)."""
    scope = _literal_scope(host.strip("[]"))
    return 3 if scope is None else scope
