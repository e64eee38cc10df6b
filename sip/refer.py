"""Call transfer: REFER (RFC 3515), Replaces (RFC 3891), Referred-By (RFC 3892), Refer-Sub (4488).

The referrer sends REFER with a Refer-To address (:func:`build_refer`); for an attended transfer
the Refer-To URI embeds a Replaces header naming the dialog the new call replaces, escaped as a URI
header (RFC 3891 §6). The referee answers 202, then reports the progress of the call it places
in NOTIFYs carrying ``message/sipfrag`` status lines (:func:`build_notify_sipfrag`,
:class:`ReferSubscription`, RFC 3515 §2.4.4-§2.4.6), unless the REFER asked for no subscription
(``Refer-Sub: false``). The transfer target receives an INVITE with Replaces and finds the dialog
to replace with :func:`match_replaces` (RFC 3891 §3).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import Enum
from urllib.parse import quote, unquote

from sip.dialog import Dialog, DialogId, DialogRole, DialogState, DialogTable
from sip.message import Address, Request, Via

__all__ = [
    "ReferError",
    "ReferSubscription",
    "ReferTo",
    "Replaces",
    "ReplacesError",
    "ReplacesRejected",
    "SipfragError",
    "SubscriptionState",
    "build_notify_sipfrag",
    "build_refer",
    "match_replaces",
    "parse_sipfrag",
    "refer_sub_requested",
]

SIPFRAG_CONTENT_TYPE = "message/sipfrag;version=2.0"
"""RFC 3420 with the version parameter RFC 3515 §2.4.5 asks for."""


class ReferError(ValueError):
    """A REFER, Refer-To or implicit subscription cannot be used as asked (RFC 3515)."""


class ReplacesError(ValueError):
    """A Replaces header value is malformed (RFC 3891 §6.1)."""


class SipfragError(ValueError):
    """A message/sipfrag body carries no valid status line (RFC 3420, RFC 3515 §2.4.5)."""


class ReplacesRejected(ValueError):
    """An INVITE with Replaces must be refused (RFC 3891 §3): answer ``status`` and ``reason``."""

    status: int
    reason: str

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Replaces:
    """The Replaces header (RFC 3891 §6.1): the dialog to replace, as the recipient's tags see it.

    ``to_tag`` is compared with the recipient's local tag and ``from_tag`` with its remote tag.
    """

    call_id: str
    to_tag: str
    from_tag: str
    early_only: bool = False

    @classmethod
    def parse(cls, text: str) -> Replaces:
        """Parse ``callid;to-tag=...;from-tag=...[;early-only]``; unknown parameters are ignored."""
        call_id, *params = text.split(";")
        call_id = call_id.strip()
        if not call_id or any(c.isspace() for c in call_id):
            raise ReplacesError("Replaces has no valid Call-ID")
        to_tag = from_tag = None
        early_only = False
        for param in params:
            name, _, value = param.partition("=")
            name = name.strip().lower()
            value = value.strip()
            if name == "to-tag":
                to_tag = value
            elif name == "from-tag":
                from_tag = value
            elif name == "early-only":
                early_only = True
        if not to_tag:
            raise ReplacesError("Replaces has no to-tag")
        if not from_tag:
            raise ReplacesError("Replaces has no from-tag")
        return cls(call_id, to_tag, from_tag, early_only)

    @classmethod
    def for_dialog(cls, dialog: Dialog, early_only: bool = False) -> Replaces:
        """The Replaces that names `dialog` to its peer: to-tag is the peer's tag (RFC 3891 §3)."""
        return cls(dialog.call_id, dialog.remote_tag, dialog.local_tag, early_only)

    @property
    def dialog_id(self) -> DialogId:
        """The ID of the replaced dialog at the recipient of the INVITE."""
        return DialogId(self.call_id, self.to_tag, self.from_tag)

    def __str__(self) -> str:
        text = f"{self.call_id};to-tag={self.to_tag};from-tag={self.from_tag}"
        return text + ";early-only" if self.early_only else text


def _escape_header_value(value: str) -> str:
    return quote(value, safe="")


