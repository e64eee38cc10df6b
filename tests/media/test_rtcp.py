"""Tests of media.rtcp: RFC 3550 §6 packets byte for byte, compounds, bad input, NTP."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from media.rtcp import (
    Bye,
    ReceiverReport,
    ReportBlock,
    RtcpError,
    RtcpPacket,
    RtcpUnknown,
    SdesChunk,
    SdesItem,
    SenderReport,
    SourceDescription,
    ntp_middle,
    ntp_short,
    ntp_short_to_seconds,
    ntp_timestamp,
    ntp_to_unix,
    parse_compound,
    serialize_compound,
)

BLOCK = struct.pack(
    "!IIIIII",
    0x11223344,  # SSRC of the source reported on
    (0x40 << 24) | 0xFFFFFE,  # fraction lost 64/256, cumulative lost -2 (24-bit signed)
    0x0001FFFF,  # one wrap, highest sequence 0xFFFF
    160,  # jitter
    0xABCD1234,  # LSR
    0x00018000,  # DLSR 1.5 s
)

SR = (
    bytes([0x81, 200])
    + struct.pack("!H", 12)
    + struct.pack("!IQIII", 0xDEADBEEF, 0xE3A1B2C3_80000000, 8000, 50, 8000)
    + BLOCK
)
"""SR with one report block: 4 + 24 + 24 = 52 bytes, length field 12."""

RR = bytes([0x81, 201]) + struct.pack("!HI", 7, 0xCAFEBABE) + BLOCK
"""RR with one report block: 32 bytes, length field 7."""

SDES = (
    bytes([0x81, 202])
    + struct.pack("!HI", 5, 0xDEADBEEF)
    + bytes([1, 9])
    + b"user@host"
    + bytes([2, 1])
    + b"A"
    + bytes(2)  # null item and one octet to reach the 32-bit boundary
)
"""SDES with one chunk holding CNAME and NAME: 24 bytes, length field 5."""

BYE = bytes([0x81, 203]) + struct.pack("!HI", 3, 0xDEADBEEF) + bytes([4]) + b"gone" + bytes(3)
"""BYE with a reason of 4 octets padded with 3 null octets: 16 bytes."""

APP = bytes([0x81, 204]) + struct.pack("!HI", 3, 0xDEADBEEF) + b"TEST" + bytes([1, 2, 3, 4])
"""APP subtype 1, kept raw."""

PADDED_RR = bytes([0xA0, 201]) + struct.pack("!HI", 2, 0xCAFEBABE) + bytes([0, 0, 0, 4])
"""RR without blocks and with 4 octets of padding (P bit set)."""


def test_sender_report_fields_and_round_trip() -> None:
    [packet] = parse_compound(SR)
    assert isinstance(packet, SenderReport)
    assert packet.packet_type == 200
    assert packet.ssrc == 0xDEADBEEF
    assert packet.ntp_timestamp == 0xE3A1B2C3_80000000
    assert (packet.rtp_timestamp, packet.packet_count, packet.octet_count) == (8000, 50, 8000)
    assert packet.reports == (
        ReportBlock(0x11223344, 64, -2, 0x0001FFFF, 160, 0xABCD1234, 0x00018000),
    )
    assert packet.extension == b""
    assert bytes(packet) == SR


def test_receiver_report_fields_and_round_trip() -> None:
    [packet] = parse_compound(RR)
    assert packet == ReceiverReport(
        0xCAFEBABE, (ReportBlock(0x11223344, 64, -2, 0x0001FFFF, 160, 0xABCD1234, 0x18000),)
    )
    assert bytes(packet) == RR


def test_sdes_keeps_cname_and_other_items() -> None:
    [packet] = parse_compound(SDES)
    assert isinstance(packet, SourceDescription)
    [chunk] = packet.chunks
    assert chunk.ssrc == 0xDEADBEEF
    assert chunk.cname == "user@host"
    assert chunk.items == (SdesItem(1, b"user@host"), SdesItem(2, b"A"))
    assert bytes(packet) == SDES


def test_sdes_chunk_exactly_aligned_gets_a_full_null_word() -> None:
    packet = SourceDescription((SdesChunk(1, (SdesItem(1, b"abcdef"),)),))
    data = bytes(packet)
    assert data[8:] == bytes([1, 6]) + b"abcdef" + bytes(4)
    assert parse_compound(data) == [packet]
    assert SdesChunk(2).cname is None


def test_bye_with_reason_round_trips() -> None:
    [packet] = parse_compound(BYE)
    assert packet == Bye((0xDEADBEEF,), b"gone")
    assert bytes(packet) == BYE
    assert bytes(Bye((1, 2))) == bytes([0x82, 203, 0, 2]) + struct.pack("!II", 1, 2)


def test_unknown_packet_type_is_kept_raw() -> None:
    [packet] = parse_compound(APP)
    assert packet == RtcpUnknown(
        204, 1, struct.pack("!I", 0xDEADBEEF) + b"TEST" + bytes([1, 2, 3, 4])
    )
    assert bytes(packet) == APP


def test_padding_is_kept_raw() -> None:
    [packet] = parse_compound(PADDED_RR)
    assert packet == ReceiverReport(0xCAFEBABE, padding=bytes([0, 0, 0, 4]))
    assert bytes(packet) == PADDED_RR


def test_compound_packet_splits_in_order_and_round_trips() -> None:
    data = SR + SDES + BYE + APP + PADDED_RR
    packets = parse_compound(data)
    assert [type(p) for p in packets] == [
        SenderReport,
        SourceDescription,
        Bye,
        RtcpUnknown,
        ReceiverReport,
    ]
    assert serialize_compound(packets) == data


def test_report_extension_is_kept_raw() -> None:
    data = bytes([0x80, 201]) + struct.pack("!HI", 2, 5) + b"EXT!"
    [packet] = parse_compound(data)
    assert packet == ReceiverReport(5, (), b"EXT!")
    assert bytes(packet) == data


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "RTCP packet is truncated"),
        (b"\x81\xc8\x00", "RTCP packet is truncated"),
        (SR[:-4], "RTCP packet is truncated"),
        (SR + RR[:3], "RTCP packet is truncated"),
        (bytes([0x41]) + SR[1:], "RTCP packet has a bad version"),
        (bytes([0x82]) + SR[1:], "RTCP packet is truncated"),
        (bytes([0xA0, 201, 0, 1, 0, 0, 0, 0]), "RTCP packet has bad padding"),
        (bytes([0xA0, 201, 0, 1, 0, 0, 0, 8]), "RTCP packet has bad padding"),
        (bytes([0x81, 202, 0, 1, 0, 0, 0, 1]), "RTCP packet is truncated"),
        (bytes([0x81, 202, 0, 2, 0, 0, 0, 1, 1, 9, 0, 0]), "RTCP packet is truncated"),
        (bytes([0x80, 202, 0, 1, 0, 0, 0, 1]), "RTCP SDES packet is malformed"),
        (bytes([0x82, 203, 0, 1, 0, 0, 0, 1]), "RTCP packet is truncated"),
        (bytes([0x81, 203, 0, 2, 0, 0, 0, 1, 9, 0, 0, 0]), "RTCP packet is truncated"),
        (
            bytes([0x81, 203, 0, 3, 0, 0, 0, 1, 1, 0x41, 0, 0, 0, 0, 0, 0]),
            "RTCP BYE packet is malformed",
        ),
    ],
)
def test_bad_packets_raise_fixed_errors(data: bytes, message: str) -> None:
    with pytest.raises(RtcpError, match=f"^{message}$"):
        parse_compound(data)


@pytest.mark.parametrize(
    ("packet", "message"),
    [
        (ReceiverReport(1 << 32), "RTCP field is out of range"),
        (ReceiverReport(1, (ReportBlock(1, 256),)), "RTCP field is out of range"),
        (ReceiverReport(1, (ReportBlock(1, 0, 0x800000),)), "RTCP field is out of range"),
        (ReceiverReport(1, (ReportBlock(1),) * 32), "RTCP packet has too many items"),
        (ReceiverReport(1, padding=b"\x00\x03"), "RTCP packet has bad padding"),
        (ReceiverReport(1, extension=b"\x01"), "RTCP packet is not a multiple of 4 bytes"),
        (Bye((1,), b"x" * 256), "RTCP BYE reason is too long"),
        (SourceDescription((SdesChunk(1, (SdesItem(0, b""),)),)), "RTCP SDES item is out of range"),
        (RtcpUnknown(256), "RTCP field is out of range"),
    ],
)
def test_unwritable_packets_raise_fixed_errors(packet: RtcpPacket, message: str) -> None:
    with pytest.raises(RtcpError, match=f"^{message}$"):
        bytes(packet)


def test_negative_cumulative_loss_is_written_as_24_bit_twos_complement() -> None:
    data = bytes(ReceiverReport(1, (ReportBlock(2, 0, -0x800000),)))
    assert data[12:16] == bytes([0, 0x80, 0, 0])
    [packet] = parse_compound(data)
    assert isinstance(packet, ReceiverReport)
    assert packet.reports[0].packets_lost == -0x800000


u32 = st.integers(0, 0xFFFFFFFF)
blocks = st.builds(
    ReportBlock,
    u32,
    st.integers(0, 255),
    st.integers(-0x800000, 0x7FFFFF),
    u32,
    u32,
    u32,
    u32,
)
paddings = st.integers(0, 3).map(
    lambda words: bytes(4 * words - 1) + bytes([4 * words]) if words else b""
)
words = st.integers(0, 4).map(lambda n: bytes(range(4 * n)))
report_lists = st.lists(blocks, max_size=4).map(tuple)
packets: st.SearchStrategy[RtcpPacket] = st.one_of(
    st.builds(
        SenderReport,
        u32,
        st.integers(0, 2**64 - 1),
        u32,
        u32,
        u32,
        report_lists,
        words,
        paddings,
    ),
    st.builds(ReceiverReport, u32, report_lists, words, paddings),
    st.builds(
        SourceDescription,
        st.lists(
            st.builds(
                SdesChunk,
                u32,
                st.lists(
                    st.builds(SdesItem, st.integers(1, 255), st.binary(max_size=20)), max_size=3
                ).map(tuple),
            ),
            max_size=3,
        ).map(tuple),
        paddings,
    ),
    st.builds(Bye, st.lists(u32, max_size=4).map(tuple), st.binary(max_size=12), paddings),
    st.builds(
        RtcpUnknown,
        st.integers(204, 255) | st.integers(0, 199),
        st.integers(0, 31),
        words,
        paddings,
    ),
)


@settings(derandomize=True, max_examples=300, deadline=None)
@given(st.lists(packets, min_size=1, max_size=4))
def test_generated_compounds_round_trip(generated: list[RtcpPacket]) -> None:
    data = serialize_compound(generated)
    assert parse_compound(data) == generated
    assert serialize_compound(parse_compound(data)) == data


@settings(derandomize=True, max_examples=500, deadline=None)
@given(st.binary(max_size=120))
def test_garbage_raises_only_rtcp_error(data: bytes) -> None:
    _assert_parses_or_raises_rtcp_error(data)


def _assert_parses_or_raises_rtcp_error(data: bytes) -> None:
    """Only RtcpError; what parses writes back at the same length and parses the same."""
    try:
        packets = parse_compound(data)
    except RtcpError:
        return
    written = serialize_compound(packets)
    assert len(written) == len(data)
    assert parse_compound(written) == packets


@settings(derandomize=True, max_examples=300, deadline=None)
@given(st.integers(0, 200), st.integers(0, 255), st.integers(1, 255))
def test_corrupted_compound_raises_only_rtcp_error(index: int, value: int, cut: int) -> None:
    data = bytearray(SR + SDES + BYE + APP + PADDED_RR)
    data[index % len(data)] = value
    _assert_parses_or_raises_rtcp_error(bytes(data))
    _assert_parses_or_raises_rtcp_error(bytes(data[:-cut]))


def test_ntp_timestamp_of_unix_time() -> None:
    assert ntp_timestamp(0.0) == 2208988800 << 32
    assert ntp_timestamp(1.5) == ((2208988800 + 1) << 32) | 0x80000000
    assert ntp_to_unix(ntp_timestamp(1700000000.25)) == 1700000000.25
    assert ntp_middle(0x11223344_55667788) == 0x33445566
    assert ntp_short(1.5) == 0x18000
    assert ntp_short(-1.0) == 0
    assert ntp_short_to_seconds(0x18000) == 1.5
