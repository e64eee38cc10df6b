"""sip.validation.check_request: the UAS request inspection of RFC 3261 §8.2."""

from __future__ import annotations

import pytest

from sip.message import Request, Response, parse_message
from sip.validation import check_request

ALLOWED = frozenset({"INVITE", "ACK", "BYE", "CANCEL", "OPTIONS"})
SUPPORTED = frozenset({"replaces", "100rel"})
SDP = b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"


def request(
    method: str = "INVITE",
    uri: str = "sip:queue@example.com",
    extra: str = "",
    body: bytes = b"",
    cseq_method: str | None = None,
    drop: str = "",
) -> Request:
    lines = [
        f"{method} {uri} SIP/2.0",
        "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKabc",
        "Max-Forwards: 70",
        "From: <sip:caller@example.net>;tag=f1",
        "To: <sip:queue@example.com>",
        "Call-ID: c1@192.0.2.1",
        f"CSeq: 1 {cseq_method or method}",
    ]
    lines = [line for line in lines if not (drop and line.startswith(drop + ":"))]
    if extra:
        lines.extend(extra.split("\n"))
    if body:
        lines.append("Content-Type: application/sdp" if "Content-Type" not in extra else "")
    text = "\r\n".join(line for line in lines if line) + f"\r\nContent-Length: {len(body)}\r\n\r\n"
    message = parse_message(text.encode() + body)
    assert isinstance(message, Request)
    return message


def check(message: Request, **kwargs: frozenset[str]) -> Response | None:
    return check_request(message, allowed_methods=ALLOWED, supported_extensions=SUPPORTED, **kwargs)


def test_well_formed_invite_with_sdp_passes() -> None:
    assert check(request(body=SDP, extra="Require: replaces\nAccept: application/sdp")) is None


@pytest.mark.parametrize("header", ["Via", "From", "To", "Call-ID", "CSeq"])
def test_missing_required_header_answers_400_naming_it(header: str) -> None:
    response = check(request(drop=header))
    assert response is not None and response.status == 400
    assert response.reason == f"Missing {header} header"


def test_missing_max_forwards_is_tolerated_for_rfc2543_peers() -> None:
    assert check(request(drop="Max-Forwards")) is None


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        ("Contact: <sip:a@b>;;", "Invalid Contact header"),
        ("Record-Route: garbage <", "Invalid Record-Route header"),
        ("Route: <sip:a@b", "Invalid Route header"),
    ],
)
def test_malformed_header_answers_400(extra: str, reason: str) -> None:
    response = check(request(extra=extra))
    assert response is not None and (response.status, response.reason) == (400, reason)


def test_several_values_in_single_value_header_answer_400() -> None:
    message = request()
    message.headers.add("From", "<sip:other@example.net>;tag=f2")
    response = check(message)
    assert response is not None and (response.status, response.reason) == (
        400,
        "Multiple From headers",
    )


def test_cseq_method_mismatch_answers_400() -> None:
    response = check(request(method="OPTIONS", cseq_method="INVITE"))
    assert response is not None and response.status == 400
    assert response.reason == "CSeq method does not match Request method"


def test_unknown_method_answers_501_and_known_not_allowed_405_with_allow() -> None:
    response = check(request(method="FROBNICATE"))
    assert response is not None and response.status == 501
    response = check(request(method="REGISTER"))
    assert response is not None and response.status == 405
    assert response.headers.getlist("Allow") == sorted(ALLOWED)


def test_unsupported_request_uri_scheme_answers_416() -> None:
    response = check(request(uri="mailto:someone@example.com"))
    assert response is not None and response.status == 416
    assert check(request(uri="tel:+15551234")) is None


def test_require_of_unknown_extension_answers_420_with_unsupported() -> None:
    response = check(request(extra="Require: 100rel, foo\nRequire: Replaces, bar"))
    assert response is not None and response.status == 420
    assert response.headers.getlist("Unsupported") == ["foo", "bar"]


def test_require_is_ignored_on_cancel_and_ack() -> None:
    assert check(request(method="CANCEL", extra="Require: foo")) is None
    assert check(request(method="ACK", extra="Require: foo")) is None


def test_proxy_require_is_not_a_uas_concern() -> None:
    assert check(request(extra="Proxy-Require: foo")) is None


def test_unsupported_content_type_answers_415_with_accept() -> None:
    response = check(request(extra="Content-Type: application/x-unknown", body=b"xx"))
    assert response is not None and response.status == 415
    assert "application/sdp" in response.headers.getlist("Accept")
    custom = check(
        request(extra="Content-Type: application/x-unknown", body=b"xx"),
        accepted_content_types=frozenset({"application/x-unknown"}),
    )
    assert custom is None


def test_content_type_is_irrelevant_without_body_and_required_with_one() -> None:
    assert check(request(extra="Content-Type: application/x-unknown")) is None
    message = request(body=SDP)
    message.headers.remove("Content-Type")
    response = check(message)
    assert response is not None and response.status == 400


def test_content_encoding_other_than_identity_answers_415_with_accept_encoding() -> None:
    response = check(request(body=SDP, extra="Content-Encoding: gzip"))
    assert response is not None and response.status == 415
    assert response.headers.get("Accept-Encoding") == "identity"


@pytest.mark.parametrize(
    ("accept", "status"),
    [
        ("Accept: text/plain", 406),
        ("Accept: application/sdp;q=0, text/plain", 406),
        ("Accept: ", 406),
        ("Accept: text/plain, Application/SDP;level=1", None),
        ("Accept: application/*", None),
        ("Accept: */*", None),
    ],
)
def test_invite_accept_must_admit_sdp(accept: str, status: int | None) -> None:
    response = check(request(extra=accept))
    assert (response.status if response is not None else None) == status


def test_accept_is_only_checked_on_invite() -> None:
    assert check(request(method="OPTIONS", extra="Accept: text/plain")) is None


def test_error_responses_echo_the_transaction_headers() -> None:
    message = request(method="FROBNICATE")
    response = check(message)
    assert response is not None
    assert response.headers.getlist("Via") == message.headers.getlist("Via")
    assert response.call_id == message.call_id and response.cseq == message.cseq
    assert response.from_tag == "f1"
    assert response.to_tag is not None and len(response.to_tag) >= 8


def test_check_order_syntax_before_method_before_scheme() -> None:
    response = check(request(method="FROBNICATE", uri="mailto:x@y", cseq_method="BYE"))
    assert response is not None and response.status == 400
    response = check(request(method="FROBNICATE", uri="mailto:x@y"))
    assert response is not None and response.status == 501
    response = check(request(uri="mailto:x@y", extra="Require: foo"))
    assert response is not None and response.status == 416


def test_inspection_fills_the_value_cache_the_layers_then_read() -> None:
    """The values check_request parsed are the ones the UA, transactions and dialogs then read."""
    message = request(body=SDP, extra="Contact: <sip:caller@192.0.2.1>")
    stamped = message.top_via.with_params(received="192.0.2.9")
    message.set_top_via(stamped)
    assert check(message) is None
    assert message.top_via is stamped and message.vias == [stamped]
    assert message.from_tag == "f1" and message.to_tag is None
    message.headers.set("From", "<sip:other@example.net>;tag=f2")
    message.headers.set("To", "<sip:queue@example.com>;tag=t2")
    assert (message.from_tag, message.to_tag) == ("f2", "t2")
