"""Dialogs (RFC 3261 §12-§15), the dialog table and the re-INVITE / UPDATE session bookkeeping."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sip.dialog import (
    Dialog,
    DialogError,
    DialogId,
    DialogRole,
    DialogState,
    DialogTable,
    InviteSession,
    MediaDirection,
    OfferState,
    glare_retry_delay,
    sdp_direction,
)
from sip.message import Address, Request, Response, Via, make_response, parse_message

CALL_ID = "3848276298220188511@atlanta.example.com"
ALICE_TAG = "9fxced76sl"
BOB_TAG = "314159"
BOB_CONTACT = Address.parse("<sip:bob@192.0.2.4>")
ALICE_CONTACT = "<sip:alice@client.atlanta.example.com;transport=tcp>"

# Alice's INVITE as Bob receives it through two record-routing proxies (RFC 3665 §3.2 style).
INVITE_AT_BOB = (
    "INVITE sip:bob@biloxi.example.com SIP/2.0\r\n"
    "Via: SIP/2.0/TCP proxy2.biloxi.example.com:5060;branch=z9hG4bK721e4.1\r\n"
    "Via: SIP/2.0/TCP proxy1.atlanta.example.com:5060;branch=z9hG4bK2d4790.1\r\n"
    "Via: SIP/2.0/TCP client.atlanta.example.com:5060;branch=z9hG4bK74bf9;received=192.0.2.101\r\n"
    "Max-Forwards: 68\r\n"
    "Record-Route: <sip:proxy2.biloxi.example.com;lr>\r\n"
    "Record-Route: <sip:proxy1.atlanta.example.com;lr>\r\n"
    f"From: Alice <sip:alice@atlanta.example.com>;tag={ALICE_TAG}\r\n"
    "To: Bob <sip:bob@biloxi.example.com>\r\n"
    f"Call-ID: {CALL_ID}\r\n"
    "CSeq: 1 INVITE\r\n"
    f"Contact: {ALICE_CONTACT}\r\n"
    "Content-Type: application/sdp\r\n"
    "Content-Length: 0\r\n\r\n"
)

# The same INVITE as Alice sends it.
INVITE_FROM_ALICE = (
    "INVITE sip:bob@biloxi.example.com SIP/2.0\r\n"
    "Via: SIP/2.0/TCP client.atlanta.example.com:5060;branch=z9hG4bK74bf9\r\n"
    "Max-Forwards: 70\r\n"
    f"From: Alice <sip:alice@atlanta.example.com>;tag={ALICE_TAG}\r\n"
    "To: Bob <sip:bob@biloxi.example.com>\r\n"
    f"Call-ID: {CALL_ID}\r\n"
    "CSeq: 1 INVITE\r\n"
    f"Contact: {ALICE_CONTACT}\r\n"
    'Proxy-Authorization: Digest username="alice", realm="atlanta.example.com", '
    'nonce="wf84f1ceczx41ae6cbe5aea9c8e88d359", uri="sip:bob@biloxi.example.com", '
    'response="42ce3cef44b22f50c6a6071bc8"\r\n'
    "Content-Length: 0\r\n\r\n"
)

VIA = Via.parse("SIP/2.0/TCP 192.0.2.4:5060;branch=z9hG4bKnashds8;rport")
SDP_SENDRECV = (
    b"v=0\r\no=alice 2890844526 2890844526 IN IP4 192.0.2.101\r\ns=-\r\n"
    b"c=IN IP4 192.0.2.101\r\nt=0 0\r\nm=audio 49172 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
)
SDP_SENDONLY = SDP_SENDRECV + b"a=sendonly\r\n"


def parse_request(text: str) -> Request:
    message = parse_message(text.encode())
    assert isinstance(message, Request)
    return message


def parse_response(text: str) -> Response:
    message = parse_message(text.encode())
    assert isinstance(message, Response)
    return message


def response_at_alice(
    status: int,
    reason: str,
    *,
    to_tag: str | None = BOB_TAG,
    contact: str | None = "<sip:bob@192.0.2.4>",
    record_route: tuple[str, ...] = (
        "<sip:proxy2.biloxi.example.com;lr>",
        "<sip:proxy1.atlanta.example.com;lr>",
    ),
    cseq: str = "1 INVITE",
    body: bytes = b"",
) -> Response:
    """A response from Bob as Alice receives it: only her own Via is left."""
    lines = [
        f"SIP/2.0 {status} {reason}",
        "Via: SIP/2.0/TCP client.atlanta.example.com:5060;branch=z9hG4bK74bf9;received=192.0.2.101",
    ]
    lines += [f"Record-Route: {route}" for route in record_route]
    lines += [
        f"From: Alice <sip:alice@atlanta.example.com>;tag={ALICE_TAG}",
        "To: Bob <sip:bob@biloxi.example.com>" + (f";tag={to_tag}" if to_tag else ""),
        f"Call-ID: {CALL_ID}",
        f"CSeq: {cseq}",
    ]
    if contact is not None:
        lines.append(f"Contact: {contact}")
    if body:
        lines.append("Content-Type: application/sdp")
    lines.append(f"Content-Length: {len(body)}")
    message = parse_message(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
    assert isinstance(message, Response)
    return message


def request_at_bob(
    method: str,
    seq: int,
    *,
    contact: str | None = None,
    body: bytes = b"",
    content_type: str = "application/sdp",
) -> Request:
    """An in-dialog request from Alice as Bob receives it (loose-routed through both proxies)."""
    lines = [
        f"{method} sip:bob@192.0.2.4 SIP/2.0",
        f"Via: SIP/2.0/TCP proxy2.biloxi.example.com:5060;branch=z9hG4bK721e4.{seq}",
        f"Via: SIP/2.0/TCP client.atlanta.example.com:5060;branch=z9hG4bK74bfa{seq}",
        "Max-Forwards: 69",
        f"From: Alice <sip:alice@atlanta.example.com>;tag={ALICE_TAG}",
        f"To: Bob <sip:bob@biloxi.example.com>;tag={BOB_TAG}",
        f"Call-ID: {CALL_ID}",
        f"CSeq: {seq} {method}",
    ]
    if contact is not None:
        lines.append(f"Contact: {contact}")
    if body:
        lines.append(f"Content-Type: {content_type}")
    lines.append(f"Content-Length: {len(body)}")
    message = parse_message(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
    assert isinstance(message, Request)
    return message


def bob_dialog() -> Dialog:
    """Bob's (UAS) dialog, confirmed by his 200 OK."""
    invite = parse_request(INVITE_AT_BOB)
    dialog = Dialog.create_uas(invite, BOB_TAG, BOB_CONTACT)
    dialog.send_response(invite, make_response(invite, 200, to_tag=BOB_TAG))
    return dialog


