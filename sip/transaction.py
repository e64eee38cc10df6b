"""The SIP transaction layer (RFC 3261 §17, RFC 6026, RFC 3581), sans-IO.

Theory of operation. One :class:`TransactionLayer` serves a whole user agent. The adapter hands it
every parsed message with ``receive(message, source, now)``; the transaction user (TU, the UA core)
sends with ``send_request`` / ``send_response`` / ``cancel``. What must go on the wire is drained
with ``datagrams_to_send()``, what the TU must act on with ``next_event()``, and ``get_timer()`` /
``handle_timer(now)`` drive the timers. Nothing here reads a clock or touches a socket.

Server transactions are keyed per §17.2.3: (branch, sent-by host, sent-by port, method) when the
branch carries the magic cookie, otherwise (RFC 2543) on Call-ID, From tag, CSeq and the top Via's
sent-by, with the Request-URI compared on match. ACK and CANCEL find their INVITE under method
``INVITE``; a CANCEL also gets a server transaction of its own, answered by the layer (§9.2). A 2xx
to an INVITE moves the transaction to Accepted (RFC 6026); the layer then retransmits the 2xx
(§13.3.1.4) until an ACK arrives. That ACK carries a new branch, so accepted transactions are also
indexed by (Call-ID, From tag, CSeq number).

Server transactions are bounded: past ``max_server_transactions`` live ones, a request that would
start another is answered statelessly with 503 and Retry-After (RFC 3261 §21.5.4) and leaves no
state; a CANCEL that matches no INVITE is answered statelessly with 481. The TU may also answer a
request without a transaction (RFC 3261 §8.2.7): :meth:`TransactionLayer.server_transaction_for`
tells it whether one exists and :meth:`TransactionLayer.stamp_via` where the answer goes.

A response built with ``make_response`` repeats the request's first Via line and CSeq line verbatim,
so both sides first look transactions up by those raw lines and parse the Via only on a miss.

Client transactions are keyed by (branch, CSeq method). ACK for a non-2xx is built and sent by the
layer (§17.1.1.3); ACK for a 2xx is the TU's and passes straight to the wire.

Timers: each transaction has at most two armed deadlines, a *retransmit* slot (A, E, G, the 2xx
retransmission and the 100 Trying delay) and a *timeout* slot (B, D, F, H, I, J, K, L, M).
Arming pushes ``(deadline, seq, transaction)`` on one heap; an entry whose deadline no longer equals
its slot is stale and skipped when it surfaces, so re-arming and termination cost O(log n) and
nothing ever scans all transactions on the hot path.
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from dataclasses import dataclass
from enum import Enum

from sip.endpoint import Endpoint
from sip.message import Request, Response, Via, make_response, new_tag

__all__ = [
    "MAGIC_COOKIE",
    "AckReceived",
    "AckTimeout",
    "ClientTransaction",
    "Event",
    "InviteCancelled",
    "RequestReceived",
    "ResponseReceived",
    "ServerTransaction",
    "StrayResponse",
    "Timers",
    "Transaction",
    "TransactionCounters",
    "TransactionError",
    "TransactionLayer",
    "TransactionNotFound",
    "TransactionState",
    "TransactionStateError",
    "TransactionTimeout",
    "TransportFailed",
]

MAGIC_COOKIE = "z9hG4bK"
"""RFC 3261 §8.1.1.7: a branch starting with this was built by an RFC 3261 element."""

_DEFAULT_PORT = 5060


class TransactionError(ValueError):
    """The TU misused the transaction layer (a local error, RFC 3261 §17)."""


class TransactionNotFound(TransactionError):
    """No live server transaction matches the response the TU passed (RFC 3261 §17.2.3)."""


class TransactionStateError(TransactionError):
    """The transaction is in a state that does not allow the operation (RFC 3261 §17)."""


@dataclass(frozen=True, slots=True)
class Timers:
    """The base timer values of RFC 3261 §17.1.1.1 and table 4, in seconds.

    ``t1`` is the RTT estimate, ``t2`` the cap on non-INVITE and response retransmission intervals,
    ``t4`` the time a message may stay in the network. ``trying_delay`` is the 200 ms of §17.2.1
    after which the layer sends ``100 Trying`` on an INVITE the TU has not answered yet (0 sends it
    on receipt). Timers D, I, J and K below are the unreliable-transport values; on a reliable
    transport they are zero.
    """

    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0
    trying_delay: float = 0.2

    @property
    def timer_a(self) -> float:
        """INVITE request retransmit interval, initial value; doubles each time (§17.1.1.2)."""
        return self.t1

    @property
    def timer_b(self) -> float:
        """INVITE client transaction timeout: 64*T1 (§17.1.1.2)."""
        return 64 * self.t1

    @property
    def timer_d(self) -> float:
        """Wait for response retransmits in INVITE Completed: 64*T1, 32 s by default (§17.1.1.2)."""
        return 64 * self.t1

    @property
    def timer_e(self) -> float:
        """Non-INVITE request retransmit interval, initial value; doubles up to T2 (§17.1.2.2)."""
        return self.t1

    @property
    def timer_f(self) -> float:
        """Non-INVITE client transaction timeout: 64*T1 (§17.1.2.2)."""
        return 64 * self.t1

    @property
    def timer_g(self) -> float:
        """INVITE final response retransmit interval, initial value; doubles up to T2 (§17.2.1)."""
        return self.t1

    @property
    def timer_h(self) -> float:
        """Wait time for ACK receipt: 64*T1 (§17.2.1)."""
        return 64 * self.t1

    @property
    def timer_i(self) -> float:
        """Wait time for ACK retransmits in Confirmed: T4 (§17.2.1)."""
        return self.t4

    @property
    def timer_j(self) -> float:
        """Wait time for non-INVITE request retransmits: 64*T1 (§17.2.2)."""
        return 64 * self.t1

    @property
    def timer_k(self) -> float:
        """Wait time for non-INVITE response retransmits: T4 (§17.1.2.2)."""
        return self.t4

    @property
    def timer_l(self) -> float:
        """Wait time for accepted INVITE request retransmits: 64*T1 (RFC 6026 §8.7)."""
        return 64 * self.t1

    @property
    def timer_m(self) -> float:
        """Wait time for retransmissions of 2xx responses: 64*T1 (RFC 6026 §8.4)."""
        return 64 * self.t1


class TransactionState(Enum):
    """The states of RFC 3261 §17 figures 5-8 and RFC 6026 §7 (Accepted)."""

    CALLING = "calling"
    TRYING = "trying"
    PROCEEDING = "proceeding"
    COMPLETED = "completed"
    CONFIRMED = "confirmed"
    ACCEPTED = "accepted"
    TERMINATED = "terminated"


_CALLING = TransactionState.CALLING
_TRYING = TransactionState.TRYING
_PROCEEDING = TransactionState.PROCEEDING
_COMPLETED = TransactionState.COMPLETED
_CONFIRMED = TransactionState.CONFIRMED
_ACCEPTED = TransactionState.ACCEPTED
_TERMINATED = TransactionState.TERMINATED

_Key = tuple[str | int | None, ...]
_Lines = tuple[str | None, str | None]


class Transaction:
    """What client and server transactions share (RFC 3261 §17); attributes are read-only.

    ``request`` is the request that created it, ``method`` its method, ``state`` a
    :class:`TransactionState`, ``reliable`` whether it runs over a stream transport and
    ``last_response`` the most recent response sent (server) or received (client).
    """

    __slots__ = (
        "_data",
        "_interval",
        "_lines",
        "_retransmit_at",
        "_timeout_at",
        "key",
        "last_response",
        "method",
        "reliable",
        "request",
        "state",
    )

    def __init__(
        self, key: _Key, request: Request, state: TransactionState, reliable: bool
    ) -> None:
        self.key = key
        self.request = request
        self.method = request.method
        self.state = state
        self.reliable = reliable
        self.last_response: Response | None = None
        self._data: bytes | None = None
        self._lines: _Lines | None = None
        self._interval = 0.0
        self._retransmit_at: float | None = None
        self._timeout_at: float | None = None

    @property
    def terminated(self) -> bool:
        """True once the transaction reached the Terminated state."""
        return self.state is _TERMINATED

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.method} {self.state.value}>"


class ClientTransaction(Transaction):
    """An INVITE (§17.1.1) or non-INVITE (§17.1.2) client transaction.

    ``destination`` is where the request goes; ``cancel_transaction`` the CANCEL sent (or waiting to
    be sent) for this INVITE by :meth:`TransactionLayer.cancel`.
    """

    __slots__ = ("_ack", "_deferred", "_invite", "cancel_transaction", "destination")

    def __init__(
        self, key: _Key, request: Request, state: TransactionState, destination: Endpoint
    ) -> None:
        super().__init__(key, request, state, destination.reliable)
        self.destination = destination
        self.cancel_transaction: ClientTransaction | None = None
        self._ack: bytes | None = None
        self._deferred = False
        self._invite: ClientTransaction | None = None


class ServerTransaction(Transaction):
    """An INVITE (§17.2.1, RFC 6026) or non-INVITE (§17.2.2) server transaction.

    ``source`` is where the request came from, ``response_destination`` where responses go
    (§18.2.2, RFC 3581 §4) and ``acked`` whether the ACK for a 2xx arrived.
    """

    __slots__ = ("_dialog_key", "_merge_key", "acked", "response_destination", "source")

    def __init__(
        self,
        key: _Key,
        request: Request,
        state: TransactionState,
        source: Endpoint,
        response_destination: Endpoint,
    ) -> None:
        super().__init__(key, request, state, source.reliable)
        self.source = source
        self.response_destination = response_destination
        self.acked = False
        self._dialog_key: tuple[str, str | None, int] | None = None
        self._merge_key: tuple[str | None, str, int, str] | None = None


@dataclass(frozen=True, slots=True)
class Event:
    """Base class of what the transaction layer tells its TU."""


@dataclass(frozen=True, slots=True)
class RequestReceived(Event):
    """A new request (§17.2.1, §17.2.2). ``transaction`` is None for an ACK that is not absorbed."""

    request: Request
    source: Endpoint
    transaction: ServerTransaction | None


@dataclass(frozen=True, slots=True)
class ResponseReceived(Event):
    """A response for the TU (§17.1.1.2, §17.1.2.2; 2xx retransmissions in Accepted, RFC 6026)."""

    response: Response
    transaction: ClientTransaction


@dataclass(frozen=True, slots=True)
class AckReceived(Event):
    """An ACK for a 2xx (§13.3.1.4): first one for an accepted transaction, or one matching none."""

    request: Request
    source: Endpoint


@dataclass(frozen=True, slots=True)
class InviteCancelled(Event):
    """A CANCEL stopped a pending INVITE: the layer sent 200 to the CANCEL and 487 (§9.2)."""

    transaction: ServerTransaction
    cancel: Request


@dataclass(frozen=True, slots=True)
class TransactionTimeout(Event):
    """Timer B, F or H fired, or a cancelled INVITE got no final response in 64*T1 (§17, §9.1)."""

    transaction: Transaction


@dataclass(frozen=True, slots=True)
class TransportFailed(Event):
    """The transport reported a failure towards the transaction's peer (§17.1.4, §17.2.4)."""

    transaction: Transaction


