"""Broken INVITEs from the grammar-based generator (mutants.py), fed to the sans-IO core.

The same mutants go over real sockets to a running server in tests/interop/test_hostile_sip.py;
here they cost no sockets, so every (field, mutation) pair and thousands of random combinations run
in a second or two: nothing but ValueError may come out of the parsers, the core never raises, the
next valid request is answered, and nothing stays behind once the RFC timers have run.
"""

from __future__ import annotations

from mutants import FRAMINGS, KINDS, fields, mutants, valid_invite

from sip.digest import DigestServer, ha1
from sip.endpoint import Endpoint
from sip.message import Request, Response, parse_message
from sip.sdp import SessionDescription
from sip.ua import IncomingCall, UserAgent

LOCAL = Endpoint("udp", "127.0.0.1", 5060)
PBX = Endpoint("udp", "127.0.0.1", 5070)
STRANGER = Endpoint("udp", "127.0.0.2", 5070)
ANSWER = (
    b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    b"m=audio 7000 RTP/AVP 0\r\n"
)
OPTIONS = (
    "OPTIONS sip:echo@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-o{n}\r\n"
    "Max-Forwards: 70\r\nFrom: <sip:probe@127.0.0.1>;tag=p\r\nTo: <sip:echo@127.0.0.1>\r\n"
    "Call-ID: probe-{n}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
)


def make_ua() -> UserAgent:
    stored = ha1("alice", "omlmedia", "secret", "MD5")
    return UserAgent(
        local_endpoints={"udp": LOCAL},
        trusted_source=lambda ip: "pbx" if ip == "127.0.0.1" else None,
        digest=DigestServer("omlmedia", b"k" * 32, algorithms=("MD5",)),
        lookup_ha1=lambda u, r, a: stored if (u, r) == ("alice", "omlmedia") else None,
    )


def test_the_generator_is_deterministic_and_walks_every_field_and_mutation() -> None:
    first = list(mutants(7, 400, host="127.0.0.1", port=5070))
    assert first == list(mutants(7, 400, host="127.0.0.1", port=5070))
    assert first != list(mutants(8, 400, host="127.0.0.1", port=5070))
    names = {m.name for m in first}
    for field in fields(valid_invite("127.0.0.1", 5070, 0)):
        for kind in KINDS:
            assert f"{field}:{kind}" in names
    for framing in FRAMINGS:
        assert f"framing:{framing}" in names
    assert len({m.data for m in first}) == len(first)


def test_broken_invites_never_break_the_core_and_leave_nothing_behind() -> None:
    ua = make_ua()
    now = 0.0
    offered = answered_probes = 0
    for n, mutant in enumerate(mutants(12, 3000, host="127.0.0.1", port=5070)):
        source = PBX if n % 3 else STRANGER
        now += 0.001
        ua.receive(mutant.data, source, now)
        ua.handle_timer(now)
        while (event := ua.next_event()) is not None:
            if isinstance(event, IncomingCall):
                offered += 1
                try:  # what the application does with the offer: parse it, then answer
                    SessionDescription.parse(event.call.remote_sdp)
                except ValueError:
                    ua.reject(event.call, 488, now)
                else:
                    ua.ring(event.call, now)
                    ua.answer(event.call, ANSWER, now)
        for data, destination in ua.datagrams_to_send():
            assert destination.host in ("127.0.0.1", "127.0.0.2"), (mutant.name, destination)
            assert isinstance(parse_message(data), Request | Response)
        # After each broken INVITE, a valid OPTIONS is answered (issue 12's proof).
        ua.receive(OPTIONS.format(n=n).encode(), PBX, now)
        out = [parse_message(d) for d, _ in ua.datagrams_to_send()]
        assert any(isinstance(r, Response) and r.status == 200 for r in out), mutant.name
        answered_probes += 1
    assert answered_probes == 3000 and offered > 100
    assert ua.stats.parse_errors > 500
    for step in range(1, 200):  # Timer H (ACK awaited), then the BYE's Timer F: 64*T1 each
        ua.handle_timer(now + step * 0.5)
    ua.datagrams_to_send()
    assert ua.transactions.transaction_count == 0  # answered calls ended by ACK timeout and BYE
    assert ua.call_count == 0 and len(ua.dialogs) == 0