def alice_dialog(status: int = 200) -> tuple[Dialog, Request]:
    """Alice's (UAC) dialog from Bob's response, and her INVITE."""
    invite = parse_request(INVITE_FROM_ALICE)
    reason = "OK" if status == 200 else "Ringing"
    return Dialog.create_uac(invite, response_at_alice(status, reason)), invite


def wire(request: Request) -> Request:
    """What the peer parses from what we would send."""
    return parse_request(bytes(request).decode())


# -- creation ----------------------------------------------------------------------------------


def test_uas_dialog_keeps_record_route_in_order_and_targets_the_contact() -> None:
    invite = parse_request(INVITE_AT_BOB)
    dialog = Dialog.create_uas(invite, BOB_TAG, BOB_CONTACT)

    assert dialog.role is DialogRole.UAS
    assert dialog.state is DialogState.EARLY
    assert dialog.id == DialogId(CALL_ID, BOB_TAG, ALICE_TAG)
    assert [str(route.uri) for route in dialog.route_set] == [
        "sip:proxy2.biloxi.example.com;lr",
        "sip:proxy1.atlanta.example.com;lr",
    ]
    assert str(dialog.remote_target) == "sip:alice@client.atlanta.example.com;transport=tcp"
    assert dialog.remote_seq == 1
    assert dialog.local_seq is None
    assert dialog.local_uri.tag == BOB_TAG
    assert dialog.remote_uri.tag == ALICE_TAG
    assert dialog.secure is False
    assert dialog.owns_call_id is False


def test_uac_dialog_from_2xx_reverses_record_route_and_is_confirmed() -> None:
    dialog, _ = alice_dialog(200)

    assert dialog.role is DialogRole.UAC
    assert dialog.state is DialogState.CONFIRMED
    assert dialog.id == DialogId(CALL_ID, ALICE_TAG, BOB_TAG)
    assert [route.uri.host for route in dialog.route_set] == [
        "proxy1.atlanta.example.com",
        "proxy2.biloxi.example.com",
    ]
    assert str(dialog.remote_target) == "sip:bob@192.0.2.4"
    assert dialog.local_seq == 1
    assert dialog.remote_seq is None
    assert dialog.owns_call_id is True