@dataclass(frozen=True, slots=True)
class ReferTo:
    """The Refer-To header (RFC 3515 §2.1) with its embedded Replaces (RFC 3891 §6).

    ``address`` keeps every URI header of the referred-to URI except Replaces, which is parsed into
    ``replaces``; ``str()`` escapes it back into the URI.
    """

    address: Address
    replaces: Replaces | None = None

    @classmethod
    def parse(cls, text: str) -> ReferTo:
        """Parse a Refer-To value; an escaped Replaces URI header is decoded (RFC 3891 §6)."""
        try:
            address = Address.parse(text)
        except ValueError as exc:
            raise ReferError("Refer-To is not valid") from exc
        uri = address.uri
        replaces = None
        kept: list[tuple[str, str]] = []
        for name, value in uri.headers:
            if name.lower() == "replaces":
                if replaces is not None:
                    raise ReferError("Refer-To has more than one Replaces")
                replaces = Replaces.parse(unquote(value))
            else:
                kept.append((name, value))
        if replaces is not None:
            address = replace(address, uri=replace(uri, headers=tuple(kept)))
        return cls(address, replaces)

    def __str__(self) -> str:
        address = self.address
        if self.replaces is not None:
            uri = address.uri
            escaped = _escape_header_value(str(self.replaces))
            address = replace(
                address, uri=replace(uri, headers=(*uri.headers, ("Replaces", escaped)))
            )
        return str(address)


def build_refer(
    dialog: Dialog,
    refer_to: Address,
    via: Via,
    replaces: Replaces | None = None,
    referred_by: Address | None = None,
    *,
    refer_sub: bool = True,
) -> Request:
    """A REFER in `dialog` (RFC 3515 §2.4.1); with `replaces` for an attended transfer (RFC 3891).

    `referred_by` adds Referred-By (RFC 3892); ``refer_sub=False`` asks for no implicit subscription
    (``Refer-Sub: false``, RFC 4488 §4).
    """
    headers = [("Refer-To", str(ReferTo(refer_to, replaces)))]
    if referred_by is not None:
        headers.append(("Referred-By", str(referred_by)))
    if not refer_sub:
        headers.append(("Refer-Sub", "false"))
    return dialog.create_request("REFER", via=via, headers=headers)


def refer_sub_requested(request: Request) -> bool:
    """False when a REFER carries ``Refer-Sub: false`` (RFC 4488 §4): then no NOTIFY is sent."""
    value = request.headers.get("Refer-Sub")
    return value is None or value.split(";", 1)[0].strip().lower() != "false"


def _sipfrag_body(status: int, reason: str) -> bytes:
    if not 100 <= status <= 699:
        raise SipfragError("sipfrag status is out of range")
    return f"SIP/2.0 {status} {reason}\r\n".encode()


def build_notify_sipfrag(
    dialog: Dialog,
    via: Via,
    status: int,
    reason: str,
    subscription_state: str = "active",
    *,
    event_id: int | None = None,
) -> Request:
    """A NOTIFY reporting REFER progress as a sipfrag status line (RFC 3515 §2.4.4, §2.4.5).

    ``event_id`` is the CSeq number of the REFER, required for every REFER after the first in a
    dialog (RFC 3515 §2.4.6); `subscription_state` is ``active`` until the final status, then
    ``terminated;reason=noresource``.
    """
    body = _sipfrag_body(status, reason)
    event = "refer" if event_id is None else f"refer;id={event_id}"
    return dialog.create_request(
        "NOTIFY",
        via=via,
        body=body,
        content_type=SIPFRAG_CONTENT_TYPE,
        headers=(("Event", event), ("Subscription-State", subscription_state)),
    )


def parse_sipfrag(body: bytes) -> tuple[int, str]:
    """The status code and reason phrase of a sipfrag status line (RFC 3420 §2, RFC 3515 §2.4.5)."""
    line = body.split(b"\n", 1)[0].strip()
    version, _, rest = line.partition(b" ")
    if version.upper() != b"SIP/2.0":
        raise SipfragError("sipfrag has no SIP/2.0 status line")
    code, _, reason = rest.strip().partition(b" ")
    if len(code) != 3 or not code.isdigit() or not 100 <= int(code) <= 699:
        raise SipfragError("sipfrag status code is not valid")
    return int(code), reason.strip().decode("utf-8", "replace")


class SubscriptionState(Enum):
    """The implicit subscription a REFER creates (RFC 3515 §2.4.4, RFC 6665 §4.1.2)."""

    ACTIVE = "active"
    TERMINATED = "terminated"


