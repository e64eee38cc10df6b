"""SIP dialogs (RFC 3261 §12-§15) and the re-INVITE / UPDATE offer-answer bookkeeping above them.

Theory of operation. A :class:`Dialog` is the peer-to-peer state that RFC 3261 §12 keeps between
two user agents: the dialog ID, both sequence numbers, both URIs, the remote target and the route
set. It is created from the dialog-creating request and the first response that carries a To tag
(:meth:`Dialog.create_uas` when we send it, :meth:`Dialog.create_uac` when we receive it).
Afterwards the user-agent core feeds it every in-dialog message:

- :meth:`Dialog.receive_request` checks the remote CSeq (§12.2.2), applies target refreshes and ends
  the dialog on BYE; it returns the error response to send when the request must be refused;
- :meth:`Dialog.send_response` and :meth:`Dialog.receive_response` move the state machine
  ``EARLY -> CONFIRMED -> TERMINATED`` (§12.1, §12.3, §13.2.2.4, §15, RFC 5057 §5.1 simplified: 481
  and 408 end the dialog);
- :meth:`Dialog.create_request` and :meth:`Dialog.create_ack` build in-dialog requests (§12.2.1.1,
  §13.2.2.4), :meth:`Dialog.next_hop` names where they go.

:class:`DialogTable` stores dialogs by :class:`DialogId` and matches incoming messages in O(1).
:class:`InviteSession` tracks re-INVITE and UPDATE transactions and SDP offers in both directions,
answers glare with 491 or 500 (RFC 3261 §14, RFC 3311 §5.2), computes the §14.1 retry delay after a
491, and derives hold state from the SDP direction attributes (RFC 3264 §8.4, RFC 6337 §5.3).

Nothing here touches a socket or a clock; the only randomness is the initial local CSeq and the
glare delays, drawn from an injectable :class:`random.Random`.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator
from enum import Enum
from typing import NamedTuple

from sip.message import URI, Address, Headers, Request, Response, Via, make_response
from sip.sdp import Direction

__all__ = [
    "Dialog",
    "DialogCounts",
    "DialogError",
    "DialogId",
    "DialogRole",
    "DialogState",
    "DialogTable",
    "InviteSession",
    "MediaDirection",
    "OfferState",
    "glare_retry_delay",
    "sdp_direction",
]

TARGET_REFRESH_METHODS = frozenset({"INVITE", "UPDATE", "SUBSCRIBE", "NOTIFY", "REFER"})
"""Requests whose Contact replaces the remote target (RFC 3261 §12.2, RFC 3311, 6665, 3515)."""

MAX_FORWARDS = "70"
_random = random.Random()


class DialogError(ValueError):
    """A dialog cannot do what it was asked, or a message cannot create or update one."""


class DialogRole(Enum):
    """Which side created the dialog (RFC 3261 §12.1): we sent the request (UAC) or received it."""

    UAC = "uac"
    UAS = "uas"


class DialogState(Enum):
    """RFC 3261 §12: early (1xx with a To tag), confirmed (2xx) and terminated."""

    EARLY = "early"
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"


class DialogId(NamedTuple):
    """RFC 3261 §12: Call-ID, local tag and remote tag. A NamedTuple: hashing stays in C."""

    call_id: str
    local_tag: str
    remote_tag: str


class DialogCounts(NamedTuple):
    """How many dialogs of a :class:`DialogTable` are in each state, for the server's statistics."""

    early: int
    confirmed: int
    terminated: int


def _contact_uri(message: Request | Response) -> URI | None:
    try:
        contacts = message.contact
    except ValueError as exc:
        raise DialogError("Contact is not valid") from exc
    return contacts[0].uri if contacts else None