def test_uac_early_dialog_from_180_is_confirmed_by_2xx_which_recomputes_the_route_set() -> None:
    dialog, invite = alice_dialog(180)
    assert dialog.state.name == "EARLY"

    ok = response_at_alice(
        200,
        "OK",
        contact="<sip:bob@192.0.2.99:5070>",
        record_route=("<sip:edge.biloxi.example.com;lr>",),
    )
    dialog.receive_response(invite, ok)

    assert dialog.state is DialogState.CONFIRMED
    assert [route.uri.host for route in dialog.route_set] == ["edge.biloxi.example.com"]
    assert str(dialog.remote_target) == "sip:bob@192.0.2.99:5070"
    bye = wire(dialog.create_request("BYE", via=VIA))
    assert bye.headers.getlist("Route") == ["<sip:edge.biloxi.example.com;lr>"]


def test_uac_early_dialog_without_contact_targets_the_request_uri() -> None:
    invite = parse_request(INVITE_FROM_ALICE)
    dialog = Dialog.create_uac(invite, response_at_alice(183, "Session Progress", contact=None))
    assert str(dialog.remote_target) == "sip:bob@biloxi.example.com"


@pytest.mark.parametrize(
    ("status", "to_tag", "contact", "message"),
    [
        (100, BOB_TAG, "<sip:bob@192.0.2.4>", "response cannot create a dialog"),
        (486, BOB_TAG, "<sip:bob@192.0.2.4>", "response cannot create a dialog"),
        (180, None, "<sip:bob@192.0.2.4>", "response has no To tag"),
        (200, BOB_TAG, None, "2xx response has no Contact"),
    ],
)
def test_uac_dialog_refuses_responses_that_cannot_create_one(
    status: int, to_tag: str | None, contact: str | None, message: str
) -> None:
    invite = parse_request(INVITE_FROM_ALICE)
    response = response_at_alice(status, "X", to_tag=to_tag, contact=contact)
    with pytest.raises(DialogError, match=message):
        Dialog.create_uac(invite, response)


def test_uas_dialog_of_an_rfc_2543_invite_without_contact_targets_its_from_uri() -> None:
    invite = parse_request(INVITE_AT_BOB.replace(f"Contact: {ALICE_CONTACT}\r\n", ""))
    dialog = Dialog.create_uas(invite, BOB_TAG, BOB_CONTACT)
    assert dialog.remote_target == invite.from_.uri


def test_sips_request_uri_sets_the_secure_flag() -> None:
    invite = parse_request(INVITE_AT_BOB.replace("INVITE sip:", "INVITE sips:"))
    assert Dialog.create_uas(invite, BOB_TAG, BOB_CONTACT).secure is True


# -- requests within the dialog ----------------------------------------------------------------


def test_uas_request_uses_route_set_remote_target_tags_and_a_random_first_cseq() -> None:
    dialog = bob_dialog()
    reinvite = wire(
        dialog.create_request("INVITE", via=VIA, body=SDP_SENDRECV, content_type="application/sdp")
    )

    assert str(reinvite.uri) == "sip:alice@client.atlanta.example.com;transport=tcp"
    assert reinvite.headers.getlist("Route") == [
        "<sip:proxy2.biloxi.example.com;lr>",
        "<sip:proxy1.atlanta.example.com;lr>",
    ]
    assert reinvite.from_tag == BOB_TAG
    assert reinvite.to_tag == ALICE_TAG
    assert reinvite.from_.uri.user == "bob"
    assert reinvite.call_id == CALL_ID
    assert reinvite.max_forwards == 70
    assert reinvite.top_via == VIA
    assert [str(c) for c in reinvite.contact] == [str(BOB_CONTACT)]
    assert reinvite.content_type == "application/sdp"
    assert reinvite.body == SDP_SENDRECV
    first = reinvite.cseq.seq
    assert 1 <= first < 2**31
    assert reinvite.cseq.method == "INVITE"

    info = wire(dialog.create_request("INFO", via=VIA, headers=[("X-Leg", "a")]))
    assert info.cseq.seq == first + 1
    assert info.contact == []
    assert info.headers.get("X-Leg") == "a"
    assert dialog.local_seq == first + 1


def test_uac_requests_continue_from_the_invite_cseq() -> None:
    dialog, _ = alice_dialog()
    assert dialog.create_request("UPDATE", via=VIA).cseq.seq == 2
    assert dialog.create_request("BYE", via=VIA).cseq.seq == 3


