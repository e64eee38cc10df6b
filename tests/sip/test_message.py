"""sip.message: header values, parsing, framing, serialisation and make_response."""

from __future__ import annotations

import dataclasses
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sip import grammar
from sip.message import (
    REASON_PHRASES,
    URI,
    Address,
    CSeq,
    Headers,
    ParseError,
    Request,
    Response,
    Via,
    make_response,
    new_branch,
    new_tag,
    parse_message,
    parse_stream,
)

SDP = (
    b"v=0\r\no=- 1234567890 1234567890 IN IP4 10.0.0.1\r\ns=Asterisk\r\nc=IN IP4 10.0.0.1\r\n"
    b"t=0 0\r\nm=audio 10000 RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n"
    b"a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=ptime:20\r\na=sendrecv\r\n"
)
INVITE = (
    b"INVITE sip:5551234@10.0.0.5:5060;transport=udp SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK776asdhds;rport\r\n"
    b"Via: SIP/2.0/TCP 10.0.0.9;branch=z9hG4bKlower;received=10.0.0.99\r\n"
    b"Max-Forwards: 70\r\n"
    b"To: <sip:5551234@10.0.0.5>\r\n"
    b'From: "Alice Caller" <sip:1001@10.0.0.1>;tag=1928301774\r\n'
    b"Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b"Contact: <sip:1001@10.0.0.1:5060>\r\n"
    b"Record-Route: <sip:p1.example.com;lr>, <sip:p2.example.com;lr>\r\n"
    b"Allow: INVITE, ACK, CANCEL, OPTIONS, BYE\r\n"
    b"Supported: replaces, timer\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: " + str(len(SDP)).encode() + b"\r\n\r\n" + SDP
)


def invite() -> Request:
    request = parse_message(INVITE)
    assert isinstance(request, Request)
    return request


# --- Headers -------------------------------------------------------------------------------------


def test_headers_are_case_insensitive_and_compact_forms_are_canonical() -> None:
    headers = Headers([("v", "SIP/2.0/UDP a"), ("VIA", "SIP/2.0/UDP b"), ("i", "x@y")])
    assert headers.getlist("Via") == ["SIP/2.0/UDP a", "SIP/2.0/UDP b"]
    assert headers.get("call-ID") == "x@y"
    assert "CALL-ID" in headers and "i" in headers and "To" not in headers
    assert list(headers.items()) == [
        ("Via", "SIP/2.0/UDP a"),
        ("Via", "SIP/2.0/UDP b"),
        ("Call-ID", "x@y"),
    ]


def test_headers_getlist_splits_list_headers_aware_of_quotes_and_angles() -> None:
    headers = Headers(
        [
            ("Contact", '"Doe, John" <sip:a@b;x=1,2>, <sip:c@d>'),
            ("Allow", "INVITE,ACK , BYE"),
            ("Date", "Sat, 13 Nov 2010 23:29:00 GMT"),
            ("WWW-Authenticate", 'Digest realm="a", nonce="b"'),
        ]
    )
    assert headers.getlist("m") == ['"Doe, John" <sip:a@b;x=1,2>', "<sip:c@d>"]
    assert headers.getlist("Allow") == ["INVITE", "ACK", "BYE"]
    assert headers.getlist("Date") == ["Sat, 13 Nov 2010 23:29:00 GMT"]
    assert headers.getlist("WWW-Authenticate") == ['Digest realm="a", nonce="b"']


def test_headers_insert_first_set_remove_and_copy_are_independent() -> None:
    headers = Headers([("Route", "<sip:a>"), ("X-Custom", "1")])
    copy = headers.copy()
    headers.insert_first("route", "<sip:first>")
    headers.set("x-custom", "2")
    headers.remove("To")
    assert headers.getlist("Route") == ["<sip:first>", "<sip:a>"]
    assert list(headers.items())[-1] == ("X-Custom", "2")
    assert copy.getlist("Route") == ["<sip:a>"] and copy.get("X-Custom") == "1"
    headers.remove("ROUTE")
    assert "Route" not in headers and headers.getlist("Route") == []