@dataclass(frozen=True, slots=True)
class AckTimeout(Event):
    """No ACK for our 2xx after 64*T1 (§13.3.1.4): the TU should send BYE."""

    transaction: ServerTransaction
    response: Response


@dataclass(frozen=True, slots=True)
class StrayResponse(Event):
    """A response matching no client transaction (§17.1.3); counted and otherwise dropped."""

    response: Response


@dataclass(slots=True)
class TransactionCounters:
    """Running totals of the layer, for statistics; read them, never write them.

    ``retransmissions``: messages sent again (timers and answers to retransmitted requests);
    ``absorbed``: received retransmissions and ACKs consumed inside a transaction; ``timeouts``:
    TransactionTimeout and AckTimeout events; ``strays``: responses matching no transaction;
    ``transport_failures``: transactions ended by a transport error; ``overloaded``: requests
    refused with a stateless 503 because ``max_server_transactions`` were live.
    """

    retransmissions: int = 0
    absorbed: int = 0
    timeouts: int = 0
    strays: int = 0
    transport_failures: int = 0
    overloaded: int = 0


def _strip_brackets(host: str) -> str:
    return host[1:-1] if host.startswith("[") else host


def _lines(message: Request | Response) -> _Lines:
    """The raw first Via line and CSeq line: a response built from a request repeats them."""
    headers = message.headers
    return (headers.get("Via"), headers.get("CSeq"))