class Dialog:
    """The state of one dialog (RFC 3261 §12.1.1, §12.1.2).

    ``local_uri`` and ``remote_uri`` are the From and To addresses of requests we send (with
    their tags); ``local_seq`` is ``None`` until we send a request on a UAS dialog; ``remote_seq``
    is ``None`` until the peer sends one on a UAC dialog; ``route_set`` is in the order our
    requests carry it.
    """

    __slots__ = (
        "_contact_value",
        "_wire",
        "call_id",
        "id",
        "local_contact",
        "local_seq",
        "local_uri",
        "remote_seq",
        "remote_target",
        "remote_uri",
        "role",
        "route_set",
        "secure",
        "state",
    )

    def __init__(
        self,
        *,
        role: DialogRole,
        state: DialogState,
        call_id: str,
        local_uri: Address,
        remote_uri: Address,
        local_seq: int | None,
        remote_seq: int | None,
        remote_target: URI,
        route_set: tuple[Address, ...],
        local_contact: Address,
        secure: bool,
    ) -> None:
        local_tag = local_uri.tag
        if not local_tag:
            raise DialogError("dialog has no local tag")
        self.role = role
        self.state = state
        self.call_id = call_id
        self.id = DialogId(call_id, local_tag, remote_uri.tag or "")
        self.local_uri = local_uri
        self.remote_uri = remote_uri
        self.local_seq = local_seq
        self.remote_seq = remote_seq
        self.secure = secure
        self.local_contact = local_contact
        self.remote_target = remote_target
        self.route_set = route_set
        self._contact_value: str | None = None
        self._wire: tuple[URI, str | None, str, str] | None = None

    @classmethod
    def create_uas(cls, request: Request, local_tag: str, local_contact: Address) -> Dialog:
        """The dialog a response with a To tag we send to `request` creates (RFC 3261 §12.1.1).

        The dialog starts EARLY; :meth:`send_response` with a 2xx (or the ACK for it) confirms it.
        The route set is the request's Record-Route in order, the remote target its Contact, or
        its From URI when it has none: an RFC 2543 INVITE (RFC 4475 §3.4.1) need not carry a
        Contact, and RFC 2543 sent later requests to the From address.
        """
        remote_target = _contact_uri(request) or request.from_.uri
        return cls(
            role=DialogRole.UAS,
            state=DialogState.EARLY,
            call_id=request.call_id,
            local_uri=request.to.with_tag(local_tag),
            remote_uri=request.from_,
            local_seq=None,
            remote_seq=request.cseq.seq,
            remote_target=remote_target,
            route_set=tuple(request.record_route),
            local_contact=local_contact,
            secure=request.uri.scheme == "sips",
        )

    @classmethod
    def create_uac(cls, request: Request, response: Response) -> Dialog:
        """The dialog a 1xx-with-tag or 2xx response to our `request` creates (RFC 3261 §12.1.2).

        The route set is the response's Record-Route reversed, the remote target its Contact (the
        Request-URI when a provisional response lacks one). A 2xx creates a CONFIRMED dialog.
        """
        status = response.status
        if not 100 < status < 300:
            raise DialogError("response cannot create a dialog")
        if not response.to_tag:
            raise DialogError("response has no To tag")
        local_contacts = request.contact
        if not local_contacts:
            raise DialogError("dialog-creating request has no Contact")
        remote_target = _contact_uri(response)
        if remote_target is None:
            if status >= 200:
                raise DialogError("2xx response has no Contact")
            remote_target = request.uri
        return cls(
            role=DialogRole.UAC,
            state=DialogState.CONFIRMED if status >= 200 else DialogState.EARLY,
            call_id=request.call_id,
            local_uri=request.from_,
            remote_uri=response.to,
            local_seq=request.cseq.seq,
            remote_seq=None,
            remote_target=remote_target,
            route_set=tuple(reversed(response.record_route)),
            local_contact=local_contacts[0],
            secure=request.uri.scheme == "sips",
        )

    @property
    def local_tag(self) -> str:
        """Our tag (RFC 3261 §12)."""
        return self.id.local_tag

    @property
    def remote_tag(self) -> str:
        """The peer's tag; empty for an RFC 2543 peer that sent none (RFC 3261 §12.1.1)."""
        return self.id.remote_tag

    @property
    def owns_call_id(self) -> bool:
        """True when we generated the Call-ID, i.e. we sent the dialog-creating request (§14.1)."""
        return self.role is DialogRole.UAC

    @property
    def strict_routing(self) -> bool:
        """True when the first route is a strict router, without ``lr`` (RFC 3261 §12.2.1.1)."""
        return bool(self.route_set) and not self.route_set[0].uri.has_param("lr")

    def __repr__(self) -> str:
        return f"<Dialog {self.role.value} {self.state.value} {self.id}>"

    def _build_wire(self) -> tuple[URI, str | None, str, str]:
        """Request-URI, Route, From and To values of our requests, built on first use and cached."""
        route_set = self.route_set
        request_uri = self.remote_target
        if not route_set:
            route_value = None
        elif route_set[0].uri.has_param("lr"):
            route_value = ", ".join(str(route) for route in route_set)
        else:
            first = route_set[0].uri
            request_uri = URI(
                scheme=first.scheme,
                user=first.user,
                password=first.password,
                host=first.host,
                port=first.port,
                params=tuple(p for p in first.params if p[0].lower() != "method"),
                headers=(),
            )
            routes = [str(route) for route in route_set[1:]]
            routes.append(f"<{self.remote_target}>")
            route_value = ", ".join(routes)
        wire = (request_uri, route_value, str(self.local_uri), str(self.remote_uri))
        self._wire = wire
        return wire

    def _set_remote_target(self, message: Request | Response) -> None:
        target = _contact_uri(message)
        if target is not None and target != self.remote_target:
            self.remote_target = target
            self._wire = None

    def next_hop(self) -> URI:
        """Where requests of this dialog go: the first route, else the remote target (§12.2.1.1)."""
        return self.route_set[0].uri if self.route_set else self.remote_target

    def _request(
        self, method: str, seq: int, via: Via, body: bytes, content_type: str | None
    ) -> Request:
        request_uri, route_value, from_value, to_value = self._wire or self._build_wire()
        headers = Headers()
        add = headers.add
        add("Via", str(via))
        add("Max-Forwards", MAX_FORWARDS)
        if route_value is not None:
            add("Route", route_value)
        add("From", from_value)
        add("To", to_value)
        add("Call-ID", self.call_id)
        add("CSeq", f"{seq} {method}")
        if method in TARGET_REFRESH_METHODS:
            contact = self._contact_value
            if contact is None:
                contact = self._contact_value = str(self.local_contact)
            add("Contact", contact)
        if content_type is not None:
            add("Content-Type", content_type)
        return Request(method, request_uri, headers, body)

    def create_request(
        self,
        method: str,
        *,
        via: Via,
        body: bytes = b"",
        content_type: str | None = None,
        headers: Iterable[tuple[str, str]] = (),
    ) -> Request:
        """A request within the dialog (RFC 3261 §12.2.1.1).

        Request-URI and Route follow the route set (loose or strict routing); the local CSeq is
        incremented (drawn at random for the first request of a UAS dialog); target-refresh requests
        carry our Contact. ACK and CANCEL are not built here (:meth:`create_ack`, §9.1).
        """
        if method in ("ACK", "CANCEL"):
            raise DialogError("ACK and CANCEL are not dialog requests")
        if self.state is DialogState.TERMINATED:
            raise DialogError("dialog is terminated")
        seq = self.local_seq
        seq = _random.randrange(1, 1 << 31) if seq is None else seq + 1
        self.local_seq = seq
        request = self._request(method, seq, via, body, content_type)
        add = request.headers.add
        for name, value in headers:
            add(name, value)
        return request

    def create_ack(
        self, invite: Request, via: Via, body: bytes = b"", content_type: str | None = None
    ) -> Request:
        """The ACK for a 2xx to `invite` (RFC 3261 §13.2.2.4).

        Built like any in-dialog request but with the INVITE's CSeq number and its credentials; the
        local CSeq does not move. A body is the answer when the INVITE carried no offer.
        """
        if invite.method != "INVITE":
            raise DialogError("ACK acknowledges an INVITE")
        if self.state is DialogState.TERMINATED:
            raise DialogError("dialog is terminated")
        ack = self._request("ACK", invite.cseq.seq, via, body, content_type)
        invite_headers = invite.headers
        for name in ("Authorization", "Proxy-Authorization"):
            for value in invite_headers.getlist(name):
                ack.headers.add(name, value)
        return ack

    def receive_request(self, request: Request) -> Response | None:
        """Apply an in-dialog request; return the error response to send, or None (§12.2.2).

        A CSeq lower than the remote CSeq is out of order (500); a target-refresh request replaces
        the remote target with its Contact (400 when it is not valid); BYE terminates the dialog;
        the ACK for our 2xx confirms an early UAS dialog. Requests on a terminated dialog get 481.
        """
        method = request.method
        if method == "CANCEL":
            return None
        if self.state is DialogState.TERMINATED:
            return None if method == "ACK" else make_response(request, 481)
        if method == "ACK":
            if self.state is DialogState.EARLY and self.role is DialogRole.UAS:
                self.state = DialogState.CONFIRMED
            return None
        seq = request.cseq.seq
        remote_seq = self.remote_seq
        if remote_seq is not None and seq < remote_seq:
            return make_response(request, 500)
        self.remote_seq = seq
        if method == "BYE":
            self.state = DialogState.TERMINATED
        elif method in TARGET_REFRESH_METHODS:
            try:
                self._set_remote_target(request)
            except DialogError:
                return make_response(request, 400, "Invalid Contact")
        return None

    def send_response(self, request: Request, response: Response) -> None:
        """Track a response we send to a request of this dialog (RFC 3261 §12.1.1, §12.3).

        A 2xx to INVITE confirms an early dialog; a non-2xx final response to the INVITE that
        created an early dialog terminates it.
        """
        if request.method != "INVITE" or self.state is not DialogState.EARLY:
            return
        status = response.status
        if 200 <= status < 300:
            self.state = DialogState.CONFIRMED
        elif status >= 300 and self.role is DialogRole.UAS:
            self.state = DialogState.TERMINATED

    def receive_response(self, request: Request, response: Response) -> None:
        """Apply a response to a request we sent in this dialog (RFC 3261 §12.2.1.2, §13.2.2.4).

        A 2xx to the dialog-creating INVITE confirms the dialog and recomputes its route set; a 2xx
        to a target refresh replaces the remote target; a non-2xx final response to the creating
        INVITE, any final response to BYE (§15.1.1), and 481 or 408 to any request terminate it
        (RFC 5057 §5.1, simplified). Responses with another To tag (other forks) are ignored.
        """
        if self.state is DialogState.TERMINATED or (response.to_tag or "") != self.id.remote_tag:
            return
        status = response.status
        method = request.method
        early_invite = (
            method == "INVITE" and self.state is DialogState.EARLY and self.role is DialogRole.UAC
        )
        if status < 200:
            if early_invite:
                self._set_remote_target(response)
            return
        if method == "BYE" or status in (408, 481):
            self.state = DialogState.TERMINATED
        elif status < 300:
            if early_invite:
                self.state = DialogState.CONFIRMED
                self.route_set = tuple(reversed(response.record_route))
                self._wire = None
                self._set_remote_target(response)
            elif method in TARGET_REFRESH_METHODS:
                self._set_remote_target(response)
        elif early_invite:
            self.state = DialogState.TERMINATED

    def terminate(self) -> None:
        """End the dialog (transaction timeout, transport failure, local policy)."""
        self.state = DialogState.TERMINATED