def test_header_values_with_cr_or_lf_are_refused() -> None:
    headers = Headers()
    for value in ("a\r\nVia: injected", "a\nb", "a\rb"):
        with pytest.raises(ValueError, match="Header value contains CR or LF"):
            headers.add("Subject", value)
        with pytest.raises(ValueError, match="Header value contains CR or LF"):
            headers.set("Subject", value)
    assert "Subject" not in headers


def test_unknown_header_keeps_its_first_spelling() -> None:
    request = invite()
    request.headers.add("x-OML-Queue", "sales")
    assert b"\r\nx-OML-Queue: sales\r\n" in bytes(request)


# --- URI -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "sip:alice@atlanta.com",
        "sips:alice:secret@atlanta.com:5061;transport=tcp;lr",
        "sip:+1-212-555-1212:1234@gateway.com;user=phone",
        "sip:alice@192.0.2.4",
        "sip:[2001:db8::10]:5070;maddr=[2001:db8::1]",
        "sip:atlanta.com;method=REGISTER?to=alice%40atlanta.com",
        "sip:alice;day=tuesday@atlanta.com",
        "tel:+358-555-1234567;postd=pp22",
        "urn:service:sos",
        "http://www.example.com/a?b=c",
    ],
)
def test_uri_round_trips(text: str) -> None:
    assert str(URI.parse(text)) == text


def test_uri_parts_and_params() -> None:
    uri = URI.parse("SIPS:alice:secret@Atlanta.com:5061;Transport=TCP;lr?subject=x&priority=urgent")
    assert (uri.scheme, uri.user, uri.password, uri.host, uri.port) == (
        "sips",
        "alice",
        "secret",
        "Atlanta.com",
        5061,
    )
    assert uri.param("transport") == "TCP" and uri.has_param("LR") and uri.param("lr") is None
    assert uri.headers == (("subject", "x"), ("priority", "urgent"))
    tel = URI.parse("tel:+1-201-555-0123")
    assert (tel.scheme, tel.user, tel.host) == ("tel", "+1-201-555-0123", "")
    other = URI.parse("soap.beep://192.0.2.103:3002")
    assert (other.scheme, other.host) == ("soap.beep", "//192.0.2.103:3002")


@pytest.mark.parametrize(
    "text",
    ["", "sip:", "<sip:a@b>", "sip:a@b c", "sip:a@b:99999", "sip:2001:db8::10", "sip:a@", "x"],
)
def test_uri_garbage_raises_value_error(text: str) -> None:
    with pytest.raises(ValueError, match="URI is not valid"):
        URI.parse(text)


# --- Address, Via, CSeq --------------------------------------------------------------------------


def test_address_forms() -> None:
    a = Address.parse('"Bob \\"B\\"" <sip:bob@biloxi.com;transport=tcp>;tag=a6c85cf;x')
    assert a.display_name == 'Bob "B"'
    assert a.uri.param("transport") == "tcp"
    assert a.tag == "a6c85cf" and a.params == (("tag", "a6c85cf"), ("x", None))
    assert str(a) == '"Bob \\"B\\"" <sip:bob@biloxi.com;transport=tcp>;tag=a6c85cf;x'
    b = Address.parse("sip:carol@chicago.com;tag=887s")
    assert b.display_name is None and b.tag == "887s" and b.uri.params == ()
    assert str(b.with_tag("new")) == "<sip:carol@chicago.com>;tag=new"
    c = Address.parse("Anonymous <sip:c8oqz84zk7z@privacy.org>;tag=hyh8")
    assert c.display_name == "Anonymous"


@pytest.mark.parametrize(
    "text", ['"open <sip:a@b>', "Bell, Alexander <sip:a@b>", "<sip:a@b>;;", "< sip:a@b >", ""]
)
def test_address_garbage_raises_value_error(text: str) -> None:
    with pytest.raises(ValueError, match="Address is not valid"):
        Address.parse(text)