def test_strict_first_route_becomes_the_request_uri_and_the_target_goes_last() -> None:
    invite = parse_request(
        INVITE_AT_BOB.replace(
            "Record-Route: <sip:proxy2.biloxi.example.com;lr>\r\n",
            "Record-Route: <sip:strict.biloxi.example.com;maddr=192.0.2.50;method=INVITE>\r\n",
        )
    )
    dialog = Dialog.create_uas(invite, BOB_TAG, BOB_CONTACT)
    assert dialog.strict_routing

    bye = wire(dialog.create_request("BYE", via=VIA))

    assert str(bye.uri) == "sip:strict.biloxi.example.com;maddr=192.0.2.50"
    assert bye.headers.getlist("Route") == [
        "<sip:proxy1.atlanta.example.com;lr>",
        "<sip:alice@client.atlanta.example.com;transport=tcp>",
    ]
    assert dialog.next_hop().host == "strict.biloxi.example.com"


def test_next_hop_is_the_first_route_or_the_remote_target() -> None:
    dialog = bob_dialog()
    assert dialog.next_hop().host == "proxy2.biloxi.example.com"
    invite = parse_request(INVITE_AT_BOB.replace("Record-Route", "X-Record-Route"))
    direct = Dialog.create_uas(invite, BOB_TAG, BOB_CONTACT)
    assert direct.route_set == ()
    assert str(direct.next_hop()) == "sip:alice@client.atlanta.example.com;transport=tcp"
    bye = wire(direct.create_request("BYE", via=VIA))
    assert "Route" not in bye.headers


def test_ack_for_2xx_reuses_the_invite_cseq_and_credentials_without_moving_local_cseq() -> None:
    dialog, invite = alice_dialog()

    ack = wire(dialog.create_ack(invite, VIA, SDP_SENDRECV, "application/sdp"))

    assert ack.method == "ACK"
    assert ack.cseq.seq == 1
    assert ack.cseq.method == "ACK"
    assert str(ack.uri) == "sip:bob@192.0.2.4"
    assert ack.headers.getlist("Route") == [
        "<sip:proxy1.atlanta.example.com;lr>",
        "<sip:proxy2.biloxi.example.com;lr>",
    ]
    assert ack.headers.get("Proxy-Authorization") == invite.headers.get("Proxy-Authorization")
    assert ack.body == SDP_SENDRECV
    assert ack.to_tag == BOB_TAG
    assert dialog.local_seq == 1


def test_ack_and_cancel_are_not_built_as_ordinary_requests() -> None:
    dialog, _ = alice_dialog()
    for method in ("ACK", "CANCEL"):
        with pytest.raises(DialogError, match="ACK and CANCEL are not dialog requests"):
            dialog.create_request(method, via=VIA)
    with pytest.raises(DialogError, match="ACK acknowledges an INVITE"):
        dialog.create_ack(dialog.create_request("BYE", via=VIA), VIA)


# -- requests from the peer --------------------------------------------------------------------


def test_lower_cseq_is_rejected_with_500_and_leaves_remote_cseq_alone() -> None:
    dialog = bob_dialog()
    assert dialog.receive_request(request_at_bob("INFO", 5)) is None
    assert dialog.remote_seq == 5

    error = dialog.receive_request(request_at_bob("INFO", 4))

    assert error is not None
    assert error.status == 500
    assert error.cseq.seq == 4
    assert error.to_tag == BOB_TAG
    assert dialog.remote_seq == 5
    assert dialog.receive_request(request_at_bob("INFO", 9)) is None
    assert dialog.remote_seq == 9


def test_first_request_on_a_uac_dialog_sets_the_remote_cseq_whatever_its_value() -> None:
    dialog, _ = alice_dialog()
    request = parse_request(
        "INFO sip:alice@client.atlanta.example.com SIP/2.0\r\n"
        "Via: SIP/2.0/TCP 192.0.2.4;branch=z9hG4bKx1\r\n"
        f"From: <sip:bob@biloxi.example.com>;tag={BOB_TAG}\r\n"
        f"To: <sip:alice@atlanta.example.com>;tag={ALICE_TAG}\r\n"
        f"Call-ID: {CALL_ID}\r\nCSeq: 7001 INFO\r\nContent-Length: 0\r\n\r\n"
    )
    assert dialog.receive_request(request) is None
    assert dialog.remote_seq == 7001


