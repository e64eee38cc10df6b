"""Property tests of the parser: hostile bytes raise ParseError only, valid messages round-trip.

Bounded and derandomised so CI is stable; crashes found here become fixtures in tests/sip/fixtures/,
replayed by test_regression_fixtures_never_crash.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conformance import load_torture_messages
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sip.message import (
    URI,
    Message,
    ParseError,
    Request,
    Response,
    make_response,
    parse_message,
    parse_stream,
)
from sip.validation import check_request

#: SIP_FUZZ_EXAMPLES=20000 runs a long, randomised session (locally, not in CI).
_LONG_RUN = int(os.environ.get("SIP_FUZZ_EXAMPLES", "0"))
FUZZ = settings(
    max_examples=_LONG_RUN or 300,
    deadline=None,
    derandomize=not _LONG_RUN,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
TORTURE = [data for _, data, _ in load_torture_messages()]
FIXTURES = sorted((Path(__file__).parent / "fixtures").glob("*.sip"))
ALLOWED = frozenset("INVITE ACK BYE CANCEL OPTIONS INFO UPDATE REFER NOTIFY PRACK MESSAGE".split())
SUPPORTED = frozenset({"replaces", "norefersub"})
PROPERTIES = (
    "call_id",
    "cseq",
    "from_",
    "to",
    "from_tag",
    "to_tag",
    "vias",
    "top_via",
    "branch",
    "contact",
    "route",
    "record_route",
    "max_forwards",
    "content_type",
)
SPECIALS = [b"\r\n", b"\n", b"\r", b" ", b"\t", b",", b";", b"<", b">", b'"', b"\\", b"\x00"]
SPECIALS += [b"\xff", b"%", b"%0", b":", b"@", b"[", b"]", b"=", b"\r\n ", b"\r\n\r\n", b"SIP/2.0"]


def exercise(data: bytes) -> None:
    """Everything a transport does with a datagram; only ParseError may escape."""
    try:
        message = parse_message(data)
    except ParseError as exc:
        assert 400 <= exc.status <= 599
        if exc.request is not None:
            bytes(make_response(exc.request, exc.status, exc.reason))
        return
    for name in PROPERTIES:
        try:
            getattr(message, name)
        except ParseError as exc:
            assert exc.status == 400
    if isinstance(message, Request):
        error = check_request(message, allowed_methods=ALLOWED, supported_extensions=SUPPORTED)
        if error is not None:
            assert isinstance(error, Response) and 400 <= error.status <= 599
            reparsed = parse_message(bytes(error))
            assert isinstance(reparsed, Response) and reparsed.status == error.status
    assert_round_trip(message)


def assert_round_trip(message: Message) -> None:
    again = parse_message(bytes(message))
    assert type(again) is type(message)
    if isinstance(message, Request):
        assert isinstance(again, Request)
        assert (again.method, again.uri) == (message.method, message.uri)
    else:
        assert isinstance(again, Response)
        assert (again.status, again.reason) == (message.status, message.reason)
    assert again.body == message.body
    expected = [(k, v) for k, v in message.headers.items() if k != "Content-Length"]
    assert [(k, v) for k, v in again.headers.items() if k != "Content-Length"] == expected


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(TORTURE)))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "insert", "truncate", "delete", "dup", "huge"]))
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "flip" and data:
            data[pos] = draw(st.integers(0, 255))
        elif op == "insert":
            data[pos:pos] = draw(st.sampled_from(SPECIALS))
        elif op == "truncate":
            del data[pos:]
        elif op == "delete":
            del data[pos : pos + draw(st.integers(1, 40))]
        elif op == "dup":
            start = data.rfind(b"\r\n", 0, pos) + 2
            end = data.find(b"\r\n", pos)
            if 2 <= start < end:
                data[start:start] = data[start : end + 2]
        elif op == "huge":
            data[pos:pos] = draw(st.sampled_from([b"a", b"9", b";x", b",", b"%41", b" "])) * 20000
    return bytes(data)


@FUZZ
@given(st.binary(max_size=2000))
def test_random_bytes_raise_only_parse_error(data: bytes) -> None:
    exercise(data)


@FUZZ
@given(st.binary(max_size=300).map(lambda b: b"INVITE sip:a@b SIP/2.0\r\n" + b))
def test_random_headers_after_a_request_line_raise_only_parse_error(data: bytes) -> None:
    exercise(data)


@FUZZ
@given(mutated())
def test_mutated_torture_messages_raise_only_parse_error(data: bytes) -> None:
    exercise(data)


@pytest.mark.parametrize("data", TORTURE)
def test_torture_messages_that_parse_round_trip(data: bytes) -> None:
    try:
        message = parse_message(data)
    except ParseError:
        return
    assert_round_trip(message)


_token = st.text(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~", min_size=1
)
_value = st.text(
    st.characters(blacklist_categories=["Cs", "Cc", "Zl", "Zp"], blacklist_characters="\x85"),
    max_size=40,
).map(str.strip)


@FUZZ
@given(
    method=_token,
    user=st.text("abcdefghijklmnopqrstuvwxyz0123456789-_.!~*'()&=+$,;?/%: @é", max_size=20),
    headers=st.lists(st.tuples(_token, _value), max_size=12),
    body=st.binary(max_size=200),
)
def test_built_requests_round_trip(
    method: str, user: str, headers: list[tuple[str, str]], body: bytes
) -> None:
    request = Request(method, URI("sip", user or None, None, "example.com", 5060))
    for name, value in headers:
        request.headers.add("X-" + name, value)
    request.body = body
    again = parse_message(bytes(request))
    assert isinstance(again, Request)
    assert again.method == method and again.uri == request.uri and again.body == body
    expected = [(k, v) for k, v in request.headers.items() if k != "Content-Length"]
    assert [(k, v) for k, v in again.headers.items() if k != "Content-Length"] == expected


def _framed(data: bytes) -> bool:
    try:
        return parse_stream(data, 65536) == (data, len(data))
    except ParseError:
        return False


FRAMED = [m for m in TORTURE if _framed(m)]


def drain(buffer: bytearray, found: list[bytes]) -> None:
    while True:
        message, consumed = parse_stream(buffer, 65536)
        del buffer[:consumed]
        if message is None:
            return
        found.append(message)


@FUZZ
@given(st.lists(st.sampled_from(FRAMED), min_size=1, max_size=4), st.lists(st.integers(1, 700)))
def test_stream_framing_finds_the_same_messages_however_the_bytes_arrive(
    messages: list[bytes], cuts: list[int]
) -> None:
    stream = b"".join(b"\r\n\r\n" + m for m in messages)
    buffer = bytearray()
    found: list[bytes] = []
    position = 0
    for cut in [*cuts, len(stream)]:
        buffer += stream[position : position + cut]
        position += cut
        drain(buffer, found)
    assert found == messages
    assert buffer == b""


@FUZZ
@given(st.binary(max_size=3000), st.integers(100, 4000))
def test_stream_framing_of_random_bytes_raises_only_parse_error(data: bytes, max_size: int) -> None:
    buffer = bytearray(data)
    found: list[bytes] = []
    try:
        while True:
            message, consumed = parse_stream(buffer, max_size)
            del buffer[:consumed]
            if message is None:
                break
            found.append(message)
    except ParseError as exc:
        assert exc.status in (400, 413)
    for message in found:
        assert len(message) <= max_size
        exercise(message)


@pytest.mark.parametrize("path", FIXTURES, ids=[p.name for p in FIXTURES])
def test_regression_fixtures_never_crash(path: Path) -> None:
    exercise(path.read_bytes())
