"""Tests of media.rtp: RFC 3550 §5.1 packets byte for byte, bad packets, demultiplexing."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from media.rtp import (
    RtpError,
    RtpHeaderExtension,
    RtpPacket,
    is_rtcp,
    rtp_header,
    sequence_delta,
    timestamp_delta,
)

G711_PACKET = bytes.fromhex("80 00 1234 000003e8 deadbeef".replace(" ", "")) + bytes(range(160))
"""PCMU, sequence 0x1234, timestamp 1000, SSRC 0xdeadbeef, 160 payload bytes."""

FULL_PACKET = (
    bytes([0xB2, 0xE5])  # V=2 P=1 X=1 CC=2; M=1 PT=101
    + struct.pack("!HII", 0xFFFF, 0xFFFFFFF0, 0x01020304)
    + struct.pack("!II", 0x0A0B0C0D, 0x11121314)  # two CSRCs
    + struct.pack("!HH", 0xBEDE, 2)  # RFC 8285 one-byte header extension, 2 words
    + bytes.fromhex("10ff2201 02030000")
    + bytes.fromhex("0a8000a0")  # payload: a telephone-event
    + bytes([0x00, 0x00, 0x00, 0x04])  # padding, last byte its length
)


def test_plain_g711_packet_parses_and_round_trips() -> None:
    packet = RtpPacket.parse(G711_PACKET)
    assert packet.version == 2
    assert packet.payload_type == 0
    assert packet.marker is False
    assert packet.sequence_number == 0x1234
    assert packet.timestamp == 1000
    assert packet.ssrc == 0xDEADBEEF
    assert packet.csrc == ()
    assert packet.extension is None
    assert packet.padding == b""
    assert packet.payload == bytes(range(160))
    assert bytes(packet) == G711_PACKET


def test_packet_with_marker_csrc_extension_and_padding_round_trips() -> None:
    packet = RtpPacket.parse(FULL_PACKET)
    assert packet.marker is True
    assert packet.payload_type == 101
    assert packet.sequence_number == 0xFFFF
    assert packet.timestamp == 0xFFFFFFF0
    assert packet.csrc == (0x0A0B0C0D, 0x11121314)
    assert packet.extension == RtpHeaderExtension(0xBEDE, bytes.fromhex("10ff220102030000"))
    assert packet.payload == bytes.fromhex("0a8000a0")
    assert packet.padding == bytes([0, 0, 0, 4])
    assert bytes(packet) == FULL_PACKET


def test_non_zero_padding_bytes_and_empty_extension_are_kept_verbatim() -> None:
    data = (
        bytes([0xB0, 0x08])
        + struct.pack("!HII", 7, 8, 9)
        + struct.pack("!HH", 0x1000, 0)
        + b"\xd5" * 3
        + b"\xaa\xbb\x03"
    )
    packet = RtpPacket.parse(data)
    assert packet.extension == RtpHeaderExtension(0x1000, b"")
    assert packet.payload == b"\xd5" * 3
    assert packet.padding == b"\xaa\xbb\x03"
    assert bytes(packet) == data


def test_padding_may_fill_the_whole_body() -> None:
    data = bytes([0xA0, 0x00]) + struct.pack("!HII", 1, 2, 3) + b"\x00\x00\x00\x04"
    packet = RtpPacket.parse(data)
    assert packet.payload == b""
    assert bytes(packet) == data


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "RTP packet is truncated"),
        (G711_PACKET[:11], "RTP packet is truncated"),
        (bytes([0x40]) + G711_PACKET[1:], "RTP packet has a bad version"),
        (bytes([0x00]) + G711_PACKET[1:], "RTP packet has a bad version"),
        (bytes([0xC0]) + G711_PACKET[1:], "RTP packet has a bad version"),
        (bytes([0x8F]) + G711_PACKET[1:20], "RTP packet is truncated"),
        (bytes([0x90]) + G711_PACKET[1:14], "RTP packet is truncated"),
        (
            bytes([0x92]) + FULL_PACKET[1:20] + struct.pack("!HH", 0xBEDE, 100) + b"\x00" * 8,
            "RTP packet is truncated",
        ),
        (bytes([0xA0]) + G711_PACKET[1:-1] + b"\x00", "RTP packet has bad padding"),
        (bytes([0xA0]) + G711_PACKET[1:12] + b"\x01\x02\x09", "RTP packet has bad padding"),
        (bytes([0xA0]) + G711_PACKET[1:12], "RTP packet has bad padding"),
    ],
)
def test_bad_packets_raise_fixed_messages(data: bytes, message: str) -> None:
    with pytest.raises(RtpError) as info:
        RtpPacket.parse(data)
    assert str(info.value) == message


def test_rtp_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        RtpPacket.parse(b"\x80")


@pytest.mark.parametrize(
    ("packet", "message"),
    [
        (RtpPacket(payload_type=128), "RTP header field is out of range"),
        (RtpPacket(payload_type=-1), "RTP header field is out of range"),
        (RtpPacket(sequence_number=0x10000), "RTP header field is out of range"),
        (RtpPacket(timestamp=-1), "RTP header field is out of range"),
        (RtpPacket(ssrc=2**32), "RTP header field is out of range"),
        (RtpPacket(csrc=tuple(range(16))), "RTP packet has too many CSRCs"),
        (RtpPacket(csrc=(2**32,)), "RTP header field is out of range"),
        (
            RtpPacket(extension=RtpHeaderExtension(1, b"abc")),
            "RTP header extension is not a multiple of 4 bytes",
        ),
        (RtpPacket(extension=RtpHeaderExtension(0x10000, b"")), "RTP header field is out of range"),
        (RtpPacket(padding=b"\x00\x00"), "RTP packet has bad padding"),
    ],
)
def test_building_a_packet_with_fields_out_of_range_raises(packet: RtpPacket, message: str) -> None:
    with pytest.raises(RtpError) as info:
        bytes(packet)
    assert str(info.value) == message


def test_rtp_header_matches_a_packet_without_options() -> None:
    header = rtp_header(8, True, 65535, 2**32 - 1, 42)
    assert header + b"\xd5" * 160 == bytes(RtpPacket(8, True, 65535, 2**32 - 1, 42, b"\xd5" * 160))
    for bad in ((128, False, 0, 0, 0), (0, False, 0x10000, 0, 0)):
        with pytest.raises(RtpError) as info:
            rtp_header(*bad)
        assert str(info.value) == "RTP header field is out of range"


def _padding(size: int) -> st.SearchStrategy[bytes]:
    """Raw RTP padding of `size` bytes: anything, then its own length (RFC 3550 §5.1)."""
    if size == 0:
        return st.just(b"")
    return st.binary(min_size=size - 1, max_size=size - 1).map(lambda body: body + bytes([size]))


packets = st.builds(
    RtpPacket,
    payload_type=st.integers(0, 127),
    marker=st.booleans(),
    sequence_number=st.integers(0, 0xFFFF),
    timestamp=st.integers(0, 0xFFFFFFFF),
    ssrc=st.integers(0, 0xFFFFFFFF),
    payload=st.binary(max_size=64),
    csrc=st.lists(st.integers(0, 0xFFFFFFFF), max_size=15).map(tuple),
    extension=st.none()
    | st.builds(
        RtpHeaderExtension,
        st.integers(0, 0xFFFF),
        st.integers(0, 4).flatmap(lambda n: st.binary(min_size=4 * n, max_size=4 * n)),
    ),
    padding=st.integers(0, 8).flatmap(_padding),
)


@settings(deadline=None)  # a loaded machine's pause is no slow example
@given(packets)
def test_any_valid_packet_survives_bytes_then_parse(packet: RtpPacket) -> None:
    data = bytes(packet)
    assert RtpPacket.parse(data) == packet
    assert bytes(RtpPacket.parse(data)) == data


@settings(deadline=None)  # a loaded machine's pause is no slow example
@given(st.binary(max_size=80))
def test_parse_of_arbitrary_bytes_raises_only_rtp_error(data: bytes) -> None:
    try:
        packet = RtpPacket.parse(data)
    except RtpError:
        return
    assert bytes(packet) == data


@pytest.mark.parametrize(
    ("second_byte", "expected"),
    [
        (200, True),  # SR
        (201, True),  # RR
        (202, True),  # SDES
        (203, True),  # BYE
        (192, True),  # lowest of the RFC 5761 §4 range (PT 64 with marker)
        (223, True),  # highest (PT 95 with marker)
        (0, False),  # PCMU
        (0x80, False),  # PCMU with marker
        (8, False),
        (101, False),
        (0x80 | 96, False),  # dynamic PT 96 with marker = 224
        (0x80 | 63, False),  # 191
    ],
)
def test_is_rtcp_uses_the_rfc_5761_range(second_byte: int, expected: bool) -> None:
    assert is_rtcp(bytes([0x80, second_byte, 0, 1])) is expected


def test_is_rtcp_on_short_datagrams_is_false() -> None:
    assert is_rtcp(b"") is False
    assert is_rtcp(b"\x80") is False


def test_sequence_and_timestamp_deltas_wrap() -> None:
    assert sequence_delta(1, 0xFFFF) == 2
    assert sequence_delta(0xFFFF, 1) == -2
    assert sequence_delta(5, 5) == 0
    assert sequence_delta(0x8000 + 10, 10) == -0x8000
    assert timestamp_delta(80, 0xFFFFFFF0) == 96
    assert timestamp_delta(0xFFFFFFF0, 80) == -96
    assert timestamp_delta(2**31 - 1, 0) == 2**31 - 1