class ReferSubscription:
    """The implicit ``refer`` subscription of one REFER, on either side (RFC 3515 §2.4.4, RFC 4488).

    The referee (notifier) builds NOTIFYs with :meth:`build_notify`: ``active`` for provisional
    statuses, ``terminated;reason=noresource`` with the final one. The referrer (subscriber) feeds
    received NOTIFYs to :meth:`receive_notify`. With ``Refer-Sub: false`` no NOTIFY is sent and the
    subscription ends with the final status.
    """

    __slots__ = ("event_id", "include_id", "last_status", "refer_sub", "state")

    def __init__(self, event_id: int, *, refer_sub: bool = True, include_id: bool = False) -> None:
        self.event_id = event_id
        """The CSeq number of the REFER, the ``id`` of its Event header."""
        self.include_id = include_id
        """Whether NOTIFYs name ``id`` (needed when this is not the first REFER of the dialog)."""
        self.refer_sub = refer_sub
        self.state = SubscriptionState.ACTIVE
        self.last_status: tuple[int, str] | None = None

    @classmethod
    def from_refer(cls, request: Request, *, first_in_dialog: bool = True) -> ReferSubscription:
        """The subscription an accepted REFER creates (either side of it)."""
        if request.method != "REFER":
            raise ReferError("request is not a REFER")
        return cls(
            request.cseq.seq,
            refer_sub=refer_sub_requested(request),
            include_id=not first_in_dialog,
        )

    def build_notify(self, dialog: Dialog, via: Via, status: int, reason: str) -> Request | None:
        """The NOTIFY for the referred call's progress, or None with ``Refer-Sub: false``."""
        if self.state is SubscriptionState.TERMINATED:
            raise ReferError("subscription is terminated")
        final = status >= 200
        _sipfrag_body(status, reason)
        self.last_status = (status, reason)
        if final:
            self.state = SubscriptionState.TERMINATED
        if not self.refer_sub:
            return None
        return build_notify_sipfrag(
            dialog,
            via,
            status,
            reason,
            "terminated;reason=noresource" if final else "active",
            event_id=self.event_id if self.include_id else None,
        )

    def matches(self, request: Request) -> bool:
        """Whether a NOTIFY belongs to this subscription: ``Event: refer`` with our id or none."""
        event = request.headers.get("Event")
        if event is None:
            return False
        package, *params = event.split(";")
        if package.strip().lower() != "refer":
            return False
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "id":
                return value.strip() == str(self.event_id)
        return True

    def receive_notify(self, request: Request) -> tuple[int, str]:
        """Apply a NOTIFY of this subscription; return the sipfrag status and reason."""
        if not self.matches(request):
            raise ReferError("NOTIFY is not for this subscription")
        status_line = parse_sipfrag(request.body)
        self.last_status = status_line
        state = request.headers.get("Subscription-State") or ""
        if state.split(";", 1)[0].strip().lower() == "terminated":
            self.state = SubscriptionState.TERMINATED
        return status_line

    def terminate(self) -> None:
        """End the subscription (the dialog ended, or the notifier gave up)."""
        self.state = SubscriptionState.TERMINATED


def match_replaces(request: Request, table: DialogTable) -> Dialog | None:
    """The dialog an INVITE with Replaces targets (RFC 3891 §3); None without a Replaces header.

    Raises :class:`ReplacesRejected` with the status to answer: 400 for several Replaces or one on a
    request other than INVITE, 481 when no dialog matches or the match is an early dialog we did
    not initiate, 603 for a terminated dialog, 486 for ``early-only`` against a confirmed dialog.
    Authorising the replacement stays with the caller.
    """
    values = request.headers.getlist("Replaces")
    if not values:
        return None
    if len(values) > 1 or request.method != "INVITE":
        raise ReplacesRejected(400, "Bad Replaces")
    try:
        replaces = Replaces.parse(values[0])
    except ReplacesError:
        raise ReplacesRejected(400, "Bad Replaces") from None
    dialog = table.get(replaces.dialog_id)
    if dialog is None:
        raise ReplacesRejected(481, "Call/Transaction Does Not Exist")
    if dialog.state is DialogState.TERMINATED:
        raise ReplacesRejected(603, "Decline")
    if dialog.state is DialogState.CONFIRMED:
        if replaces.early_only:
            raise ReplacesRejected(486, "Busy Here")
    elif dialog.role is DialogRole.UAS:
        raise ReplacesRejected(481, "Call/Transaction Does Not Exist")
    return dialog
