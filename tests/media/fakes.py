"""Fake sockets for media tests: a port pair whose sends are captured, not sent."""

from __future__ import annotations

import struct
from typing import Any

from media.leg import LegFormat
from media.ports import PortPair, RtpSocket

PCMU = LegFormat(
    "PCMU",
    8000,
    send_type=0,
    receive_types=frozenset({0}),
    event_send_type=101,
    event_receive_types=frozenset({101}),
)
"""G.711 mu-law on payload type 0 with RFC 4733 events on 101, both ways."""


class CapturingTransport:
    """Stands in for an asyncio datagram transport: `sent` collects (data, addr)."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, tuple[str, int]]] = []

    def sendto(self, data: bytes, addr: Any = None) -> None:
        self.sent.append((bytes(data), addr))

    def close(self) -> None:
        pass


def fake_pair(port: int) -> tuple[PortPair, CapturingTransport, CapturingTransport]:
    """A port pair on `port` whose RTP and RTCP sends are captured."""
    rtp, rtcp = RtpSocket(), RtpSocket()
    rtp_transport, rtcp_transport = CapturingTransport(), CapturingTransport()
    rtp.transport = rtp_transport  # type: ignore[assignment]
    rtcp.transport = rtcp_transport  # type: ignore[assignment]
    return PortPair(port, rtp, rtcp), rtp_transport, rtcp_transport


def rtp(
    seq: int,
    ts: int,
    ssrc: int = 0x1234,
    payload_type: int = 0,
    payload: bytes = b"\xff" * 160,
    marker: bool = False,
) -> bytes:
    """A plain RTP packet."""
    return (
        struct.pack("!BBHII", 0x80, payload_type | (0x80 if marker else 0), seq, ts, ssrc) + payload
    )


def header(data: bytes) -> tuple[int, bool, int, int, int]:
    """(payload type, marker, sequence number, timestamp, SSRC) of a packet."""
    _, second, seq, ts, ssrc = struct.unpack_from("!BBHII", data)
    return second & 0x7F, bool(second & 0x80), seq, ts, ssrc
