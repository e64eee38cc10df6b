"""Tests of media.srtp: RFC 3711 reference packets, an independent RFC 3711 transcription,
round trips per suite, replay and tamper rejection, SDES choice (RFC 4568) and re-keying."""

from __future__ import annotations

import base64
import hashlib
import hmac
import struct

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import given, settings
from hypothesis import strategies as st

from media.rtp import rtp_header
from media.srtp import (
    AEAD_AES_128_GCM,
    AEAD_AES_256_GCM,
    AES_CM_128_HMAC_SHA1_32,
    AES_CM_128_HMAC_SHA1_80,
    DEFAULT_SUITES,
    SUITES,
    SrtpError,
    SrtpKey,
    SrtpSession,
    UnsupportedCryptoError,
    answer_crypto,
    generate_crypto,
    is_usable,
    offer_crypto,
    session_crypto,
)
from sip.sdp import (
    DEFAULT_CAPABILITIES,
    CryptoAttribute,
    SessionDescription,
    create_offer,
    negotiate,
    process_answer,
)

RFC3711_MASTER_KEY = bytes.fromhex("E1F97A0D3E018BE0D64FA32C06DE4139")
RFC3711_MASTER_SALT = bytes.fromhex("0EC675AD498AFEEBB6960B3AABE6")
"""The master key and salt of RFC 3711 Appendix B.3, also libsrtp's `test_key`."""

REFERENCE_RTP = bytes.fromhex("800f1234decafbadcafebabe") + b"\xab" * 16
REFERENCE_SRTP = bytes.fromhex(
    "800f1234decafbadcafebabe4e55dc4ce79978d88ca4d215949d2402b78d6acc99ea179b8dbb"
)
REFERENCE_RTCP = bytes.fromhex("81c8000bcafebabe") + b"\xab" * 16
REFERENCE_SRTCP = bytes.fromhex(
    "81c8000bcafebabe7128035be487b9bdbef89041f977a5a880000001993e08cd54d6c1230798"
)
"""libsrtp's `srtp_validate()` packets (test/srtp_driver.c) under the RFC 3711 B.3 key."""

GCM_KEY_SALT = bytes(range(16)) + bytes(range(0xA0, 0xAC))
REFERENCE_SRTP_GCM = bytes.fromhex(
    "800f1234decafbadcafebabec5002ede04cfdd2eb91159e0880aa06ed2976826f796b201df3131a127e8a392"
)
REFERENCE_SRTCP_GCM = bytes.fromhex(
    "81c8000bcafebabec98b8b5df0392a55852b6c21ac8e7025c52c6fbea2b3b446ea31123ba88ce61e80000001"
)
"""libsrtp's `srtp_validate_gcm()` packets (AEAD_AES_128_GCM, RFC 7714)."""


def crypto(suite: str, key_salt: bytes, tag: int = 1) -> CryptoAttribute:
    return CryptoAttribute.inline(tag, suite, key_salt)


def packet(sequence: int, ssrc: int = 0x11223344, payload: bytes = bytes(range(160))) -> bytes:
    return rtp_header(0, False, sequence & 0xFFFF, 160 * sequence & 0xFFFFFFFF, ssrc) + payload


def pair(suite: str = AES_CM_128_HMAC_SHA1_80) -> tuple[SrtpSession, SrtpSession]:
    """Two ends of a leg, each with its own contexts, keyed as offer/answer would key them."""
    a, b = generate_crypto(1, suite), generate_crypto(1, suite)
    return SrtpSession(a, b), SrtpSession(b, a)


# An independent transcription of RFC 3711 (AES-CM, HMAC-SHA1) on `cryptography`.


def aes_cm(key: bytes, iv: bytes, length: int) -> bytes:
    encryptor = Cipher(algorithms.AES(key), modes.CTR(iv)).encryptor()
    return encryptor.update(bytes(length)) + encryptor.finalize()


def derive(master_key: bytes, master_salt: bytes, label: int, length: int) -> bytes:
    """RFC 3711 §4.3.1 with key_derivation_rate 0: x = (label || 0) XOR master_salt."""
    x = bytearray(master_salt)
    x[7] ^= label
    return aes_cm(master_key, bytes(x) + b"\x00\x00", length)