def test_reinvite_contact_refreshes_the_remote_target_but_info_contact_does_not() -> None:
    dialog = bob_dialog()
    dialog.receive_request(request_at_bob("INFO", 2, contact="<sip:alice@198.51.100.9>"))
    assert str(dialog.remote_target) == "sip:alice@client.atlanta.example.com;transport=tcp"

    dialog.receive_request(request_at_bob("INVITE", 3, contact="<sip:alice@198.51.100.9:5080>"))

    assert str(dialog.remote_target) == "sip:alice@198.51.100.9:5080"
    assert str(wire(dialog.create_request("BYE", via=VIA)).uri) == "sip:alice@198.51.100.9:5080"


@pytest.mark.parametrize("method", ["UPDATE", "NOTIFY", "SUBSCRIBE", "REFER"])
def test_every_target_refresh_method_moves_the_remote_target(method: str) -> None:
    dialog = bob_dialog()
    dialog.receive_request(request_at_bob(method, 2, contact="<sip:alice@203.0.113.7>"))
    assert str(dialog.remote_target) == "sip:alice@203.0.113.7"


def test_target_refresh_with_an_unparsable_contact_is_answered_400() -> None:
    dialog = bob_dialog()
    error = dialog.receive_request(request_at_bob("INVITE", 2, contact="<sip:@@@>"))
    assert error is not None
    assert error.status == 400
    assert str(dialog.remote_target) == "sip:alice@client.atlanta.example.com;transport=tcp"


def test_2xx_to_our_reinvite_refreshes_the_target_but_a_provisional_does_not() -> None:
    dialog, _ = alice_dialog()
    reinvite = dialog.create_request("INVITE", via=VIA)
    dialog.receive_response(
        reinvite, response_at_alice(180, "Ringing", cseq="2 INVITE", contact="<sip:bob@x.test>")
    )
    assert str(dialog.remote_target) == "sip:bob@192.0.2.4"

    dialog.receive_response(
        reinvite, response_at_alice(200, "OK", cseq="2 INVITE", contact="<sip:bob@192.0.2.77>")
    )

    assert str(dialog.remote_target) == "sip:bob@192.0.2.77"
    assert dialog.route_set[0].uri.host == "proxy1.atlanta.example.com"


def test_bye_from_the_peer_terminates_and_later_requests_get_481() -> None:
    dialog = bob_dialog()
    assert dialog.receive_request(request_at_bob("BYE", 2)) is None
    assert dialog.state is DialogState.TERMINATED

    late = dialog.receive_request(request_at_bob("INFO", 3))

    assert late is not None
    assert late.status == 481
    with pytest.raises(DialogError, match="dialog is terminated"):
        dialog.create_request("INFO", via=VIA)


def test_our_bye_terminates_the_dialog_on_its_final_response() -> None:
    dialog, _ = alice_dialog()
    bye = dialog.create_request("BYE", via=VIA)
    assert dialog.state.name == "CONFIRMED"
    dialog.receive_response(bye, response_at_alice(200, "OK", cseq=f"{bye.cseq.seq} BYE"))
    assert dialog.state is DialogState.TERMINATED


@pytest.mark.parametrize("status", [481, 408])
def test_481_or_408_to_an_in_dialog_request_terminates_the_dialog(status: int) -> None:
    dialog, _ = alice_dialog()
    info = dialog.create_request("INFO", via=VIA)
    dialog.receive_response(info, response_at_alice(status, "X", cseq="2 INFO"))
    assert dialog.state is DialogState.TERMINATED


def test_other_failures_to_in_dialog_requests_keep_the_dialog() -> None:
    dialog, _ = alice_dialog()
    reinvite = dialog.create_request("INVITE", via=VIA)
    dialog.receive_response(reinvite, response_at_alice(488, "Not Acceptable", cseq="2 INVITE"))
    assert dialog.state is DialogState.CONFIRMED


def test_non_2xx_final_to_the_initial_invite_terminates_the_early_dialog() -> None:
    dialog, invite = alice_dialog(180)
    dialog.receive_response(invite, response_at_alice(486, "Busy Here"))
    assert dialog.state is DialogState.TERMINATED


def test_responses_from_another_fork_do_not_touch_the_dialog() -> None:
    dialog, invite = alice_dialog(180)
    other = response_at_alice(200, "OK", to_tag="fork2", contact="<sip:bob@192.0.2.200>")
    dialog.receive_response(invite, other)
    assert dialog.state is DialogState.EARLY
    assert str(dialog.remote_target) == "sip:bob@192.0.2.4"


