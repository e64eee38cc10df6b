"""In-dialog requests never follow a peer-written address into our own host or network (issue 12,
low items): a Contact more internal than the peer itself (loopback, link-local, private, from a
peer that is not) or one nobody can be (unspecified, multicast) is replaced by the peer's own
address, as for a NAT; a peer in the same scope is followed (a PBX on the LAN, loopback tests)."""

from __future__ import annotations

import pytest

from sip.endpoint import Endpoint
from sip.message import Request, parse_message
from sip.ua import CallConfirmed, IncomingCall, UserAgent
from tests.sip.test_ua import SDP, events, responses

LOCAL = Endpoint("udp", "127.0.0.1", 5060)


def invite(contact: str, source: Endpoint, method: str = "INVITE", **more: str) -> bytes:
    to_tag = more.get("to_tag")
    to = "<sip:echo@127.0.0.1>" + (f";tag={to_tag}" if to_tag else "")
    body = SDP if method == "INVITE" else b""
    content = "Content-Type: application/sdp\r\n" if body else ""
    return (
        f"{method} sip:echo@127.0.0.1:5060 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {source.host}:{source.port};branch={more.get('branch', 'z9hG4bK-1')}\r\n"
        f"From: <sip:pbx@{source.host}>;tag=ft\r\nTo: {to}\r\nCall-ID: c1\r\n"
        f"CSeq: {more.get('cseq', '1')} {method}\r\nContact: <sip:pbx@{contact}>\r\n"
        f"Max-Forwards: 70\r\n{content}Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def bye_destination(contact: str, source: Endpoint) -> Endpoint:
    """Where our BYE goes after a call from `source` whose Contact is `contact`."""
    ua = UserAgent(local_endpoints={"udp": LOCAL}, trusted_source=lambda ip: "pbx")
    ua.receive(invite(contact, source), source, 0.0)
    (offered,) = events(ua)
    assert isinstance(offered, IncomingCall)
    ua.answer(offered.call, SDP, 0.0)
    ((ok, _),) = responses(ua)
    ack = invite(contact, source, "ACK", branch="z9hG4bK-2", to_tag=ok.to_tag or "")
    ua.receive(ack, source, 0.01)
    assert [type(e) for e in events(ua)] == [CallConfirmed]
    ua.hangup(offered.call, 1.0)
    sent = [(parse_message(d), where) for d, where in ua.datagrams_to_send()]
    [where] = [w for m, w in sent if isinstance(m, Request) and m.method == "BYE"]
    return where


PUBLIC = Endpoint("udp", "93.184.216.50", 5070)
LAN = Endpoint("udp", "10.1.1.1", 5070)
LOOPBACK = Endpoint("udp", "127.0.0.1", 5070)


@pytest.mark.parametrize(
    ("contact", "source", "expected"),
    [
        ("127.0.0.1:22", PUBLIC, PUBLIC),
        ("[::1]:22", PUBLIC, PUBLIC),
        ("169.254.169.254:80", PUBLIC, PUBLIC),
        ("10.0.0.5:5060", PUBLIC, PUBLIC),
        ("0.0.0.0:5060", PUBLIC, PUBLIC),
        ("224.0.0.1:5060", LAN, LAN),
        ("127.0.0.1:22", LAN, LAN),
        ("93.184.216.99:5080", PUBLIC, Endpoint("udp", "93.184.216.99", 5080)),
        ("10.1.1.2:5080", LAN, Endpoint("udp", "10.1.1.2", 5080)),
        ("93.184.216.99:5080", LAN, Endpoint("udp", "93.184.216.99", 5080)),
        ("127.0.0.1:5080", LOOPBACK, Endpoint("udp", "127.0.0.1", 5080)),
    ],
)
def test_in_dialog_requests_follow_the_contact_only_within_the_peer_s_reach(
    contact: str, source: Endpoint, expected: Endpoint
) -> None:
    assert bye_destination(contact, source) == expected
