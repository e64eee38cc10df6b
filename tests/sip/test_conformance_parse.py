"""RFC 4475 / RFC 5118 torture messages through parse_message + check_request, as a UAS over UDP."""

from __future__ import annotations

import pytest
from conformance import load_torture_messages

from sip.message import ParseError, Request, Response, make_response, parse_message
from sip.validation import check_request

ALLOWED = frozenset(
    {"INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "INFO", "UPDATE", "REFER", "NOTIFY", "PRACK"}
    | {"MESSAGE", "SUBSCRIBE", "REGISTER"}
)
SUPPORTED = frozenset({"replaces", "norefersub"})
MESSAGES = load_torture_messages()
#: Responses RFC 4475 says must parse (the others, bigcode and scalarlg, may be dropped unparsed).
MUST_PARSE = {"unreason", "noreason", "bcast"}


def outcome(data: bytes) -> tuple[str, int | None, Request | Response | ParseError]:
    """("parse-error", status) | ("response", status) | ("check", status or None)."""
    try:
        message = parse_message(data)
    except ParseError as exc:
        return ("parse-error", exc.status, exc)
    if isinstance(message, Response):
        return ("response", message.status, message)
    error = check_request(message, allowed_methods=ALLOWED, supported_extensions=SUPPORTED)
    return ("check", error.status if error is not None else None, error or message)


def allowed(name: str, expected: str, kind: str, status: int | None) -> bool:
    rejected_400 = status == 400 and kind in ("parse-error", "check")
    processed = kind == "check" and status != 400
    options = {
        "process": processed,
        "discard": kind == "response" or (kind == "parse-error" and name not in MUST_PARSE),
        "400": rejected_400,
        "400-or-liberal": rejected_400 or processed,
        "process-or-400": rejected_400 or processed,
        "process-or-483": processed,
        "501-or-400": rejected_400 or (kind == "check" and status == 501),
    }
    if expected in options:
        return options[expected]
    codes = {int(code) for code in expected.split("-or-")}
    return status in codes and kind in ("parse-error", "check")


def test_torture_table_covers_every_message() -> None:
    names = [name for name, _, _ in MESSAGES]
    assert len(names) == 61
    assert len(set(names)) == 61


@pytest.mark.parametrize(("name", "data", "expected"), MESSAGES, ids=[m[0] for m in MESSAGES])
def test_torture_message_outcome_allowed_by_table(name: str, data: bytes, expected: str) -> None:
    kind, status, _ = outcome(data)
    assert allowed(name, expected, kind, status), (kind, status)


@pytest.mark.parametrize(("name", "data", "expected"), MESSAGES, ids=[m[0] for m in MESSAGES])
def test_torture_rejection_can_be_answered(name: str, data: bytes, expected: str) -> None:
    """Every rejected request whose Via/From/To/Call-ID/CSeq exist yields a sendable response."""
    kind, status, result = outcome(data)
    if kind == "parse-error" and isinstance(result, ParseError) and result.request is not None:
        response = make_response(result.request, result.status, result.reason)
        again = parse_message(bytes(response))
        assert isinstance(again, Response)
        assert again.status == status
        assert again.headers.getlist("Via") == result.request.headers.getlist("Via")
    elif kind == "check" and isinstance(result, Response):
        again = parse_message(bytes(result))
        assert isinstance(again, Response)
        assert again.status == status
        request = parse_message(data)
        assert again.headers.get("Call-ID") == request.headers.get("Call-ID")
    else:
        assert kind in ("response", "check", "parse-error")


EXACT = {
    "wsinv": ("check", None),
    "intmeth": ("check", 501),
    "esc02": ("check", 501),
    "mismatch01": ("check", 400),
    "mismatch02": ("check", 400),
    "badvers": ("parse-error", 505),
    "clerr": ("parse-error", 400),
    "ncl": ("parse-error", 400),
    "mcl01": ("parse-error", 400),
    "multi01": ("parse-error", 400),
    "ltgtruri": ("parse-error", 400),
    "lwsruri": ("parse-error", 400),
    "unkscm": ("check", 416),
    "novelsc": ("check", 416),
    "bext01": ("check", 420),
    "invut": ("check", 415),
    "sdp01": ("check", 406),
    "insuf": ("check", 400),
    "quotbal": ("check", 400),
    "baddn": ("check", 400),
    "badinv01": ("check", 400),
    "scalar02": ("check", 400),
    "dblreq": ("check", None),
    "inv2543": ("check", None),
    "unksm2": ("check", None),
    "regescrt": ("check", None),
    "ipv6-bad": ("parse-error", 400),
    "bigcode": ("parse-error", 400),
}


@pytest.mark.parametrize(("name", "want"), sorted(EXACT.items()))
def test_torture_message_exact_outcome(name: str, want: tuple[str, int | None]) -> None:
    data = next(d for n, d, _ in MESSAGES if n == name)
    kind, status, _ = outcome(data)
    assert (kind, status) == want


def _message(name: str) -> bytes:
    data: bytes = next(d for n, d, _ in MESSAGES if n == name)
    return data


def test_wsinv_folded_headers_unfold_into_values() -> None:
    request = parse_message(_message("wsinv"))
    assert isinstance(request, Request)
    assert request.to.tag == "1918181833n"
    assert request.from_.display_name == 'J Rosenberg \\"'
    assert request.from_tag == "98asjd8"
    assert request.max_forwards == 68
    assert request.cseq.seq == 9 and request.cseq.method == "INVITE"
    assert [v.transport for v in request.vias] == ["UDP", "TCP", "UDP"]
    assert [v.branch for v in request.vias] == ["390skdjuw", "z9hG4bK9ikj8", "z9hG4bK30239"]
    assert request.headers.get("Subject") == ""
    assert request.headers.get("NewFangledHeader") == "newfangled value continued newfangled value"
    assert request.contact[0].display_name == 'Quoted string ""'
    assert request.contact[0].param("q") == "0.33"
    assert len(request.body) == 150


def test_dblreq_only_first_request_counts() -> None:
    request = parse_message(_message("dblreq"))
    assert isinstance(request, Request)
    assert request.method == "REGISTER"
    assert request.body == b""


def test_inv2543_body_is_rest_of_datagram_without_content_length() -> None:
    request = parse_message(_message("inv2543"))
    assert isinstance(request, Request)
    assert request.body.startswith(b"v=0\r\n") and request.body.endswith(b"RTP/AVP 0\r\n")
    assert request.branch is None and request.from_tag is None


def test_esc01_escapes_unescaped_in_user_parts() -> None:
    request = parse_message(_message("esc01"))
    assert isinstance(request, Request)
    assert request.uri.user == "sips:user@example.com"
    assert request.to.uri.user == "user"
    assert request.from_.uri.user == "I have spaces"
    assert str(request.uri) == "sip:sips%3Auser%40example.com@example.net"


def test_bext01_420_lists_every_unknown_option_tag() -> None:
    _, status, response = outcome(_message("bext01"))
    assert status == 420 and isinstance(response, Response)
    assert response.headers.getlist("Unsupported") == [
        "nothingSupportsThis",
        "nothingSupportsThisEither",
    ]


def test_invut_415_carries_accept() -> None:
    _, status, response = outcome(_message("invut"))
    assert status == 415 and isinstance(response, Response)
    assert "application/sdp" in response.headers.getlist("Accept")


def test_unknown_method_intmeth_answers_501_not_405() -> None:
    _, status, response = outcome(_message("intmeth"))
    assert status == 501 and isinstance(response, Response)
    assert response.headers.get("CSeq") == "139122385 !interesting-Method0123456789_*+`.%indeed'~"


def test_ipv6_references_and_received_params_parse() -> None:
    request = parse_message(_message("via-received-param-no-delim"))
    assert isinstance(request, Request)
    assert request.top_via.host == "[2001:db8::9:1]"
    assert request.top_via.received == "2001:db8::9:255"
    request = parse_message(_message("port-unambiguous"))
    assert isinstance(request, Request)
    assert (request.uri.host, request.uri.port) == ("[2001:db8::10]", 5070)
    request = parse_message(_message("port-ambiguous"))
    assert isinstance(request, Request)
    assert (request.uri.host, request.uri.port) == ("[2001:db8::10:5070]", None)
    request = parse_message(_message("mult-ip-in-header"))
    assert isinstance(request, Request)
    assert [v.sent_by for v in request.vias] == [
        ("[2001:db8::9:1]", 6050),
        ("192.0.2.1", None),
        ("[2001:db8::9:255]", None),
    ]