def test_uas_dialog_is_confirmed_by_our_2xx_or_by_the_ack() -> None:
    invite = parse_request(INVITE_AT_BOB)
    dialog = Dialog.create_uas(invite, BOB_TAG, BOB_CONTACT)
    dialog.send_response(invite, make_response(invite, 180, to_tag=BOB_TAG))
    assert dialog.state.name == "EARLY"
    dialog.send_response(invite, make_response(invite, 200, to_tag=BOB_TAG))
    assert dialog.state is DialogState.CONFIRMED

    other = Dialog.create_uas(invite, BOB_TAG, BOB_CONTACT)
    assert other.receive_request(request_at_bob("ACK", 1)) is None
    assert other.state is DialogState.CONFIRMED


def test_uas_early_dialog_ends_with_our_rejection() -> None:
    invite = parse_request(INVITE_AT_BOB)
    dialog = Dialog.create_uas(invite, BOB_TAG, BOB_CONTACT)
    dialog.send_response(invite, make_response(invite, 603, to_tag=BOB_TAG))
    assert dialog.state is DialogState.TERMINATED


# -- the table ---------------------------------------------------------------------------------


def test_table_matches_requests_and_responses_in_both_directions() -> None:
    table = DialogTable()
    bob = bob_dialog()
    alice, _ = alice_dialog()
    table.add(bob)
    table.add(alice)

    assert table.match_request(request_at_bob("BYE", 2)) is bob
    assert table.match_response(response_at_alice(200, "OK", cseq="2 BYE")) is alice
    from_bob = bob.create_request("INFO", via=VIA)
    assert table.match_request(from_bob) is alice
    assert len(table) == 2
    assert table.created == 2
    assert set(table) == {bob.id, alice.id}


def test_table_ignores_requests_without_to_tag_and_unknown_dialogs() -> None:
    table = DialogTable()
    table.add(bob_dialog())
    assert table.match_request(parse_request(INVITE_AT_BOB)) is None
    stranger = parse_request(
        INVITE_AT_BOB.replace("To: Bob <sip:bob@biloxi.example.com>", "To: <sip:bob@b>;tag=zz")
    )
    assert table.match_request(stranger) is None
    assert table.match_response(response_at_alice(100, "Trying", to_tag=None)) is None


def test_table_counts_states_and_forgets_removed_dialogs() -> None:
    table = DialogTable()
    bob = bob_dialog()
    early, _ = alice_dialog(180)
    table.add(bob)
    table.add(early)
    with pytest.raises(DialogError, match="dialog already exists"):
        table.add(bob)
    assert table.counts() == (1, 1, 0)
    early.terminate()
    assert table.counts() == (0, 1, 1)

    assert table.remove(early.id) is early
    assert table.remove(early.id) is None
    assert early.id not in table
    assert table.get(bob.id) is bob
    assert table[bob.id] is bob
    assert list(table.values()) == [bob]


# -- re-INVITE / UPDATE glare ------------------------------------------------------------------


def session_at_bob(seed: int = 1) -> InviteSession:
    return InviteSession(bob_dialog(), random.Random(seed))


def test_incoming_reinvite_while_ours_is_pending_gets_491() -> None:
    session = session_at_bob()
    ours = session.dialog.create_request(
        "INVITE", via=VIA, body=SDP_SENDONLY, content_type="application/sdp"
    )
    session.send_request(ours)

    theirs = request_at_bob("INVITE", 2, body=SDP_SENDRECV)
    assert session.dialog.receive_request(theirs) is None
    answer = session.receive_request(theirs)

    assert answer is not None
    assert answer.status == 491
    assert session.remote_invite is None
    assert session.offer_state is OfferState.LOCAL_OFFER


def test_second_incoming_reinvite_before_the_first_is_answered_gets_500_with_retry_after() -> None:
    session = session_at_bob(seed=7)
    assert session.receive_request(request_at_bob("INVITE", 2, body=SDP_SENDRECV)) is None

    answer = session.receive_request(request_at_bob("INVITE", 3, body=SDP_SENDRECV))

    assert answer is not None
    assert answer.status == 500
    retry_after = answer.headers.get("Retry-After")
    assert retry_after is not None
    assert 0 <= int(retry_after) <= 10