class DialogTable:
    """Dialogs by :class:`DialogId`, with O(1) matching of in-dialog messages (RFC 3261 §12.2)."""

    __slots__ = ("_dialogs", "created")

    def __init__(self) -> None:
        self._dialogs: dict[DialogId, Dialog] = {}
        self.created = 0
        """How many dialogs were ever added."""

    def add(self, dialog: Dialog) -> None:
        """Store a new dialog; its ID must not be in use."""
        if dialog.id in self._dialogs:
            raise DialogError("dialog already exists")
        self._dialogs[dialog.id] = dialog
        self.created += 1

    def remove(self, dialog_id: DialogId) -> Dialog | None:
        """Forget a dialog; removing an unknown ID is a no-op that returns None."""
        return self._dialogs.pop(dialog_id, None)

    def get(self, dialog_id: DialogId) -> Dialog | None:
        """The dialog with this ID, or None."""
        return self._dialogs.get(dialog_id)

    def __getitem__(self, dialog_id: DialogId) -> Dialog:
        return self._dialogs[dialog_id]

    def __contains__(self, dialog_id: object) -> bool:
        return dialog_id in self._dialogs

    def __len__(self) -> int:
        return len(self._dialogs)

    def __iter__(self) -> Iterator[DialogId]:
        return iter(self._dialogs)

    def values(self) -> Iterator[Dialog]:
        """Every stored dialog."""
        return iter(self._dialogs.values())

    def match_request(self, request: Request) -> Dialog | None:
        """The dialog of a request: Call-ID, To tag = local, From tag = remote (§12.2.2)."""
        to_tag = request.to_tag
        if to_tag is None:
            return None
        return self._dialogs.get(DialogId(request.call_id, to_tag, request.from_tag or ""))

    def match_response(self, response: Response) -> Dialog | None:
        """The dialog of a response: Call-ID, From tag = local, To tag = remote (§12.1.2)."""
        to_tag = response.to_tag
        from_tag = response.from_tag
        if to_tag is None or from_tag is None:
            return None
        return self._dialogs.get(DialogId(response.call_id, from_tag, to_tag))

    def counts(self) -> DialogCounts:
        """Dialogs per state (one pass over the table: meant for statistics, not hot paths)."""
        early = confirmed = 0
        for dialog in self._dialogs.values():
            if dialog.state is DialogState.EARLY:
                early += 1
            elif dialog.state is DialogState.CONFIRMED:
                confirmed += 1
        return DialogCounts(early, confirmed, len(self._dialogs) - early - confirmed)