def reference_protect(
    master_key: bytes, master_salt: bytes, plain: bytes, rollover: int, tag_length: int = 10
) -> bytes:
    """RFC 3711 §3.3, §4.1.1, §4.2.1 for a packet without CSRC or extension."""
    cipher_key = derive(master_key, master_salt, 0, 16)
    auth_key = derive(master_key, master_salt, 1, 20)
    salt = derive(master_key, master_salt, 2, 14)
    sequence, ssrc = struct.unpack_from("!H4xI", plain, 2)
    index = (rollover << 16) | sequence
    iv = int.from_bytes(salt + b"\x00\x00") ^ (ssrc << 64) ^ (index << 16)
    payload = plain[12:]
    keystream = aes_cm(cipher_key, iv.to_bytes(16), len(payload))
    encrypted = plain[:12] + bytes(p ^ k for p, k in zip(payload, keystream, strict=True))
    tag = hmac.new(auth_key, encrypted + struct.pack("!I", rollover), hashlib.sha1).digest()
    return encrypted + tag[:tag_length]


def test_key_derivation_of_the_reference_follows_rfc3711_appendix_b3() -> None:
    assert derive(RFC3711_MASTER_KEY, RFC3711_MASTER_SALT, 0, 16) == bytes.fromhex(
        "C61E7A93744F39EE10734AFE3FF7A087"
    )
    assert derive(RFC3711_MASTER_KEY, RFC3711_MASTER_SALT, 2, 14) == bytes.fromhex(
        "30CBBC08863D8C85D49DB34A9AE1"
    )
    assert derive(RFC3711_MASTER_KEY, RFC3711_MASTER_SALT, 1, 20) == bytes.fromhex(
        "CEBE321F6FF7716B6FD4AB49AF256A156D38BAA4"
    )


def test_reference_packets_of_libsrtp_are_reproduced_and_read() -> None:
    key = crypto(AES_CM_128_HMAC_SHA1_80, RFC3711_MASTER_KEY + RFC3711_MASTER_SALT)
    sender, receiver = SrtpSession(key, key), SrtpSession(key, key)
    assert sender.protect_rtp(REFERENCE_RTP) == REFERENCE_SRTP
    assert sender.protect_rtcp(REFERENCE_RTCP) == REFERENCE_SRTCP
    assert receiver.unprotect_rtp(REFERENCE_SRTP) == REFERENCE_RTP
    assert receiver.unprotect_rtcp(REFERENCE_SRTCP) == REFERENCE_RTCP


def test_reference_gcm_packets_of_libsrtp_are_reproduced_and_read() -> None:
    key = crypto(AEAD_AES_128_GCM, GCM_KEY_SALT)
    sender, receiver = SrtpSession(key, key), SrtpSession(key, key)
    assert sender.protect_rtp(REFERENCE_RTP) == REFERENCE_SRTP_GCM
    assert sender.protect_rtcp(REFERENCE_RTCP) == REFERENCE_SRTCP_GCM
    assert receiver.unprotect_rtp(REFERENCE_SRTP_GCM) == REFERENCE_RTP
    assert receiver.unprotect_rtcp(REFERENCE_SRTCP_GCM) == REFERENCE_RTCP


def test_reference_packet_matches_the_independent_transcription() -> None:
    assert (
        reference_protect(RFC3711_MASTER_KEY, RFC3711_MASTER_SALT, REFERENCE_RTP, 0)
        == REFERENCE_SRTP
    )


@pytest.mark.parametrize(
    ("suite", "tag_length"), [(AES_CM_128_HMAC_SHA1_80, 10), (AES_CM_128_HMAC_SHA1_32, 4)]
)
def test_protect_matches_the_independent_transcription_across_a_sequence_rollover(
    suite: str, tag_length: int
) -> None:
    master_key, master_salt = bytes(range(16)), bytes(range(100, 114))
    key = crypto(suite, master_key + master_salt)
    sender, receiver = SrtpSession(key, key), SrtpSession(key, key)
    for number in range(65530, 65542):
        plain = packet(number, payload=bytes([number & 0xFF]) * 160)
        protected = sender.protect_rtp(plain)
        rollover = number >> 16
        assert protected == reference_protect(master_key, master_salt, plain, rollover, tag_length)
        assert receiver.unprotect_rtp(protected) == plain