def test_update_offer_against_a_pending_local_offer_gets_491_and_against_a_remote_one_500() -> None:
    session = session_at_bob()
    session.send_request(
        session.dialog.create_request(
            "UPDATE", via=VIA, body=SDP_SENDONLY, content_type="application/sdp"
        )
    )
    glare = session.receive_request(request_at_bob("UPDATE", 2, body=SDP_SENDRECV))
    assert glare is not None
    assert glare.status == 491

    other = session_at_bob()
    assert other.receive_request(request_at_bob("UPDATE", 2, body=SDP_SENDRECV)) is None
    busy = other.receive_request(request_at_bob("UPDATE", 3, body=SDP_SENDRECV))
    assert busy is not None
    assert busy.status == 500
    assert "Retry-After" in busy.headers


def test_update_without_sdp_never_glares() -> None:
    session = session_at_bob()
    session.send_request(
        session.dialog.create_request(
            "INVITE", via=VIA, body=SDP_SENDONLY, content_type="application/sdp"
        )
    )
    assert session.receive_request(request_at_bob("UPDATE", 2)) is None


def test_we_cannot_start_an_invite_or_offer_while_one_is_pending() -> None:
    session = session_at_bob()
    session.receive_request(request_at_bob("INVITE", 2, body=SDP_SENDRECV))
    with pytest.raises(DialogError, match="an INVITE transaction is pending"):
        session.send_request(session.dialog.create_request("INVITE", via=VIA))
    with pytest.raises(DialogError, match="an offer is pending"):
        session.send_request(
            session.dialog.create_request(
                "UPDATE", via=VIA, body=SDP_SENDONLY, content_type="application/sdp"
            )
        )


def test_491_to_our_reinvite_returns_the_retry_delay_and_clears_the_pending_state() -> None:
    dialog, _ = alice_dialog()
    session = InviteSession(dialog, random.Random(3))
    reinvite = dialog.create_request(
        "INVITE", via=VIA, body=SDP_SENDONLY, content_type="application/sdp"
    )
    session.send_request(reinvite)

    delay = session.receive_response(
        reinvite, response_at_alice(491, "Request Pending", cseq="2 INVITE")
    )

    assert delay is not None
    assert 2.1 <= delay <= 4.0
    assert not session.pending
    assert not session.local_hold
    assert dialog.state is DialogState.CONFIRMED


def test_glare_retry_delay_ranges_follow_call_id_ownership_in_10_ms_steps() -> None:
    rng = random.Random(42)
    owner = [glare_retry_delay(True, rng) for _ in range(2000)]
    other = [glare_retry_delay(False, rng) for _ in range(2000)]

    assert min(owner) >= 2.1
    assert max(owner) <= 4.0
    assert min(other) >= 0.0
    assert max(other) <= 2.0
    assert max(owner) - min(owner) > 1.5
    assert max(other) - min(other) > 1.5
    assert all(abs(d * 100 - round(d * 100)) < 1e-9 for d in owner + other)


def test_bob_does_not_own_the_call_id_so_his_retry_is_within_two_seconds() -> None:
    session = session_at_bob(seed=5)
    reinvite = session.dialog.create_request("INVITE", via=VIA)
    session.send_request(reinvite)
    response = make_response(reinvite, 491)
    delay = session.receive_response(reinvite, response)
    assert delay is not None
    assert 0.0 <= delay <= 2.0


# -- hold and resume ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sdp", "direction"),
    [
        (SDP_SENDRECV, MediaDirection.SENDRECV),
        (SDP_SENDONLY, MediaDirection.SENDONLY),
        (SDP_SENDRECV + b"a=recvonly\r\n", MediaDirection.RECVONLY),
        (SDP_SENDRECV + b"a=inactive\r\n", MediaDirection.INACTIVE),
        (
            SDP_SENDRECV.replace(b"c=IN IP4 192.0.2.101", b"c=IN IP4 0.0.0.0"),
            MediaDirection.SENDONLY,
        ),
        (
            SDP_SENDRECV.replace(b"c=IN IP4 192.0.2.101", b"c=IN IP4 0.0.0.0") + b"a=recvonly\r\n",
            MediaDirection.INACTIVE,
        ),
        (SDP_SENDRECV.replace(b"t=0 0\r\n", b"t=0 0\r\na=sendonly\r\n"), MediaDirection.SENDONLY),
        (
            SDP_SENDRECV.replace(b"t=0 0\r\n", b"t=0 0\r\na=sendonly\r\n") + b"a=sendrecv\r\n",
            MediaDirection.SENDRECV,
        ),
        (
            SDP_SENDRECV.replace(b"c=IN IP4 192.0.2.101", b"c=IN IP4 0.0.0.0")
            + b"c=IN IP4 192.0.2.101\r\n",
            MediaDirection.SENDRECV,
        ),
        (SDP_SENDRECV.replace(b"m=audio 49172", b"m=audio 0"), MediaDirection.INACTIVE),
        (
            SDP_SENDRECV.replace(b"m=audio", b"m=video 5000 RTP/AVP 96\r\na=inactive\r\nm=audio"),
            MediaDirection.SENDRECV,
        ),
        (b"v=0\nc=IN IP4 0.0.0.0\nm=audio 4000 RTP/AVP 0\n", MediaDirection.SENDONLY),
        (b"", MediaDirection.SENDRECV),
        (b"m=audio junk\r\nm=\r\na=\xff\r\nc=\r\n", MediaDirection.INACTIVE),
    ],
)
def test_sdp_direction_reads_attributes_and_null_connection(
    sdp: bytes, direction: MediaDirection
) -> None:
    assert sdp_direction(sdp) is direction