def test_via_fields_rport_and_with_params() -> None:
    via = Via.parse("SIP/2.0/udp pc33.atlanta.com:5066;branch=z9hG4bK776;rport")
    assert (via.transport, via.host, via.port) == ("UDP", "pc33.atlanta.com", 5066)
    assert via.branch == "z9hG4bK776" and via.rport is True and via.received is None
    stamped = via.with_params(received="192.0.2.1", rport="5070")
    assert stamped.rport == 5070 and stamped.received == "192.0.2.1"
    assert str(stamped) == (
        "SIP/2.0/UDP pc33.atlanta.com:5066;branch=z9hG4bK776;rport=5070;received=192.0.2.1"
    )
    assert Via.parse("SIP/2.0/TLS [2001:db8::1]").sent_by == ("[2001:db8::1]", None)
    assert Via.parse("SIP/2.0/TCP h").rport is None


@pytest.mark.parametrize("text", ["SIP/2.0/UDP", "SIP/3.0/UDP h", "SIP/2.0/UDP h;;", "x", ""])
def test_via_garbage_raises_value_error(text: str) -> None:
    with pytest.raises(ValueError, match="Via is not valid"):
        Via.parse(text)


def test_cseq_bounds() -> None:
    assert CSeq.parse(" 2147483647   INVITE ") == CSeq(2147483647, "INVITE")
    assert str(CSeq(1, "BYE")) == "1 BYE"
    for text in ("2147483648 INVITE", "-1 INVITE", "1", "INVITE 1", "1 IN VITE"):
        with pytest.raises(ValueError, match="CSeq is not valid"):
            CSeq.parse(text)


def test_value_objects_stay_frozen_dataclasses_with_keyword_construction() -> None:
    uri = URI(scheme="sip", user="a", password=None, host="h", port=None)
    address = Address(display_name=None, uri=uri)
    via = Via(transport="UDP", host="h", port=5060)
    assert (uri.params, uri.headers, address.params, via.params) == ((), (), (), ())
    assert address == Address.parse("<sip:a@h>") and hash(address) == hash(Address.parse("sip:a@h"))
    assert dataclasses.replace(via, port=5070) == Via("UDP", "h", 5070)
    assert dataclasses.replace(address, uri=dataclasses.replace(uri, host="x")).uri.host == "x"
    assert repr(CSeq(1, "BYE")) == "CSeq(seq=1, method='BYE')"
    for value, field in ((uri, "host"), (address, "params"), (via, "port"), (CSeq(1, "A"), "seq")):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(value, field, None)


_TOKEN = st.text("abcXYZ019-.!%*_+`'~", min_size=1, max_size=8)
_PARAM = st.tuples(_TOKEN, st.none() | _TOKEN | st.sampled_from(["[::1]", "1.2.3.4:5", '"q v"']))
_SEPARATOR = st.sampled_from([";", " ;", "; ", ";\t"])


