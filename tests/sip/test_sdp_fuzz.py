"""Property tests of `sip.sdp`: random and mutated SDP raise only `SDPError`, and whatever parses
writes back to text that parses to the same description (RFC 8866 round trip)."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sip.sdp import (
    DEFAULT_CAPABILITIES,
    OfferAnswerError,
    SDPError,
    SessionDescription,
    create_offer,
    negotiate,
    process_answer,
)

FUZZ = settings(
    max_examples=300,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

SEEDS = [
    (
        "v=0\r\no=- 1928374651 1928374651 IN IP4 192.168.1.10\r\ns=Asterisk\r\n"
        "c=IN IP4 192.168.1.10\r\nt=0 0\r\nm=audio 14958 RTP/AVP 0 8 9 101\r\n"
        "a=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
        "a=fmtp:101 0-16\r\na=ptime:20\r\na=rtcp:14959\r\na=sendrecv\r\n"
    ),
    (
        "v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
        "a=group:BUNDLE 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111 126\r\nc=IN IP4 0.0.0.0\r\n"
        "a=rtcp:9 IN IP4 0.0.0.0\r\na=ice-ufrag:nSRz\r\na=setup:actpass\r\na=mid:0\r\n"
        "a=rtcp-mux\r\na=rtpmap:111 opus/48000/2\r\na=fmtp:111 minptime=10;useinbandfec=1\r\n"
        "a=rtpmap:126 telephone-event/8000\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n"
        "a=sctp-port:5000\r\n"
    ),
    (
        "v=0\r\no=- 20518 0 IN IP6 2001:db8::1\r\ns=SDP Data\r\nc=IN IP6 2001:db8::1\r\n"
        "t=0 0\r\nm=audio 11780 RTP/SAVP 8 0\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 "
        "inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz|2^20|1:4\r\na=sendonly\r\n"
        "m=video 0 RTP/AVP 31\r\n"
    ),
]

SDP_CHARS = st.sampled_from(
    list("0123456789 abcdefghijklmnopqrstuvwxyzIPNAVTR/:;.=-+\t\r\n#\x00é∂")
)
LETTERS = st.sampled_from(list("vosiuepcbtrzkamxy "))
LINE = st.builds(
    lambda letter, value: f"{letter}={value}", LETTERS, st.text(SDP_CHARS, max_size=40)
)
ATTRIBUTE = st.builds(
    lambda name, value: f"a={name}:{value}",
    st.sampled_from(
        ["rtpmap", "fmtp", "ptime", "rtcp", "rtcp-mux", "crypto", "sendonly", "inactive", "x"]
    ),
    st.text(SDP_CHARS, max_size=40),
)
MEDIA = st.builds(
    lambda media, port, proto, formats: f"m={media} {port} {proto} {formats}",
    st.sampled_from(["audio", "video", "application", ""]),
    st.one_of(st.integers(-1, 70000).map(str), st.text(SDP_CHARS, max_size=6)),
    st.sampled_from(["RTP/AVP", "RTP/SAVP", "RTP/AVPF", "UDP/TLS/RTP/SAVPF", "udptl", "x"]),
    st.text(SDP_CHARS, max_size=12),
)
HEADER = "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"


def check(data: str | bytes) -> None:
    """Parse must succeed or raise SDPError; a success must round-trip and negotiate cleanly."""
    try:
        description = SessionDescription.parse(data)
    except SDPError:
        return
    text = str(description)
    again = SessionDescription.parse(text)
    assert again == description
    assert str(again) == text
    for media in description.media:
        description.is_hold(media)
        description.stream_direction(media)
        for codec in media.codecs:
            assert 0 <= codec.payload_type <= 127
            codec.parameters  # noqa: B018
        for crypto in media.crypto:
            try:
                crypto.key_salt()
            except SDPError:
                pass
    try:
        answer = negotiate(
            description, DEFAULT_CAPABILITIES, "192.0.2.9", 4000, session_id=1, version=1
        )
    except OfferAnswerError:
        pass
    else:
        assert len(answer.description.media) == len(description.media)
        assert SessionDescription.parse(bytes(answer.description)) == answer.description
    offer = create_offer(DEFAULT_CAPABILITIES, 1, 1, "192.0.2.9", 4000)
    try:
        process_answer(offer, description)
    except OfferAnswerError:
        pass


@FUZZ
@given(st.text(SDP_CHARS, max_size=300))
def test_random_text_raises_only_sdp_error(text: str) -> None:
    check(text)


@FUZZ
@given(st.binary(max_size=300))
def test_random_bytes_raise_only_sdp_error(data: bytes) -> None:
    check(data)


@FUZZ
@given(st.lists(st.one_of(LINE, ATTRIBUTE, MEDIA), max_size=25), st.booleans())
def test_random_lines_after_a_valid_header_raise_only_sdp_error(
    lines: list[str], lf_only: bool
) -> None:
    text = HEADER + "".join(line + "\r\n" for line in lines)
    check(text.replace("\r\n", "\n") if lf_only else text)


MUTATION = st.tuples(
    st.sampled_from(["delete", "insert", "replace", "drop_line", "dup_line", "swap_lines"]),
    st.integers(0, 10_000),
    st.integers(0, 10_000),
    st.text(SDP_CHARS, min_size=1, max_size=8),
)


def mutate(text: str, mutation: tuple[str, int, int, str]) -> str:
    kind, first, second, chunk = mutation
    if kind in ("delete", "insert", "replace"):
        position = first % (len(text) + 1)
        end = position + second % 8
        if kind == "delete":
            return text[:position] + text[end:]
        if kind == "insert":
            return text[:position] + chunk + text[position:]
        return text[:position] + chunk + text[end:]
    lines = text.split("\r\n")
    i, j = first % len(lines), second % len(lines)
    if kind == "drop_line":
        del lines[i]
    elif kind == "dup_line":
        lines.insert(j, lines[i])
    else:
        lines[i], lines[j] = lines[j], lines[i]
    return "\r\n".join(lines)


@FUZZ
@given(st.sampled_from(SEEDS), st.lists(MUTATION, min_size=1, max_size=6))
def test_mutated_real_sdp_raises_only_sdp_error(
    seed: str, mutations: list[tuple[str, int, int, str]]
) -> None:
    text = seed
    for mutation in mutations:
        text = mutate(text, mutation)
    check(text)
    check(text.encode("utf-8"))


def test_seeds_parse_and_negotiate() -> None:
    for seed in SEEDS:
        assert str(SessionDescription.parse(seed)) == seed
    answer = negotiate(
        SessionDescription.parse(SEEDS[0]),
        DEFAULT_CAPABILITIES,
        "192.0.2.9",
        4000,
        session_id=1,
        version=1,
    )
    assert answer.audio.codec.encoding_name == "PCMU"
