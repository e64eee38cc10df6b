"""DTMF in INFO bodies: application/dtmf-relay and application/dtmf (RFC 6086 legacy usage)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sip.dialog import Dialog
from sip.info import (
    DEFAULT_DURATION_MS,
    DTMF,
    DTMF_RELAY,
    DtmfError,
    build_dtmf_body,
    build_dtmf_info,
    parse_dtmf_info,
)
from sip.message import Address, Request, Via, parse_message


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"Signal=5\r\nDuration=160\r\n", ("5", 160)),
        (b"Signal=5\r\nDuration=160", ("5", 160)),
        (b"Signal= *\nDuration= 250\n", ("*", 250)),
        (b"signal=#\r\nduration=100\r\n", ("#", 100)),
        (b"Signal=10\r\nDuration=80\r\n", ("*", 80)),
        (b"Signal=11\r\nDuration=80\r\n", ("#", 80)),
        (b"Signal=12\r\nDuration=80\r\n", ("A", 80)),
        (b"Signal=15\r\n", ("D", DEFAULT_DURATION_MS)),
        (b"Signal=d\r\nDuration=0\r\n", ("D", DEFAULT_DURATION_MS)),
        (b"\r\nSignal=0\r\n\r\nDuration=60000\r\n", ("0", 60000)),
        (b"Signal=9\r\nDuration=200\r\nX-Extra=whatever\r\n", ("9", 200)),
    ],
)
def test_dtmf_relay_bodies_give_digit_and_duration(body: bytes, expected: tuple[str, int]) -> None:
    assert parse_dtmf_info("application/dtmf-relay", body) == expected


@pytest.mark.parametrize(
    ("body", "digit"),
    [(b"5", "5"), (b"#\r\n", "#"), (b" b ", "B"), (b"11", "#"), (b"10", "*")],
)
def test_application_dtmf_bodies_carry_the_digit_alone(body: bytes, digit: str) -> None:
    assert parse_dtmf_info("application/dtmf", body) == (digit, DEFAULT_DURATION_MS)


def test_content_type_parameters_and_case_are_ignored() -> None:
    assert parse_dtmf_info("Application/DTMF-Relay; charset=us-ascii", b"Signal=1") == (
        "1",
        DEFAULT_DURATION_MS,
    )


@pytest.mark.parametrize(
    ("content_type", "body", "message"),
    [
        ("application/sdp", b"Signal=5", "content type is not a DTMF type"),
        (None, b"Signal=5", "content type is not a DTMF type"),
        (DTMF_RELAY, b"Duration=160\r\n", "DTMF body has no Signal"),
        (DTMF_RELAY, b"", "DTMF body has no Signal"),
        (DTMF_RELAY, b"Signal=E\r\n", "DTMF signal is not valid"),
        (DTMF_RELAY, b"Signal=16\r\n", "DTMF signal is not valid"),
        (DTMF_RELAY, b"Signal=55\r\n", "DTMF signal is not valid"),
        (DTMF_RELAY, b"Signal=\r\n", "DTMF signal is not valid"),
        (DTMF_RELAY, b"Signal=5\r\nDuration=-1\r\n", "DTMF duration is not valid"),
        (DTMF_RELAY, b"Signal=5\r\nDuration=abc\r\n", "DTMF duration is not valid"),
        (DTMF_RELAY, b"Signal=5\r\nDuration=999999999\r\n", "DTMF duration is not valid"),
        (DTMF_RELAY, b"Signal=5\r\nDuration=60001\r\n", "DTMF duration is not valid"),
        (DTMF_RELAY, b"Signal 5\r\n", "DTMF body line is not key=value"),
        (DTMF_RELAY, b"Signal=\xff\r\n", "DTMF body is not ASCII"),
        (DTMF_RELAY, b"Signal=5\r\n" + b"X" * 600, "DTMF body is too long"),
        (DTMF, b"", "DTMF signal is not valid"),
        (DTMF, b"55", "DTMF signal is not valid"),
    ],
)
def test_bad_dtmf_bodies_raise_fixed_errors(
    content_type: str | None, body: bytes, message: str
) -> None:
    with pytest.raises(DtmfError, match=message):
        parse_dtmf_info(content_type, body)


def test_dtmf_errors_are_value_errors() -> None:
    with pytest.raises(ValueError):
        parse_dtmf_info(DTMF_RELAY, b"nonsense")


@pytest.mark.parametrize("digit", list("0123456789*#ABCD"))
def test_built_bodies_parse_back(digit: str) -> None:
    relay = build_dtmf_body(digit, 160)
    assert relay == f"Signal={digit}\r\nDuration=160\r\n".encode()
    assert parse_dtmf_info(DTMF_RELAY, relay) == (digit, 160)
    plain = build_dtmf_body(digit, content_type=DTMF)
    assert plain == digit.encode()
    assert parse_dtmf_info(DTMF, plain) == (digit, DEFAULT_DURATION_MS)


def test_building_refuses_bad_digits_durations_and_types() -> None:
    with pytest.raises(DtmfError, match="DTMF signal is not valid"):
        build_dtmf_body("x")
    with pytest.raises(DtmfError, match="DTMF duration is not valid"):
        build_dtmf_body("1", 0)
    with pytest.raises(DtmfError, match="content type is not a DTMF type"):
        build_dtmf_body("1", 100, "text/plain")


def test_dtmf_info_request_is_an_in_dialog_info_with_the_body() -> None:
    request = parse_message(
        b"INVITE sip:agent@192.0.2.4 SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 198.51.100.1;branch=z9hG4bK1\r\n"
        b"From: <sip:caller@pbx.example.com>;tag=p1\r\nTo: <sip:agent@192.0.2.4>\r\n"
        b"Call-ID: dtmf-1@pbx\r\nCSeq: 1 INVITE\r\nContact: <sip:caller@198.51.100.1>\r\n"
        b"Content-Length: 0\r\n\r\n"
    )
    assert isinstance(request, Request)
    dialog = Dialog.create_uas(request, "l1", Address.parse("<sip:agent@192.0.2.4>"))
    via = Via.parse("SIP/2.0/UDP 192.0.2.4;branch=z9hG4bKinfo")

    info = parse_message(bytes(build_dtmf_info(dialog, via, "#", 250)))

    assert isinstance(info, Request)
    assert info.method == "INFO"
    assert info.call_id == "dtmf-1@pbx"
    assert info.to_tag == "p1"
    assert parse_dtmf_info(info.content_type, info.body) == ("#", 250)


@settings(deadline=None)  # a loaded machine's pause is no slow example
@given(st.binary(max_size=80), st.sampled_from([DTMF_RELAY, DTMF, "text/plain", None]))
def test_any_body_parses_or_raises_dtmf_error_only(body: bytes, content_type: str | None) -> None:
    try:
        digit, duration = parse_dtmf_info(content_type, body)
    except DtmfError:
        return
    assert digit in "0123456789*#ABCD"
    assert 0 < duration <= 60000