def _params(pairs: list[tuple[str, str | None]], seps: list[str]) -> str:
    return "".join(
        f"{sep}{name}" if value is None else f"{sep}{name}={value}"
        for (name, value), sep in zip(pairs, seps + [";"] * len(pairs), strict=False)
    )


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(
    display=st.none()
    | _TOKEN
    | st.lists(_TOKEN, min_size=2, max_size=3).map(" ".join)
    | st.text("ab c'<>,;", max_size=6).map(lambda t: f'"{t}"')
    | st.just('"a\\"b"'),
    space=st.sampled_from(["", " ", "  ", "\t"]),
    uri=st.sampled_from(["sip:a@h", "sips:u@[::1]:5061;lr", "tel:+1-555", "urn:x", "sip:h:99999"]),
    angled=st.booleans(),
    pairs=st.lists(_PARAM, max_size=3),
    seps=st.lists(_SEPARATOR, max_size=3),
)
def test_compact_address_path_gives_what_the_general_grammar_gives(
    display: str | None,
    space: str,
    uri: str,
    angled: bool,
    pairs: list[tuple[str, str | None]],
    seps: list[str],
) -> None:
    """The one-regex fast path must agree with the full grammar, reached through padding."""
    text = (f"{display or ''}{space}<{uri}>" if angled else uri) + _params(pairs, seps)
    outcomes = []
    for candidate in (text, f" {text} "):
        try:
            outcomes.append(Address.parse(candidate))
        except ValueError as exc:
            outcomes.append(exc.args)
    assert outcomes[0] == outcomes[1]


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(
    transport=st.sampled_from(["UDP", "udp", "Tls", "WSS", "X-1"]),
    host=st.sampled_from(["127.0.0.1", "h", "a.b-c_d", "[::1]", "h!", ""]),
    port=st.sampled_from(["", ":5060", ":99999", ": 5060", ":"]),
    pairs=st.lists(_PARAM, max_size=4),
    seps=st.lists(_SEPARATOR, max_size=4),
)
def test_compact_via_path_gives_what_the_general_grammar_gives(
    transport: str,
    host: str,
    port: str,
    pairs: list[tuple[str, str | None]],
    seps: list[str],
) -> None:
    text = f"SIP/2.0/{transport} {host}{port}" + _params(pairs, seps)
    outcomes = []
    for candidate in (text, f" {text}"):
        try:
            outcomes.append(Via.parse(candidate))
        except ValueError as exc:
            outcomes.append(exc.args)
    assert outcomes[0] == outcomes[1]


def test_call_id_check_in_c_agrees_with_the_grammar_on_every_ascii_character() -> None:
    """The Call-ID check tries str methods before the regex: same verdict for each character
    (alone and inside a word), the empty value and a word with a space."""
    texts = [
        "",
        "a b",
        "a\tb",
        "é@h",
        *(chr(c) for c in range(128)),
        *(f"a{chr(c)}b" for c in range(128)),
    ]
    for text in texts:
        message = parse_message(b"BYE sip:a@h SIP/2.0\r\nCall-ID: x\r\n\r\n")
        message.headers._d["call-id"] = (text,)
        expected = grammar.CALL_ID.fullmatch(text) is not None
        try:
            assert message.call_id == text and expected, repr(text)
        except ParseError:
            assert not expected, repr(text)


def test_a_cached_name_addr_or_sent_by_takes_each_texts_own_parameters() -> None:
    """The name-addr of a From and the sent-by of a Via are parsed once per text and the
    parameters after them every time: a new tag or branch per call gives its own values, equal to
    what the whole text gives through the general grammar, and a bad head fails every time."""
    for tag in ("1", "2", "a.b-c", "3"):
        text = f'"Alice A" <sip:alice@10.0.0.2:5061;transport=udp>;tag={tag};x'
        address = Address.parse(text)
        assert address == Address.parse(f" {text} ")
        assert address.params == (("tag", tag), ("x", None))
        assert str(address.uri) == "sip:alice@10.0.0.2:5061;transport=udp"
    for branch in ("z9hG4bK1", "z9hG4bK2"):
        text = f"SIP/2.0/udp 10.0.0.2:5061;branch={branch};rport"
        via = Via.parse(text)
        assert via == Via.parse(f" {text}")
        assert (via.transport, via.sent_by, via.branch, via.rport) == (
            "UDP",
            ("10.0.0.2", 5061),
            branch,
            True,
        )
    for _ in range(2):
        with pytest.raises(ValueError, match="Address is not valid"):
            Address.parse("<sip:a@h:99999>;tag=1")
        with pytest.raises(ValueError, match="Via is not valid"):
            Via.parse("SIP/2.0/UDP h:99999;branch=z9hG4bK1")


@pytest.mark.parametrize(
    "text", ["1 INVITE", "01 ACK", "2147483648 BYE", "1  INVITE", "1 X-FOO", "1 É", "٣ BYE", "1 "]
)
def test_cseq_fast_path_gives_what_the_general_grammar_gives(text: str) -> None:
    outcomes = []
    for candidate in (text, f" {text}"):
        try:
            outcomes.append(CSeq.parse(candidate))
        except ValueError as exc:
            outcomes.append(exc.args)
    assert outcomes[0] == outcomes[1]