def glare_retry_delay(owns_call_id: bool, rng: random.Random | None = None) -> float:
    """Seconds to wait before retrying a re-INVITE that got 491 (RFC 3261 §14.1).

    2.1-4 s when we own the Call-ID, 0-2 s otherwise, in units of 10 ms.
    """
    draw = (rng or _random).randint
    return (draw(210, 400) if owns_call_id else draw(0, 200)) / 100


MediaDirection = Direction
"""The SDP direction attribute (RFC 3264 §5.1): the same values as :class:`sip.sdp.Direction`."""


_DIRECTIONS = {
    b"a=sendrecv": MediaDirection.SENDRECV,
    b"a=sendonly": MediaDirection.SENDONLY,
    b"a=recvonly": MediaDirection.RECVONLY,
    b"a=inactive": MediaDirection.INACTIVE,
}
_NO_RECEIVE = {
    MediaDirection.SENDRECV: MediaDirection.SENDONLY,
    MediaDirection.SENDONLY: MediaDirection.SENDONLY,
    MediaDirection.RECVONLY: MediaDirection.INACTIVE,
    MediaDirection.INACTIVE: MediaDirection.INACTIVE,
}


class _Section:
    __slots__ = ("audio", "direction", "enabled", "null")

    def __init__(self, audio: bool, enabled: bool) -> None:
        self.audio = audio
        self.enabled = enabled
        self.direction: MediaDirection | None = None
        self.null: bool | None = None