@pytest.mark.parametrize("suite", list(SUITES))
def test_every_suite_round_trips_rtp_and_rtcp_both_ways(suite: str) -> None:
    a, b = pair(suite)
    for number in range(100):
        plain = packet(number)
        protected = a.protect_rtp(plain)
        assert protected[:12] == plain[:12]
        assert protected[12:172] != plain[12:]
        assert b.unprotect_rtp(protected) == plain
        assert a.unprotect_rtp(b.protect_rtp(plain)) == plain
    rtcp = bytes.fromhex("80c90001") + struct.pack("!I", 0x11223344)
    assert b.unprotect_rtcp(a.protect_rtcp(rtcp)) == rtcp
    assert a.unprotect_rtcp(b.protect_rtcp(rtcp)) == rtcp


@pytest.mark.parametrize(
    ("suite", "rtp_overhead", "rtcp_overhead"),
    [
        (AES_CM_128_HMAC_SHA1_80, 10, 14),
        (AES_CM_128_HMAC_SHA1_32, 4, 14),
        (AEAD_AES_128_GCM, 16, 20),
        (AEAD_AES_256_GCM, 16, 20),
    ],
)
def test_each_suite_adds_its_tag_length(suite: str, rtp_overhead: int, rtcp_overhead: int) -> None:
    a, _ = pair(suite)
    plain = packet(1)
    rtcp = bytes.fromhex("80c90001") + struct.pack("!I", 0x11223344)
    assert len(a.protect_rtp(plain)) == len(plain) + rtp_overhead
    assert len(a.protect_rtcp(rtcp)) == len(rtcp) + rtcp_overhead


@pytest.mark.parametrize("suite", list(SUITES))
def test_a_replayed_packet_is_rejected(suite: str) -> None:
    a, b = pair(suite)
    first = a.protect_rtp(packet(1))
    b.unprotect_rtp(first)
    with pytest.raises(SrtpError, match=r"^SRTP packet is a replay$"):
        b.unprotect_rtp(first)
    rtcp = a.protect_rtcp(bytes.fromhex("80c90001") + struct.pack("!I", 0x11223344))
    b.unprotect_rtcp(rtcp)
    with pytest.raises(SrtpError, match=r"^SRTP packet is a replay$"):
        b.unprotect_rtcp(rtcp)


def test_a_packet_older_than_the_replay_window_is_rejected() -> None:
    a, b = pair()
    old = a.protect_rtp(packet(1))
    for number in range(2, 300):
        b.unprotect_rtp(a.protect_rtp(packet(number)))
    with pytest.raises(SrtpError, match=r"^SRTP packet is a replay$"):
        b.unprotect_rtp(old)


def test_late_packets_inside_the_window_are_accepted_once() -> None:
    a, b = pair()
    protected = [a.protect_rtp(packet(number)) for number in range(50)]
    for number in [*range(0, 50, 2), *range(1, 50, 2)]:
        assert b.unprotect_rtp(protected[number]) == packet(number)


@pytest.mark.parametrize("suite", list(SUITES))
@pytest.mark.parametrize("position", [1, 3, 8, 12, 100, -1])
def test_a_tampered_packet_fails_authentication(suite: str, position: int) -> None:
    a, b = pair(suite)
    protected = bytearray(a.protect_rtp(packet(7)))
    protected[position] ^= 0x01
    with pytest.raises(SrtpError, match=r"^SRTP authentication failed$"):
        b.unprotect_rtp(bytes(protected))
    assert b.unprotect_rtp(a.protect_rtp(packet(8))) == packet(8)


@pytest.mark.parametrize("suite", list(SUITES))
def test_a_tampered_rtcp_packet_fails_authentication(suite: str) -> None:
    a, b = pair(suite)
    protected = bytearray(a.protect_rtcp(bytes.fromhex("80c90001") + b"\x11\x22\x33\x44"))
    protected[9] ^= 0x80
    with pytest.raises(SrtpError, match=r"^SRTP authentication failed$"):
        b.unprotect_rtcp(bytes(protected))


