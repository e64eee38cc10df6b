"""RTP packets (RFC 3550 §5.1) and RTP/RTCP demultiplexing (RFC 5761 §4).

`RtpPacket.parse(data)` reads a packet and `bytes(packet)` writes it back: for every valid packet
`bytes(RtpPacket.parse(data)) == data`, since the header extension and the padding are kept raw.
Sequence numbers and timestamps wrap; `sequence_delta` and `timestamp_delta` compare them the way
RFC 3550 Appendix A.1 does (modular, signed).

Measured with `timeit` (best of 7) on the 2-core development machine while other jobs ran
(`sum(range(1000))` took 17 µs there): `parse` of a 172-byte G.711 packet 0.8 µs, `bytes()`
0.9 µs, `rtp_header` 0.25 µs, `is_rtcp` 0.14 µs.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

__all__ = [
    "RTP_VERSION",
    "RtpError",
    "RtpHeaderExtension",
    "RtpPacket",
    "is_rtcp",
    "rtp_header",
    "sequence_delta",
    "timestamp_delta",
]

RTP_VERSION = 2
"""The only RTP version (RFC 3550 §5.1)."""

_HEADER = struct.Struct("!BBHII")
_EXTENSION = struct.Struct("!HH")
_CSRC = tuple(struct.Struct(f"!{count}I") for count in range(16))
_new = tuple.__new__


class RtpError(ValueError):
    """An RTP packet that does not follow RFC 3550 §5.1, or a field out of range."""


class RtpHeaderExtension(NamedTuple):
    """The header extension of RFC 3550 §5.3.1, kept raw.

    `profile` is the 16-bit profile-defined value (0xBEDE for RFC 8285 one-byte elements) and
    `data` the extension body, a multiple of 4 bytes long.
    """

    profile: int
    data: bytes = b""


class RtpPacket(NamedTuple):
    """An RTP packet (RFC 3550 §5.1).

    `padding` is the raw padding at the end of the packet, its last byte being its own length
    (RFC 3550 §5.1 P bit); the P and X bits of the header follow from `padding` and `extension`.
    A NamedTuple like the values of `sip.sdp`, rather than a frozen dataclass, because it is
    built for every packet: it costs 0.2 µs to build against 1.8 µs for a frozen dataclass.
    """

    payload_type: int = 0
    marker: bool = False
    sequence_number: int = 0
    timestamp: int = 0
    ssrc: int = 0
    payload: bytes = b""
    csrc: tuple[int, ...] = ()
    extension: RtpHeaderExtension | None = None
    padding: bytes = b""

    @property
    def version(self) -> int:
        """The RTP version, always 2: `parse` refuses others."""
        return RTP_VERSION

    @classmethod
    def parse(cls, data: bytes) -> RtpPacket:
        """Read a packet; raises `RtpError` when it is truncated or malformed."""
        length = len(data)
        if length < 12:
            raise RtpError("RTP packet is truncated")
        first, second, sequence_number, timestamp, ssrc = _HEADER.unpack_from(data)
        if first == 0x80:
            return _new(
                cls,
                (
                    second & 0x7F,
                    second > 0x7F,
                    sequence_number,
                    timestamp,
                    ssrc,
                    bytes(data[12:]),
                    (),
                    None,
                    b"",
                ),
            )
        if first >> 6 != RTP_VERSION:
            raise RtpError("RTP packet has a bad version")
        count = first & 0x0F
        pos = 12 + 4 * count
        if length < pos:
            raise RtpError("RTP packet is truncated")
        csrc: tuple[int, ...] = _CSRC[count].unpack_from(data, 12) if count else ()
        extension = None
        if first & 0x10:
            if length < pos + 4:
                raise RtpError("RTP packet is truncated")
            profile, words = _EXTENSION.unpack_from(data, pos)
            start = pos + 4
            pos = start + 4 * words
            if length < pos:
                raise RtpError("RTP packet is truncated")
            extension = RtpHeaderExtension(profile, bytes(data[start:pos]))
        end = length
        padding = b""
        if first & 0x20:
            size = data[-1]
            if size == 0 or end - size < pos:
                raise RtpError("RTP packet has bad padding")
            end -= size
            padding = bytes(data[end:])
        return _new(
            cls,
            (
                second & 0x7F,
                second > 0x7F,
                sequence_number,
                timestamp,
                ssrc,
                bytes(data[pos:end]),
                csrc,
                extension,
                padding,
            ),
        )

    def __bytes__(self) -> bytes:
        csrc = self.csrc
        extension = self.extension
        padding = self.padding
        first = 0x80 | len(csrc)
        if len(csrc) > 15:
            raise RtpError("RTP packet has too many CSRCs")
        if padding:
            if padding[-1] != len(padding):
                raise RtpError("RTP packet has bad padding")
            first |= 0x20
        if extension is not None:
            first |= 0x10
        if not 0 <= self.payload_type <= 0x7F:
            raise RtpError("RTP header field is out of range")
        try:
            header = _HEADER.pack(
                first,
                (0x80 if self.marker else 0) | self.payload_type,
                self.sequence_number,
                self.timestamp,
                self.ssrc,
            )
            if csrc:
                header += _CSRC[len(csrc)].pack(*csrc)
            if extension is not None:
                words, rest = divmod(len(extension.data), 4)
                if rest:
                    raise RtpError("RTP header extension is not a multiple of 4 bytes")
                header += _EXTENSION.pack(extension.profile, words) + extension.data
        except struct.error:
            raise RtpError("RTP header field is out of range") from None
        return header + self.payload + padding


def rtp_header(
    payload_type: int, marker: bool, sequence_number: int, timestamp: int, ssrc: int
) -> bytes:
    """The 12-byte fixed header (RFC 3550 §5.1) of a packet without CSRC, extension or padding:
    what a sender prepends to each payload, without building an `RtpPacket`."""
    if not 0 <= payload_type <= 0x7F:
        raise RtpError("RTP header field is out of range")
    try:
        return _HEADER.pack(
            0x80, (0x80 if marker else 0) | payload_type, sequence_number, timestamp, ssrc
        )
    except struct.error:
        raise RtpError("RTP header field is out of range") from None


def is_rtcp(data: bytes) -> bool:
    """True when a datagram on a multiplexed port is RTCP (RFC 5761 §4).

    RTCP packet types 192-223 sit where RTP would carry the marker bit and payload types 64-95,
    which RFC 5761 keeps out of use for RTP.
    """
    return len(data) > 1 and 192 <= data[1] <= 223


def sequence_delta(a: int, b: int) -> int:
    """`a - b` for 16-bit sequence numbers, in [-32768, 32767] (RFC 3550 Appendix A.1)."""
    return ((a - b + 0x8000) & 0xFFFF) - 0x8000


def timestamp_delta(a: int, b: int) -> int:
    """`a - b` for 32-bit RTP timestamps, in [-2**31, 2**31 - 1] (RFC 3550 §5.1)."""
    return ((a - b + 0x80000000) & 0xFFFFFFFF) - 0x80000000