def sdp_direction(sdp: bytes) -> MediaDirection:
    """The direction an SDP body declares for its main stream (RFC 4566 §6, RFC 3264 §5.1, §8.4).

    The main stream is the first audio ``m=`` line with a non-zero port, else the first enabled
    one; a media-level attribute overrides the session-level one, and ``c=... 0.0.0.0`` (the
    RFC 2543 way of holding) means the author does not receive. No enabled stream means INACTIVE;
    an SDP without ``m=`` lines yields its session-level direction. Never raises.
    """
    session_direction = MediaDirection.SENDRECV
    session_null = False
    sections: list[_Section] = []
    for raw in sdp.split(b"\n"):
        line = raw.strip()
        if line.startswith(b"m="):
            fields = line[2:].split()
            port = fields[1].split(b"/")[0] if len(fields) > 1 else b"0"
            sections.append(_Section(fields[:1] == [b"audio"], port.isdigit() and port != b"0"))
        elif line.startswith(b"a="):
            direction = _DIRECTIONS.get(line)
            if direction is not None:
                if sections:
                    sections[-1].direction = direction
                else:
                    session_direction = direction
        elif line.startswith(b"c="):
            null = line.split()[-1:] == [b"0.0.0.0"]
            if sections:
                sections[-1].null = null
            else:
                session_null = null
    if sections:
        enabled = [section for section in sections if section.enabled]
        if not enabled:
            return MediaDirection.INACTIVE
        main = next((section for section in enabled if section.audio), enabled[0])
        direction = main.direction or session_direction
        null = session_null if main.null is None else main.null
    else:
        direction, null = session_direction, session_null
    return _NO_RECEIVE[direction] if null else direction


