"""A passthrough RTP/RTCP relay between two call legs that share a codec.

Each leg has its own port pair on our side. What arrives on leg A's RTP port from A's peer leaves
from leg B's RTP port to B's peer, and the other way round; the same for RTCP on the odd ports.
Symmetric RTP with latching (RFC 4961): until a leg's peer has sent anything, packets go to the
address its SDP gave; the first packet from the expected host latches the peer's real address (a
caller behind NAT); afterwards packets from any other address are dropped and counted (no media
hijack).

This is the trunk-to-trunk media path until the media engine's bridge takes over (header rewriting,
transcoding, jitter buffers, recording).
"""

from __future__ import annotations

import asyncio
import logging
from typing import cast

from omlmedia.media.ports import PortAllocator

logger = logging.getLogger(__name__)


class _Socket(asyncio.DatagramProtocol):
    """One of our four sockets: it forwards through its twin on the other leg."""

    def __init__(self, expected_host: str | None) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.expected_host = expected_host
        self.peer: tuple[str, int] | None = None  # from SDP until latched
        self.latched = False
        self.twin: _Socket | None = None
        self.received = 0
        self.dropped = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if not self.latched:
            if self.expected_host is not None and addr[0] != self.expected_host:
                self.dropped += 1
                return
            self.peer = (addr[0], addr[1])
            self.latched = True
        elif self.peer is None or addr[0] != self.peer[0] or addr[1] != self.peer[1]:
            self.dropped += 1
            return
        if len(data) < 8 or data[0] >> 6 != 2:
            self.dropped += 1
            return
        self.received += 1
        twin = self.twin
        if twin is not None and twin.peer is not None and twin.transport is not None:
            twin.transport.sendto(data, twin.peer)

    def error_received(self, exc: Exception) -> None:
        logger.debug("relay socket error: %s", exc)


class Leg:
    """Our RTP/RTCP port pair facing one peer."""

    def __init__(self, rtp: _Socket, rtcp: _Socket, port: int) -> None:
        self.rtp = rtp
        self.rtcp = rtcp
        self.port = port

    def set_remote(self, host: str, rtp_port: int, rtcp_port: int | None = None) -> None:
        """Where the peer's SDP says it receives; latching may refine it."""
        self.rtp.expected_host = host
        self.rtcp.expected_host = host
        if not self.rtp.latched:
            self.rtp.peer = (host, rtp_port)
        if not self.rtcp.latched:
            self.rtcp.peer = (host, rtcp_port if rtcp_port else rtp_port + 1)


class RtpRelay:
    """Two legs whose packets cross over."""

    def __init__(self, ports: PortAllocator, host: str) -> None:
        self._ports = ports
        self.host = host
        self.a: Leg | None = None
        self.b: Leg | None = None

    async def _bind_leg(self) -> Leg:
        loop = asyncio.get_running_loop()
        for _ in range(16):
            port = self._ports.allocate()
            try:
                _, rtp = await loop.create_datagram_endpoint(
                    lambda: _Socket(None), local_addr=(self.host, port)
                )
                try:
                    _, rtcp = await loop.create_datagram_endpoint(
                        lambda: _Socket(None), local_addr=(self.host, port + 1)
                    )
                except OSError:
                    if rtp.transport is not None:
                        rtp.transport.close()
                    raise
            except OSError:
                continue  # a busy pair stays allocated, out of the rotation
            return Leg(rtp, rtcp, port)
        raise OSError("no bindable RTP port pair")

    async def start(self) -> tuple[int, int]:
        """Bind both legs; returns (port of leg A, port of leg B)."""
        self.a = await self._bind_leg()
        try:
            self.b = await self._bind_leg()
        except OSError:
            self.stop()
            raise
        self.a.rtp.twin, self.b.rtp.twin = self.b.rtp, self.a.rtp
        self.a.rtcp.twin, self.b.rtcp.twin = self.b.rtcp, self.a.rtcp
        return self.a.port, self.b.port

    @property
    def packets(self) -> int:
        """RTP packets relayed in both directions."""
        return sum(leg.rtp.received for leg in (self.a, self.b) if leg is not None)

    def stop(self) -> None:
        """Close every socket and give the port pairs back."""
        for leg in (self.a, self.b):
            if leg is None:
                continue
            for sock in (leg.rtp, leg.rtcp):
                if sock.transport is not None:
                    sock.transport.close()
            self._ports.release(leg.port)
        self.a = self.b = None