def _server_key(message: Request | Response, method: str) -> _Key:
    """The server transaction key of RFC 3261 §17.2.3, from a request or its response.

    With an RFC 3261 branch: (branch, sent-by host, sent-by port, method). Otherwise (RFC 2543):
    ("", Call-ID, From tag, CSeq number, method, sent-by host, sent-by port); the Request-URI,
    which a response does not carry, is compared on match.
    """
    via = message.top_via
    branch = via.branch
    if branch is not None and branch.startswith(MAGIC_COOKIE):
        return (branch, via.host, via.port, method)
    return ("", message.call_id, message.from_tag, message.cseq.seq, method, via.host, via.port)


class TransactionLayer:
    """The RFC 3261 §17 transaction layer of one user agent, sans-IO (see the module docstring).

    ``max_server_transactions`` caps the live server transactions (a table keyed by what the
    network sends); a request beyond it gets a stateless 503 with ``Retry-After: retry_after``.
    """

    def __init__(
        self,
        timers: Timers = Timers(),
        *,
        symmetric_responses: bool = True,
        max_server_transactions: int = 8192,
        retry_after: int = 5,
    ) -> None:
        if max_server_transactions < 1 or retry_after < 0:
            raise ValueError("transaction limits must be positive")
        self.timers = timers
        self.symmetric_responses = symmetric_responses
        self.max_server_transactions = max_server_transactions
        self.retry_after = retry_after
        self.counters = TransactionCounters()
        self._client: dict[_Key, ClientTransaction] = {}
        self._server: dict[_Key, ServerTransaction] = {}
        self._client_lines: dict[_Lines, ClientTransaction] = {}
        self._server_lines: dict[_Lines, ServerTransaction] = {}
        self._accepted: dict[tuple[str, str | None, int], ServerTransaction] = {}
        self._merge: dict[tuple[str | None, str, int, str], ServerTransaction] = {}
        self._heap: list[tuple[float, int, Transaction]] = []
        self._seq = itertools.count()
        self._events: deque[Event] = deque()
        self._out: list[tuple[bytes, Endpoint]] = []

    # -- the adapter's side -------------------------------------------------------------------

    @property
    def transaction_count(self) -> int:
        """Live (not terminated) client and server transactions."""
        return len(self._client) + len(self._server)

    @property
    def unsettled_count(self) -> int:
        """Live transactions that may still send something or wait for the peer.

        The others are settled: a non-INVITE transaction (either side) or a client INVITE one in
        ``completed``, a client INVITE one in ``accepted``, a server INVITE one in ``confirmed``,
        or ``accepted`` once its 2xx was acknowledged. They only absorb retransmissions until
        Timer J, K, D, M, I or L ends them, so a graceful stop waits for the unsettled ones only.
        A client OPTIONS is never unsettled: it is a ping (a trunk's qualify) whose answer
        nobody needs at a stop, and one to a silent peer would hold the stop for Timer F.
        Counting walks the tables: for a stop, not for every packet.
        """
        count = 0
        for tx in self._client.values():
            count += (
                tx.state is not _COMPLETED and tx.state is not _ACCEPTED and tx.method != "OPTIONS"
            )
        for server in self._server.values():
            state = server.state
            if (
                state is _CONFIRMED
                or (state is _ACCEPTED and server.acked)
                or (state is _COMPLETED and server.method != "INVITE")
            ):
                continue
            count += 1
        return count

    @property
    def server_transaction_count(self) -> int:
        """Live server transactions (at most ``max_server_transactions``, plus their CANCELs)."""
        return len(self._server)

    def datagrams_to_send(self) -> list[tuple[bytes, Endpoint]]:
        """Drain the outgoing queue: serialized messages and where to send them."""
        out = self._out
        self._out = []
        return out

    def next_event(self) -> Event | None:
        """The next event for the TU, or None."""
        return self._events.popleft() if self._events else None

    def get_timer(self) -> float | None:
        """The earliest armed deadline, or None when no timer is armed."""
        heap = self._heap
        while heap:
            when, _, tx = heap[0]
            if when == tx._timeout_at or when == tx._retransmit_at:
                return when
            heapq.heappop(heap)
        return None

    def handle_timer(self, now: float) -> None:
        """Fire every timer due at `now` (RFC 3261 §17 timers A-M)."""
        heap = self._heap
        while heap and heap[0][0] <= now:
            when, _, tx = heapq.heappop(heap)
            if when == tx._timeout_at:
                self._on_timeout(tx, now)
            if when == tx._retransmit_at:
                self._on_retransmit(tx, now)

    def transport_error(self, destination: Endpoint, now: float) -> None:
        """End every transaction whose messages go to `destination` (§17.1.4, §17.2.4)."""
        failed: list[Transaction] = [
            tx for tx in self._client.values() if tx.destination == destination
        ]
        failed.extend(tx for tx in self._server.values() if tx.response_destination == destination)
        for tx in failed:
            if tx.state is _TERMINATED:
                continue
            self.counters.transport_failures += 1
            self._events.append(TransportFailed(tx))
            self._terminate(tx)

    def receive(self, message: Request | Response, source: Endpoint, now: float) -> None:
        """Take one parsed message from the network (§17.1.3, §17.2.3).

        Raises the message model's ``ValueError`` when a header needed for matching is malformed;
        nothing has changed in the layer then.
        """
        if isinstance(message, Response):
            self._receive_response(message, now)
        else:
            self._receive_request(message, source, now)

    # -- the TU's side ------------------------------------------------------------------------

    def send_request(
        self, request: Request, destination: Endpoint, now: float
    ) -> ClientTransaction:
        """Start a client transaction for `request` (§17.1.1, §17.1.2) and send it.

        An ACK (for a 2xx, §13.2.2.4) is not a transaction: it is sent once and the returned
        transaction is already terminated. Raises :class:`TransactionError` when the top Via has
        no RFC 3261 branch or a live transaction already uses it for this method.
        """
        method = request.method
        if method == "ACK":
            self._out.append((bytes(request), destination))
            return ClientTransaction((), request, _TERMINATED, destination)
        branch = request.branch
        if branch is None or not branch.startswith(MAGIC_COOKIE):
            raise TransactionError("request has no RFC 3261 branch in its top Via")
        key: _Key = (branch, method)
        if key in self._client:
            raise TransactionError("a client transaction already uses this branch and method")
        data = bytes(request)
        tx = ClientTransaction(
            key, request, _CALLING if method == "INVITE" else _TRYING, destination
        )
        tx._data = data
        self._register_client(tx)
        self._start_client(tx, now)
        return tx

    def _register_client(self, tx: ClientTransaction) -> None:
        self._client[tx.key] = tx
        lines = tx._lines = _lines(tx.request)
        self._client_lines[lines] = tx

    def send_response(self, response: Response, now: float) -> None:
        """Send a response through the server transaction its top Via and CSeq match (§17.2).

        Raises :class:`TransactionNotFound` when none matches and :class:`TransactionStateError`
        when the transaction already sent a final response (a 2xx may be repeated in Accepted).
        """
        tx = self._server_lines.get(_lines(response))
        if tx is None:
            tx = self._server.get(_server_key(response, response.cseq.method))
        if tx is None:
            raise TransactionNotFound("no server transaction matches the response")
        self._respond(tx, response, now)

    def server_transaction_for(self, request: Request) -> ServerTransaction | None:
        """The live server transaction a received request belongs to (§17.2.3), or None.

        An ACK or a CANCEL is looked up under its own method: None tells the TU the request is
        new (not a retransmission) and it may answer it statelessly (§8.2.7). Raises the message
        model's ``ValueError`` when a header needed for matching is malformed.
        """
        method = request.method
        if method != "ACK":
            tx = self._server_lines.get(_lines(request))
            if tx is not None:
                return tx
        tx = self._server.get(_server_key(request, "INVITE" if method == "ACK" else method))
        if tx is not None and not tx.key[0] and tx.request.uri != request.uri:
            return None
        return tx

    def stamp_via(self, request: Request, source: Endpoint) -> Endpoint:
        """Add ``received``/``rport`` to the top Via (§18.2.1, RFC 3581 §4) and return where a
        response to `request` goes (§18.2.2): what a stateless answer needs (§8.2.7)."""
        return self._stamp_via(request, source)

    def cancel(self, transaction: ClientTransaction, now: float) -> ClientTransaction:
        """Build and send a CANCEL for a pending INVITE client transaction (§9.1).

        Until a provisional response has arrived the CANCEL is held back, and dropped if a final
        response comes first. Cancelling twice returns the same CANCEL transaction. Raises
        :class:`TransactionStateError` unless the transaction is an INVITE in Calling or Proceeding.
        """
        if transaction.method != "INVITE" or transaction.state not in (_CALLING, _PROCEEDING):
            raise TransactionStateError("only a pending INVITE client transaction can be cancelled")
        if transaction.cancel_transaction is not None:
            return transaction.cancel_transaction
        invite = transaction.request
        request = Request("CANCEL", invite.uri)
        headers = request.headers
        headers.add("Via", invite.headers.getlist("Via")[0])
        for route in invite.headers.getlist("Route"):
            headers.add("Route", route)
        headers.add("Max-Forwards", "70")
        self._copy_dialog_headers(invite, request, invite.headers.get("To") or "")
        headers.add("CSeq", f"{invite.cseq.seq} CANCEL")
        key: _Key = (transaction.key[0], "CANCEL")
        cancel = ClientTransaction(key, request, _TRYING, transaction.destination)
        cancel._data = bytes(request)
        cancel._invite = transaction
        transaction.cancel_transaction = cancel
        self._register_client(cancel)
        if transaction.state is _PROCEEDING:
            self._start_client(cancel, now)
        else:
            cancel._deferred = True
        return cancel

    # -- client transactions ------------------------------------------------------------------

    def _start_client(self, tx: ClientTransaction, now: float) -> None:
        """Send the request and arm timers A/E and B/F; a CANCEL also bounds its INVITE (§9.1)."""
        tx._deferred = False
        assert tx._data is not None
        self._out.append((tx._data, tx.destination))
        timers = self.timers
        if not tx.reliable:
            tx._interval = timers.t1
            self._arm_retransmit(tx, now + timers.t1)
        self._arm_timeout(tx, now + timers.timer_b)
        invite = tx._invite
        if invite is not None:
            tx._invite = None
            if invite._timeout_at is None:
                self._arm_timeout(invite, now + timers.timer_b)

    def _receive_response(self, response: Response, now: float) -> None:
        tx = self._client_lines.get(_lines(response))
        if tx is None:
            branch = response.top_via.branch
            tx = self._client.get((branch, response.cseq.method)) if branch is not None else None
        if tx is None or tx._deferred:
            self.counters.strays += 1
            self._events.append(StrayResponse(response))
            return
        status = response.status
        state = tx.state
        if tx.method == "INVITE":
            if state is _CALLING or state is _PROCEEDING:
                tx.last_response = response
                if status < 200:
                    if state is _CALLING:
                        tx.state = _PROCEEDING
                        tx._retransmit_at = None
                        tx._timeout_at = None
                    self._events.append(ResponseReceived(response, tx))
                    cancel = tx.cancel_transaction
                    if cancel is not None and cancel._deferred:
                        self._start_client(cancel, now)
                    return
                self._drop_deferred_cancel(tx)
                tx._retransmit_at = None
                if status < 300:
                    tx.state = _ACCEPTED
                    self._events.append(ResponseReceived(response, tx))
                    self._arm_timeout(tx, now + self.timers.timer_m)
                    return
                tx.state = _COMPLETED
                ack = tx._ack = self._build_ack(tx.request, response)
                self._out.append((ack, tx.destination))
                self._events.append(ResponseReceived(response, tx))
                if tx.reliable:
                    self._terminate(tx)
                else:
                    self._arm_timeout(tx, now + self.timers.timer_d)
            elif state is _ACCEPTED and 200 <= status < 300:
                self._events.append(ResponseReceived(response, tx))
            else:
                self.counters.absorbed += 1
                if state is _COMPLETED and status >= 300 and tx._ack is not None:
                    self.counters.retransmissions += 1
                    self._out.append((tx._ack, tx.destination))
            return
        if state is _TRYING or state is _PROCEEDING:
            tx.last_response = response
            if status < 200:
                tx.state = _PROCEEDING
                self._events.append(ResponseReceived(response, tx))
                return
            tx.state = _COMPLETED
            tx._retransmit_at = None
            self._events.append(ResponseReceived(response, tx))
            if tx.reliable:
                self._terminate(tx)
            else:
                self._arm_timeout(tx, now + self.timers.timer_k)
        else:
            self.counters.absorbed += 1

    def _drop_deferred_cancel(self, tx: ClientTransaction) -> None:
        cancel = tx.cancel_transaction
        if cancel is not None and cancel._deferred and cancel.state is not _TERMINATED:
            self._terminate(cancel)

    def _build_ack(self, invite: Request, response: Response) -> bytes:
        """The ACK for a non-2xx final response (§17.1.1.3)."""
        ack = Request("ACK", invite.uri)
        headers = ack.headers
        headers.add("Via", invite.headers.getlist("Via")[0])
        for route in invite.headers.getlist("Route"):
            headers.add("Route", route)
        headers.add("Max-Forwards", "70")
        self._copy_dialog_headers(invite, ack, response.headers.get("To") or "")
        headers.add("CSeq", f"{invite.cseq.seq} ACK")
        return bytes(ack)

    @staticmethod
    def _copy_dialog_headers(invite: Request, request: Request, to: str) -> None:
        headers = request.headers
        headers.add("From", invite.headers.get("From") or "")
        headers.add("To", to)
        headers.add("Call-ID", invite.call_id)

    # -- server transactions ------------------------------------------------------------------

    def _receive_request(self, request: Request, source: Endpoint, now: float) -> None:
        method = request.method
        key = _server_key(request, "INVITE" if method == "ACK" else method)
        legacy = not key[0]
        tx = self._server.get(key)
        if legacy and tx is not None and tx.request.uri != request.uri:
            if method != "ACK":
                self._send_stateless(request, 482, self._stamp_via(request, source))
            return
        if method == "ACK":
            self._receive_ack(request, tx, source, now)
            return
        if tx is not None:
            self._absorb_request(tx, now)
            return
        destination = self._stamp_via(request, source)
        invite_key = key
        if method == "CANCEL":
            invite_key = _server_key(request, "INVITE")
            invite = self._server.get(invite_key)
            if invite is None or (legacy and invite.request.uri != request.uri):
                self._send_stateless(request, 481, destination)
                return
        elif len(self._server) >= self.max_server_transactions:
            self.counters.overloaded += 1
            retry_after = (("Retry-After", str(self.retry_after)),)
            self._send_stateless(request, 503, destination, retry_after)
            return
        cseq = request.cseq
        merge_key = None
        if request.to_tag is None:
            merge_key = (request.from_tag, request.call_id, cseq.seq, method)
        else:
            request.from_tag, request.call_id  # noqa: B018  (validate before any change)
        tx = self._new_server(request, key, source, destination, now)
        if not legacy and cseq.method == method:
            lines = tx._lines = _lines(request)
            self._server_lines[lines] = tx
        if method == "CANCEL":
            self._receive_cancel(request, tx, invite_key, now)
        elif merge_key is not None and merge_key in self._merge:
            self._respond(tx, make_response(request, 482, to_tag=new_tag()), now)
        else:
            if merge_key is not None:
                tx._merge_key = merge_key
                self._merge[merge_key] = tx
            self._events.append(RequestReceived(request, source, tx))

    def _new_server(
        self, request: Request, key: _Key, source: Endpoint, destination: Endpoint, now: float
    ) -> ServerTransaction:
        if request.method == "INVITE":
            tx = ServerTransaction(key, request, _PROCEEDING, source, destination)
            delay = self.timers.trying_delay
            if delay > 0:
                self._arm_retransmit(tx, now + delay)
            else:
                self._send_trying(tx)
        else:
            tx = ServerTransaction(key, request, _TRYING, source, destination)
        self._server[key] = tx
        return tx

    def _stamp_via(self, request: Request, source: Endpoint) -> Endpoint:
        """Add received/rport (§18.2.1, RFC 3581 §4); return where responses go (§18.2.2).

        With ``symmetric_responses`` (the default) every response goes back to the source address
        and port, as if the request had asked for ``rport`` (Asterisk's ``force_rport``): callers
        behind NAT are reached, and a forged Via cannot make us send responses to a third party.
        """
        via = request.top_via
        host = source.host
        rport = False
        params: list[tuple[str, str | None]] = []
        for name, value in via.params:
            lowered = name.lower()
            if lowered == "rport":
                rport = True
                value = str(source.port)
            elif lowered == "received":
                continue
            params.append((name, value))
        if rport or _strip_brackets(via.host) != host:
            params.append(("received", host))
            request.set_top_via(Via(via.transport, via.host, via.port, tuple(params)))
        if rport or source.reliable or self.symmetric_responses:
            return source
        return Endpoint(source.transport, host, via.port or _DEFAULT_PORT)

    def _send_stateless(
        self,
        request: Request,
        status: int,
        destination: Endpoint,
        headers: tuple[tuple[str, str], ...] = (),
    ) -> None:
        response = make_response(request, status, to_tag=new_tag(), headers=headers)
        self._out.append((bytes(response), destination))

    def _send_trying(self, tx: ServerTransaction) -> None:
        response = make_response(tx.request, 100)
        tx.last_response = response
        data = tx._data = bytes(response)
        self._out.append((data, tx.response_destination))

    def _absorb_request(self, tx: ServerTransaction, now: float) -> None:
        """A retransmitted request: answer it with the last response, if any (§17.2.1, §17.2.2)."""
        self.counters.absorbed += 1
        state = tx.state
        if state is _ACCEPTED or state is _CONFIRMED:
            return
        if tx._data is None:
            if tx.method == "INVITE":
                tx._retransmit_at = None
                self._send_trying(tx)
            return
        self.counters.retransmissions += 1
        self._out.append((tx._data, tx.response_destination))

    def _receive_ack(
        self, request: Request, tx: ServerTransaction | None, source: Endpoint, now: float
    ) -> None:
        """ACK: confirms a non-2xx (§17.2.1) or acknowledges a 2xx (§13.3.1.4, RFC 6026)."""
        if tx is not None:
            state = tx.state
            if state is _COMPLETED:
                self.counters.absorbed += 1
                tx.state = _CONFIRMED
                tx._retransmit_at = None
                if tx.reliable:
                    self._terminate(tx)
                else:
                    self._arm_timeout(tx, now + self.timers.timer_i)
                return
            if state is not _ACCEPTED:
                self.counters.absorbed += 1
                return
        else:
            tx = self._accepted.get((request.call_id, request.from_tag, request.cseq.seq))
            if tx is None:
                self._events.append(AckReceived(request, source))
                return
        if tx.acked:
            self.counters.absorbed += 1
            return
        tx.acked = True
        tx._retransmit_at = None
        self._events.append(AckReceived(request, source))

    def _receive_cancel(
        self, request: Request, tx: ServerTransaction, invite_key: _Key, now: float
    ) -> None:
        """CANCEL (§9.2): 200 and 487 when the INVITE is pending (an unknown one got a stateless
        481 before any transaction was made)."""
        invite = self._server[invite_key]
        last = invite.last_response
        to_tag = (last.to_tag if last is not None else None) or new_tag()
        self._respond(tx, make_response(request, 200, to_tag=to_tag), now)
        if invite.state is _PROCEEDING:
            self._respond(invite, make_response(invite.request, 487, to_tag=to_tag), now)
            self._events.append(InviteCancelled(invite, request))

    def _respond(self, tx: ServerTransaction, response: Response, now: float) -> None:
        status = response.status
        state = tx.state
        timers = self.timers
        if tx.method == "INVITE":
            if state is _PROCEEDING:
                data = bytes(response)
                tx._retransmit_at = None
                if status >= 300:
                    tx.state = _COMPLETED
                    if not tx.reliable:
                        tx._interval = timers.t1
                        self._arm_retransmit(tx, now + timers.t1)
                    self._arm_timeout(tx, now + timers.timer_h)
                elif status >= 200:
                    tx.state = _ACCEPTED
                    request = tx.request
                    dialog_key = (request.call_id, request.from_tag, request.cseq.seq)
                    tx._dialog_key = dialog_key
                    self._accepted[dialog_key] = tx
                    if not tx.reliable:
                        tx._interval = timers.t1
                        self._arm_retransmit(tx, now + timers.t1)
                    self._arm_timeout(tx, now + timers.timer_l)
            elif state is _ACCEPTED and 200 <= status < 300:
                data = bytes(response)
            else:
                raise TransactionStateError("the transaction already sent a final response")
        elif state is _TRYING or state is _PROCEEDING:
            data = bytes(response)
            if status < 200:
                tx.state = _PROCEEDING
            else:
                tx.state = _COMPLETED
                if tx.reliable:
                    self._terminate(tx)
                else:
                    self._arm_timeout(tx, now + timers.timer_j)
        else:
            raise TransactionStateError("the transaction already sent a final response")
        tx.last_response = response
        tx._data = data
        self._out.append((data, tx.response_destination))

    # -- timers -------------------------------------------------------------------------------

    def _arm_retransmit(self, tx: Transaction, when: float) -> None:
        tx._retransmit_at = when
        heapq.heappush(self._heap, (when, next(self._seq), tx))

    def _arm_timeout(self, tx: Transaction, when: float) -> None:
        tx._timeout_at = when
        heapq.heappush(self._heap, (when, next(self._seq), tx))

    def _on_retransmit(self, tx: Transaction, now: float) -> None:
        data = tx._data
        if isinstance(tx, ClientTransaction):
            destination = tx.destination
            interval = tx._interval * 2
            if tx.method != "INVITE":
                interval = min(interval, self.timers.t2) if tx.state is _TRYING else self.timers.t2
        else:
            assert isinstance(tx, ServerTransaction)
            destination = tx.response_destination
            if tx.state is _PROCEEDING:
                tx._retransmit_at = None
                self._send_trying(tx)
                return
            interval = min(tx._interval * 2, self.timers.t2)
        if data is None:
            tx._retransmit_at = None
            return
        self.counters.retransmissions += 1
        self._out.append((data, destination))
        tx._interval = interval
        self._arm_retransmit(tx, now + interval)

    def _on_timeout(self, tx: Transaction, now: float) -> None:
        state = tx.state
        if isinstance(tx, ServerTransaction):
            if state is _COMPLETED and tx.method == "INVITE":
                self.counters.timeouts += 1
                self._events.append(TransactionTimeout(tx))
            elif state is _ACCEPTED and not tx.acked:
                self.counters.timeouts += 1
                assert tx.last_response is not None
                self._events.append(AckTimeout(tx, tx.last_response))
        elif state is _CALLING or state is _TRYING or state is _PROCEEDING:
            self.counters.timeouts += 1
            self._events.append(TransactionTimeout(tx))
        self._terminate(tx)

    def _terminate(self, tx: Transaction) -> None:
        tx.state = _TERMINATED
        tx._retransmit_at = None
        tx._timeout_at = None
        if isinstance(tx, ServerTransaction):
            if self._server.get(tx.key) is tx:
                del self._server[tx.key]
            merge_key = tx._merge_key
            if merge_key is not None and self._merge.get(merge_key) is tx:
                del self._merge[merge_key]
            dialog_key = tx._dialog_key
            if dialog_key is not None and self._accepted.get(dialog_key) is tx:
                del self._accepted[dialog_key]
            if tx._lines is not None and self._server_lines.get(tx._lines) is tx:
                del self._server_lines[tx._lines]
        else:
            assert isinstance(tx, ClientTransaction)
            tx._invite = None
            if self._client.get(tx.key) is tx:
                del self._client[tx.key]
            if tx._lines is not None and self._client_lines.get(tx._lines) is tx:
                del self._client_lines[tx._lines]
            if tx.cancel_transaction is not None:
                self._drop_deferred_cancel(tx)