def test_a_packet_under_another_key_fails_authentication() -> None:
    a, _ = pair()
    _, b = pair()
    with pytest.raises(SrtpError, match=r"^SRTP authentication failed$"):
        b.unprotect_rtp(a.protect_rtp(packet(1)))


@pytest.mark.parametrize(
    "data",
    [b"", b"\x80", bytes(11), packet(1)[:12], b"\x80" * 30, bytes(1600), bytearray(packet(3))],
)
def test_truncated_garbage_and_oversized_input_raise_only_srtp_error(data: bytes) -> None:
    a, b = pair()
    for operation in (b.unprotect_rtp, b.unprotect_rtcp):
        with pytest.raises(SrtpError):
            operation(data)
    assert b.unprotect_rtp(a.protect_rtp(packet(1))) == packet(1)


def test_protecting_an_oversized_or_repeated_packet_raises_srtp_error() -> None:
    a, _ = pair()
    with pytest.raises(SrtpError, match=r"^SRTP packet is too long$"):
        a.protect_rtp(packet(1, payload=bytes(1500)))
    a.protect_rtp(packet(2))
    with pytest.raises(SrtpError, match=r"^SRTP packet is a replay$"):
        a.protect_rtp(packet(2))
    with pytest.raises(SrtpError, match=r"^SRTP packet is malformed$"):
        a.protect_rtp(b"\x80")


FUZZ_PAIR = pair()


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_any_datagram_raises_srtp_error_or_nothing(data: bytes) -> None:
    _, b = FUZZ_PAIR
    for operation in (b.unprotect_rtp, b.unprotect_rtcp):
        try:
            operation(data)
        except SrtpError:
            pass


def test_a_new_ssrc_needs_no_new_session() -> None:
    a, b = pair()
    for ssrc in (1, 2, 0xFFFFFFFF):
        assert b.unprotect_rtp(a.protect_rtp(packet(10, ssrc))) == packet(10, ssrc)


@pytest.mark.parametrize(
    ("suite", "length"), [(s.name, s.key_salt_length) for s in SUITES.values()]
)
def test_generated_keys_have_the_suite_length_and_differ(suite: str, length: int) -> None:
    first, second = generate_crypto(5, suite), generate_crypto(5, suite)
    assert first.tag == 5 and first.suite == suite and first.session_params == ()
    assert len(first.key_salt()) == length
    assert first.key_salt() != second.key_salt()
    assert str(first) == f"5 {suite} inline:{base64.b64encode(first.key_salt()).decode()}"


def test_offer_lists_every_default_suite_with_tags_from_one() -> None:
    offered = offer_crypto()
    assert [(c.tag, c.suite) for c in offered] == list(enumerate(DEFAULT_SUITES, 1))


def test_generating_an_unknown_suite_is_refused() -> None:
    with pytest.raises(UnsupportedCryptoError, match=r"^unsupported crypto suite$"):
        generate_crypto(1, "F8_128_HMAC_SHA1_80")


KEY_80 = base64.b64encode(bytes(30)).decode()
KEY_GCM = base64.b64encode(bytes(28)).decode()


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (f"1 F8_128_HMAC_SHA1_80 inline:{KEY_80}", "unsupported crypto suite"),
        (f"1 AES_256_CM_HMAC_SHA1_80 inline:{KEY_80}", "unsupported crypto suite"),
        (
            f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_80} UNENCRYPTED_SRTP",
            "unsupported crypto session parameter",
        ),
        (
            f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_80} UNENCRYPTED_SRTCP",
            "unsupported crypto session parameter",
        ),
        (
            f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_80} UNAUTHENTICATED_SRTP",
            "unsupported crypto session parameter",
        ),
        (
            f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_80} KDR=23",
            "unsupported crypto session parameter",
        ),
        (
            f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_80} FEC_ORDER=SRTP_FEC",
            "unsupported crypto session parameter",
        ),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_80}|2^20|1:4", "unsupported crypto key parameter"),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_80}|1:4", "unsupported crypto key parameter"),
        (
            f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_80}|2^20|1:4;inline:{KEY_80}|2^20|2:4",
            "unsupported crypto key parameter",
        ),
        (f"1 AES_CM_128_HMAC_SHA1_80 uri:{KEY_80}", "unsupported crypto key parameter"),
        ("1 AES_CM_128_HMAC_SHA1_80 inline:not*base64", "bad crypto key"),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_GCM}", "bad crypto key length"),
        (f"1 AEAD_AES_128_GCM inline:{KEY_80}", "bad crypto key length"),
    ],
)
def test_unusable_crypto_lines_are_refused_with_a_reason(line: str, message: str) -> None:
    with pytest.raises(UnsupportedCryptoError, match=f"^{message}$"):
        SrtpKey.from_crypto(CryptoAttribute.parse(line))
    assert not is_usable(CryptoAttribute.parse(line))
    assert answer_crypto([CryptoAttribute.parse(line)]) is None