def test_parsed_values_are_shared_per_text_but_long_texts_are_not_kept() -> None:
    short = "echo <sip:echo@127.0.0.1:5060>"
    assert Address.parse(short) is Address.parse(short)
    assert CSeq.parse("7 INVITE") is CSeq.parse("7 INVITE")
    long = f"<sip:{'a' * 300}@h>"
    assert Address.parse(long) == Address.parse(long)
    assert Address.parse(long) is not Address.parse(long)
    for i in range(5000):
        Address.parse(f"<sip:u{i}@h>;tag={i}")
    assert Address.parse("<sip:u1@h>;tag=1").tag == "1"


# --- messages ------------------------------------------------------------------------------------


def test_parsed_invite_convenience_properties() -> None:
    request = invite()
    assert request.method == "INVITE"
    assert request.uri.user == "5551234" and request.uri.param("transport") == "udp"
    assert request.call_id == "a84b4c76e66710@pc33.atlanta.example.com"
    assert request.cseq == CSeq(314159, "INVITE")
    assert request.from_.display_name == "Alice Caller" and request.from_tag == "1928301774"
    assert request.to_tag is None
    assert request.branch == "z9hG4bK776asdhds" and request.top_via.rport is True
    assert [v.received for v in request.vias] == [None, "10.0.0.99"]
    assert [str(r.uri) for r in request.record_route] == [
        "sip:p1.example.com;lr",
        "sip:p2.example.com;lr",
    ]
    assert request.contact[0].uri.port == 5060 and request.route == []
    assert request.max_forwards == 70 and request.content_type == "application/sdp"
    assert request.body == SDP


def test_property_cache_is_dropped_when_headers_change() -> None:
    request = invite()
    assert request.call_id.startswith("a84b")
    request.headers.set("Call-ID", "other@host")
    assert request.call_id == "other@host"
    request.set_top_via(request.top_via.with_params(received="192.0.2.7"))
    assert request.top_via.received == "192.0.2.7"
    assert request.vias[1].branch == "z9hG4bKlower"


def test_set_top_via_keeps_the_other_parsed_values_and_reuses_the_new_via() -> None:
    request = invite()
    cseq, from_, contact = request.cseq, request.from_, request.contact
    assert len(request.vias) == 2
    stamped = request.top_via.with_params(received="192.0.2.7", rport="5070")
    request.set_top_via(stamped)
    assert request.top_via is stamped
    assert request.cseq is cseq and request.from_ is from_ and request.contact == contact
    assert [v.received for v in request.vias] == ["192.0.2.7", "10.0.0.99"]
    assert request.headers.getlist("Via")[0] == str(stamped)
    reparsed = parse_message(bytes(request))
    assert reparsed.top_via == stamped and reparsed.vias == request.vias


def test_set_top_via_keeps_the_rest_of_a_comma_separated_line() -> None:
    request = parse_message(
        b"OPTIONS sip:a@b SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP a;branch=z9hG4bK1, SIP/2.0/UDP b;branch=z9hG4bK2\r\n"
        b"Content-Length: 0\r\n\r\n"
    )
    request.set_top_via(Via.parse("SIP/2.0/UDP c;branch=z9hG4bK3"))
    assert [v.host for v in request.vias] == ["c", "b"]


def test_malformed_header_values_raise_parse_error_400_lazily() -> None:
    request = parse_message(
        b"OPTIONS sip:a@b SIP/2.0\r\nVia: nonsense\r\nFrom: <sip:a@b\r\nCSeq: x OPTIONS\r\n"
        b"Max-Forwards: 256\r\nContent-Length: 0\r\n\r\n"
    )
    for prop in ("top_via", "from_", "cseq", "max_forwards", "to", "call_id"):
        with pytest.raises(ParseError) as info:
            getattr(request, prop)
        assert info.value.status == 400 and info.value.request is request