@settings(deadline=None)  # a loaded machine's pause is no slow example
@given(st.binary(max_size=200))
def test_sdp_direction_never_raises(sdp: bytes) -> None:
    assert isinstance(sdp_direction(sdp), MediaDirection)


def test_remote_hold_follows_the_peers_answered_offers() -> None:
    session = session_at_bob()
    hold = request_at_bob("INVITE", 2, body=SDP_SENDONLY)
    assert session.receive_request(hold) is None
    assert not session.remote_hold
    session.send_response(
        hold, make_response(hold, 200, body=SDP_SENDRECV, content_type="application/sdp")
    )
    assert session.remote_hold
    assert not session.pending

    resume = request_at_bob("INVITE", 3, body=SDP_SENDRECV)
    session.receive_request(resume)
    session.send_response(
        resume, make_response(resume, 200, body=SDP_SENDRECV, content_type="application/sdp")
    )
    assert not session.remote_hold
    assert session.remote_direction is MediaDirection.SENDRECV


def test_rejected_hold_offer_changes_nothing() -> None:
    session = session_at_bob()
    hold = request_at_bob("UPDATE", 2, body=SDP_SENDRECV + b"a=inactive\r\n")
    session.receive_request(hold)
    session.send_response(hold, make_response(hold, 488))
    assert not session.remote_hold
    assert session.offer_state is OfferState.STABLE


def test_local_hold_is_set_when_our_sendonly_offer_is_answered() -> None:
    dialog, _ = alice_dialog()
    session = InviteSession(dialog)
    hold = dialog.create_request(
        "INVITE", via=VIA, body=SDP_SENDONLY, content_type="application/sdp"
    )
    session.send_request(hold)
    assert not session.local_hold
    answer = response_at_alice(200, "OK", cseq="2 INVITE", body=SDP_SENDRECV)
    assert session.receive_response(hold, answer) is None
    assert session.local_hold
    assert session.local_invite is None

    assert session.receive_response(hold, answer) is None
    assert session.offer_state is OfferState.STABLE


def test_offerless_reinvite_takes_the_offer_from_the_2xx_and_the_answer_from_the_ack() -> None:
    session = session_at_bob()
    refresh = request_at_bob("INVITE", 2)
    assert session.receive_request(refresh) is None
    session.send_response(
        refresh, make_response(refresh, 200, body=SDP_SENDONLY, content_type="application/sdp")
    )
    assert session.offer_state.name == "LOCAL_OFFER"
    assert not session.local_hold

    session.receive_request(request_at_bob("ACK", 2, body=SDP_SENDRECV))

    assert session.offer_state is OfferState.STABLE
    assert session.local_hold


def test_offerless_reinvite_we_send_is_answered_in_our_ack() -> None:
    dialog, _ = alice_dialog()
    session = InviteSession(dialog)
    refresh = dialog.create_request("INVITE", via=VIA)
    session.send_request(refresh)
    offer = response_at_alice(200, "OK", cseq="2 INVITE", body=SDP_SENDONLY)
    session.receive_response(refresh, offer)
    assert session.offer_state.name == "REMOTE_OFFER"

    session.send_request(dialog.create_ack(refresh, VIA, SDP_SENDRECV, "application/sdp"))

    assert session.offer_state is OfferState.STABLE
    assert session.remote_hold
