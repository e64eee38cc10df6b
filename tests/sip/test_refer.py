"""REFER, Refer-To with escaped Replaces, Replaces matching, NOTIFY sipfrag (RFC 3515, 3891)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sip.dialog import Dialog, DialogTable
from sip.message import Address, Request, Response, Via, make_response, parse_message
from sip.refer import (
    SIPFRAG_CONTENT_TYPE,
    ReferError,
    ReferSubscription,
    ReferTo,
    Replaces,
    ReplacesError,
    ReplacesRejected,
    SipfragError,
    SubscriptionState,
    build_notify_sipfrag,
    build_refer,
    match_replaces,
    parse_sipfrag,
    refer_sub_requested,
)

VIA = Via.parse("SIP/2.0/UDP 192.0.2.4:5060;branch=z9hG4bKrefer1;rport")
LOCAL_CONTACT = Address.parse("<sip:omlmedia@192.0.2.4>")


def invite(call_id: str, from_tag: str, *, extra: str = "") -> Request:
    message = parse_message(
        (
            "INVITE sip:agent@192.0.2.4 SIP/2.0\r\n"
            "Via: SIP/2.0/UDP 198.51.100.1:5060;branch=z9hG4bK-" + from_tag + "\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:caller@pbx.example.com>;tag={from_tag}\r\n"
            "To: <sip:agent@192.0.2.4>\r\n"
            f"Call-ID: {call_id}\r\n"
            "CSeq: 10 INVITE\r\n"
            "Contact: <sip:caller@198.51.100.1:5060>\r\n"
            f"{extra}"
            "Content-Length: 0\r\n\r\n"
        ).encode()
    )
    assert isinstance(message, Request)
    return message


def uas_dialog(call_id: str = "a84b4c76e66710@pbx", from_tag: str = "pbx1") -> Dialog:
    request = invite(call_id, from_tag)
    return Dialog.create_uas(request, "local1", LOCAL_CONTACT)


def confirmed(dialog: Dialog, request: Request) -> Dialog:
    dialog.send_response(request, make_response(request, 200, to_tag=dialog.local_tag))
    return dialog


def uac_dialog(call_id: str = "outbound-1@192.0.2.4") -> Dialog:
    request = parse_message(
        (
            "INVITE sip:carol@carrier.example.net SIP/2.0\r\n"
            "Via: SIP/2.0/UDP 192.0.2.4:5060;branch=z9hG4bKout1\r\n"
            "From: <sip:omlmedia@192.0.2.4>;tag=ourtag\r\n"
            "To: <sip:carol@carrier.example.net>\r\n"
            f"Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\n"
            "Contact: <sip:omlmedia@192.0.2.4>\r\nContent-Length: 0\r\n\r\n"
        ).encode()
    )
    assert isinstance(request, Request)
    ringing = make_response(request, 180, to_tag="carol1")
    ringing.headers.add("Contact", "<sip:carol@203.0.113.5>")
    return Dialog.create_uac(request, ringing)


def wire(request: Request) -> Request:
    message = parse_message(bytes(request))
    assert isinstance(message, Request)
    return message


# -- Replaces and Refer-To ---------------------------------------------------------------------


def test_replaces_parses_and_prints_the_rfc_3891_form() -> None:
    replaces = Replaces.parse("98732@sip.example.com;from-tag=r33th4x0r;to-tag=ff87ff;early-only")
    assert replaces == Replaces("98732@sip.example.com", "ff87ff", "r33th4x0r", early_only=True)
    assert str(replaces) == "98732@sip.example.com;to-tag=ff87ff;from-tag=r33th4x0r;early-only"
    assert Replaces.parse(str(replaces)) == replaces
    plain = Replaces.parse(" 12adf2f34456gs5;TO-TAG=12345 ; from-tag=54321;x=y")
    assert plain == Replaces("12adf2f34456gs5", "12345", "54321", early_only=False)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "Replaces has no valid Call-ID"),
        ("abc def;to-tag=1;from-tag=2", "Replaces has no valid Call-ID"),
        ("abc;from-tag=2", "Replaces has no to-tag"),
        ("abc;to-tag=1", "Replaces has no from-tag"),
        ("abc;to-tag=;from-tag=2", "Replaces has no to-tag"),
    ],
)
def test_malformed_replaces_raise_fixed_errors(text: str, message: str) -> None:
    with pytest.raises(ReplacesError, match=message):
        Replaces.parse(text)


def test_refer_to_round_trips_an_escaped_replaces_and_keeps_other_uri_headers() -> None:
    text = (
        "<sips:bob@bobster.example.org?Replaces=12345%40192.168.118.3%3Bto-tag%3D12345"
        "%3Bfrom-tag%3D5FFE-3994&Require=replaces>"
    )
    refer_to = ReferTo.parse(text)

    assert refer_to.replaces == Replaces("12345@192.168.118.3", "12345", "5FFE-3994")
    assert refer_to.address.uri.headers == (("Require", "replaces"),)
    assert str(refer_to.address.uri) == "sips:bob@bobster.example.org?Require=replaces"
    printed = str(refer_to)
    assert "Replaces=12345%40192.168.118.3%3Bto-tag%3D12345%3Bfrom-tag%3D5FFE-3994" in printed
    assert ReferTo.parse(printed) == refer_to


def test_refer_to_without_replaces_is_a_plain_address() -> None:
    refer_to = ReferTo.parse('"Queue" <sip:sales@192.0.2.4>;x=1')
    assert refer_to.replaces is None
    assert refer_to.address.display_name == "Queue"
    assert ReferTo.parse(str(refer_to)) == refer_to


def test_bad_refer_to_raises_fixed_errors() -> None:
    with pytest.raises(ReferError, match="Refer-To is not valid"):
        ReferTo.parse("<not a uri")
    with pytest.raises(ReplacesError, match="Replaces has no from-tag"):
        ReferTo.parse("<sip:b@h?Replaces=x%3Bto-tag%3D1>")
    with pytest.raises(ReferError, match="more than one Replaces"):
        ReferTo.parse("<sip:b@h?Replaces=x%3Bto-tag%3D1%3Bfrom-tag%3D2&replaces=y%3Bto-tag%3D1>")


# -- REFER -------------------------------------------------------------------------------------


def test_attended_transfer_refer_carries_refer_to_with_the_other_dialogs_replaces() -> None:
    first = uas_dialog()
    consult = uac_dialog()
    target = Address.parse("<sip:carol@203.0.113.5>")
    referred_by = Address.parse("<sip:omlmedia@192.0.2.4>")

    refer = wire(
        build_refer(first, target, VIA, Replaces.for_dialog(consult), referred_by=referred_by)
    )

    assert refer.method == "REFER"
    assert refer.call_id == first.call_id
    assert refer.to_tag == first.remote_tag
    assert refer.contact[0].uri.host == "192.0.2.4"
    refer_to_header = refer.headers.get("Refer-To")
    assert refer_to_header is not None
    refer_to = ReferTo.parse(refer_to_header)
    assert refer_to.address.uri.host == "203.0.113.5"
    assert refer_to.replaces == Replaces("outbound-1@192.0.2.4", "carol1", "ourtag")
    assert refer.headers.get("Referred-By") == "<sip:omlmedia@192.0.2.4>"
    assert refer_sub_requested(refer)


def test_refer_sub_false_is_sent_and_understood() -> None:
    refer = wire(
        build_refer(uas_dialog(), Address.parse("<sip:q@192.0.2.4>"), VIA, refer_sub=False)
    )
    assert refer.headers.get("Refer-Sub") == "false"
    assert not refer_sub_requested(refer)
    assert "Referred-By" not in refer.headers
    subscription = ReferSubscription.from_refer(refer)
    assert subscription.build_notify(uas_dialog(), VIA, 100, "Trying") is None
    assert subscription.state.name == "ACTIVE"
    assert subscription.build_notify(uas_dialog(), VIA, 200, "OK") is None
    assert subscription.state is SubscriptionState.TERMINATED


# -- NOTIFY and sipfrag ------------------------------------------------------------------------


def test_notify_sipfrag_has_event_refer_sipfrag_type_and_a_status_line_body() -> None:
    dialog = uas_dialog()
    notify = wire(build_notify_sipfrag(dialog, VIA, 200, "OK", "terminated;reason=noresource"))

    assert notify.method == "NOTIFY"
    assert notify.headers.get("Event") == "refer"
    assert notify.headers.get("Subscription-State") == "terminated;reason=noresource"
    assert notify.headers.get("Content-Type") == SIPFRAG_CONTENT_TYPE
    assert notify.content_type == "message/sipfrag"
    assert notify.body == b"SIP/2.0 200 OK\r\n"
    assert parse_sipfrag(notify.body) == (200, "OK")

    second = wire(build_notify_sipfrag(dialog, VIA, 180, "Ringing", event_id=23))
    assert second.headers.get("Event") == "refer;id=23"
    assert second.headers.get("Subscription-State") == "active"
    assert second.cseq.seq == notify.cseq.seq + 1


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"SIP/2.0 100 Trying", (100, "Trying")),
        (
            b"SIP/2.0 503 Service Unavailable\r\nRetry-After: 5\r\n\r\n",
            (503, "Service Unavailable"),
        ),
        (b"sip/2.0 180 \r\n", (180, "")),
        (b"SIP/2.0 200 D\xc3\xa9j\xc3\xa0 vu", (200, "D\u00e9j\u00e0 vu")),
    ],
)
def test_parse_sipfrag_reads_the_status_line(body: bytes, expected: tuple[int, str]) -> None:
    assert parse_sipfrag(body) == expected


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "no SIP/2.0 status line"),
        (b"INVITE sip:a@b SIP/2.0", "no SIP/2.0 status line"),
        (b"SIP/3.0 200 OK", "no SIP/2.0 status line"),
        (b"SIP/2.0 2000 OK", "status code is not valid"),
        (b"SIP/2.0 099 Low", "status code is not valid"),
        (b"SIP/2.0 abc OK", "status code is not valid"),
    ],
)
def test_parse_sipfrag_rejects_bodies_without_a_status_line(body: bytes, message: str) -> None:
    with pytest.raises(SipfragError, match=message):
        parse_sipfrag(body)


def test_sipfrag_status_must_be_a_sip_status() -> None:
    with pytest.raises(SipfragError, match="out of range"):
        build_notify_sipfrag(uas_dialog(), VIA, 99, "Nope")


def test_refer_subscription_notifies_progress_then_terminates_on_the_final_status() -> None:
    referee_dialog = uas_dialog()
    refer = wire(build_refer(uac_dialog(), Address.parse("<sip:q@192.0.2.4>"), VIA))
    notifier = ReferSubscription.from_refer(refer, first_in_dialog=False)
    subscriber = ReferSubscription.from_refer(refer, first_in_dialog=False)

    trying = notifier.build_notify(referee_dialog, VIA, 100, "Trying")
    assert trying is not None
    assert trying.headers.get("Event") == f"refer;id={refer.cseq.seq}"
    assert trying.headers.get("Subscription-State") == "active"
    assert subscriber.receive_notify(wire(trying)) == (100, "Trying")
    assert subscriber.state.name == "ACTIVE"

    done = notifier.build_notify(referee_dialog, VIA, 200, "OK")
    assert done is not None
    assert done.headers.get("Subscription-State") == "terminated;reason=noresource"
    assert notifier.state is SubscriptionState.TERMINATED
    assert subscriber.receive_notify(wire(done)) == (200, "OK")
    assert subscriber.state is SubscriptionState.TERMINATED
    assert subscriber.last_status == (200, "OK")
    with pytest.raises(ReferError, match="subscription is terminated"):
        notifier.build_notify(referee_dialog, VIA, 200, "OK")


def test_notify_for_another_refer_or_package_is_not_ours() -> None:
    subscription = ReferSubscription(7)
    other = wire(build_notify_sipfrag(uas_dialog(), VIA, 200, "OK", event_id=8))
    assert not subscription.matches(other)
    with pytest.raises(ReferError, match="NOTIFY is not for this subscription"):
        subscription.receive_notify(other)
    without_id = wire(build_notify_sipfrag(uas_dialog(), VIA, 180, "Ringing"))
    assert subscription.matches(without_id)
    presence = wire(build_notify_sipfrag(uas_dialog(), VIA, 180, "Ringing"))
    presence.headers.set("Event", "presence")
    assert not subscription.matches(presence)
    with pytest.raises(ReferError, match="request is not a REFER"):
        ReferSubscription.from_refer(presence)


# -- Replaces matching (RFC 3891 §3) -----------------------------------------------------------


def replacing_invite(replaces: str | None, *, count: int = 1) -> Request:
    extra = "".join(f"Replaces: {replaces}\r\n" for _ in range(count)) if replaces else ""
    return invite("new-call@198.51.100.1", "pbx9", extra=extra)


def table_with(*dialogs: Dialog) -> DialogTable:
    table = DialogTable()
    for dialog in dialogs:
        table.add(dialog)
    return table


def test_replaces_finds_a_confirmed_dialog_by_call_id_and_tags_seen_from_the_recipient() -> None:
    request = invite("a84b4c76e66710@pbx", "pbx1")
    dialog = confirmed(Dialog.create_uas(request, "local1", LOCAL_CONTACT), request)
    table = table_with(dialog, uac_dialog())

    found = match_replaces(
        replacing_invite("a84b4c76e66710@pbx;to-tag=local1;from-tag=pbx1"), table
    )

    assert found is dialog
    assert match_replaces(replacing_invite(None), table) is None


def test_replaces_targets_our_early_outgoing_dialog_even_with_early_only() -> None:
    early = uac_dialog()
    table = table_with(early)
    replaces = str(Replaces("outbound-1@192.0.2.4", "ourtag", "carol1", early_only=True))
    assert match_replaces(replacing_invite(replaces), table) is early


def reject_status(request: Request, table: DialogTable) -> tuple[int, str]:
    with pytest.raises(ReplacesRejected) as info:
        match_replaces(request, table)
    return info.value.status, info.value.reason


def test_replaces_outcomes_481_486_603_and_400() -> None:
    request = invite("a84b4c76e66710@pbx", "pbx1")
    active = confirmed(Dialog.create_uas(request, "local1", LOCAL_CONTACT), request)
    incoming_early = uas_dialog("ringing@pbx", "pbx2")
    ended = confirmed(
        Dialog.create_uas(invite("ended@pbx", "pbx3"), "local3", LOCAL_CONTACT),
        invite("ended@pbx", "pbx3"),
    )
    ended.terminate()
    table = table_with(active, incoming_early, ended)

    assert reject_status(replacing_invite("nobody@pbx;to-tag=a;from-tag=b"), table) == (
        481,
        "Call/Transaction Does Not Exist",
    )
    assert (
        reject_status(replacing_invite("a84b4c76e66710@pbx;to-tag=pbx1;from-tag=local1"), table)[0]
        == 481
    )
    assert reject_status(
        replacing_invite("a84b4c76e66710@pbx;to-tag=local1;from-tag=pbx1;early-only"), table
    ) == (486, "Busy Here")
    assert reject_status(replacing_invite("ringing@pbx;to-tag=local1;from-tag=pbx2"), table)[0] == (
        481
    )
    assert reject_status(replacing_invite("ended@pbx;to-tag=local3;from-tag=pbx3"), table) == (
        603,
        "Decline",
    )
    assert reject_status(replacing_invite("garbage"), table) == (400, "Bad Replaces")
    two = replacing_invite("a84b4c76e66710@pbx;to-tag=local1;from-tag=pbx1", count=2)
    assert reject_status(two, table)[0] == 400
    refer = build_refer(active, Address.parse("<sip:x@y>"), VIA)
    refer.headers.add("Replaces", "a84b4c76e66710@pbx;to-tag=local1;from-tag=pbx1")
    assert reject_status(refer, table)[0] == 400


def test_replaces_rejected_is_a_value_error_carrying_the_status() -> None:
    error = ReplacesRejected(481, "Call/Transaction Does Not Exist")
    assert isinstance(error, ValueError)
    assert str(error) == "Call/Transaction Does Not Exist"
    response: Response = make_response(replacing_invite(None), error.status, error.reason)
    assert response.status == 481


@settings(deadline=None)  # a loaded machine's pause is no slow example
@given(st.text(max_size=60) | st.from_regex(r"[a-z0-9@.]+(;(to|from)-tag=[ -~]*|;early-only)*"))
def test_any_replaces_text_round_trips_or_raises_replaces_error(text: str) -> None:
    try:
        replaces = Replaces.parse(text)
    except ReplacesError:
        return
    assert Replaces.parse(str(replaces)) == replaces


@settings(deadline=None)  # a loaded machine's pause is no slow example
@given(st.text(max_size=60))
def test_any_refer_to_text_parses_or_raises_a_refer_or_replaces_error(text: str) -> None:
    try:
        refer_to = ReferTo.parse(text)
    except (ReplacesError, ReferError):
        return
    assert isinstance(refer_to.address, Address)


@settings(deadline=None)  # a loaded machine's pause is no slow example
@given(st.binary(max_size=60))
def test_any_sipfrag_body_parses_or_raises_sipfrag_error(body: bytes) -> None:
    try:
        status, _ = parse_sipfrag(body)
    except SipfragError:
        return
    assert 100 <= status <= 699