def test_bytes_round_trip_and_content_length_is_recomputed() -> None:
    request = invite()
    request.body = b"short"
    data = bytes(request)
    assert data.count(b"Content-Length") == 1 and data.endswith(b"Content-Length: 5\r\n\r\nshort")
    again = parse_message(data)
    assert isinstance(again, Request)
    assert again.headers.get("Content-Length") == "5" and again.body == b"short"
    request.headers.remove("Content-Length")
    again.headers.remove("l")
    assert again.headers == request.headers
    assert bytes(again) == data


def test_request_and_response_constructors() -> None:
    request = Request("OPTIONS", "sip:bob@biloxi.com", Headers([("Call-ID", "c@h")]))
    assert bytes(request).startswith(b"OPTIONS sip:bob@biloxi.com SIP/2.0\r\nCall-ID: c@h\r\n")
    request.uri = URI.parse("sip:carol@chicago.com")
    assert bytes(request).startswith(b"OPTIONS sip:carol@chicago.com SIP/2.0\r\n")
    assert Response(486).reason == "Busy Here"
    assert Response(499).reason == "Client Error"
    assert bytes(Response(200, "Fine")).startswith(b"SIP/2.0 200 Fine\r\n")
    assert REASON_PHRASES[481] == "Call/Transaction Does Not Exist"


# --- parse_message framing -----------------------------------------------------------------------


def test_leading_crlf_keepalives_are_skipped_and_bare_lf_messages_accepted() -> None:
    message = parse_message(b"\r\n\r\nSIP/2.0 180 Ringing\nVia: SIP/2.0/UDP h\nl: 0\n\n")
    assert isinstance(message, Response) and message.status == 180
    assert message.top_via.host == "h"


def test_utf8_reason_and_invalid_utf8_round_trip() -> None:
    raw = b"SIP/2.0 200 \xd0\xbe\xd0\xba \xff\r\nContent-Length: 0\r\n\r\n"
    message = parse_message(raw)
    assert isinstance(message, Response)
    assert bytes(message) == raw


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (b"", 400),
        (b"INVITE sip:a@b SIP/2.0\r\nVia: x\r\n", 400),
        (b"INVITE sip:a@b SIP/2.0\r\nNoColon\r\n\r\n", 400),
        (b"INVITE sip:a@b SIP/2.0\r\nBad Name: x\r\n\r\n", 400),
        (b"INVITE sip:a@b SIP/2.0\r\nA: x\nB: y\r\n\r\n", 400),
        (b"INVITE sip:a@b SIP/2.0 extra\r\n\r\n", 400),
        (b"INV(TE sip:a@b SIP/2.0\r\n\r\n", 400),
        (b"INVITE sip:a@b SIP/3.0\r\n\r\n", 505),
        (b"INVITE sip:a@b HTTP/1.1\r\n\r\n", 400),
        (b"INVITE sip:a@b SIP/2.0\r\nContent-Length: 1x\r\n\r\n", 400),
        (b"INVITE sip:a@b SIP/2.0\r\nContent-Length: 10\r\n\r\nshort", 400),
        (b"SIP/2.0 1000 Big\r\n\r\n", 400),
        (b"SIP/2.0 099 Small\r\n\r\n", 400),
    ],
)
def test_malformed_messages_raise_parse_error(data: bytes, status: int) -> None:
    with pytest.raises(ParseError) as info:
        parse_message(data)
    assert info.value.status == status


def test_parse_error_carries_partial_request_when_response_is_possible() -> None:
    data = INVITE.replace(b"SIP/2.0\r\n", b"SIP/7.0\r\n", 1)
    with pytest.raises(ParseError) as info:
        parse_message(data)
    assert info.value.status == 505 and info.value.request is not None
    response = make_response(info.value.request, 505)
    assert response.headers.get("Call-ID") == "a84b4c76e66710@pc33.atlanta.example.com"


# --- parse_stream --------------------------------------------------------------------------------


def test_parse_stream_frames_messages_and_keepalives() -> None:
    buffer = b"\r\n\r\n" + INVITE + INVITE[:100]
    message, consumed = parse_stream(buffer, 65536)
    assert message == INVITE and consumed == 4 + len(INVITE)
    assert parse_stream(buffer[consumed:], 65536) == (None, 0)
    assert parse_stream(b"\r\n\r\n", 65536) == (None, 4)
    assert parse_stream(INVITE[:-1], 65536) == (None, 0)