def _is_hold(direction: MediaDirection | None) -> bool:
    return direction is MediaDirection.SENDONLY or direction is MediaDirection.INACTIVE


def _has_sdp(message: Request | Response) -> bool:
    return bool(message.body) and message.content_type == "application/sdp"


class OfferState(Enum):
    """Where the offer/answer exchange stands (RFC 3264 §4, RFC 6337 §2)."""

    STABLE = "stable"
    LOCAL_OFFER = "local-offer"
    """We sent an offer and wait for the answer."""
    REMOTE_OFFER = "remote-offer"
    """The peer sent an offer we have not answered yet."""


class InviteSession:
    """Re-INVITE and UPDATE bookkeeping for one INVITE dialog (RFC 3261 §14, RFC 3311 §5).

    Feed it every re-INVITE, UPDATE, ACK and their responses, in both directions, after the
    :class:`Dialog` has seen them. It refuses to start overlapping transactions locally, answers
    remote glare (491 when our own INVITE or offer is pending, 500 with Retry-After when the peer's
    is), returns the §14.1 retry delay on 491, and keeps ``local_hold`` / ``remote_hold``: whether
    the last offer each side got answered was ``sendonly`` or ``inactive`` (or held by 0.0.0.0).
    """

    __slots__ = (
        "_offer",
        "_offer_seq",
        "dialog",
        "local_direction",
        "local_invite",
        "offer_state",
        "remote_direction",
        "remote_invite",
        "rng",
    )

    def __init__(self, dialog: Dialog, rng: random.Random | None = None) -> None:
        self.dialog = dialog
        self.rng = rng or _random
        self.offer_state = OfferState.STABLE
        self.local_invite: Request | None = None
        """Our re-INVITE without a final response yet."""
        self.remote_invite: Request | None = None
        """The peer's re-INVITE we have not answered finally yet."""
        self.local_direction: MediaDirection | None = None
        """Direction of our last answered offer."""
        self.remote_direction: MediaDirection | None = None
        """Direction of the peer's last answered offer."""
        self._offer: MediaDirection | None = None
        self._offer_seq: int | None = None

    @property
    def local_hold(self) -> bool:
        """We put the peer on hold: our last answered offer does not receive (RFC 6337 §5.3)."""
        return _is_hold(self.local_direction)

    @property
    def remote_hold(self) -> bool:
        """The peer put us on hold: its last answered offer does not receive (RFC 6337 §5.3)."""
        return _is_hold(self.remote_direction)

    @property
    def pending(self) -> bool:
        """An INVITE transaction or an offer is outstanding in either direction."""
        return (
            self.local_invite is not None
            or self.remote_invite is not None
            or self.offer_state is not OfferState.STABLE
        )

    def _open_offer(self, state: OfferState, message: Request | Response, seq: int) -> None:
        self.offer_state = state
        self._offer = sdp_direction(message.body)
        self._offer_seq = seq

    def _close_offer(self, accepted: bool) -> None:
        if accepted:
            if self.offer_state is OfferState.LOCAL_OFFER:
                self.local_direction = self._offer
            else:
                self.remote_direction = self._offer
        self.offer_state = OfferState.STABLE
        self._offer = None
        self._offer_seq = None

    def _busy(self, request: Request) -> Response:
        retry_after = self.rng.randint(0, 10)
        return make_response(request, 500, headers=(("Retry-After", str(retry_after)),))

    def send_request(self, request: Request) -> None:
        """Record a re-INVITE, UPDATE or ACK we are about to send (RFC 3261 §14.1, RFC 3311)."""
        method = request.method
        sdp = _has_sdp(request)
        seq = request.cseq.seq
        if method == "INVITE":
            if self.local_invite is not None or self.remote_invite is not None:
                raise DialogError("an INVITE transaction is pending")
            if sdp and self.offer_state is not OfferState.STABLE:
                raise DialogError("an offer is pending")
            self.local_invite = request
            if sdp:
                self._open_offer(OfferState.LOCAL_OFFER, request, seq)
        elif method == "UPDATE" and sdp:
            if self.offer_state is not OfferState.STABLE:
                raise DialogError("an offer is pending")
            self._open_offer(OfferState.LOCAL_OFFER, request, seq)
        elif method == "ACK" and self.offer_state is OfferState.REMOTE_OFFER:
            if seq == self._offer_seq:
                self._close_offer(sdp)

    def receive_response(self, request: Request, response: Response) -> float | None:
        """Apply a response to our re-INVITE or UPDATE; on 491 return the §14.1 retry delay."""
        status = response.status
        method = request.method
        if status < 200 or method not in ("INVITE", "UPDATE"):
            return None
        seq = request.cseq.seq
        if method == "INVITE":
            local_invite = self.local_invite
            if local_invite is None or local_invite.cseq.seq != seq:
                return None
            self.local_invite = None
        if self._offer_seq == seq and self.offer_state is OfferState.LOCAL_OFFER:
            self._close_offer(status < 300 and _has_sdp(response))
        elif method == "INVITE" and status < 300 and _has_sdp(response):
            self._open_offer(OfferState.REMOTE_OFFER, response, seq)
        if status == 491:
            return glare_retry_delay(self.dialog.owns_call_id, self.rng)
        return None

    def receive_request(self, request: Request) -> Response | None:
        """Apply a re-INVITE, UPDATE or ACK from the peer; return 491 or 500 on glare.

        RFC 3261 §14.2: an INVITE while ours is pending gets 491, while the peer's previous one is
        pending 500 with a random Retry-After of 0-10 s. RFC 3311 §5.2: the same for an offer in an
        UPDATE against a pending local (491) or remote (500) offer.
        """
        method = request.method
        if method == "ACK":
            if self.offer_state is OfferState.LOCAL_OFFER and self._offer_seq == request.cseq.seq:
                self._close_offer(_has_sdp(request))
            return None
        if method not in ("INVITE", "UPDATE"):
            return None
        sdp = _has_sdp(request)
        if method == "INVITE":
            if self.local_invite is not None:
                return make_response(request, 491)
            if self.remote_invite is not None:
                return self._busy(request)
        if sdp or method == "INVITE":
            if self.offer_state is OfferState.LOCAL_OFFER:
                return make_response(request, 491)
            if self.offer_state is OfferState.REMOTE_OFFER:
                return self._busy(request)
        if method == "INVITE":
            self.remote_invite = request
        if sdp:
            self._open_offer(OfferState.REMOTE_OFFER, request, request.cseq.seq)
        return None

    def send_response(self, request: Request, response: Response) -> None:
        """Record our final response to the peer's re-INVITE or UPDATE (RFC 3264 §4, RFC 3311)."""
        status = response.status
        method = request.method
        if status < 200 or method not in ("INVITE", "UPDATE"):
            return
        seq = request.cseq.seq
        remote_invite = self.remote_invite
        if method == "INVITE":
            if remote_invite is None or remote_invite.cseq.seq != seq:
                return
            self.remote_invite = None
        if self._offer_seq == seq and self.offer_state is OfferState.REMOTE_OFFER:
            self._close_offer(status < 300 and _has_sdp(response))
        elif method == "INVITE" and status < 300 and _has_sdp(response):
            self._open_offer(OfferState.LOCAL_OFFER, response, seq)
