"""SDP parsing and writing (RFC 8866) and offer/answer (RFC 3264) in `sip.sdp`."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import pytest

from sip.sdp import (
    DEFAULT_CAPABILITIES,
    OPUS,
    PCMA,
    PCMU,
    TELEPHONE_EVENT,
    Answer,
    Attribute,
    Codec,
    Connection,
    CryptoAttribute,
    Direction,
    MediaCapabilities,
    MediaDescription,
    OfferAnswerError,
    Origin,
    RtcpAttribute,
    SDPError,
    SDPSession,
    SessionDescription,
    Timing,
    answer_direction,
    create_offer,
    negotiate,
    process_answer,
)


def crlf(*lines: str) -> str:
    return "".join(line + "\r\n" for line in lines)


ASTERISK = crlf(
    "v=0",
    "o=- 1928374651 1928374651 IN IP4 192.168.1.10",
    "s=Asterisk",
    "c=IN IP4 192.168.1.10",
    "t=0 0",
    "m=audio 14958 RTP/AVP 0 8 9 3 101",
    "a=rtpmap:0 PCMU/8000",
    "a=rtpmap:8 PCMA/8000",
    "a=rtpmap:9 G722/8000",
    "a=rtpmap:3 GSM/8000",
    "a=rtpmap:101 telephone-event/8000",
    "a=fmtp:101 0-16",
    "a=ptime:20",
    "a=maxptime:150",
    "a=sendrecv",
)

FREESWITCH = crlf(
    "v=0",
    "o=FreeSWITCH 1700031200 1700031201 IN IP4 10.0.0.5",
    "s=FreeSWITCH",
    "c=IN IP4 10.0.0.5",
    "t=0 0",
    "m=audio 24600 RTP/AVP 102 9 0 8 101 13",
    "a=rtpmap:102 opus/48000/2",
    "a=fmtp:102 useinbandfec=1; maxplaybackrate=16000; sprop-maxcapturerate=16000; "
    "maxaveragebitrate=12000",
    "a=rtpmap:9 G722/8000",
    "a=rtpmap:0 PCMU/8000",
    "a=rtpmap:8 PCMA/8000",
    "a=rtpmap:101 telephone-event/8000",
    "a=fmtp:101 0-16",
    "a=rtpmap:13 CN/8000",
    "a=ptime:20",
    "a=sendrecv",
    "a=rtcp:24601 IN IP4 10.0.0.5",
)

SIPP = crlf(
    "v=0",
    "o=user1 53655765 2353687637 IN IP4 127.0.0.1",
    "s=-",
    "c=IN IP4 127.0.0.1",
    "t=0 0",
    "m=audio 6000 RTP/AVP 0",
    "a=rtpmap:0 PCMU/8000",
)

BARESIP = crlf(
    "v=0",
    "o=- 2127378523 3291542937 IN IP4 192.168.1.50",
    "s=-",
    "c=IN IP4 192.168.1.50",
    "t=0 0",
    "m=audio 34512 RTP/AVP 96 0 8 101",
    "b=AS:128",
    "a=rtpmap:96 opus/48000/2",
    "a=fmtp:96 stereo=1;sprop-stereo=1",
    "a=rtpmap:0 PCMU/8000",
    "a=rtpmap:8 PCMA/8000",
    "a=rtpmap:101 telephone-event/8000",
    "a=fmtp:101 0-15",
    "a=sendrecv",
    "a=label:1",
    "a=rtcp-rsize",
    "a=ssrc:1780548406 cname:bcd9ff7c-cfe1-4ba0-9d79-3cdb8f8d1a2d",
    "a=rtcp-mux",
    "a=ptime:20",
)

FINGERPRINT = (
    "sha-256 4A:AD:B9:B1:3F:82:18:3B:54:02:12:DF:3E:5D:49:6B:19:E5:7C:AB:3A:90:6A:29:69:FA:0A:"
    "AC:5F:D9:B6:2E"
)
CHROME = crlf(
    "v=0",
    "o=- 4611731400430051336 2 IN IP4 127.0.0.1",
    "s=-",
    "t=0 0",
    "a=group:BUNDLE 0 1",
    "a=extmap-allow-mixed",
    "a=msid-semantic: WMS 7c3d5e6b-0d8b-4f43-9a3b-6a2b6d1f0e11",
    "m=audio 9 UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126",
    "c=IN IP4 0.0.0.0",
    "a=rtcp:9 IN IP4 0.0.0.0",
    "a=candidate:1467250027 1 udp 2122260223 192.168.0.196 46243 typ host generation 0 "
    "network-id 1",
    "a=ice-ufrag:nSRz",
    "a=ice-pwd:pX8kHq3m0yV6vJb+Lw9lUoXq",
    "a=ice-options:trickle",
    "a=fingerprint:" + FINGERPRINT,
    "a=setup:actpass",
    "a=mid:0",
    "a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level",
    "a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01",
    "a=sendrecv",
    "a=msid:7c3d5e6b-0d8b-4f43-9a3b-6a2b6d1f0e11 2f4ac5d1-8c1e-4a6b-b1f0-1e2d3c4b5a69",
    "a=rtcp-mux",
    "a=rtcp-rsize",
    "a=rtpmap:111 opus/48000/2",
    "a=rtcp-fb:111 transport-cc",
    "a=fmtp:111 minptime=10;useinbandfec=1",
    "a=rtpmap:63 red/48000/2",
    "a=fmtp:63 111/111",
    "a=rtpmap:9 G722/8000",
    "a=rtpmap:0 PCMU/8000",
    "a=rtpmap:8 PCMA/8000",
    "a=rtpmap:13 CN/8000",
    "a=rtpmap:110 telephone-event/48000",
    "a=rtpmap:126 telephone-event/8000",
    "a=ssrc:3566461616 cname:Yq7/U1Gr4bX9vG1t",
    "m=video 9 UDP/TLS/RTP/SAVPF 96 97",
    "c=IN IP4 0.0.0.0",
    "a=rtcp:9 IN IP4 0.0.0.0",
    "a=ice-ufrag:nSRz",
    "a=ice-pwd:pX8kHq3m0yV6vJb+Lw9lUoXq",
    "a=ice-options:trickle",
    "a=fingerprint:" + FINGERPRINT,
    "a=setup:actpass",
    "a=mid:1",
    "a=sendrecv",
    "a=rtcp-mux",
    "a=rtpmap:96 VP8/90000",
    "a=rtcp-fb:96 nack pli",
    "a=rtpmap:97 rtx/90000",
    "a=fmtp:97 apt=96",
    "a=ssrc-group:FID 1111 2222",
    "m=application 9 UDP/DTLS/SCTP webrtc-datachannel",
    "c=IN IP4 0.0.0.0",
    "a=ice-ufrag:nSRz",
    "a=mid:2",
    "a=sctp-port:5000",
    "a=max-message-size:262144",
)

SDES = crlf(
    "v=0",
    "o=- 20518 0 IN IP4 203.0.113.7",
    "s=SDP Data",
    "c=IN IP4 203.0.113.7",
    "t=0 0",
    "m=audio 11780 RTP/SAVP 8 0 101",
    "a=rtpmap:8 PCMA/8000",
    "a=rtpmap:0 PCMU/8000",
    "a=rtpmap:101 telephone-event/8000",
    "a=fmtp:101 0-15",
    "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz|2^20|1:4 "
    "KDR=1",
    "a=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:NzB4d1BINUAvLEw6UzF3WSJ+PSdFcGdUJShpX1Zj|2^20|1:32",
    "a=sendrecv",
)

RFC5118_IPV6_IN_SDP = crlf(
    "v=0",
    "o=assistant 971731711378798081 0 IN IP6 2001:db8::20",
    "s=Live video feed for today's meeting",
    "c=IN IP6 2001:db8::20",
    "t=3338481189 3370017201",
    "m=audio 6000 RTP/AVP 2",
    "a=rtpmap:2 G726-32/8000",
    "m=video 6024 RTP/AVP 107",
    "a=rtpmap:107 H263-1998/90000",
)

RFC5118_MULT_IP_IN_SDP = crlf(
    "v=0",
    "o=bob 280744730 28977631 IN IP4 host.example.com",
    "s=",
    "t=0 0",
    "m=audio 22334 RTP/AVP 0",
    "c=IN IP4 192.0.2.1",
    "m=video 6024 RTP/AVP 107",
    "c=IN IP6 2001:db8::1",
    "a=rtpmap:107 H263-1998/90000",
)

FIXTURES = {
    "asterisk": ASTERISK,
    "freeswitch": FREESWITCH,
    "sipp": SIPP,
    "baresip": BARESIP,
    "chrome": CHROME,
    "sdes": SDES,
    "rfc5118-ipv6-in-sdp": RFC5118_IPV6_IN_SDP,
}


def parse(text: str) -> SessionDescription:
    return SessionDescription.parse(text)


def sdp(*media_lines: str, session: tuple[str, ...] = ("c=IN IP4 198.51.100.1",)) -> str:
    return crlf("v=0", "o=- 1 1 IN IP4 198.51.100.1", "s=-", *session, "t=0 0", *media_lines)


def answer_to(
    offer: str,
    local: MediaCapabilities = DEFAULT_CAPABILITIES,
    *,
    direction: Direction = Direction.SENDRECV,
    crypto: Sequence[CryptoAttribute] = (),
) -> Answer:
    return negotiate(
        parse(offer),
        local,
        "192.0.2.10",
        40000,
        session_id=7,
        version=1,
        direction=direction,
        crypto=crypto,
    )


# Parsing and writing


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_realistic_sdp_round_trips_byte_for_byte(name: str) -> None:
    text = FIXTURES[name]
    description = SessionDescription.parse(text.encode())
    assert bytes(description) == text.encode()
    assert str(description) == text
    assert SessionDescription.parse(str(description)) == description


def test_lf_line_ends_and_trailing_whitespace_are_accepted_and_written_as_crlf() -> None:
    sloppy = ASTERISK.replace("\r\n", "  \n").replace("a=ptime:20", "a=ptime:20\t")
    assert str(parse(sloppy)) == ASTERISK


def test_blank_lines_are_skipped() -> None:
    assert parse(ASTERISK.replace("t=0 0\r\n", "t=0 0\r\n\r\n") + "\r\n") == parse(ASTERISK)


def test_asterisk_offer_gives_codecs_in_m_line_order_with_fmtp_and_ptime() -> None:
    media = parse(ASTERISK).media[0]
    assert [(c.payload_type, c.encoding_name, c.clock_rate) for c in media.codecs] == [
        (0, "PCMU", 8000),
        (8, "PCMA", 8000),
        (9, "G722", 8000),
        (3, "GSM", 8000),
        (101, "telephone-event", 8000),
    ]
    assert media.codec(101) == Codec(101, "telephone-event", 8000, 1, "0-16")
    assert media.ptime == 20
    assert media.direction is Direction.SENDRECV
    assert media.attribute("maxptime") == "150"
    assert media.attribute("sendrecv") == ""
    assert media.attribute("nonexistent") is None


def test_static_payload_types_are_known_without_rtpmap() -> None:
    media = parse(sdp("m=audio 4000 RTP/AVP 0 8 9 18 13")).media[0]
    assert [(c.encoding_name, c.clock_rate, c.channels) for c in media.codecs] == [
        ("PCMU", 8000, 1),
        ("PCMA", 8000, 1),
        ("G722", 8000, 1),
        ("G729", 8000, 1),
        ("CN", 8000, 1),
    ]
    g722 = media.codecs[2]
    assert (g722.clock_rate, g722.sample_rate) == (8000, 16000)
    assert media.codecs[0].sample_rate == 8000


def test_dynamic_payload_type_without_rtpmap_has_no_codec() -> None:
    media = parse(sdp("m=audio 4000 RTP/AVP 0 97")).media[0]
    assert [c.payload_type for c in media.codecs] == [0]
    assert media.formats == ("0", "97")


def test_rtpmap_for_a_payload_type_not_in_the_m_line_is_kept() -> None:
    text = sdp("m=audio 4000 RTP/AVP 0", "a=rtpmap:99 AMR/8000", "a=fmtp:99 octet-align=1")
    description = parse(text)
    assert [c.payload_type for c in description.media[0].codecs] == [0]
    assert Attribute("rtpmap", "99 AMR/8000") in description.media[0].attributes
    assert str(description) == text


def test_opus_fmtp_parameters_are_parsed_with_spaces_after_semicolons() -> None:
    opus = parse(FREESWITCH).media[0].codecs[0]
    assert (opus.encoding_name, opus.clock_rate, opus.channels) == ("opus", 48000, 2)
    assert opus.parameters == {
        "useinbandfec": "1",
        "maxplaybackrate": "16000",
        "sprop-maxcapturerate": "16000",
        "maxaveragebitrate": "12000",
    }
    assert Codec(101, "telephone-event", 8000, 1, "0-16").parameters == {"0-16": ""}


def test_rtcp_attribute_gives_port_and_address() -> None:
    media = parse(FREESWITCH).media[0]
    assert media.rtcp == RtcpAttribute(24601, Connection("10.0.0.5"))
    assert str(media.rtcp) == "24601 IN IP4 10.0.0.5"
    assert media.rtcp_mux is False


def test_chrome_offer_keeps_ice_and_dtls_attributes_verbatim() -> None:
    description = parse(CHROME)
    audio, video, data = description.media
    assert description.attribute("group") == "BUNDLE 0 1"
    assert description.attribute("msid-semantic") == " WMS 7c3d5e6b-0d8b-4f43-9a3b-6a2b6d1f0e11"
    assert audio.attribute("ice-ufrag") == "nSRz"
    assert audio.attribute("fingerprint") == FINGERPRINT
    assert audio.attribute("setup") == "actpass"
    assert audio.attribute("candidate") == (
        "1467250027 1 udp 2122260223 192.168.0.196 46243 typ host generation 0 network-id 1"
    )
    assert audio.rtcp_mux and video.rtcp_mux
    assert audio.rtcp == RtcpAttribute(9, Connection("0.0.0.0"))
    assert audio.proto == "UDP/TLS/RTP/SAVPF"
    assert [c.encoding_name for c in video.codecs] == ["VP8", "rtx"]
    assert data.codecs == () and data.formats == ("webrtc-datachannel",)


def test_telephone_event_is_known_at_8000_and_48000() -> None:
    events = [c for c in parse(CHROME).media[0].codecs if c.encoding_name == "telephone-event"]
    assert [(c.payload_type, c.clock_rate) for c in events] == [(110, 48000), (126, 8000)]


def test_sdes_crypto_attributes_are_parsed_into_tag_suite_and_key_params() -> None:
    first, second = parse(SDES).media[0].crypto
    assert first.tag == 1
    assert first.suite == "AES_CM_128_HMAC_SHA1_80"
    assert first.key_params == ("inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz|2^20|1:4",)
    assert first.session_params == ("KDR=1",)
    assert len(first.key_salt()) == 30
    assert (second.tag, second.suite) == (2, "AES_CM_128_HMAC_SHA1_32")


def test_crypto_inline_key_round_trips() -> None:
    key_salt = bytes(range(30))
    crypto = CryptoAttribute.inline(3, "AES_CM_128_HMAC_SHA1_80", key_salt)
    assert CryptoAttribute.parse(str(crypto)) == crypto
    assert crypto.key_salt() == key_salt


def test_crypto_key_that_is_not_base64_raises_sdp_error() -> None:
    crypto = CryptoAttribute.parse("1 AES_CM_128_HMAC_SHA1_80 inline:not*base64")
    with pytest.raises(SDPError, match="bad crypto key"):
        crypto.key_salt()


def test_rfc5118_ipv6_in_sdp_parses() -> None:
    description = parse(RFC5118_IPV6_IN_SDP)
    assert description.connection == Connection("2001:db8::20", "IP6")
    assert description.origin.address == "2001:db8::20"
    assert description.timings[0].start_time == 3338481189
    assert [description.stream_connection(m) for m in description.media] == [
        Connection("2001:db8::20", "IP6"),
        Connection("2001:db8::20", "IP6"),
    ]
    assert description.media[0].codecs == (Codec(2, "G726-32", 8000),)


def test_rfc5118_media_level_connections_override_and_mix_ipv4_and_ipv6() -> None:
    description = parse(RFC5118_MULT_IP_IN_SDP)
    assert description.connection is None
    audio, video = description.media
    assert description.stream_connection(audio) == Connection("192.0.2.1", "IP4")
    assert description.stream_connection(video) == Connection("2001:db8::1", "IP6")
    assert description.session_name == ""
    assert str(description) == RFC5118_MULT_IP_IN_SDP.replace("s=\r\n", "s= \r\n")


def test_media_connection_overrides_session_connection() -> None:
    description = parse(sdp("m=audio 4000 RTP/AVP 0", "c=IN IP4 203.0.113.9"))
    assert description.connection == Connection("198.51.100.1")
    assert description.stream_connection(description.media[0]) == Connection("203.0.113.9")


def test_unknown_lines_and_optional_fields_are_kept_in_rfc_order() -> None:
    text = crlf(
        "v=0",
        "o=jdoe 2890844526 2890842807 IN IP4 10.47.16.5",
        "s=SDP Seminar",
        "i=A Seminar on the session description protocol",
        "u=http://www.example.com/seminars/sdp.pdf",
        "e=j.doe@example.com (Jane Doe)",
        "p=+1 617 555-6011",
        "c=IN IP4 224.2.17.12/127",
        "b=CT:128",
        "t=2873397496 2873404696",
        "r=7d 1h 0 25h",
        "z=2882844526 -1h 2898848070 0",
        "k=prompt",
        "y=unknown session line",
        "a=recvonly",
        "m=audio 49170/2 RTP/AVP 0",
        "i=main audio",
        "b=AS:64",
        "k=prompt",
        "x=unknown media line",
        "a=sendonly",
    )
    description = parse(text)
    assert str(description) == text
    assert description.extra_lines == (("y", "unknown session line"),)
    assert description.media[0].extra_lines == (("x", "unknown media line"),)
    assert description.media[0].port_count == 2
    assert description.timings[0].repeats == ("7d 1h 0 25h",)
    assert description.connection == Connection("224.2.17.12/127")


def test_missing_t_line_is_accepted_and_written_as_t_0_0() -> None:
    text = crlf("v=0", "o=- 1 1 IN IP4 192.0.2.1", "s=-", "m=audio 4000 RTP/AVP 0")
    assert "t=0 0\r\n" in str(parse(text))


def test_str_and_bytes_input_give_the_same_description() -> None:
    assert parse(BARESIP) == SessionDescription.parse(BARESIP.encode())


def test_latin1_bytes_are_accepted() -> None:
    text = SIPP.replace("s=-", "s=Caf\xe9").encode("latin-1")
    assert SessionDescription.parse(text).session_name == "Caf\xe9"


MALFORMED = [
    ("", "missing v= line"),
    ("\r\n\r\n", "missing v= line"),
    (SIPP.replace("v=0\r\n", ""), "missing v= line"),
    (SIPP.replace("v=0", "v=1"), "bad v= line"),
    (SIPP.replace("o=user1 53655765 2353687637 IN IP4 127.0.0.1\r\n", ""), "missing o= line"),
    (SIPP.replace("s=-\r\n", ""), "missing s= line"),
    (SIPP.replace("o=user1 53655765", "o=user1 x"), "bad o= line"),
    (SIPP.replace("IN IP4 127.0.0.1\r\ns", "IN IP4\r\ns"), "bad o= line"),
    (SIPP + "o=- 1 1 IN IP4 127.0.0.1\r\n", "misplaced o= line"),
    (SIPP.replace("s=-", "s=-\r\ns=again"), "duplicate s= line"),
    (SIPP.replace("s=-", "s=-\r\no=- 1 1 IN IP4 h"), "duplicate o= line"),
    (SIPP.replace("c=IN IP4 127.0.0.1", "c=IN IP4"), "bad c= line"),
    (SIPP.replace("t=0 0", "t=now"), "bad t= line"),
    (SIPP.replace("m=audio 6000 RTP/AVP 0", "m=audio"), "bad m= line"),
    (SIPP.replace("m=audio 6000 RTP/AVP 0", "m=audio 6000"), "bad m= line"),
    (SIPP.replace("6000", "70000"), "bad port"),
    (SIPP.replace("6000", "-1"), "bad port"),
    (SIPP.replace("6000", "6000/x"), "bad port"),
    (SIPP.replace("RTP/AVP 0", "RTP/AVP 128"), "bad payload type"),
    (SIPP.replace("RTP/AVP 0", "RTP/AVP PCMU"), "bad payload type"),
    (SIPP.replace("a=rtpmap:0 PCMU/8000", "a=rtpmap:0 PCMU"), "bad rtpmap attribute"),
    (SIPP.replace("a=rtpmap:0 PCMU/8000", "a=rtpmap:0 PCMU/fast"), "bad rtpmap attribute"),
    (SIPP.replace("a=rtpmap:0 PCMU/8000", "a=rtpmap:256 PCMU/8000"), "bad payload type"),
    (SIPP.replace("a=rtpmap:0 PCMU/8000", "a=fmtp:x annexb=no"), "bad payload type"),
    (SIPP + "a=ptime:soon\r\n", "bad ptime attribute"),
    (SIPP + "a=ptime:0\r\n", "bad ptime attribute"),
    (SIPP + "a=rtcp:99999\r\n", "bad rtcp attribute"),
    (SIPP + "a=crypto:1 AES_CM_128_HMAC_SHA1_80\r\n", "bad crypto attribute"),
    (SIPP + "a=crypto:1 AES_CM_128_HMAC_SHA1_80 nokey\r\n", "bad crypto attribute"),
    (SIPP + "a=\r\n", "bad a= line"),
    (SIPP + "a=:value\r\n", "bad a= line"),
    (SIPP + "b=AS\r\n", "bad b= line"),
    (SIPP + "garbage\r\n", "bad SDP line"),
    (SIPP.replace("t=0 0", "r=7d 1h 0 25h"), "bad r= line"),
    (SIPP.replace("53655765", "9" * 50), "bad o= line"),
    (SIPP.replace("53655765", "\u0661\u0662"), "bad o= line"),
]


@pytest.mark.parametrize(("text", "message"), MALFORMED)
def test_malformed_sdp_raises_sdp_error_with_a_fixed_message(text: str, message: str) -> None:
    with pytest.raises(SDPError) as raised:
        parse(text)
    assert str(raised.value) == message
    assert isinstance(raised.value, ValueError)


def test_non_text_input_raises_sdp_error() -> None:
    with pytest.raises(SDPError, match="SDP must be str or bytes"):
        SessionDescription.parse(42)  # type: ignore[arg-type]


# Direction and hold


def test_direction_is_inherited_from_session_level_and_overridden_per_stream() -> None:
    description = parse(
        sdp(
            "m=audio 4000 RTP/AVP 0",
            "m=audio 4002 RTP/AVP 0",
            "a=inactive",
            session=(
                "c=IN IP4 198.51.100.1",
                "a=sendonly",
            ),
        )
    )
    first, second = description.media
    assert description.direction is Direction.SENDONLY
    assert first.direction is None
    assert description.stream_direction(first) is Direction.SENDONLY
    assert description.stream_direction(second) is Direction.INACTIVE
    assert parse(SIPP).stream_direction(parse(SIPP).media[0]) is Direction.SENDRECV


@pytest.mark.parametrize(
    ("lines", "held"),
    [
        (("a=sendrecv",), False),
        (("a=recvonly",), False),
        ((), False),
        (("a=sendonly",), True),
        (("a=inactive",), True),
        (("c=IN IP4 0.0.0.0",), True),
        (("c=IN IP4 0.0.0.0", "a=sendrecv"), True),
    ],
)
def test_hold_is_sendonly_inactive_or_legacy_zero_address(
    lines: tuple[str, ...], held: bool
) -> None:
    description = parse(sdp("m=audio 4000 RTP/AVP 0", *lines))
    assert description.is_hold(description.media[0]) is held
    assert description.is_hold() is held


def test_session_without_active_streams_is_not_held() -> None:
    assert parse(sdp("m=audio 0 RTP/AVP 0", "a=sendonly")).is_hold() is False


@pytest.mark.parametrize(
    ("offered", "local", "answered"),
    [
        (Direction.SENDRECV, Direction.SENDRECV, Direction.SENDRECV),
        (Direction.SENDONLY, Direction.SENDRECV, Direction.RECVONLY),
        (Direction.RECVONLY, Direction.SENDRECV, Direction.SENDONLY),
        (Direction.INACTIVE, Direction.SENDRECV, Direction.INACTIVE),
        (Direction.SENDRECV, Direction.SENDONLY, Direction.SENDONLY),
        (Direction.SENDONLY, Direction.SENDONLY, Direction.INACTIVE),
        (Direction.RECVONLY, Direction.RECVONLY, Direction.INACTIVE),
        (Direction.SENDRECV, Direction.INACTIVE, Direction.INACTIVE),
    ],
)
def test_answer_direction_follows_rfc3264_section_6_1(
    offered: Direction, local: Direction, answered: Direction
) -> None:
    assert answer_direction(offered, local) is answered


# Offer/answer: answering


def test_pcmu_only_offer_is_answered_with_pcmu_and_no_telephone_event() -> None:
    answer = answer_to(SIPP)
    stream = answer.audio
    assert stream.codec == PCMU
    assert stream.telephone_event is None
    assert (stream.remote_address, stream.remote_port) == ("127.0.0.1", 6000)
    assert (stream.remote_rtcp_address, stream.remote_rtcp_port) == ("127.0.0.1", 6001)
    assert stream.rtcp_mux is False
    assert stream.direction is Direction.SENDRECV
    assert str(answer.description) == crlf(
        "v=0",
        "o=- 7 1 IN IP4 192.0.2.10",
        "s=omlmedia",
        "c=IN IP4 192.0.2.10",
        "t=0 0",
        "m=audio 40000 RTP/AVP 0",
        "a=rtpmap:0 PCMU/8000",
        "a=ptime:20",
        "a=sendrecv",
    )


def test_offerer_preference_wins_pcma_before_pcmu() -> None:
    offer = sdp("m=audio 4000 RTP/AVP 8 0 101", "a=rtpmap:101 telephone-event/8000")
    stream = answer_to(offer).audio
    assert stream.codec.payload_type == 8
    assert stream.codec.encoding_name == "PCMA"
    assert stream.telephone_event is not None and stream.telephone_event.payload_type == 101
    assert answer_to(offer).description.media[0].formats == ("8", "101")


def test_opus_is_chosen_over_g711_when_offered_first_keeping_the_offered_payload_type() -> None:
    answer = answer_to(FREESWITCH)
    media = answer.description.media[0]
    assert answer.audio.codec.payload_type == 102
    assert answer.audio.codec.encoding_name == "opus"
    assert answer.audio.codec.parameters["maxplaybackrate"] == "16000"
    assert media.codec(102) == Codec(102, "opus", 48000, 2, OPUS.fmtp)
    assert answer.audio.telephone_event is None
    assert media.formats == ("102",)


def test_g711_is_chosen_when_we_do_not_support_opus() -> None:
    local = MediaCapabilities((PCMA, PCMU, TELEPHONE_EVENT))
    answer = answer_to(FREESWITCH, local)
    assert answer.audio.codec.encoding_name == "PCMU"
    assert answer.audio.telephone_event == Codec(101, "telephone-event", 8000, 1, "0-16")
    assert answer.description.media[0].formats == ("0", "101")


def test_telephone_event_is_matched_to_the_clock_rate_of_the_chosen_codec() -> None:
    offer = sdp(
        "m=audio 4000 RTP/AVP 111 0 110 126",
        "a=rtpmap:111 opus/48000/2",
        "a=rtpmap:110 telephone-event/48000",
        "a=rtpmap:126 telephone-event/8000",
    )
    assert answer_to(offer).audio.telephone_event == Codec(110, "telephone-event", 48000)
    g711 = MediaCapabilities((PCMU, TELEPHONE_EVENT))
    answer = answer_to(offer, g711)
    assert answer.audio.telephone_event == Codec(126, "telephone-event", 8000)
    assert answer.description.media[0].formats == ("0", "126")


def test_telephone_event_on_dynamic_payload_type_96_is_answered_with_96() -> None:
    offer = sdp(
        "m=audio 4000 RTP/AVP 0 96",
        "a=rtpmap:96 telephone-event/8000",
        "a=fmtp:96 0-15",
    )
    answer = answer_to(offer)
    assert answer.audio.telephone_event == Codec(96, "telephone-event", 8000, 1, "0-15")
    media = answer.description.media[0]
    assert media.formats == ("0", "96")
    assert media.attribute("fmtp") == "96 0-16"


def test_no_common_codec_raises_offer_answer_error_for_488() -> None:
    offer = sdp("m=audio 4000 RTP/AVP 18", "a=fmtp:18 annexb=no")
    with pytest.raises(OfferAnswerError, match="no common audio codec") as raised:
        answer_to(offer)
    assert raised.value.status == 488


def test_offer_without_audio_raises_offer_answer_error() -> None:
    with pytest.raises(OfferAnswerError, match="no acceptable audio stream"):
        answer_to(sdp("m=video 4000 RTP/AVP 31"))


def test_only_telephone_event_in_common_is_no_common_codec() -> None:
    offer = sdp("m=audio 4000 RTP/AVP 18 101", "a=rtpmap:101 telephone-event/8000")
    with pytest.raises(OfferAnswerError, match="no common audio codec"):
        answer_to(offer)


def test_video_stream_is_rejected_with_port_zero_keeping_m_line_count_and_order() -> None:
    offer = sdp(
        "m=video 5000 RTP/AVP 96",
        "a=rtpmap:96 H264/90000",
        "m=audio 4000 RTP/AVP 0",
        "m=audio 4002 RTP/AVP 0",
    )
    answer = answer_to(offer)
    video, audio, second_audio = answer.description.media
    assert (video.media, video.port, video.formats) == ("video", 0, ("96",))
    assert (audio.media, audio.port) == ("audio", 40000)
    assert (second_audio.media, second_audio.port) == ("audio", 0)
    assert answer.streams[0] is None and answer.streams[2] is None
    assert answer.streams[1] is not None and answer.streams[1].index == 1
    assert answer.audio is answer.streams[1]


def test_stream_offered_with_port_zero_stays_rejected() -> None:
    offer = sdp("m=audio 0 RTP/AVP 0", "m=audio 4000 RTP/AVP 8")
    answer = answer_to(offer)
    assert [m.port for m in answer.description.media] == [0, 40000]
    assert answer.audio.codec == PCMA


def test_ptime_is_answered_and_the_offered_ptime_is_what_we_send() -> None:
    offer = sdp("m=audio 4000 RTP/AVP 0", "a=ptime:30")
    answer = answer_to(offer)
    assert answer.description.media[0].ptime == 20
    assert answer.audio.ptime == 30
    no_ptime = MediaCapabilities((PCMU,), ptime=None)
    assert answer_to(offer, no_ptime).description.media[0].ptime == 30
    assert answer_to(SIPP).audio.ptime == 20


def test_rtcp_mux_is_answered_only_when_offered() -> None:
    muxed = answer_to(BARESIP)
    assert muxed.description.media[0].rtcp_mux is True
    assert muxed.audio.rtcp_mux is True
    assert muxed.audio.remote_rtcp_port == 34512
    plain = answer_to(ASTERISK)
    assert plain.description.media[0].rtcp_mux is False
    assert plain.audio.remote_rtcp_port == 14959
    not_local = answer_to(BARESIP, MediaCapabilities((PCMU,), rtcp_mux=False))
    assert not_local.description.media[0].rtcp_mux is False
    assert not_local.audio.remote_rtcp_port == 34513


def test_rtcp_attribute_gives_remote_rtcp_port_and_address() -> None:
    stream = answer_to(sdp("m=audio 4000 RTP/AVP 0", "a=rtcp:4999 IN IP4 203.0.113.1")).audio
    assert (stream.remote_rtcp_address, stream.remote_rtcp_port) == ("203.0.113.1", 4999)


@pytest.mark.parametrize(
    ("offered", "answered"),
    [
        ("a=sendrecv", Direction.SENDRECV),
        ("a=sendonly", Direction.RECVONLY),
        ("a=recvonly", Direction.SENDONLY),
        ("a=inactive", Direction.INACTIVE),
        ("c=IN IP4 0.0.0.0", Direction.RECVONLY),
    ],
)
def test_hold_offers_are_answered_per_rfc3264(offered: str, answered: Direction) -> None:
    answer = answer_to(sdp("m=audio 4000 RTP/AVP 0", offered))
    assert answer.audio.direction is answered
    assert answer.description.media[0].direction is answered


def test_legacy_hold_offer_is_answered_recvonly_and_we_do_not_send() -> None:
    offer = sdp("m=audio 4000 RTP/AVP 0", session=("c=IN IP4 0.0.0.0",))
    answer = answer_to(offer)
    assert parse(offer).is_hold()
    assert answer.audio.direction is Direction.RECVONLY
    assert not answer.audio.direction.sends


def test_we_answer_sendonly_to_a_sendrecv_offer_while_we_hold() -> None:
    answer = answer_to(SIPP, direction=Direction.SENDONLY)
    assert answer.audio.direction is Direction.SENDONLY


def test_sdes_offer_is_answered_with_our_key_under_the_offered_tag() -> None:
    ours = CryptoAttribute.inline(9, "AES_CM_128_HMAC_SHA1_32", bytes(30))
    answer = answer_to(SDES, crypto=[ours])
    media = answer.description.media[0]
    assert media.proto == "RTP/SAVP"
    assert media.crypto == (ours._replace(tag=2),)
    assert answer.audio.local_crypto == ours._replace(tag=2)
    assert answer.audio.remote_crypto is not None and answer.audio.remote_crypto.tag == 2
    assert answer.audio.codec == PCMA


def test_sdes_offer_without_a_common_suite_is_not_acceptable() -> None:
    with pytest.raises(OfferAnswerError):
        answer_to(SDES)
    other = CryptoAttribute.inline(1, "AEAD_AES_256_GCM", bytes(44))
    with pytest.raises(OfferAnswerError):
        answer_to(SDES, crypto=[other])


def test_dtls_srtp_webrtc_offer_is_not_acceptable_on_a_sip_leg() -> None:
    with pytest.raises(OfferAnswerError, match="no acceptable audio stream"):
        answer_to(CHROME)


def test_answer_to_an_ipv6_offer_uses_ip6_connection() -> None:
    answer = negotiate(
        parse(RFC5118_IPV6_IN_SDP),
        MediaCapabilities((Codec(2, "G726-32", 8000),)),
        "2001:db8::10",
        40000,
        session_id=1,
        version=1,
    )
    text = str(answer.description)
    assert "o=- 1 1 IN IP6 2001:db8::10\r\n" in text
    assert "c=IN IP6 2001:db8::10\r\n" in text
    assert "m=video 0 RTP/AVP 107\r\n" in text
    assert answer.audio.remote_address == "2001:db8::20"


@pytest.mark.parametrize("name", ["asterisk", "freeswitch", "sipp", "baresip", "sdes"])
def test_answers_parse_back_to_the_same_description(name: str) -> None:
    crypto = [CryptoAttribute.inline(1, "AES_CM_128_HMAC_SHA1_80", bytes(30))]
    answer = answer_to(FIXTURES[name], crypto=crypto)
    assert parse(str(answer.description)) == answer.description


def test_capabilities_reject_duplicate_payload_types_and_no_codec() -> None:
    with pytest.raises(SDPError, match="duplicate payload type"):
        MediaCapabilities((PCMU, Codec(0, "PCMA", 8000)))
    with pytest.raises(SDPError, match="no audio codec"):
        MediaCapabilities((TELEPHONE_EVENT,))


# Offer/answer: offering


def test_offer_lists_all_our_codecs_with_rtpmap_fmtp_ptime_direction_and_rtcp_mux() -> None:
    offer = create_offer(DEFAULT_CAPABILITIES, 42, 1, "192.0.2.10", 40000)
    assert str(offer) == crlf(
        "v=0",
        "o=- 42 1 IN IP4 192.0.2.10",
        "s=omlmedia",
        "c=IN IP4 192.0.2.10",
        "t=0 0",
        "m=audio 40000 RTP/AVP 111 0 8 9 101 110",
        "a=rtpmap:111 opus/48000/2",
        "a=rtpmap:0 PCMU/8000",
        "a=rtpmap:8 PCMA/8000",
        "a=rtpmap:9 G722/8000",
        "a=rtpmap:101 telephone-event/8000",
        "a=rtpmap:110 telephone-event/48000",
        "a=fmtp:111 minptime=10;useinbandfec=1",
        "a=fmtp:101 0-16",
        "a=fmtp:110 0-16",
        "a=ptime:20",
        "a=sendrecv",
        "a=rtcp-mux",
    )
    assert offer.media[0].codecs == DEFAULT_CAPABILITIES.codecs


def test_offer_with_sdes_keys_is_rtp_savp() -> None:
    key = CryptoAttribute.inline(1, "AES_CM_128_HMAC_SHA1_80", bytes(30))
    offer = create_offer(DEFAULT_CAPABILITIES, 1, 1, "192.0.2.10", 40000, crypto=[key])
    assert offer.media[0].proto == "RTP/SAVP"
    assert offer.media[0].crypto == (key,)


def test_process_answer_gives_negotiated_codec_address_port_and_direction() -> None:
    offer = create_offer(DEFAULT_CAPABILITIES, 42, 1, "192.0.2.10", 40000)
    answer = parse(
        sdp(
            "m=audio 30000 RTP/AVP 8 101",
            "a=rtpmap:8 PCMA/8000",
            "a=rtpmap:101 telephone-event/8000",
            "a=fmtp:101 0-16",
            "a=ptime:30",
        )
    )
    (stream,) = process_answer(offer, answer)
    assert stream is not None
    assert stream.codec == PCMA
    assert stream.telephone_event == TELEPHONE_EVENT
    assert (stream.remote_address, stream.remote_port) == ("198.51.100.1", 30000)
    assert stream.remote_rtcp_port == 30001 and stream.rtcp_mux is False
    assert stream.direction is Direction.SENDRECV
    assert stream.ptime == 30


def test_process_answer_uses_the_answerers_payload_type_and_rtcp_mux() -> None:
    offer = create_offer(DEFAULT_CAPABILITIES, 42, 1, "192.0.2.10", 40000)
    answer = parse(sdp("m=audio 30000 RTP/AVP 96", "a=rtpmap:96 OPUS/48000/2", "a=rtcp-mux"))
    (stream,) = process_answer(offer, answer)
    assert stream is not None
    assert stream.codec == Codec(96, "OPUS", 48000, 2)
    assert stream.rtcp_mux and stream.remote_rtcp_port == 30000


@pytest.mark.parametrize(
    ("answered", "ours"),
    [
        ("a=recvonly", Direction.SENDONLY),
        ("a=sendonly", Direction.RECVONLY),
        ("a=inactive", Direction.INACTIVE),
        ("c=IN IP4 0.0.0.0", Direction.RECVONLY),
    ],
)
def test_process_answer_direction_is_ours_as_the_answer_allows(
    answered: str, ours: Direction
) -> None:
    offer = create_offer(DEFAULT_CAPABILITIES, 42, 1, "192.0.2.10", 40000)
    (stream,) = process_answer(offer, parse(sdp("m=audio 30000 RTP/AVP 0", answered)))
    assert stream is not None and stream.direction is ours


def test_process_answer_rejected_stream_is_none() -> None:
    offer = create_offer(DEFAULT_CAPABILITIES, 42, 1, "192.0.2.10", 40000)
    assert process_answer(offer, parse(sdp("m=audio 0 RTP/AVP 0"))) == (None,)


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (sdp("m=audio 30000 RTP/AVP 18"), "answer codec was not offered"),
        (sdp("m=audio 30000 RTP/AVP 0", "m=audio 0 RTP/AVP 0"), "answer does not match offer"),
        (sdp("m=video 30000 RTP/AVP 31"), "answer does not match offer"),
        (sdp("m=audio 30000 RTP/AVP 0", session=()), "answer has no connection address"),
    ],
)
def test_process_answer_that_does_not_fit_the_offer_raises(answer: str, message: str) -> None:
    offer = create_offer(DEFAULT_CAPABILITIES, 42, 1, "192.0.2.10", 40000)
    with pytest.raises(OfferAnswerError, match=message):
        process_answer(offer, parse(answer))


def test_process_answer_checks_sdes_tag_against_our_offer() -> None:
    key = CryptoAttribute.inline(1, "AES_CM_128_HMAC_SHA1_80", bytes(30))
    offer = create_offer(DEFAULT_CAPABILITIES, 1, 1, "192.0.2.10", 40000, crypto=[key])
    theirs = CryptoAttribute.inline(1, "AES_CM_128_HMAC_SHA1_80", bytes(range(30)))
    answer = parse(sdp("m=audio 30000 RTP/SAVP 0", f"a=crypto:{theirs}"))
    (stream,) = process_answer(offer, answer)
    assert stream is not None
    assert (stream.local_crypto, stream.remote_crypto) == (key, theirs)
    wrong = parse(sdp("m=audio 30000 RTP/SAVP 0", f"a=crypto:{theirs._replace(tag=5)}"))
    with pytest.raises(OfferAnswerError, match="answer crypto was not offered"):
        process_answer(offer, wrong)


def test_our_offer_answered_by_our_own_negotiate_agrees_on_both_sides() -> None:
    offer = create_offer(DEFAULT_CAPABILITIES, 1, 1, "192.0.2.10", 40000)
    peer = MediaCapabilities((PCMA, PCMU, TELEPHONE_EVENT), rtcp_mux=False)
    answer = negotiate(offer, peer, "198.51.100.7", 50000, session_id=2, version=1)
    (stream,) = process_answer(offer, parse(bytes(answer.description).decode()))
    assert stream is not None
    assert stream.codec == answer.audio.codec == PCMU
    assert stream.telephone_event is not None
    assert stream.telephone_event.payload_type == 101
    assert (stream.remote_address, stream.remote_port) == ("198.51.100.7", 50000)
    assert answer.audio.remote_port == 40000


# SDPSession: versions, hold and resume


def make_session() -> SDPSession:
    return SDPSession(DEFAULT_CAPABILITIES, "192.0.2.10", 40000, session_id=3141)


def test_session_hold_and_resume_offers_keep_codecs_and_increment_the_version() -> None:
    session = make_session()
    first = session.create_offer()
    session.process_answer(parse(sdp("m=audio 30000 RTP/AVP 0", "a=rtpmap:0 PCMU/8000")))
    hold = session.hold_offer()
    resume = session.resume_offer()
    assert [o.origin.session_version for o in (first, hold, resume)] == [1, 2, 3]
    assert {o.origin.session_id for o in (first, hold, resume)} == {3141}
    assert hold.media[0].codecs == first.media[0].codecs == resume.media[0].codecs
    assert hold.media[0].direction is Direction.SENDONLY
    assert resume.media[0].direction is Direction.SENDRECV
    assert [a.name for a in hold.media[0].attributes].count("sendonly") == 1
    assert str(resume).replace("o=- 3141 3", "o=- 3141 1") == str(first)


def test_session_identical_reoffer_keeps_the_version_per_rfc3264_section_8() -> None:
    session = make_session()
    first = session.create_offer()
    again = session.create_offer()
    assert again.origin.session_version == first.origin.session_version
    assert again == first


def test_session_answers_then_holds_with_the_negotiated_codec_and_payload_types() -> None:
    session = make_session()
    answer = session.negotiate(parse(ASTERISK))
    assert answer.description.origin.session_version == 1
    hold = session.hold_offer()
    assert hold.origin.session_version == 2
    assert hold.media[0].formats == ("0", "101")
    assert hold.media[0].direction is Direction.SENDONLY
    streams = session.process_answer(parse(ASTERISK.replace("a=sendrecv", "a=recvonly")))
    assert streams[0] is not None and streams[0].direction is Direction.SENDONLY


def test_session_keeps_holding_when_the_peer_reoffers_sendrecv() -> None:
    session = make_session()
    session.negotiate(parse(ASTERISK))
    session.hold_offer()
    session.process_answer(parse(ASTERISK.replace("a=sendrecv", "a=recvonly")))
    reanswer = session.negotiate(parse(ASTERISK.replace("1928374651 1928374651", "1928374651 2")))
    assert reanswer.audio.direction is Direction.SENDONLY
    assert reanswer.description.origin.session_version == 2
    resume = session.resume_offer()
    assert resume.media[0].direction is Direction.SENDRECV
    assert resume.origin.session_version == 3


def test_session_answers_peer_hold_recvonly_and_then_holds_with_inactive() -> None:
    session = make_session()
    session.negotiate(parse(ASTERISK))
    held = session.negotiate(parse(ASTERISK.replace("a=sendrecv", "a=sendonly")))
    assert held.audio.direction is Direction.RECVONLY
    assert held.description.origin.session_version == 2
    hold = session.hold_offer()
    assert hold.media[0].direction is Direction.INACTIVE
    assert hold.origin.session_version == 3


def test_session_answering_the_same_offer_twice_keeps_the_version() -> None:
    session = make_session()
    first = session.negotiate(parse(ASTERISK))
    second = session.negotiate(parse(ASTERISK))
    assert second.description == first.description
    assert second.description.origin.session_version == 1


def test_session_failed_reoffer_leaves_the_session_unchanged() -> None:
    session = make_session()
    first = session.negotiate(parse(ASTERISK))
    with pytest.raises(OfferAnswerError):
        session.negotiate(parse(sdp("m=audio 4000 RTP/AVP 18")))
    assert session.local == first.description
    assert session.hold_offer().origin.session_version == 2


def test_session_process_answer_without_an_offer_raises() -> None:
    with pytest.raises(OfferAnswerError, match="no offer pending"):
        make_session().process_answer(parse(SIPP))


def test_an_srtp_offer_without_a_usable_suite_is_refused_with_its_own_reason() -> None:
    offer = SessionDescription.parse(
        "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"
        "m=audio 4000 RTP/SAVP 0\r\n"
        "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz\r\n"
    )
    with pytest.raises(OfferAnswerError, match="no usable SRTP crypto suite"):
        negotiate(offer, DEFAULT_CAPABILITIES, "192.0.2.2", 5000, session_id=1, version=1)
    with pytest.raises(OfferAnswerError, match="no usable SRTP crypto suite"):
        negotiate(
            offer,
            DEFAULT_CAPABILITIES,
            "192.0.2.2",
            5000,
            session_id=1,
            version=1,
            crypto=[offer.media[0].crypto[0]],
            accept_crypto=lambda crypto: False,
        )


def test_descriptions_built_by_keyword_or_replace_derive_their_values_again() -> None:
    """The hand-written constructors take the fields by position or keyword as the generated ones
    did, and derive codecs, direction and ptime from the new attributes on ``replace``."""
    media = MediaDescription(
        media="audio",
        port=4000,
        proto="RTP/AVP",
        formats=("0", "8"),
        attributes=(Attribute("ptime", "30"), Attribute("recvonly")),
    )
    assert media == MediaDescription(
        "audio", 4000, "RTP/AVP", ("0", "8"), None, None, None, (), None, media.attributes
    )
    assert (media.ptime, media.direction, [c.payload_type for c in media.codecs]) == (
        30,
        Direction.RECVONLY,
        [0, 8],
    )
    changed = dataclasses.replace(media, attributes=(Attribute("inactive"),), formats=("8",))
    assert (changed.ptime, changed.direction, [c.payload_type for c in changed.codecs]) == (
        None,
        Direction.INACTIVE,
        [8],
    )
    origin = Origin("-", 1, 2, "192.0.2.1")
    session = SessionDescription(origin=origin, media=(media,), attributes=(Attribute("sendonly"),))
    assert session.direction is Direction.SENDONLY
    assert session.session_name == "-" and session.timings == (Timing(),)
    assert hash(session) == hash(
        SessionDescription(origin, "-", (media,), None, (Timing(),), session.attributes)
    )
    assert dataclasses.replace(session, attributes=()).direction is None
    assert parse(str(session)) == session