@pytest.mark.parametrize(
    ("line", "window_size"),
    [
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_80}", 128),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_80}|2^31", 128),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_80}|1048576", 128),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_80} WSH=512", 512),
        (f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_80} WSH=8", 64),
        (f"1 AEAD_AES_128_GCM inline:{KEY_GCM}", 128),
        (f"1 AEAD_AES_128_GCM inline:{KEY_GCM.rstrip('=')}", 128),
    ],
)
def test_usable_crypto_lines_are_accepted(line: str, window_size: int) -> None:
    key = SrtpKey.from_crypto(CryptoAttribute.parse(line))
    assert is_usable(CryptoAttribute.parse(line))
    assert key.window_size == window_size
    assert key.key_salt == bytes(key.suite.key_salt_length)


def test_answer_takes_the_first_usable_offered_line_with_a_fresh_key_under_its_tag() -> None:
    offered = [
        CryptoAttribute.parse(f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_80} UNENCRYPTED_SRTP"),
        CryptoAttribute.parse(f"2 AES_256_CM_HMAC_SHA1_80 inline:{KEY_80}"),
        CryptoAttribute.parse(f"3 AES_CM_128_HMAC_SHA1_32 inline:{KEY_80}|2^20|1:4"),
        CryptoAttribute.parse(f"4 AEAD_AES_128_GCM inline:{KEY_GCM}"),
        CryptoAttribute.parse(f"5 AES_CM_128_HMAC_SHA1_80 inline:{KEY_80}"),
    ]
    chosen = answer_crypto(offered)
    assert chosen is not None
    local, remote = chosen
    assert remote is offered[3]
    assert (local.tag, local.suite) == (4, AEAD_AES_128_GCM)
    assert len(local.key_salt()) == 28 and local.key_salt() != bytes(28)
    chosen = answer_crypto(offered, suites=(AES_CM_128_HMAC_SHA1_80,))
    assert chosen is not None and chosen[1] is offered[4]
    assert answer_crypto([]) is None


def test_a_session_needs_the_same_suite_both_ways() -> None:
    with pytest.raises(UnsupportedCryptoError, match=r"^crypto suites differ$"):
        SrtpSession(generate_crypto(1), generate_crypto(1, AEAD_AES_128_GCM))


def test_offer_and_answer_through_sdp_key_both_ends() -> None:
    offer = create_offer(DEFAULT_CAPABILITIES, 1, 1, "192.0.2.1", 4000, crypto=offer_crypto())
    offer = SessionDescription.parse(bytes(offer))
    assert offer.media[0].proto == "RTP/SAVP"
    chosen = answer_crypto(offer.media[0].crypto)
    assert chosen is not None
    answer = negotiate(
        offer,
        DEFAULT_CAPABILITIES,
        "192.0.2.2",
        5000,
        session_id=2,
        version=1,
        crypto=[chosen[0]],
        accept_crypto=is_usable,
    )
    assert answer.audio.remote_crypto == chosen[1]
    (offerer_stream,) = process_answer(offer, SessionDescription.parse(bytes(answer.description)))
    assert offerer_stream is not None
    offerer = SrtpSession.for_stream(offerer_stream)
    answerer = SrtpSession.for_stream(answer.audio)
    assert offerer is not None and answerer is not None
    assert offerer.suite == answerer.suite == AES_CM_128_HMAC_SHA1_80
    assert answerer.unprotect_rtp(offerer.protect_rtp(packet(1))) == packet(1)
    assert offerer.unprotect_rtp(answerer.protect_rtp(packet(1))) == packet(1)


