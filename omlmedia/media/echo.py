"""A socket-level RTP echo: every packet received goes back to where it came from.

This is the `echo` target's media until the media engine carries it (jitter buffer, codec-aware
echo). Symmetric RTP with latching (RFC 4961): the first source seen is the peer; packets from any
other address are dropped and counted, so a third party cannot hijack the stream. RTCP on the next
port is echoed the same way.
"""

from __future__ import annotations

import asyncio
import logging
from typing import cast

from omlmedia.media.ports import PortAllocator

logger = logging.getLogger(__name__)


class _EchoProtocol(asyncio.DatagramProtocol):
    def __init__(self, expected: tuple[str, int] | None) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.expected_host = expected[0] if expected else None
        self.peer: tuple[str, int] | None = None
        self.packets = 0
        self.dropped = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)  # uvloop's is not a subclass

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        peer = self.peer
        if peer is None:
            if self.expected_host is not None and addr[0] != self.expected_host:
                self.dropped += 1
                return
            self.peer = peer = (addr[0], addr[1])
        elif addr[0] != peer[0] or addr[1] != peer[1]:
            self.dropped += 1
            return
        if len(data) < 12 or data[0] >> 6 != 2:
            self.dropped += 1
            return
        self.packets += 1
        if self.transport is not None:
            self.transport.sendto(data, peer)

    def error_received(self, exc: Exception) -> None:
        logger.debug("rtp echo socket error: %s", exc)


class RtpEcho:
    """An RTP/RTCP port pair that echoes what it receives."""

    def __init__(self, ports: PortAllocator, host: str) -> None:
        self._ports = ports
        self.host = host
        self.port = 0
        self._rtp: _EchoProtocol | None = None
        self._rtcp: _EchoProtocol | None = None

    async def start(self, remote: tuple[str, int] | None) -> int:
        """Bind a port pair (trying the next pair when one is busy) and return the RTP port."""
        loop = asyncio.get_running_loop()
        for _ in range(16):
            port = self._ports.allocate()
            try:
                _, rtp = await loop.create_datagram_endpoint(
                    lambda: _EchoProtocol(remote), local_addr=(self.host, port)
                )
                try:
                    _, rtcp = await loop.create_datagram_endpoint(
                        lambda: _EchoProtocol(remote), local_addr=(self.host, port + 1)
                    )
                except OSError:
                    if rtp.transport is not None:
                        rtp.transport.close()
                    raise
            except OSError:
                continue  # a busy pair stays allocated, out of the rotation
            self._rtp, self._rtcp, self.port = rtp, rtcp, port
            return port
        raise OSError("no bindable RTP port pair")

    @property
    def packets(self) -> int:
        """RTP packets echoed."""
        return self._rtp.packets if self._rtp else 0

    def stop(self) -> None:
        """Close both sockets and give the port pair back."""
        for proto in (self._rtp, self._rtcp):
            if proto is not None and proto.transport is not None:
                proto.transport.close()
        self._rtp = self._rtcp = None
        if self.port:
            self._ports.release(self.port)
            self.port = 0
