"""The sans-IO user-agent core, driven with explicit `now` and no sockets."""

from __future__ import annotations

import logging

import pytest

from sip.digest import DigestClient, DigestServer, ha1
from sip.endpoint import Endpoint
from sip.message import URI, Address, Request, Response, make_response, parse_message
from sip.security import RateLimiter, SourcePolicy
from sip.ua import (
    AUTH_BAN_TIME,
    MAX_AUTH_FAILURES,
    CallConfirmed,
    CallEnded,
    CallState,
    DtmfReceived,
    IncomingCall,
    InDialogRequest,
    SessionModified,
    TransferProgress,
    UAEvent,
    UserAgent,
)

LOCAL = Endpoint("udp", "127.0.0.1", 5060)
PBX = Endpoint("udp", "127.0.0.1", 5070)
STRANGER = Endpoint("udp", "198.51.100.7", 5060)
SDP = (
    b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    b"m=audio 6000 RTP/AVP 0\r\n"
)


def make_ua(users: bool = False, limiter: RateLimiter | None = None) -> UserAgent:
    stored = {("alice", "omlmedia"): ha1("alice", "omlmedia", "secret", "MD5")}
    return UserAgent(
        local_endpoints={"udp": LOCAL},
        trusted_source=lambda ip: "pbx" if ip == "127.0.0.1" else None,
        digest=DigestServer("omlmedia", b"k" * 32, algorithms=("MD5",)) if users else None,
        lookup_ha1=(lambda u, r, a: stored.get((u, r))) if users else None,
        rate_limiter=limiter,
    )