def test_a_plain_stream_has_no_session() -> None:
    offer = create_offer(DEFAULT_CAPABILITIES, 1, 1, "192.0.2.1", 4000)
    answer = negotiate(offer, DEFAULT_CAPABILITIES, "192.0.2.2", 5000, session_id=2, version=1)
    assert SrtpSession.for_stream(answer.audio) is None


def test_rekey_with_the_same_keys_keeps_the_session() -> None:
    a, _ = pair()
    assert a.rekey(a.local, a.remote) is a
    assert a.rekey(a.local._replace(tag=7), a.remote._replace(tag=7)) is a


def test_rekey_with_a_new_peer_key_keeps_our_outbound_context() -> None:
    a, b = pair()
    b.unprotect_rtp(a.protect_rtp(packet(1)))
    new_key = generate_crypto(1)
    a2 = a.rekey(a.local, new_key)
    b2 = b.rekey(new_key, b.remote)
    assert a2 is not a and b2 is not b
    with pytest.raises(SrtpError, match=r"^SRTP packet is a replay$"):
        a2.protect_rtp(packet(1))
    assert b2.unprotect_rtp(a2.protect_rtp(packet(2))) == packet(2)
    assert a2.unprotect_rtp(b2.protect_rtp(packet(1))) == packet(1)
    with pytest.raises(SrtpError, match=r"^SRTP authentication failed$"):
        a2.unprotect_rtp(b.protect_rtp(packet(5)))


def test_rekey_with_both_keys_new_starts_fresh_contexts() -> None:
    a, b = pair()
    b.unprotect_rtp(a.protect_rtp(packet(1)))
    x, y = generate_crypto(1), generate_crypto(1)
    a2, b2 = a.rekey(x, y), b.rekey(y, x)
    assert b2.unprotect_rtp(a2.protect_rtp(packet(1))) == packet(1)
    with pytest.raises(SrtpError, match=r"^SRTP authentication failed$"):
        b2.unprotect_rtp(a.protect_rtp(packet(2)))


def test_negotiate_answers_the_line_answer_crypto_chose() -> None:
    offer = SessionDescription.parse(
        "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"
        "m=audio 4000 RTP/SAVP 0\r\n"
        f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_80}|2^20|1:4 UNENCRYPTED_SRTCP\r\n"
        f"a=crypto:2 AES_CM_128_HMAC_SHA1_80 inline:{KEY_80}\r\n"
    )
    chosen = answer_crypto(offer.media[0].crypto)
    assert chosen is not None and chosen[1].tag == 2
    answer = negotiate(
        offer,
        DEFAULT_CAPABILITIES,
        "192.0.2.2",
        5000,
        session_id=2,
        version=1,
        crypto=[chosen[0]],
        accept_crypto=is_usable,
    )
    assert answer.audio.remote_crypto == chosen[1]


def test_for_stream_keeps_the_context_of_an_unchanged_key() -> None:
    offer = create_offer(DEFAULT_CAPABILITIES, 1, 1, "192.0.2.1", 4000, crypto=offer_crypto())
    first = negotiate(
        offer,
        DEFAULT_CAPABILITIES,
        "192.0.2.2",
        5000,
        session_id=2,
        version=1,
        crypto=session_crypto(),
        accept_crypto=is_usable,
    )
    session = SrtpSession.for_stream(first.audio)
    assert session is not None
    again = negotiate(
        offer,
        DEFAULT_CAPABILITIES,
        "192.0.2.2",
        5000,
        session_id=2,
        version=2,
        crypto=session_crypto(session),
        accept_crypto=is_usable,
    )
    assert again.audio.local_crypto == session.local
    assert SrtpSession.for_stream(again.audio, session) is session
    assert SrtpSession.for_stream(again.audio, object()) is not session


def test_session_crypto_puts_the_current_key_first() -> None:
    a, _ = pair()
    keys = session_crypto(a)
    assert keys[0] == a.local
    assert len(keys) == len(offer_crypto()) + 1
    assert len(session_crypto()) == len(offer_crypto())
    assert session_crypto(object())[0] != a.local