def test_parse_stream_limits_and_missing_content_length() -> None:
    with pytest.raises(ParseError) as info:
        parse_stream(b"INVITE sip:a@b SIP/2.0\r\n" + b"X: y\r\n" * 100, 200)
    assert info.value.status == 413
    with pytest.raises(ParseError) as info:
        parse_stream(INVITE, 200)
    assert info.value.status == 413
    with pytest.raises(ParseError) as info:
        parse_stream(b"OPTIONS sip:a@b SIP/2.0\r\nVia: x\r\n\r\n", 65536)
    assert info.value.status == 400
    message, _ = parse_stream(b"OPTIONS sip:a@b SIP/2.0\r\nl: 2\r\n\r\nhi", 65536)
    assert message is not None and parse_message(message).body == b"hi"


# --- make_response -------------------------------------------------------------------------------


def test_make_response_copies_dialog_headers_and_adds_to_tag() -> None:
    request = invite()
    response = make_response(request, 180, to_tag="xyz")
    assert response.reason == "Ringing"
    assert response.headers.getlist("Via") == request.headers.getlist("Via")
    assert response.headers.get("From") == request.headers.get("From")
    assert (
        response.to_tag == "xyz" and response.headers.get("To") == "<sip:5551234@10.0.0.5>;tag=xyz"
    )
    assert response.headers.getlist("Record-Route") == request.headers.getlist("Record-Route")
    assert response.cseq == request.cseq and response.call_id == request.call_id
    assert "Record-Route" not in make_response(request, 486).headers
    assert make_response(request, 100).headers.get("To") == "<sip:5551234@10.0.0.5>"


def test_make_response_keeps_existing_to_tag_and_adds_headers_and_body() -> None:
    request = invite()
    request.headers.set("To", "<sip:b@c>;tag=old")
    response = make_response(
        request,
        200,
        "Yes",
        to_tag="new",
        headers=[("Contact", "<sip:me@h>")],
        body=SDP,
        content_type="application/sdp",
    )
    assert response.to_tag == "old" and response.reason == "Yes"
    data = bytes(response)
    parsed = parse_message(data)
    assert isinstance(parsed, Response)
    assert parsed.body == SDP and parsed.content_type == "application/sdp"
    assert parsed.contact[0].uri.user == "me"


def test_new_branch_and_tag_are_unique_tokens() -> None:
    branches = {new_branch() for _ in range(1000)}
    tags = {new_tag() for _ in range(1000)}
    assert len(branches) == len(tags) == 1000
    assert all(b.startswith("z9hG4bK") and len(b) > 12 for b in branches)
    assert all(len(t) >= 8 and t.isalnum() for t in tags)


# --- cost ----------------------------------------------------------------------------------------


def test_hostile_long_values_parse_in_linear_time() -> None:
    long = "a" * 60000
    values = [
        f"sip:{long}",
        f"sip:{long}@",
        f"sip:a@{long}!",
        f'"{long}',
        f"{long} " * 2 + "<",
        f"SIP/2.0/UDP h{';x' * 20000}!",
        f"SIP/2.0/UDP h{';a=b' * 15000} ",
        f"a <sip:h>{';a=b' * 15000} ",
        "a " * 30000 + "<",
        f"<{long}",
    ]
    # CPU time of this thread: what the parsing costs, not how long a loaded machine kept the
    # process waiting meanwhile.
    start = time.thread_time()
    for value in values:
        for parse in (URI.parse, Address.parse, Via.parse):
            try:
                parse(value)
            except ValueError:
                pass
    assert time.thread_time() - start < 2.0


def test_parse_invite_cost_is_bounded() -> None:
    start = time.thread_time()  # CPU time: the machine's load is not the parser's cost
    for _ in range(2000):
        parse_message(INVITE)
    assert (time.thread_time() - start) / 2000 < 300e-6