def request(
    method: str,
    *,
    call_id: str = "c1",
    cseq: int = 1,
    branch: str = "z9hG4bK-1",
    to_tag: str | None = None,
    body: bytes = b"",
    extra: str = "",
    cseq_method: str | None = None,
) -> bytes:
    to = "<sip:echo@127.0.0.1>" + (f";tag={to_tag}" if to_tag else "")
    content = "Content-Type: application/sdp\r\n" if body and "Content-Type" not in extra else ""
    return (
        f"{method} sip:echo@127.0.0.1:5060 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:5070;branch={branch};rport\r\n"
        f"From: <sip:pbx@127.0.0.1>;tag=ft\r\nTo: {to}\r\nCall-ID: {call_id}\r\n"
        f"CSeq: {cseq} {cseq_method or method}\r\nContact: <sip:pbx@127.0.0.1:5070>\r\n"
        f"Max-Forwards: 70\r\n{extra}{content}Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def events(ua: UserAgent) -> list[UAEvent]:
    out = []
    while (event := ua.next_event()) is not None:
        out.append(event)
    return out


def responses(ua: UserAgent) -> list[tuple[Response, Endpoint]]:
    out = []
    for data, destination in ua.datagrams_to_send():
        message = parse_message(data)
        if isinstance(message, Response):
            out.append((message, destination))
    return out


def establish(ua: UserAgent, source: Endpoint = PBX) -> IncomingCall:
    ua.receive(request("INVITE", body=SDP), source, 0.0)
    (offered,) = events(ua)
    assert isinstance(offered, IncomingCall)
    ua.answer(offered.call, SDP, 0.0)
    ((ok, _),) = responses(ua)
    assert ok.status == 200 and ok.to_tag == offered.call.local_tag
    ua.receive(request("ACK", branch="z9hG4bK-2", to_tag=ok.to_tag), source, 0.01)
    assert [type(e) for e in events(ua)] == [CallConfirmed]
    return offered


def test_trusted_invite_is_offered_answered_confirmed_and_ended_by_bye() -> None:
    ua = make_ua()
    offered = establish(ua)
    call = offered.call
    assert call.trunk == "pbx" and call.request_user == "echo" and call.remote_sdp == SDP
    assert call.state is CallState.CONFIRMED and ua.call_count == 1 and len(ua.dialogs) == 1
    ua.receive(request("BYE", cseq=2, branch="z9hG4bK-3", to_tag=call.local_tag), PBX, 1.0)
    ((ok, destination),) = responses(ua)
    assert ok.status == 200 and destination == PBX
    (ended,) = events(ua)
    assert isinstance(ended, CallEnded) and ended.cause == "bye"
    assert ua.call_count == 0 and len(ua.dialogs) == 0


def test_a_bye_carries_the_reason_given_and_the_reason_received_is_kept_on_the_call() -> None:
    reason = 'SIP;cause=480;text="agent-gone"'
    ua = make_ua()
    call = establish(ua).call
    ua.hangup(call, 1.0, reason=reason)
    bye = parse_message(ua.datagrams_to_send()[0][0])
    assert isinstance(bye, Request) and bye.method == "BYE"
    assert bye.headers.get("Reason") == reason
    other = make_ua()
    call = establish(other).call
    extra = f"Reason: {reason}\r\n"
    other.receive(
        request("BYE", cseq=2, branch="z9hG4bK-3", to_tag=call.local_tag, extra=extra), PBX, 1.0
    )
    assert call.state is CallState.ENDED and call.bye_reason == reason


def test_every_transaction_ends_within_the_rfc_timers_after_a_call() -> None:
    ua = make_ua()
    call = establish(ua).call
    ua.receive(request("BYE", cseq=2, branch="z9hG4bK-3", to_tag=call.local_tag), PBX, 1.0)
    ua.handle_timer(1.0 + 64 * 0.5 + 5.0 + 1.0)
    assert ua.transactions.transaction_count == 0


def test_unanswered_2xx_ends_the_call_with_bye_after_64_t1() -> None:
    ua = make_ua()
    ua.receive(request("INVITE", body=SDP), PBX, 0.0)
    (offered,) = events(ua)
    ua.answer(offered.call, SDP, 0.0)
    ua.datagrams_to_send()
    ua.handle_timer(64 * 0.5 + 0.1)
    sent = [parse_message(d) for d, _ in ua.datagrams_to_send()]
    assert any(isinstance(m, Request) and m.method == "BYE" for m in sent)
    (ended,) = [e for e in events(ua) if isinstance(e, CallEnded)]
    assert ended.cause == "ack-timeout"


def test_reinvite_is_handed_to_the_application_and_answered_in_the_dialog() -> None:
    ua = make_ua()
    call = establish(ua).call
    ua.receive(
        request("INVITE", cseq=2, branch="z9hG4bK-4", to_tag=call.local_tag, body=SDP), PBX, 1.0
    )
    (modified,) = events(ua)
    assert isinstance(modified, SessionModified) and modified.request.body == SDP
    ua.respond(call, modified.transaction, 200, 1.0, SDP, "application/sdp")
    ((ok, _),) = responses(ua)
    assert ok.status == 200 and ok.body == SDP and ok.contact


def test_info_dtmf_becomes_an_event_and_refer_goes_to_the_application() -> None:
    ua = make_ua()
    call = establish(ua).call
    info = request(
        "INFO",
        cseq=2,
        branch="z9hG4bK-5",
        to_tag=call.local_tag,
        body=b"Signal=5\r\nDuration=160\r\n",
        extra="Content-Type: application/dtmf-relay\r\n",
    )
    ua.receive(info, PBX, 1.0)
    (dtmf,) = events(ua)
    assert isinstance(dtmf, DtmfReceived) and (dtmf.digit, dtmf.duration_ms) == ("5", 160)
    assert responses(ua)[0][0].status == 200
    refer = request(
        "REFER",
        cseq=3,
        branch="z9hG4bK-6",
        to_tag=call.local_tag,
        extra="Refer-To: <sip:2000@127.0.0.1>\r\n",
    )
    ua.receive(refer, PBX, 1.1)
    (in_dialog,) = events(ua)
    assert isinstance(in_dialog, InDialogRequest) and in_dialog.request.method == "REFER"


def test_request_for_an_unknown_dialog_gets_481() -> None:
    ua = make_ua()
    ua.receive(request("BYE", to_tag="nope"), PBX, 0.0)
    assert responses(ua)[0][0].status == 481
    assert events(ua) == []


def test_cseq_method_mismatch_gets_400_before_the_transaction_layer() -> None:
    ua = make_ua()
    ua.receive(request("OPTIONS", cseq_method="INVITE"), PBX, 0.0)
    ((bad, destination),) = responses(ua)
    assert bad.status == 400 and destination == PBX
    assert ua.transactions.transaction_count == 0


def test_garbage_is_counted_and_the_next_request_is_served() -> None:
    ua = make_ua()
    ua.receive(b"\x00\xffNOT SIP AT ALL\r\n\r\n", PBX, 0.0)
    ua.receive(request("OPTIONS"), PBX, 0.1)
    assert [r.status for r, _ in responses(ua)] == [200]
    assert ua.stats.parse_errors == 1


def test_untrusted_source_without_users_gets_403_and_a_security_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ua = make_ua()
    with caplog.at_level(logging.WARNING, logger="sip.security"):
        ua.receive(request("INVITE", body=SDP), STRANGER, 0.0)
    assert [r.status for r, _ in responses(ua)] == [403]
    assert events(ua) == []
    assert "SECURITY reason=untrusted-source src=198.51.100.7" in caplog.text


def test_untrusted_source_is_challenged_then_admitted_with_the_right_password() -> None:
    ua = make_ua(users=True)
    ua.receive(request("INVITE", body=SDP), STRANGER, 0.0)
    ((challenge, _),) = responses(ua)
    assert challenge.status == 401
    header = DigestClient("alice", "secret").authorize(
        challenge.headers.getlist("WWW-Authenticate"), "INVITE", "sip:echo@127.0.0.1:5060"
    )
    ua.receive(
        request(
            "INVITE", cseq=2, branch="z9hG4bK-7", body=SDP, extra=f"Authorization: {header}\r\n"
        ),
        STRANGER,
        0.5,
    )
    (offered,) = events(ua)
    assert isinstance(offered, IncomingCall) and offered.call.user == "alice"
    assert offered.call.trunk is None


def test_a_captured_authorization_for_one_number_does_not_authorize_another() -> None:
    ua = make_ua(users=True)
    ua.receive(request("INVITE", body=SDP), STRANGER, 0.0)
    ((challenge, _),) = responses(ua)
    header = DigestClient("alice", "secret").authorize(
        challenge.headers.getlist("WWW-Authenticate"), "INVITE", "sip:echo@127.0.0.1:5060"
    )
    signed = request(
        "INVITE", cseq=2, branch="z9hG4bK-7", body=SDP, extra=f"Authorization: {header}\r\n"
    )
    replayed = signed.replace(b"INVITE sip:echo@", b"INVITE sip:900123456@", 1)
    ua.receive(replayed.replace(b"z9hG4bK-7", b"z9hG4bK-8"), STRANGER, 0.5)
    ((refused, _),) = responses(ua)  # challenged afresh: the nonce was for another request
    assert refused.status == 401 and "stale=true" in (refused.headers.get("WWW-Authenticate") or "")
    assert events(ua) == [] and ua.transactions.transaction_count == 0
    ua.receive(signed, STRANGER, 0.6)  # the same credentials still serve the request they signed
    (offered,) = events(ua)
    assert isinstance(offered, IncomingCall) and offered.call.request_user == "echo"


def test_credentials_whose_digest_uri_names_only_the_host_serve_the_challenged_request() -> None:
    ua = make_ua(users=True)
    ua.receive(request("INVITE", body=SDP), STRANGER, 0.0)
    ((challenge, _),) = responses(ua)
    header = DigestClient("alice", "secret").authorize(
        challenge.headers.getlist("WWW-Authenticate"), "INVITE", "sip:127.0.0.1:5060"
    )  # what sipp's [authentication] sends
    ua.receive(
        request(
            "INVITE", cseq=2, branch="z9hG4bK-7", body=SDP, extra=f"Authorization: {header}\r\n"
        ),
        STRANGER,
        0.5,
    )
    assert [type(e) for e in events(ua)] == [IncomingCall]


def test_wrong_password_and_unknown_user_get_the_same_403() -> None:
    ua = make_ua(users=True)
    statuses = []
    for n, (user, password) in enumerate((("alice", "wrong"), ("mallory", "secret"))):
        ua.receive(
            request("INVITE", call_id=f"x{n}", branch=f"z9hG4bK-a{n}", body=SDP), STRANGER, 0.0
        )
        ((challenge, _),) = responses(ua)
        header = DigestClient(user, password).authorize(
            challenge.headers.getlist("WWW-Authenticate"), "INVITE", "sip:echo@127.0.0.1:5060"
        )
        ua.receive(
            request(
                "INVITE",
                call_id=f"x{n}",
                cseq=2,
                branch=f"z9hG4bK-b{n}",
                body=SDP,
                extra=f"Authorization: {header}\r\n",
            ),
            STRANGER,
            0.1,
        )
        ((answer, _),) = responses(ua)
        statuses.append((answer.status, answer.reason))
    assert statuses[0] == statuses[1] == (403, "Forbidden")


def test_a_flooding_untrusted_source_is_banned_but_trusted_trunks_are_not() -> None:
    ua = make_ua(limiter=RateLimiter(5, 1.0, 60.0))
    for n in range(20):
        ua.receive(request("OPTIONS", call_id=f"f{n}", branch=f"z9hG4bK-f{n}"), STRANGER, 0.0)
    assert len(responses(ua)) == 5
    assert ua.stats.rate_limited == 15
    for n in range(20):
        ua.receive(request("OPTIONS", call_id=f"t{n}", branch=f"z9hG4bK-t{n}"), PBX, 0.0)
    assert len(responses(ua)) == 20


def _guess(
    ua: UserAgent, source: Endpoint, n: int, now: float, password: str = "guess"
) -> int | None:
    """One INVITE challenged and answered with `password` for alice; the final status, if any."""
    ua.receive(request("INVITE", call_id=f"g{n}", branch=f"z9hG4bK-g{n}", body=SDP), source, now)
    challenged = responses(ua)
    if not challenged:
        return None
    ((challenge, _),) = challenged
    header = DigestClient("alice", password).authorize(
        challenge.headers.getlist("WWW-Authenticate"), "INVITE", "sip:echo@127.0.0.1:5060"
    )
    extra = f"Authorization: {header}\r\n"
    data = request("INVITE", call_id=f"g{n}", cseq=2, branch=f"z9hG4bK-h{n}", body=SDP, extra=extra)
    ua.receive(data, source, now)
    answers = responses(ua)
    return answers[0][0].status if answers else None


def test_a_source_guessing_passwords_is_banned_and_ignored_until_the_ban_ends(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ua = make_ua(users=True)
    with caplog.at_level(logging.WARNING, logger="sip.security"):
        statuses = [_guess(ua, STRANGER, n, n * 0.1) for n in range(MAX_AUTH_FAILURES + 1)]
    assert statuses == [403] * (MAX_AUTH_FAILURES + 1)
    assert ua.stats.auth_failures == MAX_AUTH_FAILURES + 1 and ua.stats.auth_bans == 1
    assert caplog.text.count("SECURITY reason=auth-failure-ban src=198.51.100.7") == 1
    # Banned: nothing is answered, not even the right password, nor a request on another port.
    assert _guess(ua, STRANGER, 100, 2.0, password="secret") is None
    ua.receive(request("OPTIONS", call_id="o1"), Endpoint("tcp", "198.51.100.7", 40000), 3.0)
    assert responses(ua) == [] and events(ua) == []
    # Another source, and the trunk, are served as before.
    assert _guess(ua, Endpoint("udp", "198.51.100.8", 5060), 200, 3.0, password="secret") is None
    assert [type(e) for e in events(ua)] == [IncomingCall]
    ua.receive(request("OPTIONS", call_id="o2", branch="z9hG4bK-o2"), PBX, 3.0)
    assert [r.status for r, _ in responses(ua)] == [200]
    # Once the ban is over, the right password is admitted again.
    assert _guess(ua, STRANGER, 300, 2.0 + AUTH_BAN_TIME, password="secret") is None
    assert [type(e) for e in events(ua)] == [IncomingCall]


def test_password_guesses_spread_over_an_ipv6_64_ban_the_whole_64() -> None:
    ua = make_ua(users=True)
    for n in range(MAX_AUTH_FAILURES + 1):
        assert _guess(ua, Endpoint("udp", f"2001:db8:7:7::{n + 1:x}", 5060), n, 0.0) == 403
    assert ua.stats.auth_bans == 1
    ua.receive(request("OPTIONS", call_id="o1"), Endpoint("udp", "2001:db8:7:7:abcd::1", 5060), 1.0)
    assert responses(ua) == []
    ua.receive(request("OPTIONS", call_id="o2"), Endpoint("udp", "2001:db8:7:8::1", 5060), 1.0)
    assert [r.status for r, _ in responses(ua)] == [401]


def test_challenges_are_not_failures_and_trusted_networks_are_never_banned() -> None:
    ua = make_ua(users=True)
    for n in range(10 * MAX_AUTH_FAILURES):  # a UAC that never answers its challenge
        ua.receive(request("OPTIONS", call_id=f"c{n}", branch=f"z9hG4bK-c{n}"), STRANGER, 0.0)
        assert [r.status for r, _ in responses(ua)] == [401]
    assert ua.stats.auth_failures == 0 and ua.stats.auth_bans == 0
    office = SourcePolicy(["198.51.100.0/24"])
    ua = make_ua(users=True, limiter=RateLimiter(1000, 1.0, 60.0, policy=office))
    for n in range(3 * MAX_AUTH_FAILURES):  # a misconfigured phone in a trusted office network
        assert _guess(ua, STRANGER, n, 0.0) == 403
    assert ua.stats.auth_bans == 0


@pytest.mark.parametrize("contact", ["Contact: garbage <<\r\n", "Contact: *\r\n"])
def test_an_invite_without_a_usable_contact_gets_400_before_the_application_sees_it(
    contact: str,
) -> None:
    ua = make_ua()
    data = request("INVITE", body=SDP).replace(b"Contact: <sip:pbx@127.0.0.1:5070>\r\n", b"")
    ua.receive(data.replace(b"Max-Forwards", contact.encode() + b"Max-Forwards"), PBX, 0.0)
    assert [(r.status, r.reason) for r, _ in responses(ua)] == [(400, "Invalid Contact header")]
    assert events(ua) == [] and ua.call_count == 0


def test_an_rfc_2543_invite_without_contact_can_be_answered() -> None:
    ua = make_ua()
    data = request("INVITE", body=SDP).replace(b"Contact: <sip:pbx@127.0.0.1:5070>\r\n", b"")
    ua.receive(data, PBX, 0.0)
    (offered,) = events(ua)
    assert isinstance(offered, IncomingCall)
    ua.answer(offered.call, SDP, 0.0)  # raised DialogError before
    assert [r.status for r, _ in responses(ua)] == [200]
    assert offered.call.dialog is not None
    ua.hangup(offered.call, 0.1)
    ((bye, destination),) = ua.datagrams_to_send()
    assert bye.startswith(b"BYE sip:pbx@127.0.0.1 ")  # the From URI, as RFC 2543 did
    assert destination == Endpoint("udp", "127.0.0.1", 5060)


def test_invite_with_replaces_names_the_call_it_replaces() -> None:
    ua = make_ua()
    first = establish(ua).call
    replaces = f"Replaces: c1;to-tag={first.local_tag};from-tag=ft\r\n"
    ua.receive(
        request("INVITE", call_id="c2", branch="z9hG4bK-r", body=SDP, extra=replaces), PBX, 1.0
    )
    (offered,) = events(ua)
    assert isinstance(offered, IncomingCall) and offered.call.replaces is first


def test_invite_with_replaces_for_no_dialog_gets_481() -> None:
    ua = make_ua()
    ua.receive(
        request("INVITE", call_id="c2", body=SDP, extra="Replaces: nope;to-tag=a;from-tag=b\r\n"),
        PBX,
        0.0,
    )
    assert [r.status for r, _ in responses(ua)] == [481]
    assert events(ua) == []


def test_cancel_before_answer_ends_the_offered_call_with_487() -> None:
    ua = make_ua()
    ua.receive(request("INVITE", body=SDP), PBX, 0.0)
    (offered,) = events(ua)
    ua.receive(request("CANCEL"), PBX, 0.05)
    statuses = sorted(r.status for r, _ in responses(ua))
    assert statuses == [200, 487]
    (ended,) = events(ua)
    assert isinstance(ended, CallEnded) and ended.cause == "cancel"
    ua.answer(offered.call, SDP, 0.1)  # too late: nothing is sent
    assert responses(ua) == []


def test_refer_we_send_reports_progress_from_202_and_the_notify_sipfrags() -> None:
    ua = make_ua()
    call = establish(ua).call
    txn = ua.refer(call, Address.parse("<sip:2000@127.0.0.1>"), 1.0)
    assert txn is not None
    ((data, destination),) = ua.datagrams_to_send()
    refer = parse_message(data)
    assert isinstance(refer, Request) and refer.method == "REFER"
    assert refer.headers.get("Refer-To") == "<sip:2000@127.0.0.1>"
    assert destination == PBX and refer.to_tag == "ft" and refer.from_tag == call.local_tag
    accepted = make_response(refer, 202, to_tag="ft")
    ua.receive(bytes(accepted), PBX, 1.05)
    (progress,) = events(ua)
    assert isinstance(progress, TransferProgress) and (progress.status, progress.final) == (
        202,
        False,
    )
    for n, (frag, state) in enumerate(
        ((b"SIP/2.0 100 Trying\r\n", "active"), (b"SIP/2.0 200 OK\r\n", "terminated"))
    ):
        notify = request(
            "NOTIFY",
            cseq=2 + n,
            branch=f"z9hG4bK-n{n}",
            to_tag=call.local_tag,
            body=frag,
            extra=f"Event: refer\r\nSubscription-State: {state}\r\n"
            "Content-Type: message/sipfrag;version=2.0\r\n",
        )
        ua.receive(notify, PBX, 1.1 + n)
        (progress,) = events(ua)
        assert isinstance(progress, TransferProgress)
        assert progress.status == (100, 200)[n] and progress.final is bool(n)
        assert [r.status for r, _ in responses(ua)] == [200]


def _answer_to(invite: Request, status: int, to_tag: str = "pbxtag", body: bytes = b"") -> bytes:
    response = make_response(
        invite, status, to_tag=to_tag, body=body, content_type="application/sdp" if body else None
    )
    response.headers.add("Contact", "<sip:2000@127.0.0.1:5070>")
    return bytes(response)


def _sent_requests(ua: UserAgent) -> list[Request]:
    return [m for d, _ in ua.datagrams_to_send() if isinstance(m := parse_message(d), Request)]


def test_outbound_call_is_acked_ended_by_the_far_bye_and_leaves_nothing_behind() -> None:
    ua = make_ua()
    call = ua.send_invite(
        destination=PBX,
        request_uri=URI.parse("sip:2000@127.0.0.1:5070"),
        from_address=Address.parse("<sip:1000@127.0.0.1>"),
        to_address=Address.parse("<sip:2000@127.0.0.1:5070>"),
        body=SDP,
        now=0.0,
    )
    (invite,) = _sent_requests(ua)
    ua.receive(_answer_to(invite, 180), PBX, 0.1)
    ua.receive(_answer_to(invite, 200, body=SDP), PBX, 0.2)
    assert [type(e).__name__ for e in events(ua)] == [
        "CallProgress",
        "CallProgress",
        "CallConfirmed",
    ]
    (ack,) = _sent_requests(ua)
    assert ack.method == "ACK" and ack.to_tag == "pbxtag" and ack.cseq.seq == 1
    bye = (
        "BYE sip:1000@127.0.0.1:5060 SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-pb\r\n"
        "From: <sip:2000@127.0.0.1:5070>;tag=pbxtag\r\n"
        f"To: <sip:1000@127.0.0.1>;tag={call.local_tag}\r\n"
        f"Call-ID: {call.call_id}\r\nCSeq: 7 BYE\r\nContent-Length: 0\r\n\r\n"
    ).encode()
    ua.receive(bye, PBX, 5.0)
    (ended,) = events(ua)
    assert isinstance(ended, CallEnded) and ended.cause == "bye"
    assert ua.call_count == 0 and len(ua.dialogs) == 0
    assert ua._calls_by_client_txn == {}


def test_outbound_call_cancelled_while_ringing_leaves_nothing_behind() -> None:
    ua = make_ua()
    call = ua.send_invite(
        destination=PBX,
        request_uri=URI.parse("sip:2000@127.0.0.1:5070"),
        from_address=Address.parse("<sip:1000@127.0.0.1>"),
        to_address=Address.parse("<sip:2000@127.0.0.1:5070>"),
        body=SDP,
        now=0.0,
    )
    (invite,) = _sent_requests(ua)
    ua.receive(_answer_to(invite, 180), PBX, 0.1)
    events(ua)
    ua.hangup(call, 0.2)
    (cancel,) = _sent_requests(ua)
    assert cancel.method == "CANCEL" and cancel.branch == invite.branch
    ua.receive(bytes(make_response(cancel, 200, to_tag="pbxtag")), PBX, 0.3)
    ua.receive(_answer_to(invite, 487), PBX, 0.3)
    assert [type(e).__name__ for e in events(ua)] == ["CallEnded"]
    assert ua.call_count == 0 and len(ua.dialogs) == 0
    assert ua._calls_by_client_txn == {}


# -- strangers cost no state: stateless answers and caps ---------------------------------------


def _stranger(n: int) -> Endpoint:
    return Endpoint("udp", f"198.{51 + (n >> 16)}.{(n >> 8) & 255}.{n & 255}", 5060)


def test_unauthenticated_invite_gets_one_stateless_401_and_leaves_no_transaction() -> None:
    ua = make_ua(users=True)
    ua.receive(request("INVITE", body=SDP), STRANGER, 0.0)
    ((challenge, destination),) = responses(ua)
    assert challenge.status == 401 and destination == STRANGER
    assert ua.transactions.transaction_count == 0 and ua.get_timer() is None
    for now in (0.2, 0.5, 1.5, 3.5, 7.5, 40.0):  # where Timer G and H would have fired
        ua.handle_timer(now)
        assert ua.datagrams_to_send() == []
    ua.receive(request("INVITE", body=SDP), STRANGER, 41.0)  # a retransmission
    ((again, _),) = responses(ua)
    assert again.status == 401 and ua.transactions.transaction_count == 0


def test_refusals_of_strangers_are_stateless() -> None:
    ua = make_ua()
    ua.receive(request("INVITE", body=SDP), STRANGER, 0.0)
    ua.receive(request("BYE", call_id="c2", to_tag="none"), STRANGER, 0.0)
    ua.receive(request("CANCEL", call_id="c3"), STRANGER, 0.0)
    assert sorted(r.status for r, _ in responses(ua)) == [403, 481, 481]
    assert ua.transactions.transaction_count == 0 and ua.get_timer() is None


def test_a_request_with_more_than_70_via_values_gets_400_and_70_are_served() -> None:
    ua = make_ua()
    hop = "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK-h\r\n"
    pair = "Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK-h, SIP/2.0/TCP 192.0.2.2;branch=z9hG4bK-i\r\n"
    ua.receive(request("OPTIONS", extra=hop * 69), PBX, 0.0)
    assert [r.status for r, _ in responses(ua)] == [200]
    ua.receive(request("OPTIONS", call_id="c2", branch="z9hG4bK-2", extra=hop * 70), PBX, 0.0)
    ua.receive(
        request("OPTIONS", call_id="c3", branch="z9hG4bK-3", extra=hop * 68 + pair), PBX, 0.0
    )
    statuses = [(r.status, r.reason) for r, _ in responses(ua)]
    assert statuses == [(400, "Too Many Via Headers")] * 2
    assert ua.transactions.transaction_count == 1


def test_server_transactions_never_exceed_the_cap_under_100000_sources() -> None:
    ua = UserAgent(
        local_endpoints={"udp": LOCAL},
        trusted_source=lambda ip: "pbx" if ip.startswith("198.") else None,
        max_transactions=1000,
    )
    template = request("OPTIONS", call_id="CALLID", branch="z9hG4bK-BRANCH")
    highest = overloaded = 0
    for n in range(100_000):
        data = template.replace(b"CALLID", b"c%d" % n).replace(b"BRANCH", b"%d" % n)
        ua.receive(data, _stranger(n), n * 1e-4)
        ua.handle_timer(n * 1e-4)
        highest = max(highest, ua.transactions.transaction_count)
        for out, _ in ua.datagrams_to_send():
            overloaded += out.startswith(b"SIP/2.0 503 ")
    assert highest == 1000 and overloaded == 99_000
    assert ua.stats.received == 100_000 and ua.transactions.counters.overloaded == 99_000


def test_100000_unauthenticated_sources_never_create_a_transaction() -> None:
    ua = make_ua(users=True)
    template = request("INVITE", call_id="CALLID", branch="z9hG4bK-BRANCH", body=SDP)
    challenges = 0
    for n in range(100_000):
        data = template.replace(b"CALLID", b"c%d" % n).replace(b"BRANCH", b"%d" % n)
        ua.receive(data, _stranger(n), n * 1e-4)
        assert ua.transactions.transaction_count == 0
        for out, _ in ua.datagrams_to_send():
            challenges += out.startswith(b"SIP/2.0 401 ")
    assert challenges == 100_000 and ua.get_timer() is None


def test_overloaded_answers_carry_retry_after_and_the_call_cap_holds() -> None:
    ua = UserAgent(local_endpoints={"udp": LOCAL}, trusted_source=lambda ip: "pbx", max_calls=2)
    for n in range(3):
        ua.receive(request("INVITE", call_id=f"k{n}", branch=f"z9hG4bK-k{n}", body=SDP), PBX, 0.0)
    assert [type(e) for e in events(ua)] == [IncomingCall, IncomingCall]
    ((busy, _),) = responses(ua)
    assert busy.status == 503 and busy.headers.get("Retry-After") == "5"
    assert ua.call_count == 2 and ua.transactions.transaction_count == 2
